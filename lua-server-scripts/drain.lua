--[[ drain.lua: remove the waiting and delayed jobs of a queue (jobrt drain), keep the running
and failed ones.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of jobs removed per call; '' = 1000
Removes, in this order, up to limit entries: the due set (delayed jobs, DELQUEUE jobs, retries
  in backoff), the ready set (LBQUEUE entries, QUEUE jobs with a priority), the wait list
  (oldest first) and the parked LBQUEUE jobs. Each one's record is deleted (unless it is
  executing: an id pushed twice by hand), with what it claimed: its DELQUEUE identity@timestamp
  entry, its LBQUEUE waiting entry, parked slot, and the jobHash it held while waiting for a
  retry (no parked job is queued for it: those are drained too). Executing jobs (their leases,
  claims and records), the failed set, finished records, counters, settings (paused, limits)
  and cron entries stay.
Publishes: the record keys of the removed jobs on jobrt:{Q}:results, one per line, in one
  message (whoever waits for one of them learns that it is gone).
Returns: { removed, more } where more is 1 when waiting jobs are left (call again).
]]
-- Built by tools/scripts.lua from src/drain.lua and includes/: edit those, then run make.
local SCRIPT = 'drain'
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
-- ---- end of includes/args.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, limit
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end

local prefix = KEYS[1]
local ids = {}
local function id_of(member) return member:match('^%d+|(.*)$') or member end
for _, k in ipairs({ KEYS[4], KEYS[3] }) do
  local left = limit - #ids
  if left > 0 then
    local got = redis.call('ZRANGE', k, 0, left - 1)
    if #got > 0 then
      redis.call('ZREM', k, unpack(got))
      for i = 1, #got do ids[#ids + 1] = id_of(got[i]) end
    end
  end
end
local left = limit - #ids
if left > 0 then
  local got = redis.call('LRANGE', KEYS[2], -left, -1)
  if #got > 0 then
    redis.call('LTRIM', KEYS[2], 0, -(#got + 1))
    for i = #got, 1, -1 do ids[#ids + 1] = got[i] end
  end
end
left = limit - #ids
if left > 0 and redis.call('HLEN', KEYS[9]) > 0 then
  local flat = redis.call('HGETALL', KEYS[9])
  local fields = {}
  for i = 1, #flat, 2 do
    if #fields >= left then break end
    fields[#fields + 1] = flat[i]
    ids[#ids + 1] = flat[i + 1]
  end
  redis.call('HDEL', KEYS[9], unpack(fields))
end

local gone = {}
for _, jid in ipairs(ids) do
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'state', 'hash', 'dedup')
  if f[1] ~= 'executing' then
    if f[1] then
      redis.call('DEL', rec)
      gone[#gone + 1] = rec
    end
    if f[3] and redis.call('HGET', KEYS[10], f[3]) == jid then redis.call('HDEL', KEYS[10], f[3]) end
    if qtype == 'LBQUEUE' and f[2] then
      for _, k in ipairs({ KEYS[7], KEYS[8], KEYS[9] }) do
        if redis.call('HGET', k, f[2]) == jid then redis.call('HDEL', k, f[2]) end
      end
    end
  end
end
if #gone > 0 then redis.call('PUBLISH', KEYS[14], table.concat(gone, '\n')) end
local more = redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[3]) + redis.call('LLEN', KEYS[2]) +
  redis.call('HLEN', KEYS[9])
return { #gone, more > 0 and 1 or 0 }
