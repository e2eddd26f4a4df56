--[[ stats.lua: counts per state of one queue.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
Returns: a flat field/value array:
  pending    jobs ready to run now (wait list + ready set + due entries whose time has come)
  delayed    due entries in the future (DELQUEUE jobs, delayed QUEUE jobs, retries in backoff)
  parked     LBQUEUE jobs waiting for the same jobHash to finish
  executing  leases held by workers (a job deleted while executing counts until it has stopped)
  failed     entries of the failed set
  completed, total-failed, retried, expired, cancelled, dropped   counters since the queue was
             created: successful jobs, jobs moved to the failed set, retries scheduled, leases
             that ran out, jobs deleted while executing that have since stopped, hand-pushed
             ids reserve found no record for (or found already executing) and dropped
  postponed  counter: jobs put back by job:retry_later (postpone)
  paused     1 when the queue is paused (jobrt pause), else 0
  rate-max, rate-per, max-active   the limits (jobrt limit): at most rate-max jobs start per
             rate-per seconds, at most max-active run at once; 0 when not set
  crons      the number of cron entries of the queue
]]
local SCRIPT = 'stats'
--- @include "args"
--- @include "time"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(1); if err then return redis.error_reply(err) end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end

local now_ms = now()
local due_now = redis.call('ZCOUNT', KEYS[4], '-inf', now_ms)
local c = redis.call('HMGET', KEYS[11], 'total-completed', 'total-failed', 'total-retried', 'total-expired',
  'total-cancelled', 'total-dropped', 'total-postponed', 'paused', 'rate-max', 'rate-per', 'max-active')
local crons = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[11])) do
  if f:sub(1, 5) == 'cron:' then crons = crons + 1 end
end
return {
  'pending', redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + due_now,
  'delayed', redis.call('ZCARD', KEYS[4]) - due_now,
  'parked', redis.call('HLEN', KEYS[9]),
  'executing', redis.call('ZCARD', KEYS[5]),
  'failed', redis.call('ZCOUNT', KEYS[6], '(' .. ms(now_ms), '+inf'),      -- records not expired
  'completed', tonumber(c[1]) or 0,
  'total-failed', tonumber(c[2]) or 0,
  'retried', tonumber(c[3]) or 0,
  'expired', tonumber(c[4]) or 0,
  'cancelled', tonumber(c[5]) or 0,
  'dropped', tonumber(c[6]) or 0,
  'postponed', tonumber(c[7]) or 0,
  'paused', c[8] and 1 or 0,
  'rate-max', tonumber(c[9]) or 0,
  'rate-per', c[10] or '0',
  'max-active', tonumber(c[11]) or 0,
  'crons', crons,
}
