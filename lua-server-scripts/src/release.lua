--[[ release.lua: give jobs back without an outcome (seed 002's RELEASE): a worker that stops
hands back what it has not finished, and a worker that stopped a handler because it could not
vouch for its lease any more gives that attempt back.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] worker  worker id
  [3..] pairs id, attempt of the jobs to give back (1..1000 pairs)
Each job whose lease "<worker>|<attempt>|<id>" is held: state=pending, back to its place in the
  order (QUEUE: the consuming end of the wait list, in enqueue order among those given back;
  LBQUEUE: the ready set by priority and enqueue order, jobHash still held; DELQUEUE and
  delayed jobs: the due set at their due time). Nothing is counted: no failure, no stall; the
  attempt number is not given back (it only grows: it is the lease's identity and a fencing
  token). A job deleted while executing (lease score E + 0.5) is removed instead (record
  deleted, claims freed, counted in total-cancelled, its record key published on
  jobrt:{Q}:results). Leases the worker does not hold (another attempt's) are ignored. A job
  whose record vanished is not recreated: what points at its id is freed.
Publishes: the wake channel (now, Unix ms) when jobs were given back, a parked job was queued,
  or a reserve held back by max-active is owed a wake-up (stats field held).
Returns: the number of jobs given back (a cancelled job removed is not counted)
]]
local SCRIPT = 'release'
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "lease"
--- @include "flow"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
local qtype, worker
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
local ids, attempts, members = lease_args(3, worker)
if not ids then return redis.error_reply(attempts) end

local now_ms = now()
local prefix = KEYS[1]
local held = redis.call('ZMSCORE', KEYS[5], unpack(members))
local n, seen, wake, gone, front = 0, {}, false, {}, {}
for i = 1, #ids do
  local jid = ids[i]
  if held[i] and not seen[members[i]] then
    seen[members[i]] = true
    redis.call('ZREM', KEYS[5], members[i])
    local rec = prefix .. jid
    local e = tonumber(held[i])
    local f = redis.call('HMGET', rec, 'pending-created', 'priority', 'due', 'dedup', 'hash', 'function')
    if not f[6] and redis.call('EXISTS', rec) == 0 then
      -- its record vanished (deleted by hand, evicted): nothing to give back; free what it held
      if free_vanished(qtype, jid) then wake = true end
    elseif e ~= math.floor(e) then
      -- deleted while it ran: it has stopped now, so it goes for good
      redis.call('DEL', rec)
      if free_claims(qtype, jid, f[5], f[4]) then wake = true end
      gone[#gone + 1] = rec
    else
      redis.call('HSET', rec, 'state', 'pending')
      put_back(qtype, jid, f, now_ms, front)
      n = n + 1
    end
  end
end
flush_front(front)
if #gone > 0 then
  redis.call('HINCRBY', KEYS[11], 'total-cancelled', #gone)
  redis.call('PUBLISH', KEYS[14], table.concat(gone, '\n'))
end
if (n > 0 or #gone > 0) and flow_freed() then wake = true end   -- max-active: a held reserve may go
if n > 0 or wake then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
return n
