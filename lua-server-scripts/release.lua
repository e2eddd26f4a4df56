--[[ release.lua: give reserved jobs back without counting an attempt (seed 002's RELEASE;
graceful shutdown uses it).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] worker  worker id that holds the jobs
  [3..] ids   job ids (1..1000)
Each job the worker still holds: attempts - 1, state=pending, back at the front: QUEUE: the
  consuming end of the wait list; LBQUEUE: the ready set with its priority (its jobHash stays
  running until it finishes, so identical jobs keep waiting); DELQUEUE: the due set at its due time.
A job deleted while executing (lease score E + 0.5) is not given back: as in complete, its
  record is deleted and it frees its LBQUEUE jobHash (queueing the parked job) and its DELQUEUE
  identity@timestamp entry; stats counter total-cancelled; its record key is published on
  jobrt:{Q}:results.
Publishes: the wake channel (now, Unix ms) when a job was given back or a parked job queued.
Returns: the number of jobs given back (ids not held by this worker, and cancelled jobs, are
  not counted).
]]
local SCRIPT = 'release'
-- ---- shared helpers: this block is the same text in every script (see lua-server-scripts/README.md, "Conventions") ----
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. v .. "'"
end
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
-- KEYS must be the 14 standard keys of one queue; returns the queue name or nil, message
local function check_keys()
  if #KEYS ~= 14 then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix = KEYS[1]:match('^(jobrt:{.+}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  for i = 2, 14 do
    if KEYS[i] ~= prefix .. SUFFIX[i] then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(prefix .. SUFFIX[i]) .. ', got ' .. shown(KEYS[i])
    end
  end
  return prefix:match('^jobrt:{(.+)}:$')
end
-- ARGV[1]: the queue type, as the caller read it from RESERVED:QCONFIG
local function queue_type()
  local v = ARGV[1]
  if v == nil or v == '' then return nil, argerr(1, 'type', 'is missing (read it from RESERVED:QCONFIG)') end
  if v ~= 'QUEUE' and v ~= 'LBQUEUE' and v ~= 'DELQUEUE' then
    return nil, argerr(1, 'type', 'must be QUEUE, LBQUEUE or DELQUEUE, got ' .. shown(v))
  end
  return v
end
local function max_argv(n)
  if #ARGV > n then return SCRIPT .. ': expected at most ' .. n .. ' ARGV, got ' .. #ARGV end
end
-- optional string: '' or absent -> nil
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
-- server time: milliseconds (number), decimal seconds with microseconds (string), microseconds
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. string.format('%06d', us), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- LBQUEUE: job jid stops holding jobHash h (when it holds it) and the job parked behind h is
-- queued. Returns true when a parked job was queued (the caller publishes a wake-up).
local function lb_release(h, jid)
  if redis.call('HGET', KEYS[8], h) ~= jid then return false end
  redis.call('HDEL', KEYS[8], h)
  local p = redis.call('HGET', KEYS[9], h)
  if not p then return false end
  redis.call('HDEL', KEYS[9], h)
  local pf = redis.call('HMGET', KEYS[1] .. p, 'order', 'priority')
  redis.call('HSET', KEYS[7], h, p)
  redis.call('ZADD', KEYS[3], -(tonumber(pf[2]) or 1), (pf[1] or '0') .. '|' .. p)
  return true
end
-- job jid stopped for good: it frees its LBQUEUE jobHash h and its DELQUEUE identity@timestamp
-- entry dedup (either may be false). Returns true when a parked job was queued.
local function free_claims(qtype, jid, h, dedup)
  if dedup and redis.call('HGET', KEYS[10], dedup) == jid then redis.call('HDEL', KEYS[10], dedup) end
  if qtype == 'LBQUEUE' and h then return lb_release(h, jid) end
  return false
end
-- ---- end of shared helpers ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
local qtype, worker
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
if #ARGV < 3 then return redis.error_reply(argerr(3, 'id', 'is missing (give the ids to release)')) end
if #ARGV > 1002 then return redis.error_reply(SCRIPT .. ': at most 1000 ids per call, got ' .. (#ARGV - 2)) end
local ids, members = {}, {}
for i = 3, #ARGV do
  local jid
  jid, err = req_str(i, 'id', 256); if err then return redis.error_reply(err) end
  ids[#ids + 1] = jid
  members[#members + 1] = worker .. '|' .. jid
end

local now_ms = now()
local prefix = KEYS[1]
local held = redis.call('ZMSCORE', KEYS[5], unpack(members))
local n, seen, wake, gone = 0, {}, false, {}
for i = 1, #ids do
  local jid = ids[i]
  if held[i] and not seen[jid] then
    seen[jid] = true
    redis.call('ZREM', KEYS[5], members[i])
    local rec = prefix .. jid
    local e = tonumber(held[i])
    local f = redis.call('HMGET', rec, 'attempts', 'order', 'priority', 'due', 'hash', 'dedup')
    if e ~= math.floor(e) then
      -- deleted while it ran: it has stopped now, so it goes for good
      redis.call('DEL', rec)
      if free_claims(qtype, jid, f[5], f[6]) then wake = true end
      gone[#gone + 1] = rec
    else
      redis.call('HSET', rec, 'state', 'pending', 'attempts', math.max((tonumber(f[1]) or 1) - 1, 0))
      if qtype == 'QUEUE' and not f[4] then
        redis.call('RPUSH', KEYS[2], jid)
      elseif qtype == 'LBQUEUE' then
        redis.call('ZADD', KEYS[3], -(tonumber(f[3]) or 1), (f[2] or '0') .. '|' .. jid)
      else
        -- DELQUEUE: its due time is the <ms> of its identity entry "...@<ms>" (reserve removed
        -- the record's due field)
        local due_ms = f[4] and math.floor(tonumber(f[4]) * 1000 + 0.5) or tonumber(f[6] and f[6]:match('@(%d+)$'))
        redis.call('ZADD', KEYS[4], due_ms or now_ms, jid)
      end
      n = n + 1
    end
  end
end
if #gone > 0 then
  redis.call('HINCRBY', KEYS[11], 'total-cancelled', #gone)
  redis.call('PUBLISH', KEYS[14], table.concat(gone, '\n'))
end
if n > 0 or wake then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
return n
