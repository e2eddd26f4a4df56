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
The record: function, args, state pending, pending-created, attempts 0, and the options given;
  not id and queue, which its key holds (get.lua answers them). enqueue_bulk.lua enqueues many
  jobs in one call the same way (includes/enqueue_job.lua).
Cost (README "Cost"): a QUEUE job without options is TIME, INCR, HSET, LPUSH, and PUBLISH when
  the wait list was empty.
]]
-- Built by tools/scripts.lua from src/enqueue.lua and includes/: edit those, then run make.
local SCRIPT = 'enqueue'
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
local function max_argv(n)
  if #ARGV > n then return SCRIPT .. ': expected at most ' .. n .. ' ARGV, got ' .. #ARGV end
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
-- ---- includes/cron.lua (edit it there, then run make) ----
-- Cron entries of a queue (README "Cron"): fields of the stats hash KEYS[11]:
--   cron:<name>       the entry, JSON: { job, args (JSON text), schedule, tz, id_prefix, missed,
--                     source ('cli' | 'file'), created }
--   cron-last:<name>  the latest tick (Unix ms) taken: enqueued, or skipped as missed
-- The workers compute the ticks (time zones are theirs); the scripts make each tick one job.

-- ARGV[i] as a cron entry name: 1..200 bytes, no control characters, '{' or '}' (the rules of
-- job ids, README "Names": a tick's job id is made from it); '' or absent -> nil.
local function cron_name(i)
  return name_arg(i, 'cron name', 200, false)
end
-- Takes tick `tick` (Unix ms) of entry `name` for one enqueue: nil when this call makes its
-- job (cron-last:<name> is now tick), else enqueue's reply: { '', 2 } taken already (this tick
-- or a later one), { '', 3 } no such entry, { '', 4 } skipped: older than skip_late ms.
local function cron_tick(name, tick, skip_late, now_ms)
  local last = redis.call('HGET', KEYS[11], 'cron-last:' .. name)
  if not last then return { '', 3 } end
  if tonumber(last) >= tick then return { '', 2 } end
  redis.call('HSET', KEYS[11], 'cron-last:' .. name, ms(tick))
  if skip_late and now_ms - tick > skip_late then return { '', 4 } end
  return nil
end
-- ---- end of includes/cron.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(14); if err then return redis.error_reply(err) end
local qtype, job, max_payload
qtype, err = queue_type(); if err then return redis.error_reply(err) end
max_payload, err = opt_num(14, 'max_payload', 1, 536870912, true, 16777216); if err then return redis.error_reply(err) end
job, err = enqueue_args(2, qtype, false, max_payload); if err then return redis.error_reply(err) end
local tick_name, tick, skip_late
tick_name, err = cron_name(11); if err then return redis.error_reply(err) end
if tick_name then
  tick, err = req_num(12, 'tick', 0, 1e14, true); if err then return redis.error_reply(err) end
  skip_late, err = opt_num(13, 'skip_late', 0, 1e14, true); if err then return redis.error_reply(err) end
end
err = enqueue_args_late(2, qtype, job); if err then return redis.error_reply(err) end

-- all arguments are valid: from here on we write (includes/enqueue_job.lua)
local batch = enqueue_batch(qtype, qname, false)
if tick_name then
  local taken = cron_tick(tick_name, tick, skip_late, batch.now_ms)   -- once per tick (includes/cron.lua)
  if taken then return taken end
end
local id, existed = enqueue_job(batch, job)
if not id then return redis.error_reply(existed) end
enqueue_flush(batch)
return { id, existed }
