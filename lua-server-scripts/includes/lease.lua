-- Leases. A lease belongs to one attempt of one job of one queue: it is the member
-- "<worker>|<attempt>|<id>" of KEYS[5] (score: expiry in Unix ms; + 0.5 marks a job deleted
-- while it runs), so a renewal, completion or release for any other attempt finds nothing.
--- @include "args"
--- @include "time"
--- @include "priority"
local function lease_member(worker, attempt, jid) return worker .. '|' .. attempt .. '|' .. jid end
-- worker, attempt (string), id of a lease member, or nil
local function lease_parts(m) return m:match('^([^|]*)|(%d+)|(.*)$') end
-- The (id, attempt) pairs in ARGV[first..] (1..1000 of them), as lease members of worker.
-- Returns ids, attempts, members, or nil, message.
local function lease_args(first, worker)
  local n = #ARGV - first + 1
  if n < 2 then return nil, argerr(first, 'id', 'is missing (give id, attempt pairs)') end
  if n % 2 ~= 0 then
    return nil, SCRIPT .. ': ARGV after [' .. (first - 1) .. '] must come in pairs (id, attempt), got ' .. n .. ' values'
  end
  if n > 2000 then return nil, SCRIPT .. ': at most 1000 jobs per call, got ' .. (n / 2) end
  local ids, attempts, members = {}, {}, {}
  for i = first, #ARGV, 2 do
    local jid, err = name_arg(i, 'id', 256, true)
    if err then return nil, err end
    local a
    a, err = req_num(i + 1, 'attempt', 1, 1e15, true)
    if err then return nil, err end
    ids[#ids + 1] = jid
    attempts[#attempts + 1] = ARGV[i + 1]
    members[#members + 1] = lease_member(worker, ARGV[i + 1], jid)
  end
  return ids, attempts, members
end
-- A job taken back from its worker (lease ran out, or released) goes back to its place in the
-- order: LBQUEUE by priority then enqueue order (its jobHash stays held), DELQUEUE and delayed
-- jobs at their due time, QUEUE jobs with a priority to the ready set, the other QUEUE jobs to
-- the consuming end of the wait list, in enqueue order among themselves (collected in `front`;
-- flush_front writes them). f: the record's pending-created, priority, due, dedup.
local function put_back(qtype, jid, f, now_ms, front)
  local order = order_of(f[1])
  if qtype == 'LBQUEUE' then
    redis.call('ZADD', KEYS[3], -(tonumber(f[2]) or 1), order .. '|' .. jid)
  elseif qtype == 'DELQUEUE' then
    local due_ms = f[3] and math.floor(tonumber(f[3]) * 1000 + 0.5) or tonumber(f[4] and f[4]:match('@(%d+)$'))
    redis.call('ZADD', KEYS[4], due_ms or now_ms, order .. '|' .. jid)
  elseif not queue_put_back(jid, order, f[2]) then
    front[#front + 1] = { order, jid }
  end
end
-- QUEUE jobs collected by put_back: the oldest ends up at the consuming (right) end.
local function flush_front(front)
  if #front == 0 then return end
  table.sort(front, function(a, b) if a[1] ~= b[1] then return a[1] > b[1] end return a[2] > b[2] end)
  local ids = {}
  for i = 1, #front do ids[i] = front[i][2] end
  redis.call('RPUSH', KEYS[2], unpack(ids))
end
