-- QUEUE priorities (README "Queue types"). A QUEUE job enqueued with a priority other than 0
-- waits in the ready set KEYS[3] (score -priority, member "<order>|<id>"), the others in the wait
-- list KEYS[2], which counts as priority 0: highest priority first, first in, first out among
-- equal priorities.

-- Appends up to n ready QUEUE candidates to cands, in the order they are served: priorities
-- above 0 (ready-set scores below 0), then the wait list (oldest first), then priorities below 0.
-- Candidates: { id, 'ready', member, score } or { id, 'wait' }; what is taken is removed.
local function queue_candidates(cands, n)
  local pri = redis.call('ZRANGE', KEYS[3], 0, n - 1, 'WITHSCORES')
  local taken = {}
  local i = 1
  while i < #pri and #taken < n and tonumber(pri[i + 1]) < 0 do
    cands[#cands + 1] = { pri[i]:match('^%d+|(.*)$') or pri[i], 'ready', pri[i], pri[i + 1] }
    taken[#taken + 1] = pri[i]
    i = i + 2
  end
  local left = n - #taken
  if left > 0 then
    local got = redis.call('RPOP', KEYS[2], left)
    if got then
      for j = 1, #got do cands[#cands + 1] = { got[j], 'wait' } end
      left = left - #got
    end
  end
  while left > 0 and i < #pri do
    cands[#cands + 1] = { pri[i]:match('^%d+|(.*)$') or pri[i], 'ready', pri[i], pri[i + 1] }
    taken[#taken + 1] = pri[i]
    left = left - 1
    i = i + 2
  end
  if #taken > 0 then redis.call('ZREM', KEYS[3], unpack(taken)) end
end
-- Due QUEUE jobs (delayed jobs, retries in backoff) whose time has come and that carry a
-- priority join the ready set, so that they are served by priority like the waiting jobs (due
-- jobs without one are served first, as in every type). due: the flat member, score list of
-- the due entries whose time has come; returns the same list without those that moved.
local function promote_due(due)
  local keep = {}
  for i = 1, #due, 2 do
    local jid = due[i]:match('^%d+|(.*)$') or due[i]
    local p = tonumber(redis.call('HGET', KEYS[1] .. jid, 'priority'))
    if p and p ~= 0 then
      redis.call('ZREM', KEYS[4], due[i])
      redis.call('ZADD', KEYS[3], -p, due[i])
    else
      keep[#keep + 1] = due[i]
      keep[#keep + 1] = due[i + 1]
    end
  end
  return keep
end
-- A QUEUE job with a priority goes back to the ready set; true when it did (others go to the
-- wait list: the caller's business).
local function queue_put_back(jid, order, priority)
  local p = tonumber(priority)
  if not p or p == 0 then return false end
  redis.call('ZADD', KEYS[3], -p, order .. '|' .. jid)
  return true
end
