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
-- Built by tools/scripts.lua from src/renew.lua and includes/: edit those, then run make.
local SCRIPT = 'renew'
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
-- ---- end of includes/time.lua ----
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
-- ---- end of includes/lease.lua ----

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
