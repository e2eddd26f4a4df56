--[[ requeue_expired.lua: take back the jobs whose lease ran out (seed 002's REQUEUE; seed 003's
stale-job flushing). Atomic, so every worker may run it at once: a job is taken back once.

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV ('' = default):
  [1] type        QUEUE | LBQUEUE | DELQUEUE
  [2] limit       whole number 1..10000 of leases handled per call; '' = 1000
  [3] max_stalls  whole number 0..1000: lease losses in a row a job survives; '' = 2
  [4] ttl_failed  seconds a failed record is kept (0..315360000; 0: removed at once); '' = 604800
A lost lease is not the job's fault (its worker crashed, froze or lost Redis): it uses up no
  retry. Each expired lease "<worker>|<attempt>|<id>" whose attempt is the job's current one
  (state executing, attempts = attempt): record stalls+1 (lease losses in a row; an outcome
  from complete resets them). stalls <= max_stalls: state=pending, suspect=1 (from now on the
  job runs alone in its worker process, see reserve, so a later loss is its own doing),
  error-reason says whose lease expired, and the job goes back to its place in the order
  (QUEUE: the consuming end of the wait list, in enqueue order among those taken back;
  LBQUEUE: the ready set by priority and enqueue order, jobHash still held; DELQUEUE: the due
  set at its due time). Otherwise it is a poison job (one that crashed or froze its worker in
  every one of those attempts, the last ones while running alone): state=finished,
  result=failed, error-reason says so, into jobrt:{Q}:failed, EXPIRE ttl_failed, LBQUEUE
  releases the jobHash (queues its parked job), DELQUEUE frees its identity@timestamp entry.
A job deleted while executing (lease score E + 0.5) whose lease ran out: its record is
  deleted and it frees the same claims; neither requeued nor failed, counted in cancelled (and
  in the stats counter total-cancelled). A lease of an attempt that is not the job's current
  one is only removed; a job whose record vanished under the lease has what points at its id
  freed (its LBQUEUE jobHash, its DELQUEUE identity entry). Every expired lease counts in
  total-expired.
Flows (README "Flows"): a poison job, or a job whose record vanished, that is the child of a
  flow gets its news for the parent in the outbox (as complete does).
The record keys of the failed and cancelled jobs are published on jobrt:{Q}:results, one per
  line, in one message.
Publishes: the wake channel (now, Unix ms) when jobs were put back, a parked job was queued,
  or a reserve held back by max-active is owed a wake-up (stats field held).
Returns: { requeued, failed, cancelled, flow_entries } (outbox entries written)
]]
local SCRIPT = 'requeue_expired'
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "lease"
--- @include "failed"
--- @include "flow"
--- @include "flows"

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
err = max_argv(4); if err then return redis.error_reply(err) end
local qtype, limit, max_stalls, ttl_failed
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end
max_stalls, err = opt_num(3, 'max_stalls', 0, 1000, true, 2); if err then return redis.error_reply(err) end
ttl_failed, err = opt_num(4, 'ttl_failed', 0, 315360000, true, 604800); if err then return redis.error_reply(err) end

local now_ms, now_s = now()
local prefix = KEYS[1]
local got = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, limit)
if #got == 0 then return { 0, 0, 0, 0 } end
local expired, marked = {}, {}
for i = 1, #got, 2 do
  local e = tonumber(got[i + 1])
  expired[#expired + 1] = got[i]
  marked[#expired] = e ~= math.floor(e)     -- E + 0.5: deleted while it ran
end
redis.call('ZREM', KEYS[5], unpack(expired))

local requeued, failed, cancelled, wake, nflow = 0, 0, 0, false, 0
local front, fails, finished = {}, {}, {}
for i = 1, #expired do
  local worker, attempt, jid = lease_parts(expired[i])
  local rec = jid and prefix .. jid
  local f = rec and redis.call('HMGET', rec, 'state', 'attempts', 'stalls', 'hash', 'dedup', 'pending-created',
    'priority', 'due') or {}
  local current = f[1] == 'executing' and tonumber(f[2]) == tonumber(attempt)
  if rec and not f[1] and redis.call('EXISTS', rec) == 0 then
    -- its record vanished under the lease (deleted by hand, evicted): free what points at it
    if free_vanished(qtype, jid) then wake = true end
    local links, parents = flow_lookup({ jid })
    nflow = nflow + flow_ended(jid, links[jid], parents[jid], 'deleted', '', 0, true, now_ms)
  elseif current and marked[i] then
    -- deleted while it ran, and its worker never reported back: it is gone for good
    redis.call('DEL', rec)
    if free_claims(qtype, jid, f[4], f[5]) then wake = true end
    finished[#finished + 1] = rec
    cancelled = cancelled + 1
  elseif current then
    local stalls = (tonumber(f[3]) or 0) + 1
    if stalls <= max_stalls then
      redis.call('HSET', rec, 'state', 'pending', 'stalls', stalls, 'suspect', 1, 'error-reason',
        'lease expired: worker ' .. worker .. ' stopped renewing (attempt ' .. attempt .. ')')
      put_back(qtype, jid, { f[6], f[7], f[8], f[5] }, now_ms, front)
      requeued = requeued + 1
    else
      local reason = 'poison job: its worker stopped renewing its lease in ' .. stalls .. ' attempt(s) in a row' ..
        (stalls > 1 and ', the later ones while it ran alone in its worker process' or '') ..
        ' (last: worker ' .. worker .. ', attempt ' .. attempt .. '): it likely crashes or freezes ' ..
        'the workers that run it; fix the handler, then retry it (jobrt failed ' .. qname .. ' retry)'
      redis.call('HSET', rec, 'state', 'finished', 'result', 'failed', 'stalls', stalls, 'error-reason', reason,
        'error-exception', '', 'finished-created', now_s)
      redis.call('HDEL', rec, 'suspect')
      keep_failed(rec, jid, ttl_failed, now_ms, fails)
      finished[#finished + 1] = rec
      failed = failed + 1
      if free_claims(qtype, jid, f[4], f[5]) then wake = true end
      local links, parents = flow_lookup({ jid })
      nflow = nflow + flow_ended(jid, links[jid], parents[jid], 'failed', reason, ttl_failed, ttl_failed == 0, now_ms)
    end
  end
end
flush_front(front)
if failed > 0 then
  flush_failed(fails, now_ms)
  redis.call('HINCRBY', KEYS[11], 'total-failed', failed)
end
if cancelled > 0 then redis.call('HINCRBY', KEYS[11], 'total-cancelled', cancelled) end
redis.call('HINCRBY', KEYS[11], 'total-expired', #expired)
if #finished > 0 then redis.call('PUBLISH', KEYS[14], table.concat(finished, '\n')) end
if flow_freed() then wake = true end        -- max-active: a held reserve may go
if requeued > 0 or wake then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
flow_wake(nflow, now_ms)
return { requeued, failed, cancelled, nflow }
