--[[ postpone.lua: put running jobs back for a while without using up a retry
(job:retry_later(seconds), BullMQ's RateLimitError): the handler met an outside limit.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] worker  worker id that holds the jobs
  then one group of 4 per job (1..1000 groups):
  [3+4k] id
  [4+4k] attempt  the attempt the lease belongs to
  [5+4k] delay    seconds from now (0..31536000, fractions allowed)
  [6+4k] reason   text for error-reason ('' = "postponed for N s")
Each job whose lease "<worker>|<attempt>|<id>" is held: lease removed, state=pending, due = now +
  delay, error-reason = reason, into jobrt:{Q}:due at that time (its order kept); failures are
  not counted (no retry is used up), stalls and suspect are removed (the attempt ended with an
  outcome); attempts stays (the next attempt gets attempts+1). LBQUEUE: the job keeps its
  jobHash (as a retry does); DELQUEUE: its identity@timestamp entry stays. Counted in the stats
  counter total-postponed. A job deleted while executing (lease score E + 0.5) is removed
  instead (as complete does: record deleted, claims freed, total-cancelled, its record key
  published on jobrt:{Q}:results). Leases not held are ignored.
Publishes: the wake channel (Unix ms) when a postponed job became the earliest due entry, or a
  parked job was queued, or a reserve held back by max-active is owed a wake-up (now).
Returns: the number of jobs postponed.
]]
-- Built by tools/scripts.lua from src/postpone.lua and includes/: edit those, then run make.
local SCRIPT = 'postpone'
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

-- ---- end of includes/priority.lua ----
local function lease_member(worker, attempt, jid) return worker .. '|' .. attempt .. '|' .. jid end
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
local n = #ARGV - 2
if n <= 0 then return redis.error_reply(argerr(3, 'id', 'is missing (give at least one job: id, attempt, delay, reason)')) end
if n % 4 ~= 0 then return redis.error_reply(SCRIPT .. ': ARGV after [2] must come in groups of 4 (id, attempt, delay, reason), got ' .. n .. ' values') end
if n > 4000 then return redis.error_reply(SCRIPT .. ': at most 1000 jobs per call, got ' .. (n / 4)) end
local jobs = {}
for b = 3, #ARGV, 4 do
  local j = {}
  j.id, err = req_str(b, 'id', 256); if err then return redis.error_reply(err) end
  j.attempt, err = req_num(b + 1, 'attempt', 1, 1e15, true); if err then return redis.error_reply(err) end
  j.delay, err = req_num(b + 2, 'delay', 0, 31536000); if err then return redis.error_reply(err) end
  j.reason = ARGV[b + 3]
  if #j.reason > 65536 then return redis.error_reply(argerr(b + 3, 'reason', 'must be at most 65536 bytes, got ' .. #j.reason)) end
  j.member = lease_member(worker, ARGV[b + 1], j.id)
  jobs[#jobs + 1] = j
end

local now_ms = now()
local prefix = KEYS[1]
local postponed, wake_at, dues, gone, seen = 0, nil, {}, {}, {}
local function wake(t) if not wake_at or t < wake_at then wake_at = t end end
for _, j in ipairs(jobs) do
  local e = not seen[j.member] and tonumber(redis.call('ZSCORE', KEYS[5], j.member))
  seen[j.member] = true
  if e then
    redis.call('ZREM', KEYS[5], j.member)
    local rec = prefix .. j.id
    local f = redis.call('HMGET', rec, 'pending-created', 'hash', 'dedup', 'stalls', 'suspect')
    if e ~= math.floor(e) or redis.call('EXISTS', rec) == 0 then
      -- deleted while it ran (or its record vanished): it has stopped, it goes for good
      redis.call('DEL', rec)
      if free_claims(qtype, j.id, f[2], f[3]) then wake(now_ms) end
      gone[#gone + 1] = rec
    else
      if f[4] or f[5] then redis.call('HDEL', rec, 'stalls', 'suspect') end
      local due_ms = now_ms + math.floor(j.delay * 1000 + 0.5)
      local reason = j.reason ~= '' and j.reason or string.format('postponed for %g s', j.delay)
      redis.call('HSET', rec, 'state', 'pending', 'error-reason', reason, 'due', string.format('%.3f', due_ms / 1000))
      dues[#dues + 1] = due_ms
      dues[#dues + 1] = order_of(f[1]) .. '|' .. j.id
      postponed = postponed + 1
    end
  end
end
if #dues > 0 then
  redis.call('ZADD', KEYS[4], unpack(dues))
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  for i = 1, #dues, 2 do if dues[i + 1] == first[1] then wake(dues[i]) end end
  redis.call('HINCRBY', KEYS[11], 'total-postponed', postponed)
end
if #gone > 0 then
  redis.call('HINCRBY', KEYS[11], 'total-cancelled', #gone)
  redis.call('PUBLISH', KEYS[14], table.concat(gone, '\n'))
end
if (postponed > 0 or #gone > 0) and flow_freed() then wake(now_ms) end
if wake_at then redis.call('PUBLISH', KEYS[13], ms(wake_at)) end
return postponed
