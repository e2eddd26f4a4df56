--[[ cron_set.lua: create or replace a cron entry of a queue (jobrt cron add, cron = 'EXPR' in a
job file).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] name   1..200 bytes, no control characters, { or } (the rules of job ids)
  [3] entry  JSON object (at most 65536 bytes): job (job name), args (JSON text), schedule (the
             cron expression: the client checks it), tz (time zone name), id_prefix (the tick's
             job id is id_prefix .. tick in Unix seconds), missed ('once' | 'skip'), source
             ('cli': jobrt cron add | 'file': declared in a job file); other fields are kept
Writes the stats fields cron:<name> = entry and, for a new entry or one whose schedule or tz
  changed, cron-last:<name> = now (Unix ms): its ticks start after now. Replacing an entry with
  the same schedule and tz keeps cron-last (no tick is run twice or skipped).
An entry of the other source with this name is not replaced: an error says so (a file entry is
  changed in its file, a cli entry with jobrt cron delete).
Publishes: "cron" on the wake channel when the entry is new or changed (workers reload the
  queue's entries; older workers take it as a wake-up).
Returns: 0 unchanged, 1 created, 2 replaced (ticks start again from now), 3 replaced (same
  schedule: ticks go on)
]]
-- Built by tools/scripts.lua from src/cron_set.lua and includes/: edit those, then run make.
local SCRIPT = 'cron_set'
-- ---- includes/args.lua (edit it there, then run make) ----
-- Argument checks. Each returns the value, or nil and a message naming the script and argument;
-- '' (or a missing ARGV) stands for an argument not given.
-- ---- includes/keys.lua (edit it there, then run make) ----
-- The 14 standard KEYS of one queue, in order (README "Keys"): KEYS[1] is the prefix of the job
-- records, KEYS[13] and KEYS[14] are channel names. check_keys([extra]) -> queue name | nil,
-- message; extra: the suffixes of the keys (or channels) a script takes after the 14, e.g.
-- { 'progress' } for jobrt:{Q}:progress.
-- ---- includes/show.lua (edit it there, then run make) ----
-- a value quoted for an error message, at most 40 bytes of it, control characters as \<code>
-- (an error reply cannot carry a newline)
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. (v:gsub('%c', function(c) return '\\' .. c:byte() end)) .. "'"
end
-- ---- end of includes/show.lua ----
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
-- "<script>: ARGV[i] <name> <msg>"
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
-- The queue name is 1-128 bytes of A-Z a-z 0-9 _ . : - (README "Names"): no '{' or '}', so no
-- queue's key can be another queue's, and the Cluster hash tag is exactly the queue name.
local function check_keys(extra)
  local more = extra and #extra or 0
  if #KEYS ~= 14 + more then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue' ..
      (more > 0 and (' and ' .. more .. ' more (jobrt:{QUEUE}:' .. table.concat(extra, ', jobrt:{QUEUE}:') .. ')') or '') ..
      ' (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix, qname = KEYS[1]:match('^(jobrt:{([^{}]*)}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  if qname == '' or #qname > 128 or qname:find('[^%w_.:%-]') then
    return nil, SCRIPT .. ': the queue name must be 1-128 characters of A-Z a-z 0-9 _ . : -, got ' .. shown(qname)
  end
  for i = 2, 14 + more do
    local want = prefix .. (SUFFIX[i] or extra[i - 14])
    if KEYS[i] ~= want then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(want) .. ', got ' .. shown(KEYS[i])
    end
  end
  return qname
end
-- ---- end of includes/keys.lua ----
-- ARGV[1]: the queue type, as the caller read it from RESERVED:QCONFIG
local function queue_type()
  local v = ARGV[1]
  if v == nil or v == '' then return nil, argerr(1, 'type', 'is missing (read it from RESERVED:QCONFIG)') end
  if v ~= 'QUEUE' and v ~= 'LBQUEUE' and v ~= 'DELQUEUE' then
    return nil, argerr(1, 'type', 'must be QUEUE, LBQUEUE or DELQUEUE, got ' .. shown(v))
  end
  return v
end
local function max_argv(n)
  if #ARGV > n then return SCRIPT .. ': expected at most ' .. n .. ' ARGV, got ' .. #ARGV end
end
-- optional string of at most maxlen bytes ('' or absent -> nil)
local function opt_str(i, name, maxlen)
  local v = ARGV[i]
  if v == nil or v == '' then return nil end
  if #v > maxlen then return nil, argerr(i, name, 'must be at most ' .. maxlen .. ' bytes, got ' .. #v) end
  return v
end
local function req_str(i, name, maxlen)
  local v = ARGV[i]
  if v == nil or v == '' then return nil, argerr(i, name, 'is missing') end
  return opt_str(i, name, maxlen)
end
-- a job id or job name: 1..maxlen bytes, no control characters and no '{' '}' (README "Names")
local function name_arg(i, name, maxlen, required)
  local v, err
  if required then v, err = req_str(i, name, maxlen) else v, err = opt_str(i, name, maxlen) end
  if v and v:find('[%c{}]') then
    return nil, argerr(i, name, "must not contain control characters (newline, tab...) or '{' '}', got " .. shown(v))
  end
  return v, err
end
-- ---- end of includes/args.lua ----
-- ---- includes/time.lua (edit it there, then run make) ----
-- Server time, and the enqueue order of a job.
-- now() -> milliseconds (number), decimal seconds with microseconds (string), microseconds
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  -- string padding, not string.format: sprintf costs Redis' Lua more than the rest of this
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. ('00000' .. t[2]):sub(-6), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- ---- end of includes/time.lua ----
-- ---- includes/cron.lua (edit it there, then run make) ----
-- Cron entries of a queue (README "Cron"): fields of the stats hash KEYS[11]:
--   cron:<name>       the entry, JSON: { job, args (JSON text), schedule, tz, id_prefix, missed,
--                     source ('cli' | 'file'), created }
--   cron-last:<name>  the latest tick (Unix ms) taken: enqueued, or skipped as missed
-- The workers compute the ticks (time zones are theirs); the scripts make each tick one job.

-- ARGV[i] as a cron entry name: 1..200 bytes, no control characters, '{' or '}' (the rules of
-- job ids, README "Names": a tick's job id is made from it); '' or absent -> nil.
local function cron_name(i)
  return name_arg(i, 'cron name', 200, false)
end
-- ---- end of includes/cron.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, name
qtype, err = queue_type(); if err then return redis.error_reply(err) end
name, err = cron_name(2); if err then return redis.error_reply(err) end
if not name then return redis.error_reply(argerr(2, 'cron name', 'is missing')) end
local text = ARGV[3] or ''
if #text > 65536 then return redis.error_reply(argerr(3, 'entry', 'must be at most 65536 bytes, got ' .. #text)) end
local ok, e = pcall(cjson.decode, text)
if not ok or type(e) ~= 'table' then return redis.error_reply(argerr(3, 'entry', 'must be a JSON object, got ' .. shown(text))) end
for _, k in ipairs({ 'job', 'args', 'schedule', 'tz', 'id_prefix' }) do
  if type(e[k]) ~= 'string' or e[k] == '' then
    return redis.error_reply(argerr(3, 'entry', 'field ' .. k .. ' must be a non-empty string'))
  end
end
if e.missed ~= 'once' and e.missed ~= 'skip' then return redis.error_reply(argerr(3, 'entry', "field missed must be 'once' or 'skip'")) end
if e.source ~= 'cli' and e.source ~= 'file' then return redis.error_reply(argerr(3, 'entry', "field source must be 'cli' or 'file'")) end
if not pcall(cjson.decode, e.args) then return redis.error_reply(argerr(3, 'entry', 'field args must be JSON text, got ' .. shown(e.args))) end

local now_ms = now()
local field = 'cron:' .. name
local old = redis.call('HGET', KEYS[11], field)
local result = 1
if old then
  if old == text then return 0 end
  local okd, o = pcall(cjson.decode, old)
  if okd and type(o) == 'table' and o.source ~= e.source then
    return redis.error_reply(SCRIPT .. ': cron entry ' .. shown(name) .. ' of queue ' .. shown(qname) ..
      (o.source == 'file' and ' is declared in a job file (' .. tostring(o.file or '?') .. '): change it there' or
       ' was added with jobrt cron add: delete it first (jobrt cron delete ' .. name .. ')'))
  end
  result = (okd and type(o) == 'table' and o.schedule == e.schedule and o.tz == e.tz) and 3 or 2
end
redis.call('HSET', KEYS[11], field, text)
if result ~= 3 or redis.call('HEXISTS', KEYS[11], 'cron-last:' .. name) == 0 then
  redis.call('HSET', KEYS[11], 'cron-last:' .. name, ms(now_ms))
end
redis.call('PUBLISH', KEYS[13], 'cron')
return result
