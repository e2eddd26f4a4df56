--[[ enqueue.lua: add one job to a queue (seed 002's PUT), atomically: record, queue entry, wake-up.

KEYS: the 14 standard keys of queue Q, in order (README "Keys"):
  jobrt:{Q}:job: jobrt:{Q}:wait jobrt:{Q}:ready jobrt:{Q}:due jobrt:{Q}:active jobrt:{Q}:failed
  jobrt:{Q}:lb:entry jobrt:{Q}:lb:running jobrt:{Q}:lb:parked jobrt:{Q}:dedup jobrt:{Q}:stats
  jobrt:{Q}:seq jobrt:{Q}:wake jobrt:{Q}:results
ARGV ('' = not given):
  [1] type       QUEUE | LBQUEUE | DELQUEUE (the caller reads it from RESERVED:QCONFIG)
  [2] function   job name, 1..256 bytes
  [3] args       JSON text, stored verbatim
  [4] id         client id, 1..256 bytes, not all digits; '' = generated (INCR jobrt:{Q}:seq)
  [5] jobHash    1..256 bytes; required by LBQUEUE, identity for DELQUEUE, ignored by QUEUE
  [6] priority   number; LBQUEUE: '' = count identical enqueues; QUEUE: highest first, '' = 0
                 (the wait list); not for DELQUEUE
  [7] timestamp  absolute Unix seconds, fractions allowed (QUEUE, DELQUEUE); '' = now
  [8] delay      seconds from now, fractions allowed (QUEUE, DELQUEUE); not with [7]
  [9] retries    whole number 0..1000 of extra attempts after a failure; '' = the worker's default
  [10] timeout   seconds a handler may run (> 0); '' = the worker's default
  [11] cron      name of a cron entry whose tick this job is ('' = none; README "Cron")
  [12] tick      with [11]: the tick's time, Unix ms
  [13] skip_late with [11]: a tick more than this many ms old is recorded but makes no job
                 ('' = always make it)
  [14] max_payload  the largest args, in bytes (1..536870912); '' = 16777216 (16 MiB)
args must be valid UTF-8 (RFC 8259) and at most max_payload bytes.
Returns: { id, existed } where existed is 1 when no new job was made: the id is already pending
  or executing, or (LBQUEUE) the job was merged into the waiting/parked entry of its jobHash, or
  (DELQUEUE) an identical job with the same timestamp is pending or executing.
  A cron tick ([11]) makes its job only once, however many workers try: the stats field
  cron-last:<name> holds the latest tick taken; the reply is { '', 2 } when this tick (or a later
  one) was taken already, { '', 3 } when the entry does not exist (deleted), { '', 4 } when the
  tick was skipped as missed ([13]); otherwise it is taken (cron-last:<name> = tick) and the job
  is enqueued as usual.
Error: an id whose job was deleted while executing and still runs on its worker (record field
  cancelled) cannot be enqueued until it has stopped; a DELQUEUE identical job that is such a
  cancelled job does not count (the new job is made).
Publishes: the wake channel (message: due time in Unix ms) when the job makes the ready set
  non-empty or becomes the earliest due entry.
Order: equal due times (and, in LBQUEUE, equal priorities) keep enqueue order: members of the
  due and ready sets are "<order>|<id>", <order> the 16 digits of the record's pending-created.
The record: function, args, state pending, pending-created, attempts 0, and the options given;
  not id and queue, which its key holds (get.lua answers them). enqueue_bulk.lua enqueues many
  jobs in one call the same way (includes/enqueue_job.lua).
Cost (README "Cost"): a QUEUE job without options is TIME, INCR, HSET, LPUSH, and PUBLISH when
  the wait list was empty.
]]
local SCRIPT = 'enqueue'
--- @include "enqueue_job"
--- @include "cron"
--- @include "json_text"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(14); if err then return redis.error_reply(err) end
local qtype, job, max_payload
qtype, err = queue_type(); if err then return redis.error_reply(err) end
max_payload, err = opt_num(14, 'max_payload', 1, 536870912, true, 16777216); if err then return redis.error_reply(err) end
job, err = enqueue_args(2, qtype, false, max_payload); if err then return redis.error_reply(err) end
local tick_name, tick, skip_late
tick_name, err = cron_name(11); if err then return redis.error_reply(err) end
if tick_name then
  tick, err = req_num(12, 'tick', 0, 1e14, true); if err then return redis.error_reply(err) end
  skip_late, err = opt_num(13, 'skip_late', 0, 1e14, true); if err then return redis.error_reply(err) end
end
err = enqueue_args_late(2, qtype, job); if err then return redis.error_reply(err) end

-- all arguments are valid: from here on we write (includes/enqueue_job.lua)
local batch = enqueue_batch(qtype, qname, false)
if tick_name then
  local taken = cron_tick(tick_name, tick, skip_late, batch.now_ms)   -- once per tick (includes/cron.lua)
  if taken then return taken end
end
local id, existed = enqueue_job(batch, job)
if not id then return redis.error_reply(existed) end
enqueue_flush(batch)
return { id, existed }
