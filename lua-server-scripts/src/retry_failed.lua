--[[ retry_failed.lua: queue the jobs of the failed set again (seed 003's retryFailedJobs).

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of failed jobs handled per call (oldest first); '' = 1000
  [3] id     optional: retry only this job (when it is in the failed set); limit is ignored
Each failed job whose record still exists: failures, stalls and suspect removed (attempts stays:
  it only grows), result fields removed, no expiry, state=pending, queued as if new (QUEUE: wait list, or the ready set when it has a priority; DELQUEUE: due now; LBQUEUE: merged
  into the waiting or parked entry of its jobHash (its record is then deleted), parked when the
  jobHash runs, else a new entry). Failed-set entries whose record expired are dropped.
Flows (README "Flows"): a retried child of a flow is linked to its parent again and tells it
  that it waits to run again (u: entry 'retry' in the outbox: a parent that failed because of
  it goes back to waiting); a retried parent's children hash lives with its record again, and a
  parent that failed because of a child (field failed-child) goes back to waiting for its
  children (jobrt:{Q}:flow:waiting) instead of being queued: it runs once its failed children
  were retried and succeeded.
Publishes: the wake channel (now, Unix ms) when jobs were queued; "flow:<ms>" when outbox
  entries were written.
Returns: { queued, examined }: jobs queued again, failed-set entries handled (call again while
  examined equals limit).
]]
local SCRIPT = 'retry_failed'
--- @include "args"
--- @include "time"
--- @include "priority"
--- @include "flows"

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, limit, one
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end
one, err = name_arg(3, 'id', 256); if err then return redis.error_reply(err) end

local now_ms = now()
local prefix = KEYS[1]
local ids
if one then
  ids = redis.call('ZSCORE', KEYS[6], one) and { one } or {}
else
  ids = redis.call('ZRANGE', KEYS[6], 0, limit - 1)
end
if #ids == 0 then return { 0, 0 } end
redis.call('ZREM', KEYS[6], unpack(ids))
local n, wait, nflow = 0, {}, 0
for i = 1, #ids do
  local jid = ids[i]
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'state', 'result', 'hash', 'pending-created', 'priority', 'flow', 'parent-queue',
    'parent-id', 'children', 'failed-child')
  if f[1] == 'finished' and f[2] == 'failed' then
    n = n + 1
    redis.call('HDEL', rec, 'result', 'result-value', 'error-reason', 'error-exception', 'finished-created',
      'executing-created', 'worker', 'dedup', 'due', 'failures', 'stalls', 'suspect', 'failed-child')
    -- attempts stays: it only grows (the fencing token of each new attempt)
    redis.call('HSET', rec, 'state', 'pending')
    redis.call('PERSIST', rec)
    if f[7] then
      -- a child of a flow: linked again, and its parent learns that it waits to run again
      local link = (f[6] or '') .. '\n' .. f[7] .. '\n' .. (f[8] or '')
      redis.call('HSET', KEYS[15], 'l:' .. jid, link)
      flow_tell(jid, link, 'retry', '', false, now_ms)
      nflow = nflow + 1
    end
    if f[9] then
      redis.call('PERSIST', KEYS[18] .. jid)
      redis.call('HSET', KEYS[15], 'p:' .. jid, '1')
    end
    if f[10] then
      -- it failed because of a child: it waits for its children again
      redis.call('ZADD', KEYS[17], now_ms, jid)
    elseif qtype == 'QUEUE' then
      if not queue_put_back(jid, order_of(f[4]), f[5]) then wait[#wait + 1] = jid end
    elseif qtype == 'DELQUEUE' then
      redis.call('ZADD', KEYS[4], now_ms, order_of(f[4]) .. '|' .. jid)
    else
      local h = f[3] or ''
      local running = redis.call('HGET', KEYS[8], h)
      local other
      if running then other = redis.call('HGET', KEYS[9], h) else other = redis.call('HGET', KEYS[7], h) end
      if other then
        -- one entry per jobHash: count this job into the waiting (or parked) one
        redis.call('DEL', rec)
        if running then
          redis.call('HINCRBYFLOAT', prefix .. other, 'priority', 1)
        else
          local o = redis.call('HGET', prefix .. other, 'pending-created')
          local p = -tonumber(redis.call('ZINCRBY', KEYS[3], -1, order_of(o) .. '|' .. other))
          redis.call('HSET', prefix .. other, 'priority', tostring(p))
        end
      elseif running then
        redis.call('HSET', KEYS[9], h, jid)
      else
        redis.call('HSET', KEYS[7], h, jid)
        redis.call('ZADD', KEYS[3], -(tonumber(f[5]) or 1), order_of(f[4]) .. '|' .. jid)
      end
    end
  end
end
if #wait > 0 then redis.call('LPUSH', KEYS[2], unpack(wait)) end
if n > 0 then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
flow_wake(nflow, now_ms)
return { n, #ids }
