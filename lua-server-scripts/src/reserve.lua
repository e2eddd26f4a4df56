--[[ reserve.lua: lease up to N ready jobs to one worker (seed 002's RESERVE), in one call.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type        QUEUE | LBQUEUE | DELQUEUE
  [2] worker      worker id, 1..128 bytes, no '|'
  [3] count       whole number 1..1000: how many jobs at most
  [4] lease       seconds (0.001..86400) the jobs are held without a renew
  [5] ttl_failed  seconds a record failed here is kept (0..315360000; 0: removed at once); '' or
                  absent = 604800
  [6] alone       '1' when the worker runs nothing at the moment, so it may be given a job that
                  must run alone in its process; '' or '0' otherwise
Order: due entries of jobrt:{Q}:due first (DELQUEUE jobs whose time has come, retries whose
  backoff has passed, delayed QUEUE jobs), earliest first and first in, first out among equal
  due times; then QUEUE: jobs with a priority above 0 from the ready set (highest first), the
  wait list (priority 0, oldest first), jobs with a priority below 0; LBQUEUE: highest
  priority of the ready set; first in, first out among equal priorities. A due QUEUE job that
  has a priority first joins the ready set (its place by priority).
Flow control (README "Flow control", settings in jobrt:{Q}:stats): a paused queue hands out
  nothing; max-active caps the leases held at once (jobrt:{Q}:active) across all workers; a
  rate limit (rate-max per rate-per seconds) hands out one job per call at most and moves the
  next allowed start (rate-tat) on by rate-per / rate-max seconds per job. The reply's held
  and retry_at say why fewer jobs came than asked for and when to ask again.
Each job: record state=executing, executing-created, worker, attempts+1 (the attempt: it only
  grows, and the lease belongs to it); due, error-reason and error-exception (of an earlier
  attempt, or the wait for its due time) removed for a job that ran before or came from the
  due set; lease member "<worker>|<attempt>|<id>" in jobrt:{Q}:active with score =
  lease expiry (Unix ms); LBQUEUE: its jobHash is marked running (jobrt:{Q}:lb:running), so
  identical jobs wait in jobrt:{Q}:lb:parked. Each lease also gets a fencing token: the stats
  counter total-reserved after this lease was counted, so tokens only grow across every job
  and attempt of the queue (a jobHash's later holder always has a larger token).
Jobs that must run alone: a job taken back from a worker that stopped renewing its lease (record
  field suspect) is handed out only as the first job to a worker that runs nothing (ARGV[6]
  alone), and then as its only job, so that when such a job crashes its worker again, nothing
  else is hit and the loss is its own (see requeue_expired: poison jobs). A worker that is busy
  meets it as the end of this call: the job and those after it stay where they were, and the
  reply says `blocked` (start nothing new once these jobs are running: finish them, then
  reserve with alone).
Hand-written entries (an id pushed by hand, seed 004) that cannot run are not handed out:
  no record (or a record already executing): dropped, counted in the stats counter
  total-dropped; a record without a function field: finished as failed right here (result
  failed, error-reason "record has no 'function' field: set HSET jobrt:{Q}:job:<id> function
  <job name>", into jobrt:{Q}:failed, EXPIRE ttl_failed, counted in total-failed, its record
  key published on jobrt:{Q}:results), so it shows in the failed list.
Publishes: the wake channel (now, Unix ms) only when such a failed LBQUEUE job held its jobHash
  and a parked job was queued.
Returns: { now, next_due, next_lease, jobs, blocked, held, retry_at, more }
  now         server time, Unix ms
  next_due    earliest score left in jobrt:{Q}:due (Unix ms), or nil: arm a timer for it
  next_lease  earliest lease expiry in jobrt:{Q}:active (Unix ms), or nil: run requeue_expired then
  jobs        array of { id, function, args, attempt, retries, timeout, jobHash, fence, alone }
              (attempt counts from 1; retries/timeout/jobHash nil when not set on the job;
              fence the fencing token; alone 1 when the worker must run this job by itself)
  blocked     1 when a job that must run alone is next and this worker may not take it now (not
              alone, or it took other jobs first), else 0
  held        nil, or why no more jobs may start now: 'paused' (reserve again on a wake-up:
              resume publishes one), 'max-active' (on a wake-up: the next lease to end
              publishes one), 'rate' (at retry_at)
  retry_at    with held 'rate': the Unix ms from which the rate limit allows the next start
  more        1 when this call took as many candidates as it asked for (the queue may hold more
              ready jobs: reserve again when there are free slots), else 0: the queue had no
              more ready jobs, and a later enqueue that makes one ready publishes a wake-up
]]
local SCRIPT = 'reserve'
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "lease"
--- @include "failed"
--- @include "flow"
--- @include "priority"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(6); if err then return redis.error_reply(err) end
local qtype, worker, count, lease, ttl_failed
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
count, err = req_num(3, 'count', 1, 1000, true); if err then return redis.error_reply(err) end
lease, err = req_num(4, 'lease', 0.001, 86400); if err then return redis.error_reply(err) end
ttl_failed, err = opt_num(5, 'ttl_failed', 0, 315360000, true, 604800); if err then return redis.error_reply(err) end
local alone = ARGV[6]
if alone ~= nil and alone ~= '' and alone ~= '0' and alone ~= '1' then
  return redis.error_reply(argerr(6, 'alone', "must be '1', '0' or '', got " .. shown(alone)))
end
alone = alone == '1'

local now_ms, now_s = now()
local prefix = KEYS[1]
local flow
count, flow = flow_limits(count, now_ms)          -- paused, max-active, rate (includes/flow.lua)
if count == 0 then
  flow_settle(flow, now_ms)
  return reserve_reply(now_ms, {}, 0, flow)
end

-- candidates, in the order they are handed out: { id, source, member, score }
-- source: 'due' (member/score of jobrt:{Q}:due), 'wait' (QUEUE list), 'ready' (LBQUEUE set)
local cands = {}
-- Due entries, earliest first. The first read is also the next due time when none is due yet
-- (the common case: one read); when some are due, up to count of them are taken and the entry
-- after them (count + 1 read by rank) is the next due time.
local next_due = false
local due = {}
local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if first[2] then
  if tonumber(first[2]) <= now_ms then
    local got = redis.call('ZRANGE', KEYS[4], 0, count, 'WITHSCORES')
    for i = 1, #got, 2 do
      local sc = tonumber(got[i + 1])
      if #due < 2 * count and sc <= now_ms then
        due[#due + 1] = got[i]
        due[#due + 1] = got[i + 1]
      else
        next_due = sc
        break
      end
    end
  else
    next_due = tonumber(first[2])
  end
end
if qtype == 'QUEUE' and #due > 0 then due = promote_due(due) end   -- by priority (includes/priority.lua)
if #due > 0 then
  local members = {}
  for i = 1, #due, 2 do
    members[#members + 1] = due[i]
    cands[#cands + 1] = { due[i]:match('^%d+|(.*)$') or due[i], 'due', due[i], due[i + 1] }
  end
  redis.call('ZREM', KEYS[4], unpack(members))
end
local rest = count - #cands
if rest > 0 then
  if qtype == 'QUEUE' then
    queue_candidates(cands, rest)                 -- by priority, the wait list as priority 0
  elseif qtype == 'LBQUEUE' then
    local got = redis.call('ZPOPMIN', KEYS[3], rest)
    for i = 1, #got, 2 do cands[#cands + 1] = { got[i]:match('^%d+|(.*)$'), 'ready', got[i], got[i + 1] } end
  end
end

local jobs, leases, entries, running = {}, {}, {}, {}
local fails, finished, dropped, wake = {}, {}, 0, false
local blocked = 0
local stop_at = nil      -- index of the first candidate not taken (it and those after go back)
local expiry = now_ms + math.floor(lease * 1000 + 0.5)
-- numbers become text once here: number to text is sprintf in Redis' Lua, dear per job
local expiry_s = string.format('%d', expiry)
for i = 1, #cands do
  local jid, source = cands[i][1], cands[i][2]
  local rec = prefix .. jid
  -- 1 function, 2 args, 3 attempts, 4 retries, 5 timeout, 6 hash, 7 state, 8 suspect
  local f = redis.call('HMGET', rec, 'function', 'args', 'attempts', 'retries', 'timeout', 'hash', 'state', 'suspect')
  if f[1] and f[7] ~= 'executing' and f[8] and not (alone and #jobs == 0) then
    -- it must run alone and this worker is busy (or already took jobs in this call)
    stop_at = i
    blocked = 1
    break
  end
  if f[1] and f[7] ~= 'executing' then
    local attempt = (tonumber(f[3]) or 0) + 1
    -- a new attempt starts clean: an earlier attempt's error and the due time it waited for go
    -- (so a job that then succeeds keeps neither; complete does not need to remove them). Only
    -- a job that ran before or waited in the due set can have them: a first attempt from the
    -- wait list or the ready set costs nothing here
    if f[3] or source == 'due' then redis.call('HDEL', rec, 'due', 'error-reason', 'error-exception') end
    local a = f[3] and string.format('%d', attempt) or '1'     -- a first attempt needs no sprintf
    redis.call('HSET', rec, 'state', 'executing', 'executing-created', now_s, 'worker', worker, 'attempts', a)
    leases[#leases + 1] = expiry_s
    leases[#leases + 1] = worker .. '|' .. a .. '|' .. jid     -- lease_member (includes/lease.lua)
    jobs[#jobs + 1] = { jid, f[1], f[2], attempt, f[4], f[5], f[6], 0, f[8] and 1 or 0 }
    if qtype == 'LBQUEUE' and f[6] then
      if source == 'ready' then entries[#entries + 1] = f[6] end
      running[#running + 1] = f[6]
      running[#running + 1] = jid
    end
    if f[8] then
      -- it runs alone: nothing more for this worker in this call
      stop_at = i + 1
      break
    end
  elseif f[7] == 'executing' or redis.call('EXISTS', rec) == 0 then
    -- an id pushed by hand without a record (or one that runs already): nothing to run
    dropped = dropped + 1
  else
    -- a hand-written record without a job name: fail it where `jobrt failed` shows it
    local dedup = redis.call('HGET', rec, 'dedup')
    redis.call('HSET', rec, 'state', 'finished', 'result', 'failed',
      'error-reason', "record has no 'function' field: set HSET " .. rec .. ' function <job name>',
      'error-exception', '', 'finished-created', now_s)
    redis.call('HDEL', rec, 'due')
    if qtype == 'LBQUEUE' and f[6] and source == 'ready' and redis.call('HGET', KEYS[7], f[6]) == jid then
      redis.call('HDEL', KEYS[7], f[6])
    end
    if free_claims(qtype, jid, f[6], dedup) then wake = true end
    keep_failed(rec, jid, ttl_failed, now_ms, fails)
    finished[#finished + 1] = rec
  end
end
if stop_at then
  -- what was not taken goes back exactly where it was
  local back_wait = {}
  for i = #cands, stop_at, -1 do
    local c = cands[i]
    if c[2] == 'due' then
      redis.call('ZADD', KEYS[4], c[4], c[3])
      local sc = tonumber(c[4])
      if not next_due or sc < next_due then next_due = sc end
    elseif c[2] == 'ready' then
      redis.call('ZADD', KEYS[3], c[4], c[3])
    else
      back_wait[#back_wait + 1] = c[1]
    end
  end
  if #back_wait > 0 then redis.call('RPUSH', KEYS[2], unpack(back_wait)) end
end
flow_started(#jobs, now_ms, flow)
if #leases > 0 then redis.call('ZADD', KEYS[5], unpack(leases)) end
flow_settle(flow, now_ms)
if #leases > 0 then
  local top = redis.call('HINCRBY', KEYS[11], 'total-reserved', #jobs)
  for k = 1, #jobs do jobs[k][8] = top - #jobs + k end
end
if #entries > 0 then redis.call('HDEL', KEYS[7], unpack(entries)) end
if #running > 0 then redis.call('HSET', KEYS[8], unpack(running)) end
if #finished > 0 then
  flush_failed(fails, now_ms)
  redis.call('HINCRBY', KEYS[11], 'total-failed', #finished)
  redis.call('PUBLISH', KEYS[14], table.concat(finished, '\n'))
end
if dropped > 0 then redis.call('HINCRBY', KEYS[11], 'total-dropped', dropped) end
if wake then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end

-- more: the candidates filled the count, so the queue may hold more ready jobs (a worker that
-- got fewer jobs than it asked for because some ids were dropped asks again)
return reserve_reply(now_ms, jobs, blocked, flow, next_due, #cands >= count and 1 or 0)
