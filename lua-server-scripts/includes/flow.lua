-- Flow control of a queue (README "Flow control"). Its settings are fields of the stats hash
-- KEYS[11]: paused (server time it was paused, decimal seconds), rate-max and rate-per (at most
-- rate-max jobs start per rate-per seconds: GCRA without a burst, one start every
-- rate-per / rate-max seconds, so no window of rate-per seconds ever sees more than rate-max
-- starts; rate-tat is its state: the Unix ms from which the next start is allowed), max-active
-- (leases held at once, across all workers) and held ('1' while a reserve that max-active held
-- back is owed a wake-up: the next lease to end publishes one).
--- @include "time"

-- How many of `want` jobs may start now. Returns allow, fl where fl.held is nil, 'paused',
-- 'max-active' or 'rate', fl.retry_at the Unix ms the rate allows the next start, and
-- fl.emission, fl.tat the rate limit's spacing (ms) and state when a rate is set.
local function flow_limits(want, now_ms)
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
      fl.held = 'max-active'
      fl.room = allow           -- reserve_reply decides whether the limit held anything back
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
-- A lease ended (outcome, hand-back, lease ran out): true when a reserve held back by
-- max-active is owed a wake-up (the caller publishes it), once.
local function flow_freed()
  return redis.call('HDEL', KEYS[11], 'held') == 1
end
-- reserve's reply: { now, next_due, next_lease, jobs, blocked, held, retry_at }. max-active held
-- the reserve back only when it filled the room the limit left: then the stats field held owes
-- it a wake-up (the next lease to end publishes it). With fewer jobs ready than that room, the
-- limit held nothing back: no hold is reported, so the worker arms its timers as usual (it
-- would otherwise wait for a wake-up that no lease may ever send).
local function reserve_reply(now_ms, jobs, blocked, fl)
  if fl.held == 'max-active' then
    if #jobs >= fl.room then
      redis.call('HSET', KEYS[11], 'held', '1')
    else
      fl.held = nil
    end
  end
  local nd = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  local nl = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  return { now_ms, nd[2] and tonumber(nd[2]) or false, nl[2] and tonumber(nl[2]) or false, jobs, blocked,
           fl.held or false, fl.retry_at or false }
end
