--[[ enqueue.lua: add one job to a queue (seed 002's PUT), atomically: record, queue entry, wake-up.

KEYS: the 14 standard keys of queue Q, in order (README "Keys"):
  jobrt:{Q}:job: jobrt:{Q}:wait jobrt:{Q}:ready jobrt:{Q}:due jobrt:{Q}:active jobrt:{Q}:failed
  jobrt:{Q}:lb:entry jobrt:{Q}:lb:running jobrt:{Q}:lb:parked jobrt:{Q}:dedup jobrt:{Q}:stats
  jobrt:{Q}:seq jobrt:{Q}:wake jobrt:{Q}:results
ARGV ('' = not given):
  [1] type       QUEUE | LBQUEUE | DELQUEUE (the caller reads it from RESERVED:QCONFIG)
  [2] function   job name, 1..256 bytes
  [3] args       JSON text, stored verbatim
  [4] id         client id, 1..256 bytes, not all digits; '' = generated (INCR jobrt:{Q}:seq)
  [5] jobHash    1..256 bytes; required by LBQUEUE, identity for DELQUEUE, ignored by QUEUE
  [6] priority   number; LBQUEUE: '' = count identical enqueues; QUEUE: highest first, '' = 0
                 (the wait list); not for DELQUEUE
  [7] timestamp  absolute Unix seconds, fractions allowed (QUEUE, DELQUEUE); '' = now
  [8] delay      seconds from now, fractions allowed (QUEUE, DELQUEUE); not with [7]
  [9] retries    whole number 0..1000 of extra attempts after a failure; '' = the worker's default
  [10] timeout   seconds a handler may run (> 0); '' = the worker's default
  [11] cron      name of a cron entry whose tick this job is ('' = none; README "Cron")
  [12] tick      with [11]: the tick's time, Unix ms
  [13] skip_late with [11]: a tick more than this many ms old is recorded but makes no job
                 ('' = always make it)
  [14] max_payload  the largest args, in bytes (1..536870912); '' = 16777216 (16 MiB)
args must be valid UTF-8 (RFC 8259) and at most max_payload bytes.
Returns: { id, existed } where existed is 1 when no new job was made: the id is already pending
  or executing, or (LBQUEUE) the job was merged into the waiting/parked entry of its jobHash, or
  (DELQUEUE) an identical job with the same timestamp is pending or executing.
  A cron tick ([11]) makes its job only once, however many workers try: the stats field
  cron-last:<name> holds the latest tick taken; the reply is { '', 2 } when this tick (or a later
  one) was taken already, { '', 3 } when the entry does not exist (deleted), { '', 4 } when the
  tick was skipped as missed ([13]); otherwise it is taken (cron-last:<name> = tick) and the job
  is enqueued as usual.
Error: an id whose job was deleted while executing and still runs on its worker (record field
  cancelled) cannot be enqueued until it has stopped; a DELQUEUE identical job that is such a
  cancelled job does not count (the new job is made).
Publishes: the wake channel (message: due time in Unix ms) when the job makes the ready set
  non-empty or becomes the earliest due entry.
Order: equal due times (and, in LBQUEUE, equal priorities) keep enqueue order: members of the
  due and ready sets are "<order>|<id>", <order> the 16 digits of the record's pending-created.
]]
local SCRIPT = 'enqueue'
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "cron"
--- @include "json_text"


local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(14); if err then return redis.error_reply(err) end
local qtype, fn, id, hash, prio, ts, delay, retries, timeout
qtype, err = queue_type(); if err then return redis.error_reply(err) end
fn, err = name_arg(2, 'function', 256, true); if err then return redis.error_reply(err) end
local args = ARGV[3]
if args == nil or args == '' then return redis.error_reply(argerr(3, 'args', 'is missing (JSON text, e.g. {} or [])')) end
local max_payload
max_payload, err = opt_num(14, 'max_payload', 1, 536870912, true, 16777216); if err then return redis.error_reply(err) end
err = json_text_error(3, 'args', args, max_payload); if err then return redis.error_reply(err) end
if not pcall(cjson.decode, args) then return redis.error_reply(argerr(3, 'args', 'must be JSON text, got ' .. shown(args))) end
id, err = name_arg(4, 'id', 256); if err then return redis.error_reply(err) end
if id and id:find('^%d+$') then
  return redis.error_reply(argerr(4, 'id', 'must not be all digits (those are generated ids), got ' .. shown(id) ..
    ": add a prefix, e.g. 'user-" .. id:sub(1, 40) .. "'"))
end
hash, err = opt_str(5, 'jobHash', 256); if err then return redis.error_reply(err) end
prio, err = opt_num(6, 'priority', -1e15, 1e15); if err then return redis.error_reply(err) end
ts, err = opt_num(7, 'timestamp', 0, 1e11); if err then return redis.error_reply(err) end
delay, err = opt_num(8, 'delay', 0, 3.2e8); if err then return redis.error_reply(err) end
retries, err = opt_num(9, 'retries', 0, 1000, true); if err then return redis.error_reply(err) end
timeout, err = opt_num(10, 'timeout', 0.001, 3.2e7); if err then return redis.error_reply(err) end
if qtype == 'LBQUEUE' and not hash then
  return redis.error_reply(argerr(5, 'jobHash', 'is missing (an LBQUEUE job needs one)'))
end
if prio and qtype == 'DELQUEUE' then
  return redis.error_reply(argerr(6, 'priority', 'applies to QUEUE and LBQUEUE only, this queue is DELQUEUE'))
end
local tick_name, tick, skip_late
tick_name, err = cron_name(11); if err then return redis.error_reply(err) end
if tick_name then
  tick, err = req_num(12, 'tick', 0, 1e14, true); if err then return redis.error_reply(err) end
  skip_late, err = opt_num(13, 'skip_late', 0, 1e14, true); if err then return redis.error_reply(err) end
end
if ts and delay then return redis.error_reply(argerr(8, 'delay', 'cannot be given with ARGV[7] timestamp')) end
if (ts or delay) and qtype == 'LBQUEUE' then
  return redis.error_reply(argerr(ts and 7 or 8, ts and 'timestamp' or 'delay', 'applies to QUEUE and DELQUEUE only, this queue is LBQUEUE'))
end

-- all arguments are valid: from here on we write
local now_ms, now_s, now_us = now()
local prefix = KEYS[1]
if tick_name then
  local taken = cron_tick(tick_name, tick, skip_late, now_ms)   -- once per tick (includes/cron.lua)
  if taken then return taken end
end
local replace = false      -- a finished record with this client id exists and is replaced

if id then
  local st = redis.call('HMGET', prefix .. id, 'state', 'cancelled')
  if st[1] == 'executing' and st[2] then
    return redis.error_reply(SCRIPT .. ': job ' .. shown(id) ..
      ' was deleted while running and is still stopping; enqueue it again once it has stopped')
  end
  if st[1] == 'pending' or st[1] == 'executing' then return { id, 1 } end
  replace = st[1] ~= false
end
local order = string.format('%016.0f', now_us)

-- the fields every new record gets
local function record(rid)
  local f = { 'id', rid, 'queue', qname, 'function', fn, 'args', args, 'state', 'pending',
              'pending-created', now_s, 'attempts', 0 }
  local n = #f
  if retries then f[n + 1] = 'retries'; f[n + 2] = retries; n = n + 2 end
  if timeout then f[n + 1] = 'timeout'; f[n + 2] = tostring(timeout); n = n + 2 end
  return f
end
local function create(rid, extra)
  if replace then
    redis.call('DEL', prefix .. rid)
    redis.call('ZREM', KEYS[6], rid)
  end
  local f = record(rid)
  for i = 1, #extra do f[#f + 1] = extra[i] end
  redis.call('HSET', prefix .. rid, unpack(f))
end
local function new_id()
  return id or tostring(redis.call('INCR', KEYS[12]))
end

if qtype == 'LBQUEUE' then
  -- merge into the existing entry of this jobHash: the latest function/args/options win
  local function merge(mid, member)
    local rec = prefix .. mid
    local upd = { 'function', fn, 'args', args }
    if retries then upd[#upd + 1] = 'retries'; upd[#upd + 1] = retries end
    if timeout then upd[#upd + 1] = 'timeout'; upd[#upd + 1] = tostring(timeout) end
    local p
    if prio then
      p = prio
      upd[#upd + 1] = 'priority'; upd[#upd + 1] = tostring(p)
      if member then redis.call('ZADD', KEYS[3], -p, member) end
    elseif member then
      p = -tonumber(redis.call('ZINCRBY', KEYS[3], -1, member))
      upd[#upd + 1] = 'priority'; upd[#upd + 1] = tostring(p)
    else
      redis.call('HINCRBYFLOAT', rec, 'priority', 1)
    end
    redis.call('HSET', rec, unpack(upd))
    return { mid, 1 }
  end
  local p = prio or 1
  -- an entry whose record vanished (deleted by hand, evicted) is gone: it must not wedge the
  -- jobHash (README "Names and records")
  local function alive(jid) return jid and redis.call('EXISTS', prefix .. jid) == 1 end
  local holder = redis.call('HGET', KEYS[8], hash)
  if holder and not alive(holder) then
    free_vanished('LBQUEUE', holder)
    holder = false
  end
  if holder then
    -- the same jobHash is running (or waiting for a retry): park, or merge into the parked job
    local parked = redis.call('HGET', KEYS[9], hash)
    if parked and alive(parked) then return merge(parked, nil) end
    local nid = new_id()
    create(nid, { 'hash', hash, 'priority', tostring(p) })
    redis.call('HSET', KEYS[9], hash, nid)
    return { nid, 0 }
  end
  local entry = redis.call('HGET', KEYS[7], hash)
  if entry and not alive(entry) then
    -- its ready-set member stays behind; reserve drops it (no record) when it comes up
    redis.call('HDEL', KEYS[7], hash)
    entry = false
  end
  if entry then
    return merge(entry, order_of(redis.call('HGET', prefix .. entry, 'pending-created')) .. '|' .. entry)
  end
  local nid = new_id()
  create(nid, { 'hash', hash, 'priority', tostring(p) })
  redis.call('HSET', KEYS[7], hash, nid)
  redis.call('ZADD', KEYS[3], -p, order .. '|' .. nid)
  if redis.call('ZCARD', KEYS[3]) == 1 then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
  return { nid, 0 }
end

local due_ms = now_ms
if ts then due_ms = math.floor(ts * 1000 + 0.5) elseif delay then due_ms = now_ms + math.floor(delay * 1000 + 0.5) end

if qtype == 'DELQUEUE' then
  local ident = hash and ('h:' .. hash) or ('f:' .. redis.sha1hex(fn .. '\n' .. args))
  local dfield = ident .. '@' .. ms(due_ms)
  local other = redis.call('HGET', KEYS[10], dfield)
  if other then
    local st = redis.call('HMGET', prefix .. other, 'state', 'cancelled')
    if (st[1] == 'pending' or st[1] == 'executing') and not st[2] then return { other, 1 } end
  end
  local nid = new_id()
  local extra = { 'due', string.format('%.3f', due_ms / 1000), 'dedup', dfield }
  if hash then extra[5] = 'hash'; extra[6] = hash end
  create(nid, extra)
  redis.call('HSET', KEYS[10], dfield, nid)
  redis.call('ZADD', KEYS[4], due_ms, order .. '|' .. nid)
  if redis.call('ZRANGE', KEYS[4], 0, 0)[1] == order .. '|' .. nid then redis.call('PUBLISH', KEYS[13], ms(due_ms)) end
  return { nid, 0 }
end

-- QUEUE: FIFO list, the ready set when it has a priority, or the due set when it runs later
local nid = new_id()
local pf = (prio and prio ~= 0) and { 'priority', tostring(prio) } or {}
if due_ms > now_ms then
  create(nid, { 'due', string.format('%.3f', due_ms / 1000), pf[1], pf[2] })
  redis.call('ZADD', KEYS[4], due_ms, order .. '|' .. nid)
  if redis.call('ZRANGE', KEYS[4], 0, 0)[1] == order .. '|' .. nid then redis.call('PUBLISH', KEYS[13], ms(due_ms)) end
elseif pf[1] then
  create(nid, pf)
  redis.call('ZADD', KEYS[3], -prio, order .. '|' .. nid)
  if redis.call('ZCARD', KEYS[3]) == 1 then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
else
  create(nid, {})
  if redis.call('LPUSH', KEYS[2], nid) == 1 then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
end
return { nid, 0 }
