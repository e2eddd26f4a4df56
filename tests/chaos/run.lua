-- tests/chaos/run.lua: `make chaos`, the soak that checks jobrt's promises under faults
-- (issue 8, "make chaos"). Run from the repository root:  ./jobrt run tests/chaos/run.lua
--
-- Environment:
--   CHAOS_SEED     the seed of the fault schedule and of the job mix (default: random; printed,
--                  so a run can be replayed)
--   CHAOS_SECONDS  how long jobs are enqueued and faults injected (default 180)
--   CHAOS_FSYNC    appendfsync of the queue redis-server: everysec (default) or always
--   CHAOS_RATE     jobs enqueued per second, all queues together (default 24)
--   CHAOS_DRAIN    seconds the queues may take to drain afterwards (default 150)
--   CHAOS_KEEP=1   keep the run directory (worker logs, ledger, report) even when the run passes
--
-- What it does:
--   1. starts two private redis-servers: the queue server (AOF on, CHAOS_FSYNC) and the ledger
--      server (never faulted), and loads the ledger's fencing script (tests/chaos/ledger.lua);
--   2. starts 3 workers `jobrt work tests/chaos/jobs --procs 2 --concurrency 20 --lease 2`
--      (each a supervisor with 2 children; logs in the run directory);
--   3. for CHAOS_SECONDS: one producer per queue type (chaos_q QUEUE, chaos_lb LBQUEUE,
--      chaos_del DELQUEUE) enqueues a seeded mix (ok, flaky, doom and slow jobs; client ids,
--      due times, repeated jobHashes, repeated enqueues), counting only what Redis acknowledged;
--      a cron entry adds a job to chaos_q every second, chaos_lb has a max-active and chaos_del
--      a rate limit (tests/chaos/sched.lua: their checks join the report); flows (parents in
--      chaos_flow after children in chaos_q and chaos_del) are enqueued about every 1.5 s
--      (tests/chaos/flows.lua: their jobs join the checks, and their own checks the report);
--      meanwhile the faults of tests/chaos/faults.lua hit on their schedule;
--   4. waits (on the condition, up to CHAOS_DRAIN s) until every acknowledged job has completed
--      or failed and every queue is empty;
--   5. probes every worker child (tests/chaos/jobs/chaos.lua, `probe`): one that is alive but
--      takes no job is stuck;
--   6. lists every key left in the queue Redis; stops the workers with SIGTERM;
--   7. checks the ledger (tests/chaos/ledger.lua), prints the report and a last line
--      `CHAOS-RESULT {json}`, and exits 0 only if nothing was violated (1 otherwise, 2 when the
--      soak itself broke, 130 when interrupted).
-- Every process and server it started is stopped on the way out, also after an error, SIGINT
-- or SIGTERM.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local cjson = require 'cjson'

-- The repository root, from where this file is, so the soak also runs from another directory.
local ROOT do
  local src = debug.getinfo(1, 'S').source:sub(2)
  if src:sub(1, 1) ~= '/' then src = (os.getenv('PWD') or '.') .. '/' .. src end
  ROOT = src:gsub('/%./', '/'):gsub('/tests/chaos/run%.lua$', '')
  package.path = ROOT .. '/?.lua;' .. package.path
end
local h = require 'tests.helpers'
if not os.getenv('JOBRT_BIN') then h.jobrt_bin = ROOT .. '/jobrt' end
local faults = require 'tests.chaos.faults'
local ledger = require 'tests.chaos.ledger'
local schedmix = require 'tests.chaos.sched'
local flowmix = require 'tests.chaos.flows'

local fmt, concat, floor = string.format, table.concat, math.floor

-- ---- settings ----------------------------------------------------------------------------

local function env_num(name, default, min)
  local v = os.getenv(name)
  if v == nil or v == '' then return default end
  local n = tonumber(v)
  if not n or n < min then
    io.stderr:write(fmt('chaos: %s must be a number >= %g, got %q\n', name, min, v))
    os.exit(2)
  end
  return n
end

local SEED = env_num('CHAOS_SEED', nil, 1)
if not SEED then
  local b = jobrt.random_bytes(3)
  SEED = b:byte(1) * 65536 + b:byte(2) * 256 + b:byte(3) + 1
end
SEED = floor(SEED)
local SECONDS = env_num('CHAOS_SECONDS', 180, 10)
local RATE = env_num('CHAOS_RATE', 24, 1)
local DRAIN = env_num('CHAOS_DRAIN', 150, 10)
local FSYNC = os.getenv('CHAOS_FSYNC') or 'everysec'
if FSYNC ~= 'everysec' and FSYNC ~= 'always' then
  io.stderr:write(fmt('chaos: CHAOS_FSYNC must be everysec or always, got %q\n', FSYNC))
  os.exit(2)
end
local KEEP = os.getenv('CHAOS_KEEP') == '1'
local WORKERS, PROCS, CONCURRENCY, LEASE = 3, 2, 20, 2
local QUEUES = { { name = 'chaos_q', type = 'QUEUE' }, { name = 'chaos_lb', type = 'LBQUEUE' },
                 { name = 'chaos_del', type = 'DELQUEUE' } }
local JOBS_DIR = ROOT .. '/tests/chaos/jobs'
-- how long what a drained queue leaves may live: records (worker defaults), a gone worker's
-- registry entry (3 heartbeats of 2 s, + 1), a minute of metrics (lua-server-scripts/README.md)
local RETENTION = { ok = 3600, failed = 604800, worker = 7, metrics = 7200 }

local T0 = jobrt.now()
local function since() return jobrt.now() - T0 end
local function say(...)
  io.stdout:write(fmt('chaos: [%6.1fs] ', since()), fmt(...), '\n')
  io.stdout:flush()
end

-- ---- what must be stopped on the way out ---------------------------------------------------

local rundir = fmt('/tmp/jobrt-chaos-%d-%d', SEED, jobrt.pid())
local servers = {}            -- redis-servers (tests/helpers.lua objects)
local tracked = {}            -- pid -> /proc start time of every worker process seen
local workers = {}
local trouble = {}            -- worker processes misbehaving (violations)
local shutting_down = false
local queue_url               -- the queue server's URL, in every worker's command line

-- Every process whose command line names our queue server: our workers, including children
-- orphaned by a killed supervisor that we never saw.
local function our_processes()
  local out = {}
  if not queue_url then return out end
  for _, e in ipairs(proc.scandir('/proc') or {}) do
    local pid = tonumber(e.name)
    if pid and pid ~= jobrt.pid() then
      local f = io.open('/proc/' .. pid .. '/cmdline', 'r')
      local cmd = f and f:read('*a') or ''
      if f then f:close() end
      if cmd:find(queue_url, 1, true) and cmd:find(JOBS_DIR, 1, true) then
        local st = faults.stat(pid)
        if st then out[pid] = st.start end
      end
    end
  end
  return out
end

local cleaned = false
local function cleanup()
  if cleaned then return end
  cleaned = true
  shutting_down = true
  local all = our_processes()
  for pid, start in pairs(tracked) do all[pid] = all[pid] or start end
  local n = 0
  for pid, start in pairs(all) do
    if faults.alive(pid, start) then
      faults.signal(pid, 'SIGCONT', start)
      faults.signal(pid, 'SIGKILL', start)
      n = n + 1
    end
  end
  if n > 0 then io.stderr:write(fmt('chaos: killed %d worker process(es) still running\n', n)) end
  for _, s in ipairs(servers) do
    if s.proc and not s.proc:exited() then s.proc:kill('SIGCONT') end
    s:stop()
  end
end

local function on_signal(name)
  io.stderr:write(fmt('\nchaos: %s: stopping every process and server this run started\n', name))
  cleanup()
  io.stderr:write(fmt('chaos: interrupted; seed %d (logs in %s)\n', SEED, rundir))
  jobrt.exit(130)
end
local sig_handlers = { jobrt.on_signal('SIGINT', on_signal), jobrt.on_signal('SIGTERM', on_signal) }

-- ---- workers --------------------------------------------------------------------------------

local Worker = {}
Worker.__index = Worker

local worker_env

function Worker.new(slot)
  return setmetatable({ slot = slot, procs = PROCS, exited = jobrt.cond(), busy = false }, Worker)
end

function Worker:children() return self.pid and faults.children(self.pid) or {} end

-- The supervisor and its children: { {pid=, start=}... }, supervisor first. Remembers them all.
function Worker:tree()
  local t = { { pid = self.pid, start = self.start_tick } }
  for _, c in ipairs(self:children()) do
    local st = faults.stat(c)
    if st then
      t[#t + 1] = { pid = c, start = st.start }
      tracked[c] = st.start
    end
  end
  return t
end

function Worker:kill(sig) if self.proc and not self.gone then self.proc:kill(sig) end end
function Worker:expect_exit() self.expected = true end

function Worker:wait_exit(timeout)
  local deadline = jobrt.monotime() + timeout
  while not self.gone do
    local left = deadline - jobrt.monotime()
    if left <= 0 then return false end
    self.exited:wait(left)
  end
  return true
end

-- Starts the supervisor and waits until it has all its children (it exits at once while Redis is
-- down: then it is started again). Raises after 2 minutes of trying.
function Worker:start()
  local log = fmt('%s/worker%d.log', rundir, self.slot)
  local deadline = jobrt.monotime() + 120
  self.starting = true
  while true do
    local p, err = proc.spawn{ file = '/bin/sh', env = worker_env,
      args = { 'sh', '-c', 'log=$1; shift; exec "$@" >>"$log" 2>&1', 'sh', log, h.jobrt_bin, 'work',
               JOBS_DIR, '--redis', queue_url, '--procs', tostring(PROCS),
               '--concurrency', tostring(CONCURRENCY), '--lease', tostring(LEASE) } }
    if not p then error('chaos: cannot start a worker: ' .. tostring(err)) end
    local st = faults.stat(p:pid())
    self.proc, self.pid, self.start_tick = p, p:pid(), st and st.start
    self.gone, self.expected = false, false
    tracked[self.pid] = self.start_tick
    jobrt.spawn(function()
      local code, sig = p:wait()
      if self.proc ~= p then return end
      self.gone = true
      self.exited:broadcast()
      if not self.expected and not self.starting and not shutting_down then
        trouble[#trouble + 1] = fmt('worker %d: supervisor %d exited by itself (%s) at +%.1fs', self.slot,
          p:pid(), sig and ('signal ' .. sig) or ('status ' .. tostring(code)), since())
        self:start()
      end
    end)
    local up_by = jobrt.monotime() + 15
    while not self.gone and #self:children() < PROCS and jobrt.monotime() < up_by do jobrt.sleep(0.05) end
    if not self.gone and #self:children() >= PROCS then
      self.starting = false
      self:tree()
      return true
    end
    if not self.gone then          -- alive but without its children after 15 s
      self.expected = true
      p:kill('SIGKILL')
      self:wait_exit(10)
    end
    if jobrt.monotime() > deadline then
      self.starting = false
      error(fmt('chaos: worker %d could not be started in 2 minutes (see %s)', self.slot, log))
    end
    jobrt.sleep(0.5)
  end
end

-- ---- producers ------------------------------------------------------------------------------

local jobs = {}               -- qid -> { q=, id=, fn=, acks= }: acknowledged jobs
local by_queue = {}
local counts = { calls = 0, acked = 0, refused = 0 }
local producing = true
local client
local flow_mix                -- tests/chaos/flows.lua, once started

local function ms_round(t) return floor(t * 1000 + 0.5) / 1000 end

local POOL = { ok = 12, flaky = 3, doom = 2, slow = 2 }     -- LBQUEUE jobHashes per kind

-- One job to enqueue, drawn from g: fn, args, opts, and whether to enqueue it twice (a client id
-- or identity that is still waiting: the second enqueue must not make a second job).
local function plan(q, g, n)
  local r = g:next()
  local fn = r < 0.84 and 'ok' or r < 0.90 and 'flaky' or r < 0.95 and 'doom' or 'slow'
  local segs
  if fn == 'slow' then
    segs = { 4 }                                   -- past its timeout of 1 s
  elseif g:chance(0.1) then                        -- longer than the lease: renewals must hold
    local total = g:uniform(2.2, 3.5)
    local m = math.ceil(total / 0.4)
    segs = {}
    for i = 1, m do segs[i] = total / m end
  else
    segs = { g:uniform(0.005, 0.3) }
  end
  local k = fmt('%s-%d', q.name, n)
  local args, opts, dup = { k = k, segs = segs, multi = g:chance(0.3) }, {}, false
  local now = jobrt.now()
  if q.type == 'QUEUE' then
    if g:chance(0.3) then opts.id = fmt('c%d-%s', SEED, k) end
    if g:chance(0.15) then
      args.due = ms_round(now + g:uniform(0.3, 4))
      opts.timestamp = args.due
      dup = opts.id ~= nil and args.due - now >= 1.5
    end
  elseif q.type == 'LBQUEUE' then
    args.hash = fmt('%s-%d', fn, g:int(1, POOL[fn]))
    opts.jobHash = args.hash
    if g:chance(0.2) then opts.priority = g:int(1, 5) end
    if g:chance(0.2) then opts.id = fmt('c%d-%s', SEED, k) end
  else
    args.due = ms_round(now + g:uniform(0, 4))
    opts.timestamp = args.due
    if g:chance(0.4) then
      args.hash = fmt('%s-%d', fn, g:int(1, 8))
      opts.jobHash = args.hash
      dup = g:chance(0.3) and args.due - now >= 1
    end
    if g:chance(0.2) then opts.id = fmt('c%d-%s', SEED, k) end
  end
  return fn, args, opts, dup
end

local last_refusal
local function submit(q, fn, args, opts)
  counts.calls = counts.calls + 1
  local ok, id = pcall(client.enqueueJob, client, q.name, fn, args, opts)
  if not ok then
    counts.refused = counts.refused + 1
    last_refusal = id
    return
  end
  counts.acked = counts.acked + 1
  local key = ledger.qid(q.name, id)
  local job = jobs[key]
  if job then
    job.acks = job.acks + 1
    if job.fn ~= fn then
      trouble[#trouble + 1] = fmt('%s/%s: an enqueue of a %s job was merged into a %s job', q.name, id, fn, job.fn)
    end
  else
    jobs[key] = { q = q.name, id = tostring(id), fn = fn, acks = 1, t = jobrt.now() }
    by_queue[q.name] = (by_queue[q.name] or 0) + 1
  end
end

local function producer(q, index, wg)
  wg:spawn(function()
    local g = faults.prng(SEED * 31 + index)
    local rate = RATE / #QUEUES
    local n = 0
    while producing do
      n = n + 1
      local fn, args, opts, dup = plan(q, g, n)
      submit(q, fn, args, opts)
      if dup then submit(q, fn, args, opts) end
      jobrt.sleep(-math.log(1 - g:next()) / rate)        -- Poisson arrivals
    end
  end)
end

-- ---- the end: drain, probes, keys ------------------------------------------------------------

local function record_key(q, id) return 'jobrt:{' .. q .. '}:job:' .. id end

-- Runs fn(item) for every item, 64 at a time (each may call Redis).
local function each_parallel(items, fn)
  local wg = jobrt.waitgroup()
  local i = 0
  for _ = 1, math.min(64, #items) do
    wg:spawn(function()
      while i < #items do
        i = i + 1
        fn(items[i])
      end
    end)
  end
  wg:wait()
  if #wg.errors > 0 then error(wg.errors[1], 0) end
end

local function read_outcomes(r, keys)
  local out = {}
  each_parallel(keys, function(key)
    local job = jobs[key]
    local v = r:call('HMGET', record_key(job.q, job.id), 'state', 'result', 'error-reason')
    if type(v) == 'table' then
      if v[1] == redis.null then out[key] = { missing = true }
      else
        out[key] = { state = v[1], result = v[2] ~= redis.null and v[2] or nil,
                     reason = v[3] ~= redis.null and v[3] or nil }
      end
    end
  end)
  return out
end

-- Waits until every acknowledged job has ended (ended ok in the ledger, or failed in Redis) and
-- every queue is empty, or DRAIN seconds passed. When the queues stay empty for 5 s while jobs
-- have not ended, nothing is left that could end them: it stops waiting then. Returns true when
-- everything ended; false, why when the queues did not empty in time; false when they emptied
-- with jobs that never ended (the checks count those).
local function drain(r, L, lr)
  local unresolved = {}
  for key in pairs(jobs) do unresolved[key] = true end
  local deadline = jobrt.monotime() + DRAIN
  local last_note, idle_since = 0, nil
  while true do
    L:tail(lr)
    local ask = {}
    for key in pairs(unresolved) do
      if L.done_ok[key] then unresolved[key] = nil else ask[#ask + 1] = key end
    end
    local outs = read_outcomes(r, ask)
    local left = 0
    for _, key in ipairs(ask) do
      if outs[key] and outs[key].result == 'failed' then unresolved[key] = nil else left = left + 1 end
    end
    local busy = 0
    for _, q in ipairs(QUEUES) do
      local ok, s = pcall(client.stats, client, q.name)
      if not ok then busy = busy + 1
      else busy = busy + (s.pending or 0) + (s.delayed or 0) + (s.parked or 0) + (s.executing or 0) end
    end
    if flow_mix then busy = busy + flow_mix:busy(client) end   -- parents and their waiting
    if left == 0 and busy == 0 then return true end
    if busy == 0 then idle_since = idle_since or jobrt.monotime() else idle_since = nil end
    if idle_since and jobrt.monotime() - idle_since >= 5 then
      say('drain: the queues are empty but %d job(s) never ended: they cannot end any more', left)
      return false
    end
    if jobrt.monotime() > deadline then
      say('drain: gave up after %ds with %d job(s) not ended and %d in the queues', DRAIN, left, busy)
      return false, fmt('the queues did not drain within %ds: %d job(s) still waiting or running', DRAIN, busy)
    end
    if jobrt.monotime() - last_note > 10 then
      last_note = jobrt.monotime()
      say('drain: %d job(s) not ended yet, %d waiting or running in the queues', left, busy)
    end
    jobrt.sleep(0.5)
  end
end

-- Every live worker child must take its share of N probes per queue (N = every slot of every
-- child): one that takes none while alive is stuck. Returns the list of stuck workers.
local function probe(lr)
  local stuck = {}
  local n = WORKERS * PROCS * CONCURRENCY
  local done = 0
  for round, q in ipairs(QUEUES) do
    local items = {}
    for i = 1, n do
      -- distinct args: identical DELQUEUE jobs due at the same millisecond are one job
      items[i] = { job = 'probe', args = { round = round, i = i, n = n, wait = 8 },
                   opts = q.type == 'LBQUEUE' and { jobHash = fmt('probe-%d-%d', round, i) } or nil }
    end
    client:enqueueJobs(q.name, items)
    done = done + n
    local ok = pcall(h.wait_for, function() return lr:call('LLEN', 'chaos:probes') >= done end, 60,
      'the probe jobs of ' .. q.name)
    if not ok then stuck[#stuck + 1] = fmt('the %d probe jobs of %s did not all run within 60 s', n, q.name) end
    local served = {}
    for _, s in ipairs(lr:call('LRANGE', 'chaos:probes', 0, -1)) do
      local p = cjson.decode(s)
      if p.round == round then served[p.pid] = (served[p.pid] or 0) + 1 end
    end
    for _, w in ipairs(workers) do
      local kids = w:children()
      if w.gone then
        stuck[#stuck + 1] = fmt('worker %d: its supervisor is gone', w.slot)
      elseif #kids < PROCS then
        stuck[#stuck + 1] = fmt('worker %d: supervisor %d has %d of its %d children', w.slot, w.pid, #kids, PROCS)
      end
      for _, c in ipairs(kids) do
        if not served[c] then
          stuck[#stuck + 1] = fmt('worker %d: child %d is alive but took none of the %d probe jobs of %s',
            w.slot, c, n, q.name)
        end
      end
    end
  end
  return stuck
end

-- Every key of the queue Redis, with what check_keys needs; and the ids of live workers.
local function list_keys(r)
  local listing, cursor = {}, '0'
  repeat
    local rep = assert(r:call('SCAN', cursor, 'COUNT', 1000))
    cursor = rep[1]
    for _, k in ipairs(rep[2]) do listing[#listing + 1] = { key = k } end
  until cursor == '0'
  local live_pids = {}
  for _, w in ipairs(workers) do
    for _, c in ipairs(w:children()) do live_pids[tostring(c)] = true end
  end
  local live = {}
  each_parallel(listing, function(k)
    k.type = r:call('TYPE', k.key)
    k.ttl = r:call('TTL', k.key)
    local q = k.key:match('^jobrt:{(.-)}:')
    if k.key:match('^jobrt:{.-}:job:') then
      local v = r:call('HMGET', k.key, 'state', 'result')
      if type(v) == 'table' then
        k.state = v[1] ~= redis.null and v[1] or nil
        k.result = v[2] ~= redis.null and v[2] or nil
      end
    elseif k.key == 'jobrt:workers' then                -- the registry before register.lua
      k.members = r:call('SMEMBERS', k.key)
    elseif k.key == 'jobrt:{workers}' then              -- register.lua's: id -> expiry (ms)
      local t = r:call('TIME')
      local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
      local flat = r:call('ZRANGE', k.key, 0, -1, 'WITHSCORES') or {}
      k.members, k.expires = {}, {}
      for i = 1, #flat, 2 do
        k.members[#k.members + 1] = flat[i]
        k.expires[flat[i]] = (tonumber(flat[i + 1]) - now_ms) / 1000
      end
    elseif k.key:match('^jobrt:worker:') or k.key:match('^jobrt:{workers}:') then
      local pid = r:call('HGET', k.key, 'pid')
      local id = k.key:match('^jobrt:worker:(.+)$') or k.key:match('^jobrt:{workers}:(.+)$')
      if pid and live_pids[tostring(pid)] then live[id] = true end
    elseif q and (k.key:match(':flow$') or k.key:match(':flow:out$') or k.key:match(':flow:waiting$')) then
      -- flow bookkeeping: a few of its fields or members, for the report
      local some = k.type == 'hash' and r:call('HKEYS', k.key) or r:call('ZRANGE', k.key, 0, 3)
      if type(some) == 'table' then k.sample = concat(some, ', ', 1, math.min(#some, 4)) end
    elseif q and k.key:match(':failed$') then
      k.missing = {}
      for _, id in ipairs(r:call('ZRANGE', k.key, 0, -1) or {}) do
        if r:call('EXISTS', record_key(q, id)) == 0 then k.missing[#k.missing + 1] = id end
      end
    end
  end)
  return listing, live
end

-- ---- the soak --------------------------------------------------------------------------------

local function main()
  assert(os.execute("mkdir -p '" .. rundir .. "'") == 0)
  local schedule = faults.schedule(SEED, SECONDS, WORKERS, LEASE)
  say('seed %d, %ds, appendfsync %s, %d workers x --procs %d --concurrency %d --lease %d, %g jobs/s',
    SEED, SECONDS, FSYNC, WORKERS, PROCS, CONCURRENCY, LEASE, RATE)
  say('replay: CHAOS_SEED=%d CHAOS_SECONDS=%d CHAOS_FSYNC=%s make chaos', SEED, SECONDS, FSYNC)
  say('run directory (worker logs, ledger, report): %s', rundir)
  local plan_text = {}
  for _, ev in ipairs(schedule) do
    plan_text[#plan_text + 1] = fmt('%.1fs %s%s', ev.at, ev.kind, ev.kind:match('^redis') and '' or ('@' .. ev.slot))
  end
  say('fault schedule: %s', concat(plan_text, ', '))

  local lserver = h.start_redis{}
  servers[#servers + 1] = lserver
  local qserver = h.start_redis{ aof = true, fsync = FSYNC }
  servers[#servers + 1] = qserver
  queue_url = qserver.url
  local lr = h.redis(lserver.url)
  local sha = ledger.load(lr)
  worker_env = h.environ{ CHAOS_LEDGER = lserver.url, CHAOS_LEDGER_SHA = sha, JOBRT_REDIS = false }
  client = jobrt.connect(qserver.url)
  local qr = h.redis(qserver.url)           -- for reading records and keys
  for _, q in ipairs(QUEUES) do client:queueType(q.name, q.type) end
  local sched = schedmix.start(client, qserver.url, say)     -- cron and limits in the mix
  flow_mix = flowmix.start(client, say, SEED, jobs, by_queue)   -- flows in the mix

  for i = 1, WORKERS do
    workers[i] = Worker.new(i)
    workers[i]:start()
  end
  say('workers up: %s', (function()
    local t = {}
    for _, w in ipairs(workers) do
      local kids = {}
      for _, c in ipairs(w:children()) do kids[#kids + 1] = tostring(c) end
      t[#t + 1] = fmt('%d (children %s)', w.pid, concat(kids, ','))
    end
    return concat(t, ', ')
  end)())

  local L = ledger.new()
  local injected, skipped = {}, 0
  local ctx = { workers = workers, redis = qserver, pending = jobrt.waitgroup(), t_base = T0,
                trouble = function(s) trouble[#trouble + 1] = s end,
                log = function(s) say('%s', s) end }
  local fault_wg = jobrt.waitgroup()
  local start = jobrt.monotime()

  -- the fault schedule
  fault_wg:spawn(function()
    for _, ev in ipairs(schedule) do
      local wait = start + ev.at - jobrt.monotime()
      if wait > 0 then jobrt.sleep(wait) end
      fault_wg:spawn(function()
        local f, why = faults.inject(ev, ctx)
        if f then injected[#injected + 1] = f
        else
          skipped = skipped + 1
          say('fault %s skipped: %s', ev.kind, tostring(why))
        end
      end)
    end
  end)

  -- the producers, and a progress line every 10 s
  local prod_wg = jobrt.waitgroup()
  for i, q in ipairs(QUEUES) do producer(q, i, prod_wg) end
  flow_mix:producer(prod_wg, faults.prng(SEED * 31 + 97))
  local last_line = 0
  while jobrt.monotime() - start < SECONDS do
    jobrt.sleep(math.min(1, SECONDS - (jobrt.monotime() - start)))
    L:tail(lr)
    for _, w in ipairs(workers) do if not w.gone and not w.busy then w:tree() end end
    if jobrt.monotime() - last_line >= 10 then
      last_line = jobrt.monotime()
      local ended = 0
      for _ in pairs(L.done_ok) do ended = ended + 1 end
      say('enqueued %d (refused %d%s), %d flows (%d refused), ledger %d records, %d runs, %d jobs ended ok, %d faults',
        counts.acked, counts.refused, last_refusal and (': ' .. tostring(last_refusal):sub(1, 80)) or '',
        flow_mix.acked, flow_mix.refused, L.n, #L.order, ended, #injected)
    end
  end
  producing = false
  flow_mix.producing = false
  say('enqueueing stopped; waiting for the producers and the faults in progress')
  prod_wg:wait()
  fault_wg:wait()
  for _, w in ipairs(workers) do
    if w.gone then w:start() end
  end
  sched:stop_cron()
  L:tail(lr)
  sched:add_ticks(qr, L, jobs, by_queue)

  say('draining: %d jobs acknowledged', (function() local n = 0; for _ in pairs(jobs) do n = n + 1 end; return n end)())
  local drained, not_drained = drain(qr, L, lr)
  say('%s; reading the job records', drained and 'drained' or 'NOT drained')
  local keys = {}
  for key in pairs(jobs) do keys[#keys + 1] = key end
  local outcomes = read_outcomes(qr, keys)
  sched:clear_limits()

  say('probing every worker child')
  local stuck = probe(lr)
  say('listing the keys left in the queue Redis')
  local listing, live = list_keys(qr)
  local verdicts = ledger.check_keys(listing, live, RETENTION)

  say('stopping the workers (SIGTERM)')
  for _, w in ipairs(workers) do w:expect_exit(); w:kill('SIGTERM') end
  for _, w in ipairs(workers) do
    if not w:wait_exit(45) then
      trouble[#trouble + 1] = fmt('worker %d: supervisor %d did not stop within 45 s of SIGTERM', w.slot, w.pid)
    end
  end
  ctx.pending:wait()
  L:tail(lr)
  local crosstalk = {}
  for _, line in ipairs(lr:call('LRANGE', 'chaos:crosstalk', 0, -1) or {}) do
    crosstalk.n = (crosstalk.n or 0) + 1
    if #crosstalk < 20 then
      local c = cjson.decode(line)
      local shown = {}
      for i = 1, #c.replies, 2 do
        local v = c.replies[i + 1]
        shown[#shown + 1] = fmt('%s answered %s', c.replies[i],
          type(v) == 'table' and cjson.encode(v) or tostring(v))
      end
      crosstalk[#crosstalk + 1] = fmt('%s/%s attempt %s pid %s: %s', c.q, c.id, tostring(c.att),
        tostring(c.pid), concat(shown, ', '))
    end
  end

  local by_kind = {}
  for _, f in ipairs(injected) do
    f.t1 = f.t1 or jobrt.now()
    by_kind[f.kind] = (by_kind[f.kind] or 0) + 1
  end
  local lb = {}
  for _, q in ipairs(QUEUES) do if q.type == 'LBQUEUE' then lb[q.name] = true end end
  if not_drained then trouble[#trouble + 1] = not_drained end
  local sched_trouble, sched_info = sched:check(L, injected, LEASE)
  for _, t in ipairs(sched_trouble) do trouble[#trouble + 1] = t end
  local flow_trouble, flow_info = flow_mix:check(L, T0)
  for _, t in ipairs(flow_trouble) do trouble[#trouble + 1] = t end
  for k, v in pairs(flow_info) do sched_info[k] = v end
  say('flows: %d acknowledged (%d cut off after their root and finished by the workers, %d refused), %d jobs; %d parent runs checked against %d children',
    flow_info.flows, flow_info.flows_interrupted, flow_info.flows_refused, flow_info.flow_jobs,
    flow_info.parent_runs_checked, flow_info.children_checked)
  say('scheduling: %d cron tick jobs, at most %d of %s running at once (max-active %d), at most %d starts of %s in %gs (rate %d)',
    sched_info.cron_ticks, sched_info.max_active_seen, schedmix.MAX_ACTIVE_QUEUE, schedmix.MAX_ACTIVE,
    sched_info.rate_max_window, schedmix.RATE_QUEUE, schedmix.RATE_PER, schedmix.RATE_N)
  local rep = L:analyse{
    seed = SEED, fsync = FSYNC, seconds = SECONDS, jobs = jobs, outcomes = outcomes,
    faults = injected, faults_by_kind = by_kind, skipped_faults = skipped, lb_queues = lb,
    fault_kinds = faults.KINDS,
    lease = LEASE, t_base = T0, enqueue_calls = counts.acked, refused = counts.refused,
    by_queue = by_queue, keys = verdicts, stuck = stuck, process_trouble = trouble, crosstalk = crosstalk,
  }
  local text = ledger.format(rep)
  io.stdout:write(text, '\n')
  local f = io.open(rundir .. '/report.txt', 'w')
  if f then
    f:write(text, '\n\nkeys:\n')
    for _, v in ipairs(verdicts) do f:write(fmt('  %s %s: %s\n', v.ok and 'ok ' or 'BAD', v.key, v.why)) end
    f:close()
  end
  local dump = io.open(rundir .. '/ledger.txt', 'w')
  if dump then
    for _, line in ipairs(lr:call('LRANGE', ledger.KEYS[1], 0, -1) or {}) do dump:write(line, '\n') end
    dump:close()
  end
  local summary = ledger.summary(rep)
  for k, v in pairs(sched_info) do summary[k] = v end
  summary.pass = #rep.violations == 0
  io.stdout:write('CHAOS-RESULT ', cjson.encode(summary), '\n')
  lr:close()
  qr:close()
  client:close()
  return summary.pass
end

local ok, res = xpcall(main, debug.traceback)
for _, s in ipairs(sig_handlers) do s:close() end
cleanup()
local code
if not ok then
  io.stderr:write('chaos: the soak itself failed: ', tostring(res), '\n')
  io.stderr:write(fmt('chaos: seed %d; logs in %s\n', SEED, rundir))
  code = 2
elseif res then
  io.stdout:write(fmt('chaos: PASS (seed %d)\n', SEED))
  if not KEEP then os.execute("rm -rf '" .. rundir .. "'") end
  code = 0
else
  io.stdout:write(fmt('chaos: FAIL (seed %d; worker logs, ledger and report in %s)\n', SEED, rundir))
  code = 1
end
io.stdout:flush()
jobrt.exit(code)
return code
