-- Cron entries of a queue (README "Cron"): fields of the stats hash KEYS[11]:
--   cron:<name>       the entry, JSON: { job, args (JSON text), schedule, tz, id_prefix, missed,
--                     source ('cli' | 'file'), created }
--   cron-last:<name>  the latest tick (Unix ms) taken: enqueued, or skipped as missed
-- The workers compute the ticks (time zones are theirs); the scripts make each tick one job.
--- @include "args"
--- @include "time"

-- ARGV[i] as a cron entry name: 1..200 bytes, no control characters, '{' or '}' (the rules of
-- job ids, README "Names": a tick's job id is made from it); '' or absent -> nil.
local function cron_name(i)
  return name_arg(i, 'cron name', 200, false)
end
-- Takes tick `tick` (Unix ms) of entry `name` for one enqueue: nil when this call makes its
-- job (cron-last:<name> is now tick), else enqueue's reply: { '', 2 } taken already (this tick
-- or a later one), { '', 3 } no such entry, { '', 4 } skipped: older than skip_late ms.
local function cron_tick(name, tick, skip_late, now_ms)
  local last = redis.call('HGET', KEYS[11], 'cron-last:' .. name)
  if not last then return { '', 3 } end
  if tonumber(last) >= tick then return { '', 2 } end
  redis.call('HSET', KEYS[11], 'cron-last:' .. name, ms(tick))
  if skip_late and now_ms - tick > skip_late then return { '', 4 } end
  return nil
end
