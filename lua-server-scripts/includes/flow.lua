-- Flow control of a queue (README "Flow control"). Its settings are fields of the stats hash
-- KEYS[11]: paused (server time it was paused, decimal seconds), rate-max and rate-per (at most
-- rate-max jobs start per rate-per seconds: GCRA without a burst, one start every
-- rate-per / rate-max seconds, so no window of rate-per seconds ever sees more than rate-max
-- starts; rate-tat is its state: the Unix ms from which the next start is allowed), max-active
-- (leases held at once, across all workers) and held ('1' while a reserve that max-active held
-- back is owed a wake-up: the next lease to end publishes one), and flow ('1' while any of
-- paused, rate-max, max-active is set: the one field reserve reads for a queue without any).
--- @include "time"

-- How many of `want` jobs may start now. Returns allow, fl where fl.held is nil, 'paused' or
-- 'rate', fl.retry_at the Unix ms the rate allows the next start, fl.emission, fl.tat the rate
-- limit's spacing (ms) and state when a rate is set, and fl.limited true when max-active cut
-- `want` down: whether that held anything back is known only once the candidates are taken
-- (flow_settle), since a queue with nothing ready is not held, just idle.
local function flow_limits(want, now_ms)
  -- one field says whether any setting is there (flow_mark): most queues have none
  if not redis.call('HGET', KEYS[11], 'flow') then return want, {} end
  local s = redis.call('HMGET', KEYS[11], 'paused', 'rate-max', 'rate-per', 'rate-tat', 'max-active')
  local fl = {}
  if s[1] then
    fl.held = 'paused'
    return 0, fl
  end
  local allow = want
  local m = tonumber(s[5])
  if m then
    local room = m - redis.call('ZCARD', KEYS[5])
    if room < allow then
      allow = room > 0 and room or 0
      fl.limited = true
    end
  end
  local rmax, rper = tonumber(s[2]), tonumber(s[3])
  if rmax and rper and allow > 0 then
    fl.emission = rper * 1000 / rmax
    fl.tat = tonumber(s[4]) or 0
    if fl.tat > now_ms then
      allow = 0
      fl.held = 'rate'
      fl.retry_at = fl.tat
    elseif allow > 1 then
      allow = 1
    end
  end
  return allow, fl
end
-- n jobs started now (reserve): the rate limit's next start moves on by n spacings.
local function flow_started(n, now_ms, fl)
  if not fl.emission or n == 0 then return end
  local tat = math.max(fl.tat, now_ms) + fl.emission * n
  redis.call('HSET', KEYS[11], 'rate-tat', string.format('%.3f', tat))
  fl.held = 'rate'
  fl.retry_at = math.ceil(tat)
end
-- After reserve took what max-active allowed: if jobs are still ready now, the limit held them
-- back: the reply says held 'max-active' and the stats field held asks the next lease to end for
-- a wake-up. If nothing is ready now (only jobs due later, or none), nothing was held back: the
-- worker arms its due timer as usual (a held reply would leave it waiting for a lease to end,
-- which may never come when none is running).
local function flow_settle(fl, now_ms)
  if not fl.limited or fl.held then return end
  if redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0
     or redis.call('ZCOUNT', KEYS[4], '-inf', now_ms) > 0 then
    fl.held = 'max-active'
    redis.call('HSET', KEYS[11], 'held', '1')
  end
end
-- A lease ended (outcome, hand-back, lease ran out): true when a reserve held back by
-- max-active is owed a wake-up (the caller publishes it), once.
local function flow_freed()
  return redis.call('HDEL', KEYS[11], 'held') == 1
end
-- reserve's reply: { now, next_due, next_lease, jobs, blocked, held, retry_at, more }; next_due:
-- the earliest due time (Unix ms) or false, nil when the caller did not read it
local function reserve_reply(now_ms, jobs, blocked, fl, next_due, more)
  if next_due == nil then
    local nd = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    next_due = nd[2] and tonumber(nd[2]) or false
  end
  local nl = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  return { now_ms, next_due, nl[2] and tonumber(nl[2]) or false, jobs, blocked,
           fl.held or false, fl.retry_at or false, more or 0 }
end
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
