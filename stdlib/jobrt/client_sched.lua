-- jobrt.client_sched: the client's scheduling, flow-control and maintenance calls (added to the
-- client of jobrt.client; same two calling forms: a trailing callback(err, value) returns at
-- once, without one the call yields and returns the value or raises).
--
--   q:pause(queue) -> true (paused now) | false (already paused)
--   q:resume(queue) -> true (resumed now) | false (was not paused)
--       -- workers finish what they hold and reserve nothing more from a paused queue;
--       -- enqueueing goes on; the state is in Redis (lua-server-scripts/pause.lua)
--   q:limit(queue[, limits]) -> { rate = N|nil, per = S|nil, max_active = N|nil, paused = bool }
--       -- limits (optional; without it the call only reads): rate = N and per = SECONDS (at most
--       -- N jobs start per SECONDS across all workers, one every SECONDS / N), max_active = N (at
--       -- most N jobs run at once across all workers), clear = true | 'rate' | 'max_active'
--       -- (remove all limits, or one); the others stay as they are (limit.lua)
--   q:queues() -> { {name=, type=, pending=, delayed=, parked=, executing=, failed=,
--                    completed=, paused=, rate_max=, rate_per=, max_active=, crons=, ...}... }
--       -- every queue of RESERVED:QCONFIG, sorted by name; error= for one that cannot be read
--   q:drain(queue) -> n   removes the waiting and delayed jobs (running and failed ones stay)
--   q:obliterate(queue[, { force = true }]) -> { keys = n, type = old type | nil }
--       -- deletes every key of the queue (jobrt:{Q}:*, found with SCAN) and its type; refused
--       -- while a live worker serves the queue, unless force
--   q:addCron(name, queue, job, expr[, args[, opts]]) -> 'created' | 'replaced' | 'unchanged', next
--       -- opts: tz (zone name, default 'UTC'), id_prefix (default 'cron:<name>:'), missed
--       -- ('once', the default, | 'skip'), jobHash (LBQUEUE, DELQUEUE; default: the entry's
--       -- name); next: the next tick (Unix seconds)
--   q:listCron() -> { {name=, queue=, job=, schedule=, tz=, args= JSON text, missed=, id_prefix=,
--                      source= 'cli'|'file', file=, last= s|nil, next= s|nil}... }
--   q:deleteCron(name[, queue]) -> true | false (no such entry)
--
-- Cron entries live in their queue's keys (stats fields cron:<name>, cron-last:<name>); the
-- queues of RESERVED:QCONFIG are the index used to list them and to find one by name, so a
-- name is unique across queues (addCron refuses a name another queue uses).
local jobrt = require 'jobrt'
local ops = require 'jobrt.ops'
local cron = require 'jobrt.cron'
local tz = require 'jobrt.tz'
local names = require 'jobrt.names'

local type, pairs, ipairs, tostring, tonumber, pcall, error = type, pairs, ipairs, tostring, tonumber, pcall, error
local str_format, floor, sort, concat, unpack = string.format, math.floor, table.sort, table.concat, unpack

local _M = {}

function _M.install(Client, I)
  local both_ways, split_callback, take, argfail = I.both_ways, I.split_callback, I.take, I.argfail
  local check_self, check_queue, check_job, op, check = I.check_self, I.check_queue, I.check_job, I.op, I.check
  local tname, shown = I.tname, I.shown

  -- the common shape: name(queue[, extra][, callback])
  local function method(name, nmax, synopsis, checkargs, perform)
    Client[name] = function(self, ...)
      check_self(self, name)
      local cb, n = split_callback(...)
      if n > nmax then argfail(name, str_format('expected %s, got %d arguments', synopsis, n)) end
      local a = { take(n, ...) }
      if checkargs then checkargs(a) end
      return both_ways(name, cb, perform, self, a[1], a[2], a[3], a[4], a[5], a[6])
    end
  end

  -- ---- pause, resume ------------------------------------------------------
  method('pause', 1, '(queue[, callback])', function(a) check_queue('pause', a[1]) end,
    function(self, queue) return (op(self, 'pause', 'pause', queue)) end)
  method('resume', 1, '(queue[, callback])', function(a) check_queue('resume', a[1]) end,
    function(self, queue) return (op(self, 'resume', 'resume', queue)) end)

  -- ---- limit --------------------------------------------------------------
  local function whole(fname, k, v, lo, hi)
    if type(v) ~= 'number' or v ~= v or v ~= floor(v) or v < lo or v > hi then
      argfail(fname, str_format("option '%s' must be a whole number from %d to %d, got %s", k, lo, hi, shown(v)))
    end
  end
  local function check_limits(fname, l)
    if l == nil then return nil end
    if type(l) ~= 'table' then argfail(fname, 'limits must be a table {rate=, per=, max_active=, clear=}, got ' .. tname(l)) end
    for k in pairs(l) do
      if k ~= 'rate' and k ~= 'per' and k ~= 'max_active' and k ~= 'clear' then
        argfail(fname, str_format("unknown option %s (known: rate, per, max_active, clear)", shown(k)))
      end
    end
    local set = {}
    if l.clear ~= nil then
      if l.clear ~= true and l.clear ~= 'rate' and l.clear ~= 'max_active' then
        argfail(fname, "option 'clear' must be true (every limit), 'rate' or 'max_active', got " .. shown(l.clear))
      end
      if l.clear == true or l.clear == 'rate' then set.rate = false end
      if l.clear == true or l.clear == 'max_active' then set.max_active = false end
    end
    if (l.rate == nil) ~= (l.per == nil) then
      argfail(fname, "options 'rate' and 'per' go together: at most RATE jobs start per PER seconds")
    end
    if l.rate ~= nil then
      whole(fname, 'rate', l.rate, 1, 1000000)
      if type(l.per) ~= 'number' or l.per ~= l.per or l.per < 0.001 or l.per > 86400 then
        argfail(fname, "option 'per' must be seconds from 0.001 to 86400, got " .. shown(l.per))
      end
      if set.rate == false then argfail(fname, "option 'clear' removes the rate that 'rate' sets: give one of them") end
      set.rate = { l.rate, l.per }
    end
    if l.max_active ~= nil then
      whole(fname, 'max_active', l.max_active, 1, 1000000)
      if set.max_active == false then argfail(fname, "option 'clear' removes the max_active that 'max_active' sets: give one of them") end
      set.max_active = l.max_active
    end
    return set
  end
  local function limits_of(t)
    return { rate = (t.rate_max or 0) > 0 and t.rate_max or nil, per = (t.rate_per or 0) > 0 and t.rate_per or nil,
             max_active = (t.max_active or 0) > 0 and t.max_active or nil, paused = t.paused == 1 }
  end
  method('limit', 2, '(queue[, limits][, callback])', function(a)
    check_queue('limit', a[1])
    a[2] = check_limits('limit', a[2])
  end, function(self, queue, set)
    return limits_of(op(self, 'limit', 'limit', queue, set))
  end)

  -- ---- queues ----------------------------------------------------------------
  method('queues', 0, '([callback])', nil, function(self)
    local all = I.stats_perform(self)
    local out = {}
    for name, t in pairs(all) do
      t.name = name
      out[#out + 1] = t
    end
    sort(out, function(a, b) return a.name < b.name end)
    return out
  end)

  -- ---- drain -----------------------------------------------------------------
  method('drain', 1, '(queue[, callback])', function(a) check_queue('drain', a[1]) end,
    function(self, queue)
      local n = op(self, 'drain', 'drain', queue)
      I.module.carry_after(self, queue)         -- drained children tell their parents (flows)
      return n
    end)

  -- ---- obliterate -------------------------------------------------------------
  -- the glob that matches every key of queue (SCAN MATCH): its special characters escaped
  local function key_glob(queue)
    return 'jobrt:{' .. queue:gsub('[%*%?%[%]\\]', '\\%0') .. '}:*'
  end
  _M.key_glob = key_glob

  -- every key of queue (SCAN; the queue's keys share one hash tag, so one Cluster slot)
  local function queue_keys(self, queue)
    local keys, cursor = {}, '0'
    repeat
      local res = check(self.r:call('SCAN', cursor, 'MATCH', key_glob(queue), 'COUNT', 1000))
      cursor = res[1]
      for _, k in ipairs(res[2]) do keys[#keys + 1] = k end
    until cursor == '0'
    return keys
  end
  _M.queue_keys = queue_keys

  method('obliterate', 2, '(queue[, {force = true}][, callback])', function(a)
    check_queue('obliterate', a[1])
    if a[2] ~= nil then
      if type(a[2]) ~= 'table' then argfail('obliterate', 'opts must be a table {force = true}, got ' .. tname(a[2])) end
      for k in pairs(a[2]) do
        if k ~= 'force' then argfail('obliterate', str_format('unknown option %s (known: force)', shown(k))) end
      end
    end
  end, function(self, queue, opts)
    local force = opts and opts.force
    local qtype = check(self.r:call('HGET', I.QCONFIG, queue))
    if qtype == jobrt.null then qtype = nil end
    local live = {}
    for _, w in ipairs(self:workers()) do
      for q in tostring(w.queues or ''):gmatch('[^,]+') do
        if q == queue then live[#live + 1] = tostring(w.id) end
      end
    end
    if #live > 0 and not force then
      sort(live)
      error(str_format("obliterate: queue '%s' is served by %d live worker%s (%s): stop %s first, or force it (--force); its workers then fail to reserve until they stop",
        queue, #live, #live == 1 and '' or 's', concat(live, ', '), #live == 1 and 'it' or 'them'), 0)
    end
    local keys = queue_keys(self, queue)
    if not qtype and #keys == 0 then
      error(str_format("obliterate: there is no queue '%s' (no type in %s and no keys jobrt:{%s}:*)", queue, I.QCONFIG, queue), 0)
    end
    -- the type first: from now on nothing is enqueued into it and no worker starts serving it
    check(self.r:call('HDEL', I.QCONFIG, queue))
    self.ops.types[queue] = nil
    local n = 0
    -- keys made meanwhile (an enqueue that read the type just before) are found by the next SCAN
    for _ = 1, 3 do
      for i = 1, #keys, 500 do
        local batch = { 'UNLINK' }
        for j = i, math.min(i + 499, #keys) do batch[#batch + 1] = keys[j] end
        n = n + check(self.r:call(unpack(batch)))
      end
      keys = queue_keys(self, queue)
      if #keys == 0 then break end
    end
    return { keys = n, type = qtype }
  end)

  -- ---- cron ----------------------------------------------------------------------
  -- a cron entry name: the rules of job ids (jobrt.names), at most 200 bytes (ticks' job ids
  -- are made from it)
  local function check_cron_name(fname, name)
    local err = names.ref(name)
    if not err and #name > 200 then err = 'must be at most 200 bytes, got ' .. #name end
    if err then argfail(fname, 'name ' .. err) end
  end

  -- every typed queue's cron entries: { { queue=, name=, entry=, last= }... }
  local function all_entries(self)
    local names, types = I.all_queues(self, 'listCron')
    local out = {}
    local wg = jobrt.waitgroup()
    local failed
    for _, q in ipairs(names) do
      if ops.TYPES[types[q]] then
        wg:spawn(function()
          local e, err = self.ops:cron_entries(q)
          if not e then failed = failed or err; return end
          for name, c in pairs(e) do out[#out + 1] = { queue = q, name = name, entry = c.entry, last = c.last } end
        end)
      end
    end
    wg:wait()
    if failed then error('listCron: ' .. tostring(failed), 0) end
    sort(out, function(a, b)
      if a.queue ~= b.queue then return a.queue < b.queue end
      return a.name < b.name
    end)
    return out
  end

  local CRON_OPTS = { tz = true, id_prefix = true, missed = true, jobHash = true }
  local RESULT = { [0] = 'unchanged', [1] = 'created', [2] = 'replaced', [3] = 'replaced' }

  -- Checks addCron's arguments (raises "addCron: ..."); returns the entry, schedule and zone.
  local function cron_entry(name, queue, job, expr, args, opts)
    check_cron_name('addCron', name)
    check_queue('addCron', queue)
    check_job('addCron', job)
    local sched, perr = cron.parse(expr)
    if not sched then argfail('addCron', perr) end
    local text
    if type(args) == 'string' then
      local okj, jerr = require('jobrt.json').check(args, { max_bytes = require('jobrt.json').MAX_PAYLOAD, name = 'args' })
      if not okj then
        argfail('addCron', 'args must be a table or JSON text: ' .. jerr)
      end
      text = args
    else
      text = I.encode_args('addCron', args)
    end
    if opts ~= nil and type(opts) ~= 'table' then argfail('addCron', 'opts must be a table {tz=, id_prefix=, missed=}, got ' .. tname(opts)) end
    opts = opts or {}
    for k in pairs(opts) do
      if not CRON_OPTS[k] then argfail('addCron', str_format('unknown option %s (known: tz, id_prefix, missed, jobHash)', shown(k))) end
    end
    local zone_name = opts.tz or 'UTC'
    if type(zone_name) ~= 'string' then argfail('addCron', "option 'tz' must be a zone name such as 'Europe/Berlin', got " .. tname(zone_name)) end
    local zone, zerr = tz.load(zone_name)
    if not zone then argfail('addCron', zerr) end
    local prefix = opts.id_prefix or ('cron:' .. name .. ':')
    local perr = names.id(prefix)
    if not perr and #prefix > 200 then perr = 'must be at most 200 bytes, got ' .. #prefix end
    if perr then
      argfail('addCron', "option 'id_prefix' " .. perr .. " (job ids are the prefix and the tick's Unix seconds)")
    end
    local missed = opts.missed or 'once'
    if missed ~= 'once' and missed ~= 'skip' then
      argfail('addCron', "option 'missed' must be 'once' (one run for the ticks missed while no worker ran) or 'skip', got " .. shown(missed))
    end
    if opts.jobHash ~= nil then
      local herr = names.ref(opts.jobHash)
      if herr then argfail('addCron', "option 'jobHash' " .. herr) end
    end
    return { job = job, args = text, schedule = expr, tz = zone_name, id_prefix = prefix, missed = missed, source = 'cli',
             hash = opts.jobHash }, sched, zone
  end
  _M.cron_entry = cron_entry

  Client.addCron = function(self, ...)
    check_self(self, 'addCron')
    local cb, n = split_callback(...)
    if n > 6 then argfail('addCron', 'expected (name, queue, job, expr[, args[, opts]][, callback]), got ' .. n .. ' arguments') end
    local name, queue, job, expr, args, opts = take(n, ...)
    local entry, sched, zone = cron_entry(name, queue, job, expr, args, opts)
    return both_ways('addCron', cb, function()
      local qtype, terr = self.ops:queue_type(queue)
      if not qtype then error('addCron: ' .. tostring(terr), 0) end
      for _, c in ipairs(all_entries(self)) do
        if c.name == name and c.queue ~= queue then
          error(str_format("addCron: cron entry '%s' belongs to queue '%s': delete it first (jobrt cron delete %s) or pick another name",
            name, c.queue, name), 0)
        end
      end
      local res = op(self, 'addCron', 'cron_set', queue, name, entry)
      return RESULT[res] or tostring(res), sched:next(jobrt.now(), zone)
    end)
  end

  method('listCron', 0, '([callback])', nil, function(self)
    local out = {}
    local now = jobrt.now()
    for _, c in ipairs(all_entries(self)) do
      local e = c.entry
      local row = { name = c.name, queue = c.queue, job = e.job, schedule = e.schedule, tz = e.tz, args = e.args,
                    missed = e.missed, id_prefix = e.id_prefix, source = e.source, file = e.file,
                    last = c.last and c.last / 1000 or nil }
      local sched = cron.parse(e.schedule or '')
      local zone = tz.load(type(e.tz) == 'string' and e.tz or 'UTC')
      if sched and zone then row.next = sched:next(math.max(now, row.last or now), zone) end
      out[#out + 1] = row
    end
    return out
  end)

  method('deleteCron', 2, '(name[, queue][, callback])', function(a)
    check_cron_name('deleteCron', a[1])
    if a[2] ~= nil then check_queue('deleteCron', a[2]) end
  end, function(self, name, queue)
    local deleted = false
    if queue then return (op(self, 'deleteCron', 'cron_delete', queue, name, '')) end
    for _, c in ipairs(all_entries(self)) do
      if c.name == name then
        if op(self, 'deleteCron', 'cron_delete', c.queue, name, '') then deleted = true end
      end
    end
    return deleted
  end)
end

return _M
