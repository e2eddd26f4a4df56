--[[ postpone.lua: put running jobs back for a while without using up a retry
(job:retry_later(seconds), BullMQ's RateLimitError): the handler met an outside limit.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] worker  worker id that holds the jobs
  then one group of 4 per job (1..1000 groups):
  [3+4k] id
  [4+4k] attempt  the attempt the lease belongs to
  [5+4k] delay    seconds from now (0..31536000, fractions allowed)
  [6+4k] reason   text for error-reason ('' = "postponed for N s")
Each job whose lease "<worker>|<attempt>|<id>" is held: lease removed, state=pending, due = now +
  delay, error-reason = reason, into jobrt:{Q}:due at that time (its order kept); failures are
  not counted (no retry is used up), stalls and suspect are removed (the attempt ended with an
  outcome); attempts stays (the next attempt gets attempts+1). LBQUEUE: the job keeps its
  jobHash (as a retry does); DELQUEUE: its identity@timestamp entry stays. Counted in the stats
  counter total-postponed. A job deleted while executing (lease score E + 0.5) is removed
  instead (as complete does: record deleted, claims freed, total-cancelled, its record key
  published on jobrt:{Q}:results). Leases not held are ignored.
Publishes: the wake channel (Unix ms) when a postponed job became the earliest due entry, or a
  parked job was queued, or a reserve held back by max-active is owed a wake-up (now).
Returns: the number of jobs postponed.
]]
local SCRIPT = 'postpone'
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "lease"
--- @include "flow"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
local qtype, worker
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
local n = #ARGV - 2
if n <= 0 then return redis.error_reply(argerr(3, 'id', 'is missing (give at least one job: id, attempt, delay, reason)')) end
if n % 4 ~= 0 then return redis.error_reply(SCRIPT .. ': ARGV after [2] must come in groups of 4 (id, attempt, delay, reason), got ' .. n .. ' values') end
if n > 4000 then return redis.error_reply(SCRIPT .. ': at most 1000 jobs per call, got ' .. (n / 4)) end
local jobs = {}
for b = 3, #ARGV, 4 do
  local j = {}
  j.id, err = req_str(b, 'id', 256); if err then return redis.error_reply(err) end
  j.attempt, err = req_num(b + 1, 'attempt', 1, 1e15, true); if err then return redis.error_reply(err) end
  j.delay, err = req_num(b + 2, 'delay', 0, 31536000); if err then return redis.error_reply(err) end
  j.reason = ARGV[b + 3]
  if #j.reason > 65536 then return redis.error_reply(argerr(b + 3, 'reason', 'must be at most 65536 bytes, got ' .. #j.reason)) end
  j.member = lease_member(worker, ARGV[b + 1], j.id)
  jobs[#jobs + 1] = j
end

local now_ms = now()
local prefix = KEYS[1]
local postponed, wake_at, dues, gone, seen = 0, nil, {}, {}, {}
local function wake(t) if not wake_at or t < wake_at then wake_at = t end end
for _, j in ipairs(jobs) do
  local e = not seen[j.member] and tonumber(redis.call('ZSCORE', KEYS[5], j.member))
  seen[j.member] = true
  if e then
    redis.call('ZREM', KEYS[5], j.member)
    local rec = prefix .. j.id
    local f = redis.call('HMGET', rec, 'pending-created', 'hash', 'dedup', 'stalls', 'suspect')
    if e ~= math.floor(e) or redis.call('EXISTS', rec) == 0 then
      -- deleted while it ran (or its record vanished): it has stopped, it goes for good
      redis.call('DEL', rec)
      if free_claims(qtype, j.id, f[2], f[3]) then wake(now_ms) end
      gone[#gone + 1] = rec
    else
      if f[4] or f[5] then redis.call('HDEL', rec, 'stalls', 'suspect') end
      local due_ms = now_ms + math.floor(j.delay * 1000 + 0.5)
      local reason = j.reason ~= '' and j.reason or string.format('postponed for %g s', j.delay)
      redis.call('HSET', rec, 'state', 'pending', 'error-reason', reason, 'due', string.format('%.3f', due_ms / 1000))
      dues[#dues + 1] = due_ms
      dues[#dues + 1] = order_of(f[1]) .. '|' .. j.id
      postponed = postponed + 1
    end
  end
end
if #dues > 0 then
  redis.call('ZADD', KEYS[4], unpack(dues))
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  for i = 1, #dues, 2 do if dues[i + 1] == first[1] then wake(dues[i]) end end
  redis.call('HINCRBY', KEYS[11], 'total-postponed', postponed)
end
if #gone > 0 then
  redis.call('HINCRBY', KEYS[11], 'total-cancelled', #gone)
  redis.call('PUBLISH', KEYS[14], table.concat(gone, '\n'))
end
if (postponed > 0 or #gone > 0) and flow_freed() then wake(now_ms) end
if wake_at then redis.call('PUBLISH', KEYS[13], ms(wake_at)) end
return postponed
