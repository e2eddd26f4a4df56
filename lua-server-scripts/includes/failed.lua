-- Jobs that ended for good. A finished record is kept for a number of seconds (0: removed at
-- once, BullMQ's removeOnComplete / removeOnFail). The failed set KEYS[6] scores each id with
-- the time its record expires (Unix ms), so entries whose record is gone are exactly those
-- below now: readers count and list only the others, writers drop them.
-- keep_failed(rec, jid, ttl, now_ms, fails): expire (or remove) a failed record; collects its
-- failed-set entry in fails.
local function keep_failed(rec, jid, ttl, now_ms, fails)
  if ttl == 0 then
    redis.call('DEL', rec)
    return
  end
  redis.call('EXPIRE', rec, ttl)
  fails[#fails + 1] = now_ms + ttl * 1000
  fails[#fails + 1] = jid
end
-- Writes the collected failed-set entries and drops those whose record has expired.
local function flush_failed(fails, now_ms)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms)
  if #fails > 0 then redis.call('ZADD', KEYS[6], unpack(fails)) end
end
