--[[ renew.lua: extend the leases of the jobs one worker holds, all in one call (heartbeat).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] worker  worker id
  [3] lease   seconds (0.001..86400) from now
  [4..] ids   the job ids the worker is running (1..1000)
Returns: the ids the worker no longer holds: the lease expired and was taken back (the worker
  should stop reporting them; complete would ignore their outcome), or the job was deleted
  while executing (delete made its lease score E + 0.5): the worker should stop running it;
  its lease is not extended (the score keeps its mark), and its complete or release, or the
  lease running out, frees the job's claims.
Cost: one ZMSCORE for the batch and one ZADD XX for the leases extended.
]]
local SCRIPT = 'renew'
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
local qtype, worker, lease
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
lease, err = req_num(3, 'lease', 0.001, 86400); if err then return redis.error_reply(err) end
if #ARGV < 4 then return redis.error_reply(argerr(4, 'id', 'is missing (give the ids the worker holds)')) end
if #ARGV > 1003 then return redis.error_reply(SCRIPT .. ': at most 1000 ids per call, got ' .. (#ARGV - 3)) end
local members = {}
for i = 4, #ARGV do
  local jid
  jid, err = req_str(i, 'id', 256); if err then return redis.error_reply(err) end
  members[#members + 1] = worker .. '|' .. jid
end

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
    lost[#lost + 1] = ARGV[i + 3]
  end
end
if #upd > 0 then redis.call('ZADD', KEYS[5], 'XX', unpack(upd)) end
return lost
