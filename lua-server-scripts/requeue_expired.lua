--[[ requeue_expired.lua: take back the jobs whose lease ran out (seed 002's REQUEUE; seed 003's
stale-job flushing). Atomic, so every worker may run it at once: a job is taken back once.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type        QUEUE | LBQUEUE | DELQUEUE
  [2] limit       whole number 1..10000 of leases handled per call; '' = 1000
  [3] max_stalls  whole number 0..1000: lease losses a job survives regardless of its retries
                  (a crashed worker is not the job's fault); '' = 3
  [4] ttl_failed  seconds a failed record is kept (1..315360000); '' = 604800 (7 days)
Each expired lease "<worker>|<id>" of an executing job: record stalls+1. If stalls <= max_stalls
  or attempts <= retries (record field, 0 when absent): state=pending, error-reason says whose
  lease expired, back at the front (QUEUE: consuming end of the wait list; LBQUEUE: ready set,
  jobHash stays running; DELQUEUE: due set, now). Otherwise: state=finished, result=failed
  (no due field: reserve removed it), into jobrt:{Q}:failed, EXPIRE ttl_failed, LBQUEUE
  releases the jobHash (queues its parked job), DELQUEUE frees its identity@timestamp entry.
A job deleted while executing (lease score E + 0.5) whose lease ran out: its record is
  deleted and it frees the same claims; neither requeued nor failed, counted in cancelled (and
  in the stats counter total-cancelled). Every expired lease counts in total-expired.
The record keys of the failed and cancelled jobs are published on jobrt:{Q}:results, one per
  line, in one message.
Publishes: the wake channel (now, Unix ms) when jobs were put back or a parked job was queued.
Returns: { requeued, failed, cancelled }
]]
local SCRIPT = 'requeue_expired'
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
err = max_argv(4); if err then return redis.error_reply(err) end
local qtype, limit, max_stalls, ttl_failed
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end
max_stalls, err = opt_num(3, 'max_stalls', 0, 1000, true, 3); if err then return redis.error_reply(err) end
ttl_failed, err = opt_num(4, 'ttl_failed', 1, 315360000, true, 604800); if err then return redis.error_reply(err) end

local now_ms, now_s = now()
local prefix = KEYS[1]
local got = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, limit)
if #got == 0 then return { 0, 0, 0 } end
local expired, marked = {}, {}
for i = 1, #got, 2 do
  local e = tonumber(got[i + 1])
  expired[#expired + 1] = got[i]
  marked[#expired] = e ~= math.floor(e)     -- E + 0.5: deleted while it ran
end
redis.call('ZREM', KEYS[5], unpack(expired))

local requeued, failed, cancelled, wake = 0, 0, 0, false
local front, fails, finished = {}, {}, {}
for i = 1, #expired do
  local worker, jid = expired[i]:match('^([^|]*)|(.*)$')
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'state', 'attempts', 'retries', 'stalls', 'hash', 'dedup', 'order', 'priority')
  if f[1] == 'executing' and marked[i] then
    -- deleted while it ran, and its worker never reported back: it is gone for good
    redis.call('DEL', rec)
    if free_claims(qtype, jid, f[5], f[6]) then wake = true end
    finished[#finished + 1] = rec
    cancelled = cancelled + 1
  elseif f[1] == 'executing' then
    local stalls = (tonumber(f[4]) or 0) + 1
    local reason = 'lease expired: worker ' .. worker .. ' stopped renewing'
    if stalls <= max_stalls or (tonumber(f[2]) or 1) <= (tonumber(f[3]) or 0) then
      redis.call('HSET', rec, 'state', 'pending', 'stalls', stalls, 'error-reason', reason)
      if qtype == 'QUEUE' then
        front[#front + 1] = jid
      elseif qtype == 'LBQUEUE' then
        redis.call('ZADD', KEYS[3], -(tonumber(f[8]) or 1), (f[7] or '0') .. '|' .. jid)
      else
        redis.call('ZADD', KEYS[4], now_ms, jid)
      end
      requeued = requeued + 1
    else
      redis.call('HSET', rec, 'state', 'finished', 'result', 'failed', 'stalls', stalls, 'error-reason', reason,
        'error-exception', '', 'finished-created', now_s)
      redis.call('EXPIRE', rec, ttl_failed)
      fails[#fails + 1] = now_ms
      fails[#fails + 1] = jid
      finished[#finished + 1] = rec
      failed = failed + 1
      if free_claims(qtype, jid, f[5], f[6]) then wake = true end
    end
  end
end
if #front > 0 then
  -- the earliest expired job ends up at the consuming (right) end
  local rev = {}
  for i = #front, 1, -1 do rev[#rev + 1] = front[i] end
  redis.call('RPUSH', KEYS[2], unpack(rev))
end
if #fails > 0 then
  redis.call('ZADD', KEYS[6], unpack(fails))
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms - ttl_failed * 1000)
  redis.call('HINCRBY', KEYS[11], 'total-failed', failed)
end
if cancelled > 0 then redis.call('HINCRBY', KEYS[11], 'total-cancelled', cancelled) end
redis.call('HINCRBY', KEYS[11], 'total-expired', #expired)
if #finished > 0 then redis.call('PUBLISH', KEYS[14], table.concat(finished, '\n')) end
if requeued > 0 or wake then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
return { requeued, failed, cancelled }
