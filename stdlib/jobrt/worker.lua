-- jobrt.worker: serves job definitions from Redis queues.
--
--   local worker = require 'jobrt.worker'
--   local w, err = worker.new{ redis = url_or_conn, jobs = description, concurrency = 10,
--                              lease = 10, grace = 30, name = 'optional id prefix',
--                              max_payload = bytes }
--       (more options below, at OPTS)
--   w:start()          -- connects, subscribes, starts serving (returns true once serving, or
--                      -- nil, message)
--   w:stop([grace])    -- graceful: stop reserving, finish or hand back jobs in flight
--   w:wait()           -- until stopped
--   w:reload(jobs[, types])  -- serve new definitions; jobs in flight finish on theirs (below,
--                      -- at W:reload) -> true, { added =, removed =, queues = } | nil, message
--   worker.register(conn_or_url, description, opts) -> w   (q:registerWorker)
--   worker.load_description(tbl, source) -> normalized description | nil, err  (jobrt.jobdefs)
--   (a queue's `_type` setting is taken out and stored when serving: see jobrt.queuetypes)
--
-- How it serves a queue (one "pump" coroutine per queue):
--   * reserve up to the free slots in one call; each job runs in a job scope of its own
--     (jobrt.scope): its handler and every coroutine the handler starts;
--   * idle pumps wait on the queue's wake channel (pub/sub), on a timer armed for the next
--     due job (DELQUEUE entries, retry backoffs), or on a timer armed for the earliest lease
--     expiry (then requeue_expired takes back the jobs of dead workers). No polling.
--   * finished jobs are reported in batches (one complete call per queue per loop turn), sent
--     before the next reserve so both travel in one round trip; stopped jobs are given back
--     (release) the same way.
--
-- Leases (lua-server-scripts/README.md, "Leases"). A lease belongs to one attempt of one job of
-- one queue; the worker keys what it runs by (queue, id) and sends the attempt with every
-- renewal, outcome and release, so nothing of one attempt is ever taken for another's. Every
-- lease/3 seconds the worker renews all its leases; a renewal confirms a lease until (time the
-- renewal was SENT) + lease, on the monotonic clock (Redis set the expiry later than that, so
-- this never overstates it). A job whose lease the worker cannot vouch for any more (renewal
-- refused, or not confirmed in time: Redis unreachable, or this process was frozen) is stopped:
-- its scope's deadline is the end of its confirmed lease, so its handler is never resumed after
-- it (it stops at its next yield, before doing anything more) and the attempt is given back.
-- A reserve reply that arrives after half the lease has passed is given back unstarted.
-- "Identical jobs never run at once" therefore holds for every handler that yields; a handler
-- that never yields cannot be stopped in process (the watchdog, or --procs, deals with those),
-- and systems written to should check job.fence (jobrt.jobctx).
--
-- Flow control (lua-server-scripts/README.md "Flow control"): reserve says when a queue is held
-- (paused, at its max-active, or at its rate limit); the pump then reserves nothing more from it
-- until a wake-up (resume and ending leases publish one) or, for the rate, a timer at the time
-- reserve named. Cron entries of the served queues run in jobrt.cron_runner.
--
-- Flows (lua-server-scripts/README.md "Flows"): when complete (or requeue_expired) says it wrote
-- news for parents in other queues, the worker carries them over at once (jobrt.flows). A
-- "flow:<ms>" wake-up (another process wrote some) arms a timer for when they are overdue, so
-- that news whose writer died are carried by any worker of the queue; so do start and every
-- resubscription. The timer follows what flow_take says is next: no polling.
--
-- Crashes: a lost lease is not the job's fault and uses up no retry. A job taken back from a
-- worker that stopped renewing is marked suspect and then runs alone in its worker process
-- (reserve hands it out only to an idle worker, as its only job); a job whose lease is lost
-- more than max_stalls times in a row is failed as a poison job.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local ops_mod = require 'jobrt.ops'
local metrics = require 'jobrt.metrics'
local jobdefs = require 'jobrt.jobdefs'
local jobctx = require 'jobrt.jobctx'
local pool_mod = require 'jobrt.pool'
local json = require 'jobrt.json'
local queuetypes = require 'jobrt.queuetypes'
local cron_runner = require 'jobrt.cron_runner'
local flows = require 'jobrt.flows'

local type, pairs, ipairs, tostring, tonumber, xpcall, pcall, error, next, setmetatable, getmetatable =
      type, pairs, ipairs, tostring, tonumber, xpcall, pcall, error, next, setmetatable, getmetatable
local traceback, fmt, concat, floor, min = debug.traceback, string.format, table.concat, math.floor, math.min
local spawn, sleep, now, monotime = jobrt.spawn, jobrt.sleep, jobrt.now, jobrt.monotime
local running = coroutine.running

local _M = {}
local W = {}
W.__index = W

_M.load_description = jobdefs.load_description

-- Text of an error value: strings as they are (a traceback from xpcall included), tables as
-- JSON (or their __tostring), nil as a clear phrase.
local function error_text(e)
  if e == nil then return "error raised without a message (error() or error(nil))" end
  if type(e) == "table" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then return tostring(e) end
    local text = json.encode(e, { sort = true, max_bytes = 65536 })
    if text then return "error object " .. text end
  end
  return tostring(e)
end

local function first_line(s)
  s = tostring(s)
  return s:match("^([^\n]*)") or s
end

-- ---- the worker object -----------------------------------------------------

-- Options of worker.new (seconds unless said otherwise):
--   redis        URL string, options table, or an open connection to share
--   jobs         the jobDescription (required)
--   concurrency  jobs in flight in this process (default 10)
--   lease        seconds a reserved job survives without a renewal (default 10)
--   grace        seconds jobs in flight may run on after stop() (default 30)
--   name         prefix of the worker id (default: the host name)
--   log_jobs     one info line per finished job (default true)
--   heartbeat    seconds between registry heartbeats (default 2)
--   max_stalls   lease losses in a row a job survives (default 2; then it is a poison job)
--   backoff      seconds before a failed job's first retry, doubled per failure (default 1)
--   keep_ok, keep_failed  seconds finished records are kept (defaults 3600, 604800)
--   timeout      seconds a handler may run when its job sets none (default: no limit)
--   watch_handlers  function(co) told of every handler coroutine (the in-process watchdog)
--   max_idle_redis  idle job.redis connections kept (default: concurrency, at most 64)
--   max_payload  bytes: the largest args a job may bring and result it may return, as JSON text
--                (default json.MAX_PAYLOAD, 16 MiB; at most json.CEILING); a job over it fails
local OPTS = { redis = true, jobs = true, concurrency = "number", lease = "number", grace = "number",
               name = "string", log_jobs = "boolean", heartbeat = "number",
               max_stalls = "number", backoff = "number", keep_ok = "number", keep_failed = "number",
               timeout = "number", watch_handlers = "function", max_idle_redis = "number",
               queue_types = "table", max_payload = "number" }

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
  local types = {}
  for q, d in pairs(opts.queue_types or {}) do types[q] = d end
  local plain, terr = queuetypes.extract(opts.jobs, nil, types)
  if not plain then return nil, terr end
  local jobs, err = jobdefs.load_description(plain)
  if not jobs then return nil, err end
  local max_payload = opts.max_payload or json.MAX_PAYLOAD
  local okl, lerr = json.check_limit(max_payload, "worker.new: option 'max_payload'")
  if not okl then error(lerr, 2) end
  local rnd = jobrt.random_bytes(3):gsub(".", function(c) return fmt("%02x", c:byte()) end)
  local self = setmetatable({
    url = opts.redis,
    troubles = {},             -- kind\0queue -> true while that trouble lasts (W:trouble)
    declared_types = types,    -- _type settings, stored in RESERVED:QCONFIG when missing
    jobs = jobs,
    concurrency = opts.concurrency or 10,
    lease = opts.lease or 10,
    grace = opts.grace or 30,
    default_timeout = opts.timeout,   -- for handlers that set none
    watch_handlers = opts.watch_handlers,   -- tells the watchdog which coroutines are handlers
    heartbeat_s = opts.heartbeat or 2,
    log_jobs = opts.log_jobs ~= false,
    max_idle_redis = opts.max_idle_redis,
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
    isolate = nil,             -- queue whose next job must run alone: run nothing new until idle
    alone_job = nil,           -- the attempt running alone (nothing else runs beside it)
    queues = {},               -- name -> queue state (q.running: id -> attempt state)
    stopping = false,
    stopped = jobrt.cond(),
    slot_free = jobrt.cond(),
    done = 0, failed = 0,
    started_at = now(),
    metrics = metrics.new(),   -- run times and per-minute counts for jobrt web
  }, W)
  if self.concurrency < 1 then error("worker.new: concurrency must be >= 1", 2) end
  if self.lease <= 0 then error("worker.new: lease must be > 0 seconds", 2) end
  return self
end

function W:log(level, ...)
  jobrt.log(level, ...)
end

-- Connects (one connection for queue operations and wake-ups; handlers borrow connections of
-- their own from a pool), checks every queue's type, subscribes. Returns true or nil, err.
function W:start()
  local r, err
  local conf
  if redis.is_connection(self.url) then
    r = self.url
    conf = redis.options_of(r)
  else
    -- A deadline on every call: a Redis that hangs (rather than closing the connection) shows
    -- up as errors in the log instead of a silent stall.
    conf = type(self.url) == "table" and self.url or { url = self.url or os.getenv("JOBRT_REDIS") or redis.DEFAULT_URL }
    local c = {}
    for k, v in pairs(conf) do c[k] = v end
    c.timeout = c.timeout or math.max(5, self.lease)
    r, err = redis.connect(c)
  end
  if not r then return nil, err end
  self.r = r
  self.pool = pool_mod.new(conf, { max_idle = self.max_idle_redis or min(self.concurrency, 64) })
  local o, oerr = ops_mod.new(r, self.ops_conf)
  if not o then return nil, oerr end
  self.ops = o
  self:check_eviction()
  local tok, terr = queuetypes.apply(r, self.declared_types)
  if not tok then return nil, terr end
  local names = {}
  for qname in pairs(self.jobs) do names[#names + 1] = qname end
  table.sort(names)
  for _, qname in ipairs(names) do
    local qtype, terr = o:queue_type(qname)
    if not qtype then return nil, terr end
    self.queues[qname] = self:queue_state(qname, qtype)
  end
  self.queue_names = names
  self.cron = cron_runner.new(self)
  -- Wake-ups: subscribe before the first reserve, so no enqueue falls between.
  for _, qname in ipairs(names) do
    local ok, serr = self:subscribe(self.queues[qname])
    if not ok then return nil, serr end
  end
  self:register_self()
  self.cron:start()
  for _, qname in ipairs(names) do self:carry(self.queues[qname]) end   -- overdue flow news
  for _, qname in ipairs(names) do self:start_pump(self.queues[qname]) end
  self.renewer = jobrt.timer()
  self.renewer:start(self.lease / 3, function() self:renew_all() end, self.lease / 3)
  self.beat = jobrt.timer()
  self.beat:start(self.heartbeat_s, function() self:heartbeat() end, self.heartbeat_s)
  self.metrics_timer = jobrt.timer()
  self.metrics_timer:start(1, function() self.metrics:flush(self.r) end, 1)
  self:log("info", "worker %s serving %s (concurrency %d, lease %gs)", self.id,
    concat(names, ", "), self.concurrency, self.lease)
  return true
end

-- The state of one served queue (q in what follows).
function W:queue_state(qname, qtype)
  local q = {
    name = qname, type = qtype, dirty = true, wake = jobrt.cond(),
    running = {},              -- id -> the attempt of that job running here (one at a time)
    outcomes = {}, releases = {}, flushing = false, flush_cond = jobrt.cond(),
    due_timer = jobrt.timer(), lease_timer = jobrt.timer(),
    laters = {}, held = nil, hold_timer = jobrt.timer(),    -- job:retry_later; flow control
    flow_timer = jobrt.timer(),                              -- flows: overdue outbox entries
    pumping = false,           -- its pump coroutine runs
    retired = false,           -- no longer served (W:reload): reserve nothing more from it
    changed = jobrt.cond(),    -- a retired queue's attempt, pump or flush ended (W:drain)
  }
  -- the timers' callbacks, made once per queue (not per reserve)
  q.on_due = function() q.due_at = nil; self:poke(q, "due") end
  q.on_lease = function() self:requeue(q) end
  return q
end

-- Subscribes to q's wake channel (wake-ups, and cancel:<id> for a job deleted while it runs
-- here). Subscribing again replaces the function. Returns true or nil, err.
function W:subscribe(q)
  return self.r:subscribe(ops_mod.channels(q.name).wake, function(_, msg)
    local cancel = msg and msg:match("^cancel:(.+)$")
    if cancel then
      local st = q.running[cancel]
      if st then return self:drop(st, "deleted while running") end
      return
    end
    if msg == "cron" then return self.cron:reload(q.name) end    -- its cron entries changed
    if msg and msg:sub(1, 5) == "flow:" then return self:flow_soon(q, flows.FRESH_MS / 1000) end
    if msg == nil then
      self.cron:resync(q.name)                                    -- reconnected: Redis may have lost them
      self:carry(q)                                               -- and flow news may be overdue
    end
    -- work that is ready later (a delayed job became the earliest due): a timer, not a reserve
    if msg and self:wake_later(q, tonumber(msg)) then return end
    self:poke(q, msg == nil and "resubscribed" or "wake")
  end)
end

-- Starts q's pump (unless it still runs) and its flusher (unless it still runs).
function W:start_pump(q)
  if not q.pumping then
    q.pumping = true
    q.pump = spawn(function() self:pump(q) end)
  end
  if not q.flusher_on then
    q.flusher_on = true
    q.flusher = spawn(function() self:flusher(q) end)
  end
end

-- Every queue with state here, served or retired (draining its attempts), sorted by name.
function W:all_queues()
  local list = {}
  for _, q in pairs(self.queues) do list[#list + 1] = q end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

-- Warns when Redis may evict keys: a job record or a queue key evicted under memory pressure is
-- a job lost or a jobHash confused (BullMQ warns the same way). Read from INFO, which managed
-- services allow where CONFIG is denied; says nothing when it cannot tell.
-- In a Redis Cluster every primary is asked (jobrt.cluster each_primary).
function W:check_eviction()
  local answers
  if self.r.each_primary then
    answers = self.r:each_primary("INFO", "memory")
  else
    answers = { { value = self.r:call("INFO", "memory") } }
  end
  local first
  for _, a in ipairs(answers) do
    local policy = type(a.value) == "string" and a.value:match("maxmemory_policy:([%w%-]+)")
    first = first or policy
    if policy and policy ~= "noeviction" then
      self:log("warn", "Redis%s runs with maxmemory-policy %s: under memory pressure it may evict job records and queue keys, losing jobs; run it with maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)",
        a.addr and (" at " .. a.addr) or "", policy)
    end
  end
  self.eviction_policy = first
end

-- Marks q as possibly having ready jobs and wakes its pump. A queue held by its rate limit
-- stays held until the limit's timer ("limit"); other holds end with any wake-up.
function W:poke(q, why)
  q.dirty = true
  q.pokes = (q.pokes or 0) + 1          -- W:pump: a wake-up came while a reserve was on its way
  if q.held == "rate" and why ~= "limit" then return end
  q.held = nil
  q.wake:signal(why)
end

-- A wake-up says new work is ready at server time `at` (Unix ms). When that is later than now
-- (on the server's clock, as the last reserve reply showed it against ours), the due timer is
-- armed for it (unless it is armed earlier already) and true is returned: no reserve is sent
-- that could only find nothing. Otherwise false: the caller pokes the pump.
function W:wake_later(q, at)
  if not at or not self.clock_offset or self.stopping or q.retired then return false end
  local server_now = now() * 1000 + self.clock_offset
  if at <= server_now + 2 then return false end
  if q.due_at and q.due_at <= at then return true end
  q.due_at = at
  q.due_timer:start((at - server_now) / 1000, q.on_due)
  return true
end

-- reserve said the queue is held (flow control): reserve nothing more from it until a wake-up,
-- or for the rate limit until the time it named (server ms).
function W:hold(q, res)
  q.held = res.held
  if res.held == "rate" and res.retry_at and not self.stopping then
    local delay = (res.retry_at - (tonumber(res.now) or res.retry_at)) / 1000
    q.hold_timer:start(delay > 0 and delay or 0, function() self:poke(q, "limit") end)
  end
end

-- What q's pump may do now: "slot" (wait for a slot or for the worker to be idle), "idle" (no
-- work known: wait for a wake-up), or "reserve", want, alone.
function W:may_reserve(q)
  if self.alone_job then return "slot" end                  -- a job runs alone: nothing beside it
  if self.isolate then
    if self.isolate ~= q then return "slot" end             -- another queue drains us for its job
    if self.inflight > 0 or self.reserving > 0 then return "slot" end
    return "reserve", self.concurrency < 1000 and self.concurrency or 1000, true
  end
  local free = self.concurrency - self.inflight - self.claimed
  if free <= 0 then return "slot" end
  if q.held or not q.dirty then return "idle" end
  return "reserve", free < 1000 and free or 1000, self.inflight == 0 and self.reserving == 0
end

-- The pump: reserve while there are free slots and ready jobs; otherwise wait for an event.
-- Ends when the worker stops or the queue is retired (W:reload).
function W:pump(q)
  self:pump_loop(q)
  q.pumping = false
  if q.retired then q.changed:broadcast("pump") end
end

function W:pump_loop(q)
  local ops = self.ops
  local backoff = 0.05
  local err_logged = false
  while not self.stopping and not q.retired do
    local what, want, alone = self:may_reserve(q)
    if what == "slot" then
      self.slot_free:wait()
    elseif what == "idle" then
      q.wake:wait()
    else
      q.dirty = false
      self.reserving = self.reserving + 1
      self.claimed = self.claimed + want      -- slots promised to this reserve (other pumps see them)
      local sent = monotime()
      local pokes = q.pokes
      local res, err = ops:reserve(q.name, self.id, want, self.lease, alone)
      self.claimed = self.claimed - want
      self.reserving = self.reserving - 1
      if self.isolate == q and alone then self.isolate = nil end
      if res and self.stopping then        -- stop() began meanwhile: hand these back untouched
        self:give_back(q, res.jobs, "the worker is stopping")
        self.stopped:broadcast("reserved")
        break
      end
      if res and q.retired then            -- no longer served (reload): hand these back untouched
        self:give_back(q, res.jobs, "the queue is no longer served (job files reloaded)")
        self.slot_free:broadcast()
        break
      end
      if not res then
        q.dirty = true
        self.slot_free:broadcast()        -- its claims are free again: other queues go on
        if not err_logged then
          self:log("warn", "queue %s: cannot reserve jobs: %s (retrying)", q.name, tostring(err))
          err_logged = true
        end
        -- wait before the next try, but not past a wake-up: the subscription being restored
        -- after an outage (or any other wake-up) means Redis is back, so try again at once
        -- (and soon again after that, should the other connection not be back yet)
        if q.wake:wait(backoff) then
          backoff = 0.05
        else
          backoff = backoff < 2 and backoff * 2 or 2
        end
      else
        if err_logged then self:log("info", "queue %s: serving again", q.name) end
        err_logged, backoff = false, 0.05
        local jobs = res.jobs
        local late = monotime() - sent
        if late > self.lease / 2 then
          -- the reply was read long after it was sent (Redis or this process stalled): the
          -- leases may be about to run out, or already have: give the jobs back unstarted
          self:give_back(q, jobs, fmt("the reserve reply came %.1fs after it was sent (more than half the %gs lease)",
            late, self.lease))
          q.dirty = true
        else
          for i = 1, #jobs do self:start_job(q, jobs[i], sent) end
          -- there may be more; otherwise the next enqueue that makes a job ready wakes us
          if #jobs >= want or res.more then q.dirty = true end
        end
        if res.held and res.held ~= "rate" and q.pokes ~= pokes then
          -- a wake-up came (on the other connection) while this reserve was on its way: it may be
          -- the one owed for this hold (a lease ended after reserve held us back), so holding
          -- now would wait for a wake-up that already came: reserve again instead
          q.dirty = true
        elseif res.held then
          self:hold(q, res)
        end
        if res.blocked and not self.isolate then
          -- a job that must run alone is next: run nothing new until idle, then take it
          self.isolate = q
          q.dirty = true
        end
        self.slot_free:broadcast()        -- unused claims are free again
        self:arm_timers(q, res)
      end
    end
  end
end

-- Hands reserved jobs back without running them.
function W:give_back(q, jobs, why)
  if #jobs == 0 then return end
  local leases, ids = {}, {}
  for i = 1, #jobs do
    leases[i] = { id = jobs[i].id, attempt = jobs[i].attempt }
    ids[i] = jobs[i].id
  end
  self:log("warn", "queue %s: handing back %d job(s) unstarted (%s): %s", q.name, #jobs, why, concat(ids, ", "))
  self:queue_release(q, leases)
end

-- Arms q's timers from a reserve reply: next due job, earliest lease expiry (server ms).
function W:arm_timers(q, res)
  if self.stopping then return end      -- stop() closes the timers
  local server_now = tonumber(res.now) or 0
  -- the server's clock against ours (for wake_later). A reply read late makes the offset too
  -- small by its delay, so the largest of the last 10 s is kept (a clock step of the server is
  -- followed within 10 s)
  if res.now then
    local off, t = server_now - now() * 1000, monotime()
    if not self.clock_offset or off > self.clock_offset or t - self.clock_offset_at > 10 then
      self.clock_offset, self.clock_offset_at = off, t
    end
  end
  local due = tonumber(res.next_due)
  if res.held then due = nil end        -- held: the wake-up or the rate's timer comes first
  if due then
    -- from the server's time now as our clock sees it: the reply's time is whole ms (up to 1 ms
    -- behind) and was taken before the reply travelled, both of which would make the timer late
    local delay = (due - (now() * 1000 + self.clock_offset)) / 1000
    if delay < 0 then delay = 0 end
    q.due_at = due
    q.due_timer:start(delay, q.on_due)
  else
    q.due_at = nil
    q.due_timer:stop()
  end
  local lease = tonumber(res.next_lease)
  if lease then
    local delay = (lease - server_now) / 1000 + 0.005
    if delay < 0 then delay = 0 end
    q.lease_timer:start(delay, q.on_lease)
  else
    q.lease_timer:stop()
  end
end

-- Takes back jobs whose lease expired (any worker's), then looks for work.
function W:requeue(q)
  if self.stopping then return end
  local n, nfailed, _, nflow = self.ops:requeue_expired(q.name)
  if nflow then self:carry(q, true) end
  if n == nil then
    self:log("warn", "queue %s: requeue of expired leases failed: %s", q.name, tostring(nfailed))
  elseif n + nfailed > 0 then
    self:log("warn", "queue %s: %d job(s) whose worker stopped renewing were put back, %d failed as poison jobs",
      q.name, n, nfailed)
  end
  self:poke(q, "lease")
end

-- ---- flows ------------------------------------------------------------------

-- Carries q's flow outbox over to the queues it is for (jobrt.flows): fresh = also what this
-- process just wrote, else what is overdue. One carrier per queue at a time; a call meanwhile
-- makes it go round once more. Arms q's flow timer for the next entry flow_take names.
function W:carry(q, fresh)
  if self.finished then return end
  if q.carrying then
    q.carry_again = q.carry_again == "fresh" and "fresh" or (fresh and "fresh" or "due")
    return
  end
  q.carrying = true
  spawn(function()
    repeat
      q.carry_again = nil
      local ok, nxt, server_now = flows.carry(self.ops, q.name, {
        fresh = fresh, log = function(level, f, ...) self:log(level, f, ...) end })
      if not ok then
        self:trouble("carry", q.name, "queue %s: cannot carry over flow news: %s (retrying)", q.name, tostring(nxt))
        self:flow_soon(q, 1)
      else
        self:trouble_over("carry", q.name)
      end
      if ok and nxt then
        self:flow_soon(q, math.max(0, (nxt - server_now) / 1000) + 0.01)
      end
      fresh = q.carry_again == "fresh"
    until not q.carry_again or self.finished
    q.carrying = false
    if self.stopping then self.stopped:broadcast("carried") end
  end)
end

-- Arms q's flow timer to carry overdue outbox entries in `delay` seconds, unless it fires sooner.
function W:flow_soon(q, delay)
  if self.stopping or q.retired or q.closed then return end
  local at = monotime() + delay
  if q.flow_at and q.flow_at > monotime() and q.flow_at <= at then return end
  q.flow_at = at
  q.flow_timer:start(delay, function()
    q.flow_at = nil
    self:carry(q)
  end)
end

-- ---- running jobs ----------------------------------------------------------

-- The attempt state of each running job's scope, for on_scope_expired (end_attempt removes it:
-- the state holds its scope, so weak keys alone would never let either go).
local scope_state = setmetatable({}, { __mode = "k" })

-- A job scope's deadline passed (jobrt.scope calls it with the scope).
local function on_scope_expired(scope)
  local state = scope_state[scope]
  if state then state.worker:expired(state) end
end

-- The body of a handler's coroutine (jobrt.scope spawns it with these arguments).
local function handler_main(self, q, job, spec, state)
  state.co = running()
  if self.watch_handlers then self.watch_handlers(state.co) end
  self:run_job(q, job, spec, state)
end

-- Starts one attempt. `sent`: monotonic time the reserve was sent (its lease is confirmed until
-- sent + lease). No closure is made for a job without a timeout: LuaJIT 2.1 compiles no closure
-- creation, and this runs for every job.
function W:start_job(q, job, sent)
  local prev = q.running[job.id]
  if prev then
    -- an earlier attempt of this job still runs here: its lease was lost (the job was given out
    -- again, here): it must not run beside the new one
    self:drop(prev, fmt("attempt %d was given out while attempt %s still ran here: its lease had been lost",
      job.attempt, tostring(prev.attempt)), true)
  end
  self.inflight = self.inflight + 1
  -- the definition this attempt runs on, to its end, whatever a reload serves meanwhile
  local spec = (self.jobs[q.name] or {})[job.fn]
  local timeout = job.timeout or (spec and spec.timeout) or self.default_timeout
  local state = { id = job.id, attempt = job.attempt, queue = q, job = job, worker = self,
                  started = monotime(), confirmed = sent, done = false, alone = job.alone,
                  spec = spec }
  if timeout then state.timeout_at = state.started + timeout; state.timeout = timeout end
  q.running[job.id] = state
  if job.alone then self.alone_job = state end
  -- the scope: the handler and everything it spawns; never resumed past the deadline
  state.scope = jobrt.scope(on_scope_expired)
  scope_state[state.scope] = state
  self:set_deadline(state)
  if timeout then self:arm_timeout(state, timeout) end
  state.scope:spawn(handler_main, self, q, job, spec, state)
end

-- The job's timer for its timeout (seconds). A function of its own: a closure in start_job,
-- even in a branch not taken, makes LuaJIT close its upvalues at every return (bytecode UCLO,
-- not compiled: start_job ran interpreted for every job).
function W:arm_timeout(state, timeout)
  state.timer = jobrt.timer()
  state.timer:start(timeout, function() self:timed_out(state) end)
end

-- The scope deadline: the end of the confirmed lease, or the timeout when earlier.
function W:set_deadline(state)
  local d = state.confirmed + self.lease
  if state.timeout_at and state.timeout_at < d then d = state.timeout_at end
  state.scope:set_deadline(d)
end

-- The scope's deadline passed when something was about to resume the handler.
function W:expired(state)
  if state.done then return end
  if state.timeout_at and monotime() >= state.timeout_at then return self:timed_out(state) end
  self:drop(state, fmt("its lease was not confirmed for %.1fs (more than the %gs lease: Redis unreachable, or this process was frozen); stopped before another worker's attempt could overlap it",
    monotime() - state.confirmed, self.lease))
end

function W:timed_out(state)
  if state.done then return end
  state.scope:cancel()
  local spec = state.spec                -- the definition it started with (a reload keeps it)
  self:finish(state, { id = state.id, attempt = state.attempt, ok = false,
    reason = fmt("timed out after %g s (the job's timeout): make the handler faster or raise its timeout", state.timeout),
    exception = "", retries = spec and spec.retries })
end

function W:run_job(q, job, spec, state)
  local id, attempt = job.id, job.attempt
  if not spec then
    local known = {}
    for name in pairs(self.jobs[q.name] or {}) do known[#known + 1] = name end
    table.sort(known)
    return self:finish(state, { id = id, attempt = attempt, ok = false,
      reason = fmt("unknown job '%s' in queue %s: this worker serves %s", tostring(job.fn), q.name, concat(known, ", ")),
      exception = "" })
  end
  local args, aerr, acode = json.decode(job.args, self.args_in)
  if args == nil then
    return self:finish(state, { id = id, attempt = attempt, ok = false, retries = spec.retries,
      reason = acode == "ETOOBIG"
        and fmt("args of job %s are %d bytes, more than this worker's limit of %d bytes (--max-payload)",
          id, #job.args, self.max_payload)
        or fmt("job %s: %s", id, first_line(aerr)), exception = "" })
  end
  local ctx = jobctx.new(state, job, q.name, self.id)
  local ok2, r1, r2 = xpcall(spec.handler, traceback, args, ctx)
  if state.done then return end          -- stopped meanwhile (cannot happen while running)
  local later = not ok2 and jobctx.retry_later_of(r1)
  if later then return self:postpone(state, later) end
  if not ok2 then
    local msg = error_text(r1)
    local reason = msg:match("^(.-)\nstack traceback:") or msg
    return self:finish(state, { id = id, attempt = attempt, ok = false, reason = reason, exception = msg,
      retries = spec.retries })
  end
  if (r1 == nil or r1 == false) and r2 ~= nil then   -- return nil, err  /  return false, err
    return self:finish(state, { id = id, attempt = attempt, ok = false, reason = error_text(r2),
      exception = "returned " .. tostring(r1) .. ", " .. error_text(r2), retries = spec.retries })
  end
  local text, eerr, ecode = json.encode(r1, self.result_out)
  if not text then
    return self:finish(state, { id = id, attempt = attempt, ok = false, retries = spec.retries,
      reason = ecode == "ETOOBIG"
        and fmt("the result of %s.%s is larger than the limit of %d bytes (--max-payload): return less, or store it elsewhere and return a reference",
          q.name, job.fn, self.max_payload)
        or fmt("the result of %s.%s cannot be stored as JSON (%s): return tables of strings, numbers and booleans",
          q.name, job.fn, first_line(eerr)), exception = "" })
  end
  return self:finish(state, { id = id, attempt = attempt, ok = true, value = text })
end

-- The attempt stops running here (outcome, drop or hand-back): frees its slot and its things.
function W:end_attempt(state)
  state.done = true
  state.scope:cancel()                   -- everything the job started ends with it
  scope_state[state.scope] = nil         -- its value reaches its key: weak keys alone keep both
  if state.timer then state.timer:close(); state.timer = nil end
  jobctx.release(state)
  local q = state.queue
  if q.running[state.id] == state then q.running[state.id] = nil end
  if self.alone_job == state then self.alone_job = nil end
  self.inflight = self.inflight - 1
  self.slot_free:broadcast()
  if self.inflight == 0 then self.stopped:broadcast("idle") end
  if q.retired then q.changed:broadcast("attempt") end
end

-- A failed job's error-reason and error-exception as stored: valid UTF-8 (records are read as
-- JSON, by `jobrt job` and by other languages) and at most 64 KiB each.
local TEXT_MAX = 65536
local function stored_text(t)
  if t == nil then return nil end
  t = tostring(t)
  if #t > TEXT_MAX then t = t:sub(1, TEXT_MAX) .. fmt("... (%d more bytes cut)", #t - TEXT_MAX) end
  return json.sanitize(t)
end

-- Records an attempt's outcome (once), frees its slot and schedules the batch report.
function W:finish(state, outcome)
  if state.done then return end
  self:end_attempt(state)
  if not outcome.ok then
    outcome.reason, outcome.exception = stored_text(outcome.reason), stored_text(outcome.exception)
  end
  local q = state.queue
  local ms = (monotime() - state.started) * 1000
  outcome.duration = ms / 1000            -- for jobrt.metrics (ops.complete ignores it)
  if outcome.ok then self.done = self.done + 1 else self.failed = self.failed + 1 end
  if self.log_jobs then
    jobrt.log_job(q.name, state.job.fn, state.id, state.attempt, ms, self.id, outcome.ok, outcome.reason)
    if not outcome.ok and outcome.exception and outcome.exception ~= "" then self:log("debug", "%s", outcome.exception) end
  end
  q.outcomes[#q.outcomes + 1] = outcome
  self:schedule_flush(q)
end

-- The handler asked to run again later (job:retry_later): the attempt ends and the job goes
-- back to the due set for `later.delay` seconds without using up a retry (postpone.lua).
function W:postpone(state, later)
  if state.done then return end
  self:end_attempt(state)
  local q = state.queue
  self:log("info", "%s.%s id=%s attempt=%s postponed for %gs: %s", q.name, state.job.fn, state.id,
    tostring(state.attempt), later.delay, later.reason or "job:retry_later")
  q.laters[#q.laters + 1] = { id = state.id, attempt = state.attempt, delay = later.delay, reason = later.reason }
  self:schedule_flush(q)
end

-- Stops an attempt without an outcome and gives it back (release): deleted while it ran, its
-- lease lost or not confirmed in time, or replaced by a newer attempt. `quiet` leaves the
-- attempt out of the release (its lease is surely gone).
function W:drop(state, why, quiet)
  if state.done then return end
  state.scope:cancel()
  self:end_attempt(state)
  local q = state.queue
  self:log("warn", "%s.%s id=%s attempt=%s stopped: %s", q.name, state.job.fn, state.id, tostring(state.attempt), why)
  if not quiet then self:queue_release(q, { { id = state.id, attempt = state.attempt } }) end
end

function W:queue_release(q, leases)
  for i = 1, #leases do q.releases[#q.releases + 1] = leases[i] end
  self:schedule_flush(q)
end

function W:schedule_flush(q)
  q.flush_cond:signal()
end

-- One per queue, started with the worker (never from inside a job, so it is in no job's
-- scope): sends what schedule_flush announced, one loop turn later so that every job that ends
-- in this turn goes in the same call.
function W:flusher(q)
  while true do
    while #q.outcomes == 0 and #q.releases == 0 and #q.laters == 0 do
      if self.finished or q.closed then q.flusher_on = false; return end
      q.flush_cond:wait()
    end
    q.flushing = true
    coroutine.yield()                    -- one loop turn: gather every job that ends now
    self:flush(q)
    q.flushing = false
    if self.inflight == 0 then self.stopped:broadcast("flushed") end
    if q.retired then q.changed:broadcast("flushed") end
  end
end

-- Sends q's finished outcomes in one complete call, and its hand-backs in one release call;
-- keeps them (and retries) on Redis errors.
function W:flush(q)
  local backoff = 0.05
  while #q.outcomes > 0 or #q.releases > 0 or #q.laters > 0 do
    local ok, err, code = true, nil, nil
    if #q.outcomes > 0 then
      -- at most 1000 per call (the script's limit), so a failure re-sends only what was not stored
      local batch, rest = q.outcomes, {}
      if #batch > 1000 then
        for i = 1001, #batch do rest[#rest + 1] = batch[i] end
        for i = #batch, 1001, -1 do batch[i] = nil end
      end
      q.outcomes = rest
      local res, cerr, ccode = self.ops:complete(q.name, self.id, batch)
      if res then
        if #res.ignored > 0 then
          self:log("warn", "queue %s: %d result(s) were not stored because their lease was lost (the job was given to another attempt): %s",
            q.name, #res.ignored, concat(res.ignored, ", "))
        end
        -- no reserve follows by itself: what a completion makes ready (a parked LBQUEUE job, a
        -- retry, room under max-active) comes with a wake-up from the script
        if res.flows then self:carry(q, true) end     -- news for parents: carry them over now
        -- run times and per-minute counts for jobrt web (jobrt.metrics; sent once a second)
        local skip = {}
        for _, id in ipairs(res.ignored) do skip[id] = true end
        for _, id in ipairs(res.cancelled) do skip[id] = true end
        self.metrics:add(q.name, batch, skip)
      else
        ok, err, code = false, cerr, ccode
        for i = 1, #batch do q.outcomes[#q.outcomes + 1] = batch[i] end
      end
    end
    if ok and #q.releases > 0 then
      local batch = q.releases
      q.releases = {}
      local n, rerr, rcode = self.ops:release(q.name, self.id, batch)
      if n then
        if n > 0 then q.dirty = true; q.wake:signal("release") end
      else
        ok, err, code = false, rerr, rcode
        for i = 1, #batch do q.releases[#q.releases + 1] = batch[i] end
      end
    end
    if ok and #q.laters > 0 then
      local batch = q.laters
      q.laters = {}
      local n, perr = self.ops:postpone(q.name, self.id, batch)
      if n then
        if n < #batch then
          self:log("warn", "queue %s: %d job(s) to run later were no longer held (lease lost or deleted)", q.name, #batch - n)
        end
      else
        ok, err = false, perr
        for i = 1, #batch do q.laters[#q.laters + 1] = batch[i] end
      end
    end
    if not ok then
      if self.finished or code == "ECLOSED" then
        local ids = {}
        for i = 1, #q.outcomes do ids[#ids + 1] = q.outcomes[i].id end
        for i = 1, #q.releases do ids[#ids + 1] = q.releases[i].id end
        for i = 1, #q.laters do ids[#ids + 1] = q.laters[i].id end
        self:log("error", "queue %s: could not store the outcomes of %s before stopping (%s); those jobs run again when their lease expires",
          q.name, concat(ids, ", "), tostring(err))
        q.outcomes, q.releases, q.laters = {}, {}, {}
      else
        self:trouble("store", q.name, "queue %s: cannot store %d outcome(s) and %d hand-back(s): %s (retrying)", q.name,
          #q.outcomes, #q.releases + #q.laters, tostring(err))
        sleep(backoff)
        backoff = backoff < 2 and backoff * 2 or 2
      end
    else
      self:trouble_over("store", q.name)
      backoff = 0.05
    end
  end
end

-- Logs a warning about trouble `kind` ("store", "renew", "carry") of queue `qname` once, until
-- W:trouble_over says it is over: an outage gives one line per kind and queue, not one per
-- retry (the connection itself logs the loss and the reconnect once).
function W:trouble(kind, qname, f, ...)
  local key = kind .. "\0" .. qname
  if self.troubles[key] then return end
  self.troubles[key] = true
  self:log("warn", f, ...)
end

function W:trouble_over(kind, qname)
  self.troubles[kind .. "\0" .. qname] = nil
end

-- Renews the leases of every attempt in flight, per queue, in one call each; stops the
-- attempts whose lease is lost, and those whose lease could not be confirmed in time.
function W:renew_all()
  for _, q in ipairs(self:all_queues()) do       -- retired queues too: their attempts still run
    local qname = q.name
    if not q.renewing and next(q.running) then
      q.renewing = true
      spawn(function()
        local leases, states = {}, {}
        for id, st in pairs(q.running) do
          leases[#leases + 1] = { id = id, attempt = st.attempt }
          states[#states + 1] = st
        end
        local sent = monotime()
        local lost, err = self.ops:renew(qname, self.id, leases, self.lease)
        q.renewing = false
        if not lost then
          self:trouble("renew", qname, "queue %s: cannot renew %d lease(s): %s", qname, #leases, tostring(err))
        else
          self:trouble_over("renew", qname)
          local gone = {}
          for _, l in ipairs(lost) do gone[l.id .. "\0" .. tostring(l.attempt)] = true end
          for _, st in ipairs(states) do
            if not st.done then
              if gone[st.id .. "\0" .. tostring(st.attempt)] then
                self:drop(st, "its lease was lost (deleted, or taken back after this worker could not renew it in time)")
              else
                st.confirmed = sent
                self:set_deadline(st)
              end
            end
          end
        end
        self:check_leases(q)
      end)
    else
      self:check_leases(q)
    end
  end
end

-- Stops the attempts of q whose lease is no longer confirmed (monotonic clock).
function W:check_leases(q)
  local t = monotime()
  for _, st in pairs(q.running) do
    if not st.done and t >= st.confirmed + self.lease then self:expired(st) end
  end
end

-- ---- worker registry (seed 004) ----------------------------------------------

-- Writes this worker's registry entry (every field, so it is whole again after a Redis restart
-- lost it) with an expiry of three heartbeats, in one call (register.lua); at start and on
-- every heartbeat. A worker that dies drops out of the registry by itself.
function W:register_self()
  if self.stopping then return true end
  return self.ops:register(self.id, floor(self.heartbeat_s * 3 + 1), {
    id = self.id, host = jobrt.hostname(), pid = jobrt.pid(), queues = concat(self.queue_names or {}, ","),
    started = fmt("%.6f", self.started_at), heartbeat = fmt("%.6f", now()), done = self.done,
    failed = self.failed, inflight = self.inflight, concurrency = self.concurrency })
end

function W:heartbeat()
  if not self.stopping then
    self:register_self()
    queuetypes.restore(self.r, self.declared_types)   -- a Redis that lost its data lost them too
  end
end

-- ---- hot reload ---------------------------------------------------------------

-- Serves new job definitions in place of the current ones (`jobrt work --watch`, SIGHUP).
--   jobs:  a jobDescription (as worker.new's `jobs`; `_type` settings allowed)
--   types: declared queue types as jobrt.jobfiles.load returns them (info.types), or nil
-- Everything is checked first (definitions, each declared type stored when missing and refused
-- when it conflicts, every new queue's type, the wake subscriptions of new queues); on any
-- error nothing changes and it returns nil, message. Then, with no yield in between:
--   * queues still defined take the new definitions for every attempt started from now on;
--     an attempt in flight runs to its end on the definition it started with (start_job keeps
--     it in state.spec: handler, timeout, retries). A job name no longer defined in a served
--     queue fails when reserved, as it would after a restart ("unknown job");
--   * new queues are pumped at once;
--   * queues no longer defined are retired: nothing more is reserved from them (a reserve
--     already on its way hands its jobs back unstarted); their attempts in flight run on,
--     renewed and reported as usual, and then the queue's state goes (W:drain);
--   * the registry entry lists the queues now served (jobrt health, stats, the warning for
--     queues nobody serves).
-- Returns true, { added = {names}, removed = {names}, queues = {names served} }.
-- Errors: "the worker is stopping", "the worker has not started", "a reload is already under
-- way", a definition's message (jobrt.jobdefs), a type conflict or missing type
-- (jobrt.queuetypes, jobrt.ops), or a Redis error ("ECONN: ..."), each as nil, message.
function W:reload(jobs_in, types_in)
  if self.stopping then return nil, "the worker is stopping" end
  if not self.ops then return nil, "the worker has not started" end
  if self.reloading then return nil, "a reload is already under way" end
  local types = {}
  for q, d in pairs(types_in or {}) do types[q] = d end
  local plain, terr = queuetypes.extract(jobs_in, nil, types)
  if not plain then return nil, terr end
  local jobs, err = jobdefs.load_description(plain)
  if not jobs then return nil, err end
  self.reloading = true
  local ok, done, summary = pcall(self.swap_jobs, self, jobs, types)
  self.reloading = false
  if not ok then error(done, 0) end
  return done, summary
end

-- W:reload once the definitions are checked: the Redis checks, then the swap.
function W:swap_jobs(jobs, types)
  local ok, aerr = queuetypes.apply(self.r, types)
  if not ok then return nil, aerr end
  local added, removed, names = {}, {}, {}
  for qname in pairs(jobs) do
    names[#names + 1] = qname
    local q = self.queues[qname]
    if not q or q.retired then added[#added + 1] = qname end
  end
  for _, qname in ipairs(self.queue_names) do
    if not jobs[qname] then removed[#removed + 1] = qname end
  end
  table.sort(names)
  table.sort(added)
  table.sort(removed)
  -- new queues: their types, their state, their wake-ups (before their first reserve)
  local fresh = {}
  for _, qname in ipairs(added) do
    local qtype, terr = self.ops:queue_type(qname)
    if not qtype then return nil, terr end
    if self.stopping then return nil, "the worker is stopping" end
    local q = self.queues[qname] or self:queue_state(qname, qtype)   -- a retired one is revived
    fresh[#fresh + 1] = q
    local sok, serr = self:subscribe(q)
    if not sok then
      for _, f in ipairs(fresh) do
        if not self.queues[f.name] then
          self.r:unsubscribe(ops_mod.channels(f.name).wake)
          f.due_timer:close()
          f.lease_timer:close()
          f.hold_timer:close()
          f.flow_timer:close()
        end
      end
      return nil, serr
    end
  end
  if self.stopping then return nil, "the worker is stopping" end
  -- the swap: no yield from here on
  self.jobs = jobs
  self.declared_types = types
  self.queue_names = names
  for _, qname in ipairs(removed) do
    local q = self.queues[qname]
    q.retired = true
    q.due_timer:stop()
    q.lease_timer:stop()
    q.hold_timer:stop()
    q.flow_timer:stop()
    if self.isolate == q then self.isolate = nil end
    q.wake:broadcast("retired")
    q.drainer = spawn(function() self:drain(q) end)
  end
  self.slot_free:broadcast("reload")    -- pumps waiting on an isolated, now retired queue
  for _, q in ipairs(fresh) do
    if q.retired then q.changed:broadcast("revived") end   -- its drainer ends
    q.retired = false
    q.dirty = true
    q.held = nil                         -- reserve says again if flow control holds it
    self.queues[q.name] = q
    self:start_pump(q)
    self:carry(q)                        -- overdue flow news of a queue served from now on
    q.wake:signal("reload")
  end
  self:register_self()
  if self.cron then self.cron:reconcile() end    -- the new files' cron entries, new queues' timers
  return true, { added = added, removed = removed, queues = names }
end

-- A retired queue (W:reload): once its pump has ended, its attempts in flight have ended and
-- their outcomes are stored, its wake-ups, timers and state go. Served again meanwhile, or
-- the worker stopping (W:stop then takes care of it): nothing to do.
function W:drain(q)
  local had = next(q.running) ~= nil
  while q.retired and not self.stopping and
        (q.pumping or next(q.running) or q.flushing or #q.outcomes > 0 or #q.releases > 0 or #q.laters > 0) do
    q.changed:wait()
  end
  if not q.retired or self.stopping then return end
  self.r:unsubscribe(ops_mod.channels(q.name).wake)
  q.due_timer:close()
  q.lease_timer:close()
  q.hold_timer:close()
  q.flow_timer:close()
  q.closed = true
  if self.queues[q.name] == q then self.queues[q.name] = nil end
  q.flush_cond:broadcast("closed")      -- its flusher ends
  if had then self:log("info", "queue %s: its last job in flight has ended (the queue is no longer served)", q.name) end
end

-- ---- stopping ----------------------------------------------------------------

-- Graceful stop: no more reserving; jobs in flight get `grace` seconds to finish, the rest
-- are handed back (release) without counting a failure. Returns when everything is stored.
function W:stop(grace)
  if self.stopping then return self:wait() end
  self.stopping = true
  if self.cron then self.cron:stop() end
  grace = grace or self.grace
  local all = self:all_queues()          -- served and retired (draining) queues
  for _, q in ipairs(all) do
    if self.r then self.r:unsubscribe(ops_mod.channels(q.name).wake) end
    q.due_timer:stop()
    q.lease_timer:stop()
    q.hold_timer:stop()
    q.flow_timer:stop()
    q.wake:broadcast("stop")
    q.changed:broadcast("stop")
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
  for _, q in ipairs(all) do
    local qname = q.name
    local ids = {}
    for id, st in pairs(q.running) do
      if not st.done then
        ids[#ids + 1] = id
        st.scope:cancel()
        self:end_attempt(st)
        q.releases[#q.releases + 1] = { id = id, attempt = st.attempt }
      end
    end
    if #ids > 0 then
      table.sort(ids)
      self:log("warn", "stopping: handing back %d unfinished job(s) of %s: %s", #ids, qname, concat(ids, ", "))
    end
  end
  self.inflight = 0
  -- Store every outcome and hand-back still waiting.
  local deadline = monotime() + 5
  for _, q in ipairs(all) do
    while (q.flushing or #q.outcomes > 0 or #q.releases > 0 or #q.laters > 0) and monotime() < deadline do
      self:schedule_flush(q)
      self.stopped:wait(deadline - monotime())
    end
    while q.carrying and monotime() < deadline do self.stopped:wait(deadline - monotime()) end
  end
  if self.renewer then self.renewer:close() end
  if self.beat then self.beat:close() end
  if self.metrics_timer then self.metrics_timer:close() end
  if self.r then self.metrics:flush(self.r) end
  for _, q in ipairs(self:all_queues()) do    -- a retired queue may have closed its own meanwhile
    q.due_timer:close()
    q.lease_timer:close()
    q.hold_timer:close()
    q.flow_timer:close()
  end
  if self.r then
    self.ops:unregister(self.id)
    if not redis.is_connection(self.url) then self.r:close() end
  end
  if self.pool then self.pool:close() end
  self.finished = true
  for _, q in ipairs(all) do q.flush_cond:broadcast("stopped") end
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
