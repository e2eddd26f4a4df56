--[[ limit.lua: set, clear or read the limits of a queue (jobrt limit), across all workers.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  [2..] pairs name, value (none: only read); a value '' removes that limit:
        'rate'        'N/SECONDS': at most N (whole, 1..1000000) jobs start per SECONDS
                      (0.001..86400): one every SECONDS / N, so no window of SECONDS seconds
                      sees more than N starts (GCRA without a burst; reserve keeps its state in
                      the stats field rate-tat)
        'max-active'  N (whole, 1..1000000): at most N jobs of the queue hold a lease at once
Every pair is checked before anything is written. The stats hash gets rate-max, rate-per and
  max-active (a new or removed rate also clears rate-tat, so the new rate starts now). When
  anything changed, the wake channel gets the server time (Unix ms): workers held back by the
  old limits reserve again.
Returns: flat { 'rate-max', N|0, 'rate-per', SECONDS|0, 'max-active', N|0, 'paused', 0|1 }
  after the change (0: no such limit).
]]
-- Built by tools/scripts.lua from src/limit.lua and includes/: edit those, then run make.
local SCRIPT = 'limit'
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
-- optional decimal number within [lo, hi] ('' or absent -> dflt)
local function opt_num(i, name, lo, hi, whole, dflt)
  local v = ARGV[i]
  if v == nil or v == '' then return dflt end
  local n = (not v:find('[^%d%.eE+-]')) and tonumber(v) or nil
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    return nil, argerr(i, name, 'must be a number, got ' .. shown(v))
  end
  if whole and n ~= math.floor(n) then return nil, argerr(i, name, 'must be a whole number, got ' .. shown(v)) end
  if n < lo or n > hi then
    return nil, argerr(i, name, 'must be between ' .. lo .. ' and ' .. hi .. ', got ' .. shown(v))
  end
  return n
end
local function req_num(i, name, lo, hi, whole)
  local v = ARGV[i]
  if v == nil or v == '' then return nil, argerr(i, name, 'is missing') end
  return opt_num(i, name, lo, hi, whole)
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
-- ---- includes/flow.lua (edit it there, then run make) ----
-- Flow control of a queue (README "Flow control"). Its settings are fields of the stats hash
-- KEYS[11]: paused (server time it was paused, decimal seconds), rate-max and rate-per (at most
-- rate-max jobs start per rate-per seconds: GCRA without a burst, one start every
-- rate-per / rate-max seconds, so no window of rate-per seconds ever sees more than rate-max
-- starts; rate-tat is its state: the Unix ms from which the next start is allowed), max-active
-- (leases held at once, across all workers) and held ('1' while a reserve that max-active held
-- back is owed a wake-up: the next lease to end publishes one), and flow ('1' while any of
-- paused, rate-max, max-active is set: the one field reserve reads for a queue without any).

-- After pause or limit changed a setting: the field flow is 1 while any of paused, rate-max,
-- max-active is set, so that reserve reads one field for queues without any (README "Flow
-- control").
local function flow_mark()
  local s = redis.call('HMGET', KEYS[11], 'paused', 'rate-max', 'max-active')
  if s[1] or s[2] or s[3] then
    redis.call('HSET', KEYS[11], 'flow', '1')
  else
    redis.call('HDEL', KEYS[11], 'flow')
  end
end
-- ---- end of includes/flow.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
if #ARGV > 5 then return redis.error_reply(SCRIPT .. ': expected at most 5 ARGV (type, then the pairs rate, max-active), got ' .. #ARGV) end
if #ARGV % 2 ~= 1 then return redis.error_reply(SCRIPT .. ': ARGV after [1] must come in pairs (name, value), got ' .. (#ARGV - 1) .. ' values') end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end
local set, del, seen = {}, {}, {}
for i = 2, #ARGV, 2 do
  local name, v = ARGV[i], ARGV[i + 1]
  if seen[name] then return redis.error_reply(argerr(i, 'name', shown(name) .. ' is given twice')) end
  seen[name] = true
  if name == 'rate' then
    if v == '' then
      del[#del + 1] = 'rate-max'; del[#del + 1] = 'rate-per'; del[#del + 1] = 'rate-tat'
    else
      local n, per = v:match('^(%d+)/([%d%.]+)$')
      n, per = tonumber(n), tonumber(per)
      if not n or not per then
        return redis.error_reply(argerr(i + 1, 'rate', "must be 'N/SECONDS' (e.g. '5/1': 5 jobs per second), got " .. shown(v)))
      end
      if n < 1 or n > 1000000 then return redis.error_reply(argerr(i + 1, 'rate', 'N must be a whole number from 1 to 1000000, got ' .. shown(v))) end
      if per < 0.001 or per > 86400 then return redis.error_reply(argerr(i + 1, 'rate', 'SECONDS must be from 0.001 to 86400, got ' .. shown(v))) end
      set[#set + 1] = 'rate-max'; set[#set + 1] = tostring(n)
      set[#set + 1] = 'rate-per'; set[#set + 1] = tostring(per)
      del[#del + 1] = 'rate-tat'
    end
  elseif name == 'max-active' then
    if v == '' then
      del[#del + 1] = 'max-active'
    else
      local n, nerr = req_num(i + 1, 'max-active', 1, 1000000, true)
      if nerr then return redis.error_reply(nerr) end
      set[#set + 1] = 'max-active'; set[#set + 1] = tostring(n)
    end
  else
    return redis.error_reply(argerr(i, 'name', "must be 'rate' or 'max-active', got " .. shown(name)))
  end
end

local changed = false
if #set > 0 then
  local cur = {}
  for i = 1, #set, 2 do cur[#cur + 1] = set[i] end
  local old = redis.call('HMGET', KEYS[11], unpack(cur))
  for i = 1, #cur do if old[i] ~= set[2 * i] then changed = true end end
end
if #del > 0 then
  -- rate-tat alone changes nothing a user set: count the others
  for i = 1, #del do
    if del[i] ~= 'rate-tat' and redis.call('HEXISTS', KEYS[11], del[i]) == 1 then changed = true end
  end
end
if changed then
  if #del > 0 then redis.call('HDEL', KEYS[11], unpack(del)) end
  if #set > 0 then redis.call('HSET', KEYS[11], unpack(set)) end
  flow_mark()
  redis.call('PUBLISH', KEYS[13], ms(now()))
end
local s = redis.call('HMGET', KEYS[11], 'rate-max', 'rate-per', 'max-active', 'paused')
return { 'rate-max', tonumber(s[1]) or 0, 'rate-per', s[2] or '0', 'max-active', tonumber(s[3]) or 0,
         'paused', s[4] and 1 or 0 }
