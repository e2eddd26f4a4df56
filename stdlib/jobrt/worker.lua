-- jobrt.worker: serves job definitions from Redis queues.
--
--   local worker = require 'jobrt.worker'
--   local w, err = worker.new{ redis = url_or_conn, jobs = description, concurrency = 10,
--                              lease = 10, grace = 30, name = 'optional id prefix',
--                              max_payload = bytes }
--       max_payload: the largest args a job may bring and result it may return, as JSON text
--       (default json.MAX_PAYLOAD, 16 MiB; at most json.CEILING); a job over it fails, saying so
--   w:start()          -- connects, subscribes, starts serving (returns once serving)
--   w:stop([grace])    -- graceful: stop reserving, finish or hand back jobs in flight
--   w:wait()           -- until stopped
--   worker.register(conn_or_url, description, opts) -> w   (q:registerWorker)
--   worker.load_description(tbl, source) -> normalized description | nil, err
--
-- How it serves a queue (one "pump" coroutine per queue):
--   * reserve up to the free slots in one call; each job runs in its own coroutine;
--   * idle pumps wait on the queue's wake channel (pub/sub), on a timer armed for the next
--     due job (DELQUEUE entries, retry backoffs), or on a timer armed for the earliest lease
--     expiry (then requeue_expired takes back the jobs of dead workers). No polling.
--   * finished jobs are reported in batches (one complete call per queue per loop turn), sent
--     before the next reserve so both travel in one round trip.
--   * leases are renewed every lease/3 for every job in flight.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local ops_mod = require 'jobrt.ops'
local json = require 'jobrt.json'

local type, pairs, ipairs, tostring, tonumber, xpcall, pcall, error, next =
      type, pairs, ipairs, tostring, tonumber, xpcall, pcall, error, next
local traceback, fmt, concat, floor = debug.traceback, string.format, table.concat, math.floor
local spawn, sleep, now, monotime = jobrt.spawn, jobrt.sleep, jobrt.now, jobrt.monotime
local running = coroutine.running

local _M = {}
local W = {}
W.__index = W

local error_text, first_line       -- defined below

-- ---- job descriptions ------------------------------------------------------

local JOB_FIELDS = { handler = "function", timeout = "number", retries = "number",
                     source = "string" }   -- source: set when loaded (so loading twice is a no-op)

-- "file:line" of the first line of file `source` that assigns `name` (e.g. `welcome =`), so a
-- message about a job definition points at it; just `source` when not found.
local function locate(source, name)
  local f = io.open(source, "r")
  if not f then return source end
  local n = 0
  local pat = "%f[%w_]" .. name:gsub("%p", "%%%0") .. "%s*="
  for line in f:lines() do
    n = n + 1
    if line:find(pat) then
      f:close()
      return source .. ":" .. n
    end
  end
  f:close()
  return source
end

-- Checks one jobDescription table and returns { [queue] = { [job] = {handler=, timeout=,
-- retries=, source=} } } or nil, message. `source` names where it came from (a file).
function _M.load_description(desc, source, into)
  source = source or "jobDescription"
  into = into or {}
  if type(desc) ~= "table" then
    return nil, fmt("%s: must return a jobDescription table like { QUEUENAME = { myJob = function(args, job) ... end } }, got %s",
      source, type(desc))
  end
  if next(desc) == nil then
    return nil, fmt("%s: the jobDescription table is empty: add a queue, e.g. { QUEUENAME = { myJob = function(args, job) ... end } }", source)
  end
  for queue, jobs in pairs(desc) do
    if type(queue) ~= "string" or queue == "" then
      return nil, fmt("%s: queue names must be non-empty strings, got %s", source, tostring(queue))
    end
    if type(jobs) ~= "table" then
      return nil, fmt("%s: queue %s must be a table of jobs like { myJob = function(args, job) ... end }, got %s",
        locate(source, queue), queue, type(jobs))
    end
    if next(jobs) == nil then
      return nil, fmt("%s: queue %s has no jobs: add one, e.g. %s = { myJob = function(args, job) ... end }",
        locate(source, queue), queue, queue)
    end
    local q = into[queue] or {}
    into[queue] = q
    for name, def in pairs(jobs) do
      if type(name) ~= "string" then
        return nil, fmt("%s: job names in queue %s must be strings, got %s", source, queue, type(name))
      end
      local spec
      if type(def) == "function" then
        spec = { handler = def }
      elseif type(def) == "table" then
        for k, v in pairs(def) do
          local want = JOB_FIELDS[k]
          if not want then
            return nil, fmt("%s: %s.%s has unknown field '%s' (known: handler, timeout, retries)",
              locate(source, name), queue, name, tostring(k))
          end
          if type(v) ~= want then
            return nil, fmt("%s: %s.%s.%s must be a %s, got %s", locate(source, name), queue, name, k, want, type(v))
          end
        end
        -- read once, through any metatable (a table of defaults may supply fields), and check
        -- what was read: what pairs saw above is only the table's own fields
        local handler, timeout, retries, src = def.handler, def.timeout, def.retries, def.source
        local read = { timeout = timeout, retries = retries, source = src }
        for _, k in ipairs({ "timeout", "retries", "source" }) do
          local v = read[k]
          if v ~= nil and type(v) ~= JOB_FIELDS[k] then
            return nil, fmt("%s: %s.%s.%s must be a %s, got %s", locate(source, name), queue, name, k, JOB_FIELDS[k], type(v))
          end
        end
        if type(handler) ~= "function" then
          return nil, fmt("%s: %s.%s.handler must be a function, got %s", locate(source, name), queue, name, type(handler))
        end
        if timeout and not (timeout > 0 and timeout <= 3.2e7) then
          return nil, fmt("%s: %s.%s.timeout must be seconds > 0 (at most 3.2e7), got %s", locate(source, name), queue, name, timeout)
        end
        if retries and not (retries >= 0 and retries <= 1000 and retries == floor(retries)) then
          return nil, fmt("%s: %s.%s.retries must be a whole number from 0 to 1000, got %s", locate(source, name), queue, name, retries)
        end
        spec = { handler = handler, timeout = timeout, retries = retries, source = src }
      else
        return nil, fmt("%s: %s.%s must be a function(args, job) or a table { handler = function(args, job) ... end }, got %s",
          locate(source, name), queue, name, type(def))
      end
      if not spec.source then
        local info = debug.getinfo(spec.handler, "S")
        spec.source = info and info.short_src and (info.short_src .. ":" .. tostring(info.linedefined)) or source
      end
      if q[name] then
        return nil, fmt("%s: %s.%s is defined twice (also at %s): rename one of them", source, queue, name, q[name].source)
      end
      q[name] = spec
    end
  end
  return into
end

-- ---- the worker object -----------------------------------------------------

local OPTS = { redis = true, jobs = true, concurrency = "number", lease = "number", grace = "number",
               name = "string", log_jobs = "boolean", heartbeat = "number",
               max_stalls = "number", backoff = "number", keep_ok = "number", keep_failed = "number",
               timeout = "number", watch_handlers = "function", max_payload = "number" }

function _M.new(opts)
  if type(opts) ~= "table" then error("worker.new: options table expected", 2) end
  for k, v in pairs(opts) do
    local want = OPTS[k]
    if want == nil then error(fmt("worker.new: unknown option '%s'", tostring(k)), 2) end
    if want ~= true and type(v) ~= want then
      error(fmt("worker.new: option '%s' must be a %s, got %s", k, want, type(v)), 2)
    end
  end
  if type(opts.jobs) ~= "table" then error("worker.new: option 'jobs' (a jobDescription) is required", 2) end
  local jobs, err = _M.load_description(opts.jobs)
  if not jobs then return nil, err end
  local max_payload = opts.max_payload or json.MAX_PAYLOAD
  local okl, lerr = json.check_limit(max_payload, "worker.new: option 'max_payload'")
  if not okl then error(lerr, 2) end
  local rnd = jobrt.random_bytes(3):gsub(".", function(c) return fmt("%02x", c:byte()) end)
  local self = setmetatable({
    url = opts.redis,
    jobs = jobs,
    concurrency = opts.concurrency or 10,
    lease = opts.lease or 10,
    grace = opts.grace or 30,
    default_timeout = opts.timeout,   -- for handlers that set none
    watch_handlers = opts.watch_handlers,   -- tells the watchdog which coroutines are handlers
    heartbeat_s = opts.heartbeat or 2,
    log_jobs = opts.log_jobs ~= false,
    max_payload = max_payload,
    args_in = { max_bytes = max_payload, name = "args" },               -- decoding a job's args
    args_out = { max_bytes = max_payload, name = "args", sort = true }, -- job:enqueue
    result_out = { max_bytes = max_payload, name = "result" },
    ops_conf = { max_stalls = opts.max_stalls, backoff = opts.backoff,
                 ttl_ok = opts.keep_ok, ttl_failed = opts.keep_failed, max_payload = max_payload },
    id = fmt("%s:%d:%s", opts.name or jobrt.hostname(), jobrt.pid(), rnd),
    inflight = 0,              -- jobs running in this process
    reserving = 0,             -- reserve calls on their way
    claimed = 0,               -- slots those calls may fill
    running = {},              -- id -> job state
    queues = {},               -- name -> queue state
    stopping = false,
    stopped = jobrt.cond(),
    slot_free = jobrt.cond(),
    done = 0, failed = 0,
    started_at = now(),
  }, W)
  if self.concurrency < 1 then error("worker.new: concurrency must be >= 1", 2) end
  if self.lease <= 0 then error("worker.new: lease must be > 0 seconds", 2) end
  return self
end

function W:log(level, ...)
  jobrt.log(level, ...)
end

-- Connects (two connections: one for queue operations and wake-ups, one that handlers may
-- use through job.redis), checks every queue's type, subscribes. Returns true or nil, err.
function W:start()
  local r, err
  if type(self.url) == "userdata" then
    r = self.url
  else
    -- A deadline on every call: a Redis that hangs (rather than closing the connection) shows
    -- up as errors in the log instead of a silent stall.
    local conf = type(self.url) == "table" and self.url or { url = self.url or os.getenv("JOBRT_REDIS") or redis.DEFAULT_URL }
    local c = {}
    for k, v in pairs(conf) do c[k] = v end
    c.timeout = c.timeout or math.max(5, self.lease)
    r, err = redis.connect(c)
  end
  if not r then return nil, err end
  self.r = r
  local o, oerr = ops_mod.new(r, self.ops_conf)
  if not o then return nil, oerr end
  self.ops = o
  local names = {}
  for qname in pairs(self.jobs) do names[#names + 1] = qname end
  table.sort(names)
  for _, qname in ipairs(names) do
    local qtype, terr = o:queue_type(qname)
    if not qtype then return nil, terr end
    self.queues[qname] = {
      name = qname, type = qtype, dirty = true, wake = jobrt.cond(),
      outcomes = {}, flushing = false, flush_cond = jobrt.cond(),
      due_timer = jobrt.timer(), lease_timer = jobrt.timer(),
    }
  end
  self.queue_names = names
  -- Wake-ups: subscribe before the first reserve, so no enqueue falls between.
  for _, qname in ipairs(names) do
    local q = self.queues[qname]
    local ok, serr = r:subscribe(ops_mod.channels(qname).wake, function(_, msg)
      local cancel = msg and msg:match("^cancel:(.+)$")
      if cancel then return self:cancel_job(cancel, "deleted while running") end
      self:poke(q, msg == nil and "resubscribed" or "wake")
    end)
    if not ok then return nil, serr end
  end
  self:register_self()
  for _, qname in ipairs(names) do
    local q = self.queues[qname]
    q.pump = spawn(function() self:pump(q) end)
  end
  self.renewer = jobrt.timer()
  self.renewer:start(self.lease / 3, function() self:renew_all() end, self.lease / 3)
  self.beat = jobrt.timer()
  self.beat:start(self.heartbeat_s, function() self:heartbeat() end, self.heartbeat_s)
  self:log("info", "worker %s serving %s (concurrency %d, lease %gs)", self.id,
    concat(names, ", "), self.concurrency, self.lease)
  return true
end

-- Marks q as possibly having ready jobs and wakes its pump.
function W:poke(q, why)
  q.dirty = true
  q.wake:signal(why)
end

-- The pump: reserve while there are free slots and ready jobs; otherwise wait for an event.
function W:pump(q)
  local ops = self.ops
  local backoff = 0.05
  local err_logged = false
  while not self.stopping do
    local free = self.concurrency - self.inflight - self.claimed
    if free <= 0 then
      self.slot_free:wait()
    elseif not q.dirty then
      q.wake:wait()
    else
      q.dirty = false
      local want = free < 1000 and free or 1000
      self.reserving = self.reserving + 1
      self.claimed = self.claimed + want      -- slots promised to this reserve (other pumps see them)
      local res, err = ops:reserve(q.name, self.id, want, self.lease)
      self.claimed = self.claimed - want
      self.reserving = self.reserving - 1
      if res and self.stopping then        -- stop() began meanwhile: hand these back untouched
        local ids = {}
        for i = 1, #res.jobs do ids[i] = res.jobs[i].id end
        if #ids > 0 then ops:release(q.name, self.id, ids) end
        self.stopped:broadcast("reserved")
        break
      end
      if not res then
        q.dirty = true
        self.slot_free:broadcast()        -- its claims are free again: other queues go on
        if not err_logged then
          self:log("warn", "queue %s: cannot reserve jobs: %s (retrying)", q.name, tostring(err))
          err_logged = true
        end
        sleep(backoff)
        backoff = backoff < 2 and backoff * 2 or 2
      else
        if err_logged then self:log("info", "queue %s: serving again", q.name) end
        err_logged, backoff = false, 0.05
        local jobs = res.jobs
        for i = 1, #jobs do self:start_job(q, jobs[i]) end
        if #jobs < want then self.slot_free:broadcast() end   -- unused claims are free again
        if #jobs >= want then q.dirty = true end   -- there may be more
        self:arm_timers(q, res)
      end
    end
  end
end

-- Arms q's timers from a reserve reply: next due job, earliest lease expiry (server ms).
function W:arm_timers(q, res)
  if self.stopping then return end      -- stop() closes the timers
  local server_now = tonumber(res.now) or 0
  local due = tonumber(res.next_due)
  if due then
    local delay = (due - server_now) / 1000
    if delay < 0 then delay = 0 end
    q.due_timer:start(delay, function() self:poke(q, "due") end)
  else
    q.due_timer:stop()
  end
  local lease = tonumber(res.next_lease)
  if lease then
    local delay = (lease - server_now) / 1000 + 0.005
    if delay < 0 then delay = 0 end
    q.lease_timer:start(delay, function() self:requeue(q) end)
  else
    q.lease_timer:stop()
  end
end

-- Takes back jobs whose lease expired (any worker's), then looks for work.
function W:requeue(q)
  if self.stopping then return end
  local n, nfailed = self.ops:requeue_expired(q.name)
  if n == nil then
    self:log("warn", "queue %s: requeue of expired leases failed: %s", q.name, tostring(nfailed))
  elseif n + nfailed > 0 then
    self:log("warn", "queue %s: %d job(s) whose worker stopped renewing were put back, %d moved to failed",
      q.name, n, nfailed)
  end
  self:poke(q, "lease")
end

-- ---- running jobs ----------------------------------------------------------

local JobCtx = {}
JobCtx.__index = function(t, k)
  if k == "redis" then                 -- the handlers' own connection, made on first use
    local w = rawget(t, "_worker")
    while w.handler_redis_connecting do w.handler_redis_connecting:wait() end
    if not w.handler_redis then
      local connecting = jobrt.cond()     -- handlers asking meanwhile wait for this one
      w.handler_redis_connecting = connecting
      local r, err = redis.connect(type(w.url) == "userdata" and redis.options_of(w.url) or w.url)
      w.handler_redis_connecting = nil
      connecting:broadcast()
      if not r then error("job.redis: " .. tostring(err), 2) end
      w.handler_redis = r
    end
    return w.handler_redis
  end
  return JobCtx[k]
end

-- job:enqueue(queue, job, args, opts) -> id (raises on error)
function JobCtx:enqueue(queue, name, args, opts)
  local w = rawget(self, "_worker")
  local text, jerr, code = json.encode(args == nil and {} or args, w.args_out)
  if not text then
    if code == "ETOOBIG" then
      error(fmt("job:enqueue: %s (the worker's --max-payload / max_payload)", jerr), 2)
    end
    error(fmt("job:enqueue: args cannot be stored as JSON (%s): pass tables of strings, numbers and booleans",
      first_line(jerr)), 2)
  end
  local ok2, id, err = pcall(w.ops.enqueue, w.ops, queue, name, text, opts)
  if not ok2 then error((tostring(id):gsub("^.-jobrt%.ops%.enqueue: ", "job:enqueue: ")), 2) end
  if not id then error("job:enqueue: " .. tostring(err), 2) end
  return id
end

-- Text of an error value: strings as they are (a traceback from xpcall included), tables as
-- JSON (or their __tostring), nil as a clear phrase.
error_text = function(e)
  if e == nil then return "error raised without a message (error() or error(nil))" end
  if type(e) == "table" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then return tostring(e) end
    local text = json.encode(e, { sort = true, max_bytes = 65536 })
    if text then return "error object " .. text end
  end
  return tostring(e)
end

first_line = function(s)
  s = tostring(s)
  return s:match("^([^\n]*)") or s
end

function W:start_job(q, job)
  self.inflight = self.inflight + 1
  local state = { id = job.id, queue = q, job = job, started = monotime(), done = false }
  self.running[job.id] = state
  local spec = self.jobs[q.name][job.fn]
  local timeout = job.timeout or (spec and spec.timeout) or self.default_timeout
  -- spawn runs the handler at once, up to its first yield: everything that must watch it (the
  -- watchdog, the timeout) is set up inside, before the handler starts
  spawn(function()
    state.co = running()
    if self.watch_handlers then self.watch_handlers(state.co) end
    if timeout then
      state.timer = jobrt.timer()
      state.timer:start(timeout, function()
        if state.done then return end
        jobrt.cancel(state.co)
        self:finish(state, { id = job.id, ok = false,
          reason = fmt("timed out after %gs (the job's timeout): make the handler faster or raise timeout", timeout),
          exception = "", retries = spec and spec.retries })
      end)
    end
    self:run_job(q, job, spec, state)
  end)
end

function W:run_job(q, job, spec, state)
  local id = job.id
  if not spec then
    local known = {}
    for name in pairs(self.jobs[q.name]) do known[#known + 1] = name end
    table.sort(known)
    return self:finish(state, { id = id, ok = false,
      reason = fmt("unknown job '%s' in queue %s: this worker serves %s", tostring(job.fn), q.name, concat(known, ", ")),
      exception = "" })
  end
  local args, aerr, acode = json.decode(job.args, self.args_in)
  if args == nil then
    return self:finish(state, { id = id, ok = false, retries = spec.retries,
      reason = acode == "ETOOBIG"
        and fmt("args of job %s are %d bytes, more than this worker's limit of %d bytes (--max-payload)",
          id, #job.args, self.max_payload)
        or fmt("job %s: %s", id, first_line(aerr)), exception = "" })
  end
  local ctx = setmetatable({ id = id, queue = q.name, attempt = job.attempt, name = job.fn,
                             hash = job.hash, worker = self.id, _worker = self }, JobCtx)
  local ok2, r1, r2 = xpcall(spec.handler, traceback, args, ctx)
  if state.done then return end          -- timed out meanwhile (cannot happen while running)
  if not ok2 then
    local msg = error_text(r1)
    local reason = msg:match("^(.-)\nstack traceback:") or msg
    return self:finish(state, { id = id, ok = false, reason = reason, exception = msg, retries = spec.retries })
  end
  if (r1 == nil or r1 == false) and r2 ~= nil then   -- return nil, err  /  return false, err
    return self:finish(state, { id = id, ok = false, reason = error_text(r2),
      exception = "returned " .. tostring(r1) .. ", " .. error_text(r2), retries = spec.retries })
  end
  local text, eerr, ecode = json.encode(r1, self.result_out)
  if not text then
    return self:finish(state, { id = id, ok = false, retries = spec.retries,
      reason = ecode == "ETOOBIG"
        and fmt("the result of %s.%s is larger than the limit of %d bytes (--max-payload): return less, or store it elsewhere and return a reference",
          q.name, job.fn, self.max_payload)
        or fmt("the result of %s.%s cannot be stored as JSON (%s): return tables of strings, numbers and booleans",
          q.name, job.fn, first_line(eerr)), exception = "" })
  end
  return self:finish(state, { id = id, ok = true, value = text })
end

-- A failed job's error-reason and error-exception as stored: valid UTF-8 (records are read as
-- JSON, by `jobrt job` and by other languages) and at most 64 KiB each.
local TEXT_MAX = 65536
local function stored_text(s)
  if s == nil then return nil end
  s = tostring(s)
  if #s > TEXT_MAX then s = s:sub(1, TEXT_MAX) .. fmt("... (%d more bytes cut)", #s - TEXT_MAX) end
  return json.sanitize(s)
end

-- Records a job's outcome (once), frees its slot and schedules the batch report.
function W:finish(state, outcome)
  if state.done then return end
  state.done = true
  if not outcome.ok then
    outcome.reason, outcome.exception = stored_text(outcome.reason), stored_text(outcome.exception)
  end
  if state.timer then state.timer:close() end
  self.running[state.id] = nil
  self.inflight = self.inflight - 1
  local q = state.queue
  local ms = (monotime() - state.started) * 1000
  if outcome.ok then self.done = self.done + 1 else self.failed = self.failed + 1 end
  if self.log_jobs then
    if outcome.ok then
      self:log("info", "%s.%s id=%s attempt=%s ok %.1fms", q.name, state.job.fn, state.id, tostring(state.job.attempt), ms)
    else
      self:log("info", "%s.%s id=%s attempt=%s failed %.1fms: %s", q.name, state.job.fn, state.id,
        tostring(state.job.attempt), ms, outcome.reason)
      if outcome.exception and outcome.exception ~= "" then self:log("debug", "%s", outcome.exception) end
    end
  end
  q.outcomes[#q.outcomes + 1] = outcome
  if not q.flushing then
    q.flushing = true
    spawn(function() self:flush(q) end)
  end
  self.slot_free:broadcast()
  if self.inflight == 0 then self.stopped:broadcast("idle") end
end

-- Sends q's finished outcomes in one complete call; keeps them (and retries) on Redis errors.
function W:flush(q)
  coroutine.yield()                      -- one loop turn: gather every job that ends now
  local backoff = 0.05
  while #q.outcomes > 0 do
    -- at most 1000 per call (the script's limit), so a failure re-sends only what was not stored
    local batch, rest = q.outcomes, {}
    if #batch > 1000 then
      for i = 1001, #batch do rest[#rest + 1] = batch[i] end
      for i = #batch, 1001, -1 do batch[i] = nil end
    end
    q.outcomes = rest
    local res, err = self.ops:complete(q.name, self.id, batch)
    if res then
      backoff = 0.05
      if #res.ignored > 0 then
        self:log("warn", "queue %s: %d result(s) were not stored because their lease was lost (the job was given to another worker): %s",
          q.name, #res.ignored, concat(res.ignored, ", "))
      end
      if res.completed + res.retried + res.failed > 0 then q.dirty = true; q.wake:signal("complete") end
    elseif self.finished or tostring(err):match("^ECLOSED") then
      local ids = {}
      for i = 1, #batch do ids[#ids + 1] = batch[i].id end
      for i = 1, #q.outcomes do ids[#ids + 1] = q.outcomes[i].id end
      self:log("error", "queue %s: could not store the results of %s before stopping (%s); those jobs run again when their lease expires",
        q.name, concat(ids, ", "), tostring(err))
      q.outcomes = {}
    else
      for i = 1, #batch do q.outcomes[#q.outcomes + 1] = batch[i] end
      self:log("warn", "queue %s: cannot store %d result(s): %s (retrying)", q.name, #batch, tostring(err))
      sleep(backoff)
      backoff = backoff < 2 and backoff * 2 or 2
    end
  end
  q.flushing = false
  if self.inflight == 0 then self.stopped:broadcast("flushed") end
end

-- Stops a job this worker runs (deleted meanwhile, or its lease lost): the handler coroutine
-- never runs again and the outcome is reported, so Redis can clean up after it.
function W:cancel_job(id, why)
  local st = self.running[id]
  if not st or st.done then return end
  jobrt.cancel(st.co)
  self:log("warn", "%s.%s id=%s stopped: %s", st.queue.name, st.job.fn, id, why)
  self:finish(st, { id = id, ok = false, reason = "cancelled: " .. why, exception = "" })
end

-- Renews the leases of every job in flight, per queue, in one call each.
function W:renew_all()
  local per = {}
  for id, st in pairs(self.running) do
    local l = per[st.queue.name] or {}
    per[st.queue.name] = l
    l[#l + 1] = id
  end
  for qname, ids in pairs(per) do
    local lost, err = self.ops:renew(qname, self.id, ids, self.lease)
    if not lost then
      self:log("warn", "queue %s: cannot renew %d lease(s): %s", qname, #ids, tostring(err))
    elseif #lost > 0 then
      for _, id in ipairs(lost) do
        self:cancel_job(id, "its lease was lost (deleted, or taken back after this worker could not renew it)")
      end
    end
  end
end

-- ---- worker registry (seed 004) ----------------------------------------------

function W:registry_key() return "jobrt:worker:" .. self.id end

-- Writes this worker's registry hash (all fields, so it is whole again after a Redis restart
-- lost it) and refreshes its expiry; called at start and on every heartbeat.
function W:register_self()
  local r = self.r
  local key = self:registry_key()
  local ok, err = r:call("HSET", key, "id", self.id, "host", jobrt.hostname(), "pid", jobrt.pid(),
    "queues", concat(self.queue_names, ","), "started", fmt("%.6f", self.started_at),
    "heartbeat", fmt("%.6f", now()), "done", self.done, "failed", self.failed,
    "inflight", self.inflight, "concurrency", self.concurrency)
  if not ok then return nil, err end
  r:call("EXPIRE", key, floor(self.heartbeat_s * 3 + 1))
  -- stop() removes us with DEL + SREM on this same connection; checked right before sending,
  -- so an SADD can never arrive after that SREM
  if self.stopping then return true end
  r:call("SADD", "jobrt:workers", self.id)
  return true
end

function W:heartbeat()
  if not self.stopping then self:register_self() end
end

-- ---- stopping ----------------------------------------------------------------

-- Graceful stop: no more reserving; jobs in flight get `grace` seconds to finish, the rest
-- are handed back (release) without counting an attempt. Returns when everything is stored.
function W:stop(grace)
  if self.stopping then return self:wait() end
  self.stopping = true
  grace = grace or self.grace
  for _, qname in ipairs(self.queue_names or {}) do
    local q = self.queues[qname]
    if self.r then self.r:unsubscribe(ops_mod.channels(qname).wake) end
    q.due_timer:stop()
    q.lease_timer:stop()
    q.wake:broadcast("stop")
  end
  self.slot_free:broadcast("stop")
  while self.reserving > 0 do self.stopped:wait(1) end
  if self.inflight > 0 then
    self:log("info", "stopping: waiting up to %gs for %d job(s) in flight", grace, self.inflight)
    local deadline = monotime() + grace
    while self.inflight > 0 and monotime() < deadline do
      self.stopped:wait(deadline - monotime())
    end
  end
  -- Hand back what is still running.
  local per = {}
  for id, st in pairs(self.running) do
    st.done = true
    if st.timer then st.timer:close() end
    jobrt.cancel(st.co)
    local l = per[st.queue.name] or {}
    per[st.queue.name] = l
    l[#l + 1] = id
  end
  for qname, ids in pairs(per) do
    local n, err = self.ops:release(qname, self.id, ids)
    if n then
      self:log("warn", "stopping: handed back %d unfinished job(s) of %s: %s", n, qname, concat(ids, ", "))
    else
      self:log("error", "stopping: cannot hand back jobs of %s (%s); they return when their lease expires",
        qname, tostring(err))
    end
  end
  self.running, self.inflight = {}, 0
  -- Store every outcome still waiting.
  local deadline = monotime() + 5
  for _, qname in ipairs(self.queue_names or {}) do
    local q = self.queues[qname]
    while (q.flushing or #q.outcomes > 0) and monotime() < deadline do
      if not q.flushing then q.flushing = true; spawn(function() self:flush(q) end) end
      self.stopped:wait(deadline - monotime())
    end
  end
  if self.renewer then self.renewer:close() end
  if self.beat then self.beat:close() end
  for _, qname in ipairs(self.queue_names or {}) do
    local q = self.queues[qname]
    q.due_timer:close()
    q.lease_timer:close()
  end
  if self.r then
    self.r:call("DEL", self:registry_key())
    self.r:call("SREM", "jobrt:workers", self.id)
    if type(self.url) ~= "userdata" then self.r:close() end
  end
  if self.handler_redis then self.handler_redis:close() end
  self.finished = true
  self.stopped:broadcast("stopped")
  self:log("info", "worker %s stopped: %d done, %d failed", self.id, self.done, self.failed)
  return true
end

-- Seed 003's shutdown(callback): stop gracefully in the background, then callback(nil).
function W:shutdown(callback)
  jobrt.spawn(function()
    self:stop()
    if callback then callback(nil) end
  end)
end

-- Waits until the worker has stopped.
function W:wait()
  while not self.finished do self.stopped:wait() end
  return true
end

-- q:registerWorker(redisConfig, jobDescription[, opts]): start serving in this process.
function _M.register(conn, description, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.redis = conn
  o.jobs = description
  local w, err = _M.new(o)
  if not w then return nil, err end
  local ok, serr = w:start()
  if not ok then return nil, serr end
  return w
end

return _M
