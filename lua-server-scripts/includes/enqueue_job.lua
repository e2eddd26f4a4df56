-- One job of enqueue.lua and enqueue_bulk.lua: its 9 arguments checked, then written (README
-- "Queue types" for what each type does with it). Writes that many jobs share are gathered in
-- a batch and made once by enqueue_flush: one LPUSH of the wait list, one PUBLISH of the wake
-- channel at most.
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "json_text"

-- The job whose 9 arguments start at ARGV[b]: function, args (JSON text), id, jobHash,
-- priority, timestamp, delay, retries, timeout ('' = not given). Returns a table { fn, args,
-- id, hash, prio, ts, delay, retries, timeout } (nil where not given), or nil and the message
-- (naming ARGV[i]). Checks in the order of enqueue.lua's header; nothing is written. plain: the
-- job is function and args only (enqueue_bulk.lua's groups of 2): no options are read.
-- max_payload: the largest args in bytes (args must also be UTF-8: includes/json_text.lua).
local function enqueue_args(b, qtype, plain, max_payload)
  local j, err = {}, nil
  j.fn, err = name_arg(b, 'function', 256, true); if err then return nil, err end
  local args = ARGV[b + 1]
  if args == nil or args == '' then return nil, argerr(b + 1, 'args', 'is missing (JSON text, e.g. {} or [])') end
  if args ~= '{}' and args ~= '[]' then
    err = json_text_error(b + 1, 'args', args, max_payload); if err then return nil, err end
    if not pcall(cjson.decode, args) then return nil, argerr(b + 1, 'args', 'must be JSON text, got ' .. shown(args)) end
  end
  j.args = args
  if plain then
    if qtype == 'LBQUEUE' then return nil, argerr(b, 'function', 'is an LBQUEUE job without a jobHash: send it in a group of 9 with one') end
    return j
  end
  local id
  id, err = name_arg(b + 2, 'id', 256); if err then return nil, err end
  if id and id:find('^%d+$') then
    return nil, argerr(b + 2, 'id', 'must not be all digits (those are generated ids), got ' .. shown(id) ..
      ": add a prefix, e.g. 'user-" .. id:sub(1, 40) .. "'")
  end
  j.id = id
  -- the options most jobs leave out cost one comparison each
  local v = ARGV[b + 3]
  if v ~= '' and v ~= nil then
    j.hash, err = opt_str(b + 3, 'jobHash', 256); if err then return nil, err end
  end
  v = ARGV[b + 4]
  if v ~= '' and v ~= nil then
    j.prio, err = opt_num(b + 4, 'priority', -1e15, 1e15); if err then return nil, err end
  end
  v = ARGV[b + 5]
  if v ~= '' and v ~= nil then
    j.ts, err = opt_num(b + 5, 'timestamp', 0, 1e11); if err then return nil, err end
  end
  v = ARGV[b + 6]
  if v ~= '' and v ~= nil then
    j.delay, err = opt_num(b + 6, 'delay', 0, 3.2e8); if err then return nil, err end
  end
  v = ARGV[b + 7]
  if v ~= '' and v ~= nil then
    j.retries, err = opt_num(b + 7, 'retries', 0, 1000, true); if err then return nil, err end
  end
  v = ARGV[b + 8]
  if v ~= '' and v ~= nil then
    j.timeout, err = opt_num(b + 8, 'timeout', 0.001, 3.2e7); if err then return nil, err end
  end
  if qtype == 'LBQUEUE' and not j.hash then
    return nil, argerr(b + 3, 'jobHash', 'is missing (an LBQUEUE job needs one)')
  end
  if j.prio and qtype == 'DELQUEUE' then
    return nil, argerr(b + 4, 'priority', 'applies to QUEUE and LBQUEUE only, this queue is DELQUEUE')
  end
  return j
end

-- The checks that come after a cron tick's arguments in enqueue.lua (the same for every job).
local function enqueue_args_late(b, qtype, j)
  if j.ts and j.delay then return argerr(b + 6, 'delay', 'cannot be given with ARGV[' .. (b + 5) .. '] timestamp') end
  if (j.ts or j.delay) and qtype == 'LBQUEUE' then
    return argerr(j.ts and b + 5 or b + 6, j.ts and 'timestamp' or 'delay',
      'applies to QUEUE and DELQUEUE only, this queue is LBQUEUE')
  end
end

-- A batch of enqueues in one call: the server time, ids from jobrt:{Q}:seq, and what is written
-- once at the end. ids: how many generated ids to take at once (INCRBY; false: INCR one at a
-- time, as a single enqueue does, so no id is taken that no job gets).
local function enqueue_batch(qtype, qname, ids)
  local t = redis.call('TIME')
  local c = { qtype = qtype, qname = qname, prefix = KEYS[1], sec = t[1], us = tonumber(t[2]), n = 0,
              now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), push = {}, wake = nil }
  if ids and ids > 0 then
    c.next_id = redis.call('INCRBY', KEYS[12], ids) - ids + 1
  end
  return c
end

-- The job's enqueue time, decimal seconds with microseconds, and its order (README "Order"):
-- the jobs of one call get consecutive microseconds from the call's TIME, so that they keep
-- their order among themselves wherever equal scores meet (a call takes longer than a
-- microsecond per job, so the next call's TIME is later than all of them).
local function enqueue_time(c)
  local us = c.us + c.n
  c.n = c.n + 1
  local sec = c.sec
  if us >= 1000000 then
    sec = tostring(tonumber(sec) + math.floor(us / 1000000))
    us = us % 1000000
  end
  local u = ('00000' .. us):sub(-6)
  return sec .. '.' .. u, ('0000000000' .. sec):sub(-10) .. u
end

-- Writes job j (from enqueue_args) into the queue. Returns id, existed (1: no new job, see
-- enqueue.lua), or nil and an error message (an id deleted while still running).
local function enqueue_job(c, j)
  local qtype, prefix, fn, args, hash, prio = c.qtype, c.prefix, j.fn, j.args, j.hash, j.prio
  local retries, timeout = j.retries, j.timeout
  local id = j.id
  local replace = false      -- a finished record with this client id exists and is replaced
  if id then
    local st = redis.call('HMGET', prefix .. id, 'state', 'cancelled')
    if st[1] == 'executing' and st[2] then
      return nil, SCRIPT .. ': job ' .. shown(id) ..
        ' was deleted while running and is still stopping; enqueue it again once it has stopped'
    end
    if st[1] == 'pending' or st[1] == 'executing' then return id, 1 end
    replace = st[1] ~= false
  end
  local created, order = enqueue_time(c)

  -- the record of a new job: the key holds its id and queue, so neither is stored, and it has
  -- no attempts field until reserve hands it out (README "Job record")
  local function create(rid, extra)
    if replace then
      redis.call('DEL', prefix .. rid)
      redis.call('ZREM', KEYS[6], rid)
    end
    local f = { 'function', fn, 'args', args, 'state', 'pending', 'pending-created', created }
    local n = 8
    if retries then f[n + 1] = 'retries'; f[n + 2] = retries; n = n + 2 end
    if timeout then f[n + 1] = 'timeout'; f[n + 2] = tostring(timeout); n = n + 2 end
    for i = 1, #extra do f[n + i] = extra[i] end
    redis.call('HSET', prefix .. rid, unpack(f))
  end
  local function new_id()
    if id then return id end
    if c.next_id then
      c.next_id = c.next_id + 1
      return tostring(c.next_id - 1)
    end
    return tostring(redis.call('INCR', KEYS[12]))
  end
  -- the ready set went from empty to not empty: wake the workers (once per call)
  local function ready_added()
    if c.ready_was == nil then c.ready_was = redis.call('ZCARD', KEYS[3]) end
    if c.ready_was == 0 and (not c.wake or c.now_ms < c.wake) then c.wake = c.now_ms end
  end
  -- a due entry at due_ms: it wakes the workers when it is earlier than every due entry before
  -- this call (then workers arm their timers for it)
  local function due_added(due_ms)
    if c.due_first == nil then
      local d = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
      c.due_first = d[2] and tonumber(d[2]) or false
    end
    if (not c.due_first or due_ms < c.due_first) and (not c.wake or due_ms < c.wake) then c.wake = due_ms end
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
      return mid, 1
    end
    local p = prio or 1
    -- an entry whose record vanished (deleted by hand, evicted) is gone: it must not wedge the
    -- jobHash (README "Names and records")
    local function alive(jid) return jid and redis.call('EXISTS', prefix .. jid) == 1 end
    local holder = redis.call('HGET', KEYS[8], hash)
    if holder and not alive(holder) then
      -- a parked job it held back is queued: wake the workers for it
      if free_vanished('LBQUEUE', holder) and (not c.wake or c.now_ms < c.wake) then c.wake = c.now_ms end
      holder = false
    end
    if holder then
      -- the same jobHash is running (or waiting for a retry): park, or merge into the parked job
      local parked = redis.call('HGET', KEYS[9], hash)
      if parked and alive(parked) then return merge(parked, nil) end
      local nid = new_id()
      create(nid, { 'hash', hash, 'priority', tostring(p) })
      redis.call('HSET', KEYS[9], hash, nid)
      return nid, 0
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
    ready_added()
    redis.call('ZADD', KEYS[3], -p, order .. '|' .. nid)
    return nid, 0
  end

  local now_ms = c.now_ms
  local due_ms = now_ms
  if j.ts then due_ms = math.floor(j.ts * 1000 + 0.5) elseif j.delay then due_ms = now_ms + math.floor(j.delay * 1000 + 0.5) end

  if qtype == 'DELQUEUE' then
    local ident = hash and ('h:' .. hash) or ('f:' .. redis.sha1hex(fn .. '\n' .. args))
    local dfield = ident .. '@' .. ms(due_ms)
    local other = redis.call('HGET', KEYS[10], dfield)
    if other then
      local st = redis.call('HMGET', prefix .. other, 'state', 'cancelled')
      if (st[1] == 'pending' or st[1] == 'executing') and not st[2] then return other, 1 end
    end
    local nid = new_id()
    local extra = { 'due', string.format('%.3f', due_ms / 1000), 'dedup', dfield }
    if hash then extra[5] = 'hash'; extra[6] = hash end
    create(nid, extra)
    redis.call('HSET', KEYS[10], dfield, nid)
    due_added(due_ms)
    redis.call('ZADD', KEYS[4], due_ms, order .. '|' .. nid)
    return nid, 0
  end

  -- QUEUE: FIFO list, the ready set when it has a priority, or the due set when it runs later
  local nid = new_id()
  if due_ms > now_ms then
    if prio and prio ~= 0 then
      create(nid, { 'due', string.format('%.3f', due_ms / 1000), 'priority', tostring(prio) })
    else
      create(nid, { 'due', string.format('%.3f', due_ms / 1000) })
    end
    due_added(due_ms)
    redis.call('ZADD', KEYS[4], due_ms, order .. '|' .. nid)
  elseif prio and prio ~= 0 then
    create(nid, { 'priority', tostring(prio) })
    ready_added()
    redis.call('ZADD', KEYS[3], -prio, order .. '|' .. nid)
  else
    create(nid, {})
    c.push[#c.push + 1] = nid
  end
  return nid, 0
end

-- The writes the batch's jobs share: the wait list's new ids in one LPUSH (in enqueue order:
-- the oldest is consumed first), then one wake-up when the jobs made the wait list or the ready
-- set non-empty, or made the earliest due entry (the message: when the earliest of them is
-- ready, Unix ms).
local function enqueue_flush(c)
  local push = c.push
  if #push > 0 then
    -- unpack is limited by Lua's C stack: push in slices
    for first = 1, #push, 4000 do
      local last = math.min(first + 3999, #push)
      if redis.call('LPUSH', KEYS[2], unpack(push, first, last)) == last and (not c.wake or c.now_ms < c.wake) then
        c.wake = c.now_ms
      end
    end
  end
  if c.wake then redis.call('PUBLISH', KEYS[13], ms(c.wake)) end
end
