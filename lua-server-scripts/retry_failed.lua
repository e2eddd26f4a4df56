--[[ retry_failed.lua: queue the jobs of the failed set again (seed 003's retryFailedJobs).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of failed jobs handled per call (oldest first); '' = 1000
  [3] id     optional: retry only this job (when it is in the failed set); limit is ignored
Each failed job whose record still exists: failures, stalls and suspect removed (attempts stays:
  it only grows), result fields removed, no expiry, state=pending, queued as if new (QUEUE: wait list, or the ready set when it has a priority; DELQUEUE: due now; LBQUEUE: merged
  into the waiting or parked entry of its jobHash (its record is then deleted), parked when the
  jobHash runs, else a new entry). Failed-set entries whose record expired are dropped.
Publishes: the wake channel (now, Unix ms) when jobs were queued.
Returns: { queued, examined }: jobs queued again, failed-set entries handled (call again while
  examined equals limit).
]]
-- Built by tools/scripts.lua from src/retry_failed.lua and includes/: edit those, then run make.
local SCRIPT = 'retry_failed'
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
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. string.format('%06d', us), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- The enqueue order of a job: its pending-created time ('1763841706.123456') as 16 digits of
-- microseconds, so that entries with equal scores sort first in, first out ('0000000000000000'
-- for a hand-written record without one).
local function order_of(created)
  local s, us = tostring(created):match('^(%d+)%.(%d%d%d%d%d%d)$')
  if not s then return '0000000000000000' end
  return string.format('%010d', tonumber(s)) .. us
end
-- ---- end of includes/time.lua ----
-- ---- includes/priority.lua (edit it there, then run make) ----
-- QUEUE priorities (README "Queue types"). A QUEUE job enqueued with a priority other than 0
-- waits in the ready set KEYS[3] (score -priority, member "<order>|<id>"), the others in the wait
-- list KEYS[2], which counts as priority 0: highest priority first, first in, first out among
-- equal priorities.

-- A QUEUE job with a priority goes back to the ready set; true when it did (others go to the
-- wait list: the caller's business).
local function queue_put_back(jid, order, priority)
  local p = tonumber(priority)
  if not p or p == 0 then return false end
  redis.call('ZADD', KEYS[3], -p, order .. '|' .. jid)
  return true
end
-- ---- end of includes/priority.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, limit, one
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end
one, err = name_arg(3, 'id', 256); if err then return redis.error_reply(err) end

local now_ms = now()
local prefix = KEYS[1]
local ids
if one then
  ids = redis.call('ZSCORE', KEYS[6], one) and { one } or {}
else
  ids = redis.call('ZRANGE', KEYS[6], 0, limit - 1)
end
if #ids == 0 then return { 0, 0 } end
redis.call('ZREM', KEYS[6], unpack(ids))
local n, wait = 0, {}
for i = 1, #ids do
  local jid = ids[i]
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'state', 'result', 'hash', 'pending-created', 'priority')
  if f[1] == 'finished' and f[2] == 'failed' then
    n = n + 1
    redis.call('HDEL', rec, 'result', 'result-value', 'error-reason', 'error-exception', 'finished-created',
      'executing-created', 'worker', 'dedup', 'due', 'failures', 'stalls', 'suspect')
    -- attempts stays: it only grows (the fencing token of each new attempt)
    redis.call('HSET', rec, 'state', 'pending')
    redis.call('PERSIST', rec)
    if qtype == 'QUEUE' then
      if not queue_put_back(jid, order_of(f[4]), f[5]) then wait[#wait + 1] = jid end
    elseif qtype == 'DELQUEUE' then
      redis.call('ZADD', KEYS[4], now_ms, order_of(f[4]) .. '|' .. jid)
    else
      local h = f[3] or ''
      local running = redis.call('HGET', KEYS[8], h)
      local other
      if running then other = redis.call('HGET', KEYS[9], h) else other = redis.call('HGET', KEYS[7], h) end
      if other then
        -- one entry per jobHash: count this job into the waiting (or parked) one
        redis.call('DEL', rec)
        if running then
          redis.call('HINCRBYFLOAT', prefix .. other, 'priority', 1)
        else
          local o = redis.call('HGET', prefix .. other, 'pending-created')
          local p = -tonumber(redis.call('ZINCRBY', KEYS[3], -1, order_of(o) .. '|' .. other))
          redis.call('HSET', prefix .. other, 'priority', tostring(p))
        end
      elseif running then
        redis.call('HSET', KEYS[9], h, jid)
      else
        redis.call('HSET', KEYS[7], h, jid)
        redis.call('ZADD', KEYS[3], -(tonumber(f[5]) or 1), order_of(f[4]) .. '|' .. jid)
      end
    end
  end
end
if #wait > 0 then redis.call('LPUSH', KEYS[2], unpack(wait)) end
if n > 0 then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
return { n, #ids }
