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
-- Built by tools/scripts.lua from src/release.lua and includes/: edit those, then run make.
local SCRIPT = 'release'
-- ---- includes/args.lua (edit it there, then run make) ----
-- Argument checks. Each returns the value, or nil and a message naming the script and argument;
-- '' (or a missing ARGV) stands for an argument not given.
-- ---- includes/keys.lua (edit it there, then run make) ----
-- The 14 standard KEYS of one queue, in order (README "Keys"): KEYS[1] is the prefix of the job
-- records, KEYS[13] and KEYS[14] are channel names. check_keys([extra]) -> queue name | nil,
-- message; extra: the suffixes of the keys (or channels) a script takes after the 14, e.g.
-- { 'progress' } for jobrt:{Q}:progress.
-- ---- includes/show.lua (edit it there, then run make) ----
-- a value quoted for an error message, at most 40 bytes of it, control characters as \<code>
-- (an error reply cannot carry a newline)
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. (v:gsub('%c', function(c) return '\\' .. c:byte() end)) .. "'"
end
-- ---- end of includes/show.lua ----
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
-- "<script>: ARGV[i] <name> <msg>"
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
-- The queue name is 1-128 bytes of A-Z a-z 0-9 _ . : - (README "Names"): no '{' or '}', so no
-- queue's key can be another queue's, and the Cluster hash tag is exactly the queue name.
local function check_keys(extra)
  local more = extra and #extra or 0
  if #KEYS ~= 14 + more then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue' ..
      (more > 0 and (' and ' .. more .. ' more (jobrt:{QUEUE}:' .. table.concat(extra, ', jobrt:{QUEUE}:') .. ')') or '') ..
      ' (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix, qname = KEYS[1]:match('^(jobrt:{([^{}]*)}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  if qname == '' or #qname > 128 or qname:find('[^%w_.:%-]') then
    return nil, SCRIPT .. ': the queue name must be 1-128 characters of A-Z a-z 0-9 _ . : -, got ' .. shown(qname)
  end
  for i = 2, 14 + more do
    local want = prefix .. (SUFFIX[i] or extra[i - 14])
    if KEYS[i] ~= want then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(want) .. ', got ' .. shown(KEYS[i])
    end
  end
  return qname
end
-- ---- end of includes/keys.lua ----
-- ARGV[1]: the queue type, as the caller read it from RESERVED:QCONFIG
local function queue_type()
  local v = ARGV[1]
  if v == nil or v == '' then return nil, argerr(1, 'type', 'is missing (read it from RESERVED:QCONFIG)') end
  if v ~= 'QUEUE' and v ~= 'LBQUEUE' and v ~= 'DELQUEUE' then
    return nil, argerr(1, 'type', 'must be QUEUE, LBQUEUE or DELQUEUE, got ' .. shown(v))
  end
  return v
end
-- optional string of at most maxlen bytes ('' or absent -> nil)
local function opt_str(i, name, maxlen)
  local v = ARGV[i]
  if v == nil or v == '' then return nil end
  if #v > maxlen then return nil, argerr(i, name, 'must be at most ' .. maxlen .. ' bytes, got ' .. #v) end
  return v
end
local function req_str(i, name, maxlen)
  local v = ARGV[i]
  if v == nil or v == '' then return nil, argerr(i, name, 'is missing') end
  return opt_str(i, name, maxlen)
end
-- optional decimal number within [lo, hi] ('' or absent -> dflt)
local function opt_num(i, name, lo, hi, whole, dflt)
  local v = ARGV[i]
  if v == nil or v == '' then return dflt end
  local n = (not v:find('[^%d%.eE+-]')) and tonumber(v) or nil
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    return nil, argerr(i, name, 'must be a number, got ' .. shown(v))
  end
  if whole and n ~= math.floor(n) then return nil, argerr(i, name, 'must be a whole number, got ' .. shown(v)) end
  if n < lo or n > hi then
    return nil, argerr(i, name, 'must be between ' .. lo .. ' and ' .. hi .. ', got ' .. shown(v))
  end
  return n
end
local function req_num(i, name, lo, hi, whole)
  local v = ARGV[i]
  if v == nil or v == '' then return nil, argerr(i, name, 'is missing') end
  return opt_num(i, name, lo, hi, whole)
end
-- a worker id: 1..128 bytes without '|'
local function worker_id(i)
  local w, err = req_str(i, 'worker', 128)
  if w and w:find('|', 1, true) then return nil, argerr(i, 'worker', "must not contain '|', got " .. shown(w)) end
  return w, err
end
-- a job id or job name: 1..maxlen bytes, no control characters and no '{' '}' (README "Names")
local function name_arg(i, name, maxlen, required)
  local v, err
  if required then v, err = req_str(i, name, maxlen) else v, err = opt_str(i, name, maxlen) end
  if v and v:find('[%c{}]') then
    return nil, argerr(i, name, "must not contain control characters (newline, tab...) or '{' '}', got " .. shown(v))
  end
  return v, err
end
-- ---- end of includes/args.lua ----
-- ---- includes/time.lua (edit it there, then run make) ----
-- Server time, and the enqueue order of a job.
-- now() -> milliseconds (number), decimal seconds with microseconds (string), microseconds
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  -- string padding, not string.format: sprintf costs Redis' Lua more than the rest of this
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. ('00000' .. t[2]):sub(-6), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- The enqueue order of a job: its pending-created time ('1763841706.123456') as 16 digits of
-- microseconds, so that entries with equal scores sort first in, first out ('0000000000000000'
-- for a hand-written record without one).
local function order_of(created)
  local s, us = tostring(created):match('^(%d+)%.(%d%d%d%d%d%d)$')
  if not s then return '0000000000000000' end
  if #s <= 10 then return ('000000000' .. s):sub(-10) .. us end
  return string.format('%010d', tonumber(s)) .. us
end
-- ---- end of includes/time.lua ----
-- ---- includes/claims.lua (edit it there, then run make) ----
-- Claims a job holds while it is reserved: its LBQUEUE jobHash (KEYS[8]) and its DELQUEUE
-- identity@timestamp entry (KEYS[10]).
-- LBQUEUE: job jid stops holding jobHash h (when it holds it) and the job parked behind h is
-- queued. Returns true when a parked job was queued (the caller publishes a wake-up).
local function lb_release(h, jid)
  if redis.call('HGET', KEYS[8], h) ~= jid then return false end
  redis.call('HDEL', KEYS[8], h)
  local p = redis.call('HGET', KEYS[9], h)
  if not p then return false end
  redis.call('HDEL', KEYS[9], h)
  local pf = redis.call('HMGET', KEYS[1] .. p, 'pending-created', 'priority')
  redis.call('HSET', KEYS[7], h, p)
  redis.call('ZADD', KEYS[3], -(tonumber(pf[2]) or 1), order_of(pf[1]) .. '|' .. p)
  return true
end
-- job jid stopped for good: it frees its LBQUEUE jobHash h and its DELQUEUE identity@timestamp
-- entry dedup (either may be false). Returns true when a parked job was queued.
local function free_claims(qtype, jid, h, dedup)
  if dedup and redis.call('HGET', KEYS[10], dedup) == jid then redis.call('HDEL', KEYS[10], dedup) end
  if qtype == 'LBQUEUE' and h then return lb_release(h, jid) end
  return false
end
-- A job whose record vanished (deleted by hand, or evicted by a Redis that does not run with
-- maxmemory-policy noeviction) cannot say what it holds: find what points at jid and free it,
-- so that no jobHash or identity stays wedged. Rare, and linear in what is held. Returns true
-- when a parked job was queued.
local function free_vanished(qtype, jid)
  local woke = false
  if qtype == 'LBQUEUE' then
    for _, k in ipairs({ 8, 7, 9 }) do
      local all = redis.call('HGETALL', KEYS[k])
      for i = 1, #all, 2 do
        if all[i + 1] == jid then
          if k == 8 then
            if lb_release(all[i], jid) then woke = true end
          else
            redis.call('HDEL', KEYS[k], all[i])
          end
        end
      end
    end
  elseif qtype == 'DELQUEUE' then
    local all = redis.call('HGETALL', KEYS[10])
    for i = 1, #all, 2 do
      if all[i + 1] == jid then redis.call('HDEL', KEYS[10], all[i]) end
    end
  end
  return woke
end
-- ---- end of includes/claims.lua ----
-- ---- includes/lease.lua (edit it there, then run make) ----
-- Leases. A lease belongs to one attempt of one job of one queue: it is the member
-- "<worker>|<attempt>|<id>" of KEYS[5] (score: expiry in Unix ms; + 0.5 marks a job deleted
-- while it runs), so a renewal, completion or release for any other attempt finds nothing.
-- ---- includes/priority.lua (edit it there, then run make) ----
-- QUEUE priorities (README "Queue types"). A QUEUE job enqueued with a priority other than 0
-- waits in the ready set KEYS[3] (score -priority, member "<order>|<id>"), the others in the wait
-- list KEYS[2], which counts as priority 0: highest priority first, first in, first out among
-- equal priorities.

-- A QUEUE job with a priority goes back to the ready set; true when it did (others go to the
-- wait list: the caller's business).
local function queue_put_back(jid, order, priority)
  local p = tonumber(priority)
  if not p or p == 0 then return false end
  redis.call('ZADD', KEYS[3], -p, order .. '|' .. jid)
  return true
end
-- ---- end of includes/priority.lua ----
local function lease_member(worker, attempt, jid) return worker .. '|' .. attempt .. '|' .. jid end
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
-- ---- end of includes/lease.lua ----
-- ---- includes/flow.lua (edit it there, then run make) ----
-- Flow control of a queue (README "Flow control"). Its settings are fields of the stats hash
-- KEYS[11]: paused (server time it was paused, decimal seconds), rate-max and rate-per (at most
-- rate-max jobs start per rate-per seconds: GCRA without a burst, one start every
-- rate-per / rate-max seconds, so no window of rate-per seconds ever sees more than rate-max
-- starts; rate-tat is its state: the Unix ms from which the next start is allowed), max-active
-- (leases held at once, across all workers) and held ('1' while a reserve that max-active held
-- back is owed a wake-up: the next lease to end publishes one), and flow ('1' while any of
-- paused, rate-max, max-active is set: the one field reserve reads for a queue without any).

-- A lease ended (outcome, hand-back, lease ran out): true when a reserve held back by
-- max-active is owed a wake-up (the caller publishes it), once.
local function flow_freed()
  return redis.call('HDEL', KEYS[11], 'held') == 1
end
-- ---- end of includes/flow.lua ----

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
