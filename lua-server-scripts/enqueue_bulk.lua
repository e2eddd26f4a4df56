--[[ enqueue_bulk.lua: add many jobs to one queue in one call, each as enqueue.lua would.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = not given):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] width  9: each job is a group of 9 arguments, as ARGV[2..10] of enqueue.lua:
               [4+9k] function  [5+9k] args (JSON text)  [6+9k] id  [7+9k] jobHash
               [8+9k] priority  [9+9k] timestamp  [10+9k] delay  [11+9k] retries  [12+9k] timeout
             2: each job is a group of 2, function and args (JSON text), without options
  [3] max_payload  the largest args, in bytes (1..536870912); '' = 16777216 (16 MiB); args
             must be valid UTF-8 (RFC 8259)
  then 1..1000 groups
Every job is checked before anything is written: one bad argument (or a client id of a job
  deleted while running that is still stopping) fails the call and enqueues nothing; the error
  names the ARGV index, as enqueue.lua's do.
Returns: a flat array id1, existed1, id2, existed2, ... in the order of the jobs (existed as
  enqueue.lua's). Jobs later in the call see the earlier ones: two jobs with the same client id
  make one job (the second answers existed 1), LBQUEUE jobs of one jobHash merge.
Order: the jobs get consecutive microseconds as their pending-created (and order), from the
  call's TIME, so they keep their order among themselves (a call takes longer than a
  microsecond per job, so the next call's TIME is later than all of them).
Generated ids are taken with one INCRBY for every job without a client id; a job that makes no
  new job (merged, already waiting) leaves its id unused.
Publishes: at most one wake-up, as enqueue.lua would for the earliest of the jobs.
Cost: a QUEUE job without options is one HSET; the call adds TIME, INCRBY, one LPUSH and at
  most one PUBLISH. Width 2 is the cheap form for such jobs: fewer arguments to parse, and
  their checks and writes made in one loop (README "Cost").
]]
-- Built by tools/scripts.lua from src/enqueue_bulk.lua and includes/: edit those, then run make.
local SCRIPT = 'enqueue_bulk'
-- ---- includes/enqueue_job.lua (edit it there, then run make) ----
-- One job of enqueue.lua and enqueue_bulk.lua: its 9 arguments checked, then written (README
-- "Queue types" for what each type does with it). Writes that many jobs share are gathered in
-- a batch and made once by enqueue_flush: one LPUSH of the wait list, one PUBLISH of the wake
-- channel at most.
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
-- ---- includes/json_text.lua (edit it there, then run make) ----
-- JSON text (job args and results) is UTF-8 (RFC 8259) and has a size limit.
-- json_text_error(i, name, v, limit) -> nil when v (ARGV[i], called name) is valid UTF-8 of at
-- most `limit` bytes, else the error message (with the byte offset, counted from 0, of the first
-- invalid byte).
-- Cost in Redis' Lua: about 17 ns per byte of ASCII, 60-100 ns per byte of other text (one
-- string.find, then a gsub per kind of multi-byte character).
local function json_text_error(i, name, v, limit)
  if #v > limit then
    return argerr(i, name, 'is ' .. #v .. ' bytes, more than the limit of ' .. limit .. ' bytes')
  end
  if not string.find(v, '[\128-\255]') then return nil end
  -- every valid multi-byte character becomes one ASCII byte; no byte >= 0x80 may be left
  local t = string.gsub(v, '[\194-\223][\128-\191]', '_')
  if string.find(t, '[\224-\239]') then
    t = string.gsub(t, '[\225-\236\238\239][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\224[\160-\191][\128-\191]', '_')
    t = string.gsub(t, '\237[\128-\159][\128-\191]', '_')
  end
  if string.find(t, '[\240-\244]') then
    t = string.gsub(t, '[\241-\243][\128-\191][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\240[\144-\191][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\244[\128-\143][\128-\191][\128-\191]', '_')
  end
  if not string.find(t, '[\128-\255]') then return nil end
  -- invalid: find the first bad byte, one character at a time
  local p, n = 1, #v
  while true do
    p = string.find(v, '[\128-\255]', p)
    local c = string.byte(v, p)
    local k, lo, hi = 0, 128, 191
    if c >= 194 and c <= 223 then k = 1
    elseif c == 224 then k, lo = 2, 160
    elseif c == 237 then k, hi = 2, 159
    elseif c >= 225 and c <= 239 then k = 2
    elseif c == 240 then k, lo = 3, 144
    elseif c >= 241 and c <= 243 then k = 3
    elseif c == 244 then k, hi = 3, 143 end
    local ok = k > 0 and p + k <= n
    if ok then
      local c1 = string.byte(v, p + 1)
      ok = c1 >= lo and c1 <= hi
      for j = p + 2, p + k do
        local cj = string.byte(v, j)
        if ok and (cj < 128 or cj > 191) then ok = false end
      end
    end
    if not ok then
      return argerr(i, name, 'must be UTF-8 (RFC 8259): byte offset ' .. (p - 1) .. ' is ' ..
        string.format('0x%02x', c) .. ' (send binary data as base64)')
    end
    p = p + k + 1
  end
end
-- ---- end of includes/json_text.lua ----

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
-- ---- end of includes/enqueue_job.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end
local width = ARGV[2]
if width ~= '2' and width ~= '9' then
  return redis.error_reply(argerr(2, 'width', "must be '2' (function, args) or '9' (function, args, id, jobHash, priority, timestamp, delay, retries, timeout), got " .. shown(width)))
end
width = tonumber(width)
local max_payload
max_payload, err = opt_num(3, 'max_payload', 1, 536870912, true, 16777216); if err then return redis.error_reply(err) end
local n = #ARGV - 3
if n <= 0 then return redis.error_reply(argerr(4, 'function', 'is missing (give at least one job)')) end
if n % width ~= 0 then
  return redis.error_reply(SCRIPT .. ': ARGV after [3] must come in groups of ' .. width .. ', got ' .. n .. ' values')
end
n = n / width
if n > 1000 then return redis.error_reply(SCRIPT .. ': at most 1000 jobs per call, got ' .. n) end

if width == 2 and qtype == 'QUEUE' then
  -- Plain QUEUE jobs: the checks of enqueue_args, made for all jobs at once where they can be
  -- (one search for bad characters over every name), then one HSET per job, one LPUSH.
  local names = {}
  for i = 1, n do
    local b = 2 + 2 * i
    local fn, args = ARGV[b], ARGV[b + 1]
    if fn == '' or #fn > 256 or args == '' or (args ~= '{}' and args ~= '[]' and
        (json_text_error(b + 1, 'args', args, max_payload) or not pcall(cjson.decode, args))) then
      local _
      _, err = enqueue_args(b, qtype, true, max_payload)
      return redis.error_reply(err)
    end
    names[i] = fn
  end
  if table.concat(names, ' '):find('[%c{}]') then
    for i = 1, n do
      local _
      _, err = name_arg(2 + 2 * i, 'function', 256, true)
      if err then return redis.error_reply(err) end
    end
  end
  local t = redis.call('TIME')
  local sec, us = t[1], tonumber(t[2])
  local now_ms = t[1] .. ('00' .. math.floor(us / 1000)):sub(-3)
  local first = redis.call('INCRBY', KEYS[12], n) - n
  local prefix, ids, out = KEYS[1], {}, {}
  for i = 1, n do
    -- consecutive microseconds (see Order); string.format is the cheapest number to text in
    -- Redis' Lua (tostring and digit tables cost more)
    local u = us + i - 1
    if u >= 1000000 then
      sec, us, u = tostring(tonumber(sec) + 1), us - 1000000, u - 1000000
    end
    local id = string.format('%d', first + i)
    redis.call('HSET', prefix .. id, 'function', ARGV[2 + 2 * i], 'args', ARGV[3 + 2 * i], 'state', 'pending',
      'pending-created', string.format('%s.%06d', sec, u))
    ids[i] = id
    out[2 * i - 1] = id
    out[2 * i] = 0
  end
  local was = 0
  for from = 1, n, 4000 do
    local last = math.min(from + 3999, n)
    local len = redis.call('LPUSH', KEYS[2], unpack(ids, from, last))
    if from == 1 then was = len - last end
  end
  if was == 0 then redis.call('PUBLISH', KEYS[13], now_ms) end
  return out
end

local jobs, generated = {}, 0
for i = 1, n do
  local b = 4 + width * (i - 1)
  local j
  if width == 2 then
    -- no options: as a group of 9 whose options are ''
    j, err = enqueue_args(b, qtype, true, max_payload); if err then return redis.error_reply(err) end
  else
    j, err = enqueue_args(b, qtype, false, max_payload); if err then return redis.error_reply(err) end
    err = enqueue_args_late(b, qtype, j); if err then return redis.error_reply(err) end
  end
  if j.id then
    -- a client id that is still stopping would fail the call half-way: refuse it before writing
    local st = redis.call('HMGET', KEYS[1] .. j.id, 'state', 'cancelled')
    if st[1] == 'executing' and st[2] then
      return redis.error_reply(SCRIPT .. ': ARGV[' .. (b + 2) .. '] job ' .. shown(j.id) ..
        ' was deleted while running and is still stopping; enqueue it again once it has stopped')
    end
  else
    generated = generated + 1
  end
  jobs[i] = j
end

-- all arguments are valid: from here on we write (includes/enqueue_job.lua)
local batch = enqueue_batch(qtype, qname, generated)
local out = {}
for i = 1, n do
  local id, existed = enqueue_job(batch, jobs[i])
  if not id then return redis.error_reply(existed) end     -- not reached: refused above
  out[2 * i - 1] = id
  out[2 * i] = existed
end
enqueue_flush(batch)
return out
