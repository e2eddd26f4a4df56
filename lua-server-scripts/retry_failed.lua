--[[ retry_failed.lua: queue the jobs of the failed set again (seed 003's retryFailedJobs).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of failed jobs handled per call (oldest first); '' = 1000
Each failed job whose record still exists: attempts=0, stalls=0, result fields removed, no
  expiry, state=pending, queued as if new (QUEUE: wait list; DELQUEUE: due now; LBQUEUE: merged
  into the waiting or parked entry of its jobHash (its record is then deleted), parked when the
  jobHash runs, else a new entry). Failed-set entries whose record expired are dropped.
Publishes: the wake channel (now, Unix ms) when jobs were queued.
Returns: { queued, examined }: jobs queued again, failed-set entries handled (call again while
  examined equals limit).
]]
local SCRIPT = 'retry_failed'
-- ---- shared helpers: this block is the same text in every script (see lua-server-scripts/README.md, "Conventions") ----
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. v .. "'"
end
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
-- KEYS must be the 14 standard keys of one queue; returns the queue name or nil, message
local function check_keys()
  if #KEYS ~= 14 then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix = KEYS[1]:match('^(jobrt:{.+}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  for i = 2, 14 do
    if KEYS[i] ~= prefix .. SUFFIX[i] then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(prefix .. SUFFIX[i]) .. ', got ' .. shown(KEYS[i])
    end
  end
  return prefix:match('^jobrt:{(.+)}:$')
end
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
-- optional string: '' or absent -> nil
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
local function req_num(i, name, lo, hi, whole)
  local v = ARGV[i]
  if v == nil or v == '' then return nil, argerr(i, name, 'is missing') end
  return opt_num(i, name, lo, hi, whole)
end
-- a worker id: 1..128 bytes without '|'
local function worker_id(i)
  local w, err = req_str(i, 'worker', 128)
  if w and w:find('|', 1, true) then return nil, argerr(i, 'worker', "must not contain '|', got " .. shown(w)) end
  return w, err
end
-- server time: milliseconds (number), decimal seconds with microseconds (string), microseconds
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. string.format('%06d', us), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- LBQUEUE: job jid stops holding jobHash h (when it holds it) and the job parked behind h is
-- queued. Returns true when a parked job was queued (the caller publishes a wake-up).
local function lb_release(h, jid)
  if redis.call('HGET', KEYS[8], h) ~= jid then return false end
  redis.call('HDEL', KEYS[8], h)
  local p = redis.call('HGET', KEYS[9], h)
  if not p then return false end
  redis.call('HDEL', KEYS[9], h)
  local pf = redis.call('HMGET', KEYS[1] .. p, 'order', 'priority')
  redis.call('HSET', KEYS[7], h, p)
  redis.call('ZADD', KEYS[3], -(tonumber(pf[2]) or 1), (pf[1] or '0') .. '|' .. p)
  return true
end
-- job jid stopped for good: it frees its LBQUEUE jobHash h and its DELQUEUE identity@timestamp
-- entry dedup (either may be false). Returns true when a parked job was queued.
local function free_claims(qtype, jid, h, dedup)
  if dedup and redis.call('HGET', KEYS[10], dedup) == jid then redis.call('HDEL', KEYS[10], dedup) end
  if qtype == 'LBQUEUE' and h then return lb_release(h, jid) end
  return false
end
-- ---- end of shared helpers ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, limit
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end

local now_ms = now()
local prefix = KEYS[1]
local ids = redis.call('ZRANGE', KEYS[6], 0, limit - 1)
if #ids == 0 then return { 0, 0 } end
redis.call('ZREM', KEYS[6], unpack(ids))
local n, wait = 0, {}
for i = 1, #ids do
  local jid = ids[i]
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'state', 'result', 'hash', 'order', 'priority')
  if f[1] == 'finished' and f[2] == 'failed' then
    n = n + 1
    redis.call('HDEL', rec, 'result', 'result-value', 'error-reason', 'error-exception', 'finished-created',
      'executing-created', 'worker', 'dedup', 'due')
    redis.call('HSET', rec, 'state', 'pending', 'attempts', 0, 'stalls', 0)
    redis.call('PERSIST', rec)
    if qtype == 'QUEUE' then
      wait[#wait + 1] = jid
    elseif qtype == 'DELQUEUE' then
      redis.call('ZADD', KEYS[4], now_ms, jid)
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
          local o = redis.call('HGET', prefix .. other, 'order')
          local p = -tonumber(redis.call('ZINCRBY', KEYS[3], -1, (o or '0') .. '|' .. other))
          redis.call('HSET', prefix .. other, 'priority', tostring(p))
        end
      elseif running then
        redis.call('HSET', KEYS[9], h, jid)
      else
        redis.call('HSET', KEYS[7], h, jid)
        redis.call('ZADD', KEYS[3], -(tonumber(f[5]) or 1), (f[4] or '0') .. '|' .. jid)
      end
    end
  end
end
if #wait > 0 then redis.call('LPUSH', KEYS[2], unpack(wait)) end
if n > 0 then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
return { n, #ids }
