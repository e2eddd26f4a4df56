--[[ renew.lua: extend the leases of the jobs one worker holds, all in one call (heartbeat).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] worker  worker id
  [3] lease   seconds (0.001..86400) from now
  [4..] pairs id, attempt of the jobs the worker is running (1..1000 pairs)
A lease belongs to one attempt of one job: only the member "<worker>|<attempt>|<id>" is extended.
Returns: the { id, attempt } pairs the worker no longer holds: the lease expired and was taken
  back (the job may run elsewhere now: the worker must stop it at once, and complete or release
  for that attempt finds nothing), or the job was deleted while executing (delete made its
  lease score E + 0.5): the worker should stop running it; its lease is not extended (the score
  keeps its mark), and its complete or release, or the lease running out, frees the job's
  claims.
Cost: one ZMSCORE for the batch and one ZADD XX for the leases extended.
]]
local SCRIPT = 'renew'
--- @include "args"
--- @include "time"
--- @include "lease"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
local qtype, worker, lease
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
lease, err = req_num(3, 'lease', 0.001, 86400); if err then return redis.error_reply(err) end
local ids, attempts, members = lease_args(4, worker)
if not ids then return redis.error_reply(attempts) end

local now_ms = now()
local held = redis.call('ZMSCORE', KEYS[5], unpack(members))
local upd, lost = {}, {}
local expiry = now_ms + math.floor(lease * 1000 + 0.5)
for i = 1, #members do
  -- a score with a fraction (E + 0.5) marks a job deleted while it runs: never extended, so the
  -- mark is never lost
  local e = tonumber(held[i])
  if e and e == math.floor(e) then
    upd[#upd + 1] = expiry
    upd[#upd + 1] = members[i]
  else
    lost[#lost + 1] = { ids[i], attempts[i] }
  end
end
if #upd > 0 then redis.call('ZADD', KEYS[5], 'XX', unpack(upd)) end
return lost
