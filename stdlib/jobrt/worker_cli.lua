-- jobrt.worker_cli: `jobrt jobs/` and `jobrt work PATH...`: load job definitions, check
-- them and their queue types, then serve (in this process, or in --procs supervised children)
-- until SIGINT/SIGTERM.
local jobrt = require 'jobrt'
local args = require 'jobrt.args'
local worker = require 'jobrt.worker'
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local jobfiles = require 'jobrt.jobfiles'
local queuetypes = require 'jobrt.queuetypes'


local _M = {}

local USAGE = [[
usage: jobrt PATH... [OPTIONS]          (also: jobrt work PATH... [OPTIONS])

Loads every *.lua job file under the PATHs (directories are searched recursively); each
returns a jobDescription table:
    return { QUEUENAME = { _type = "QUEUE",
                           myJob = function(args, job) return args end,
                           slow  = { handler = function(args, job) return 1 end, timeout = 30, retries = 3 },
                           daily = { handler = function(args, job) return 1 end, cron = '0 3 * * *' } } }
and serves those queues until SIGINT or SIGTERM (a second signal exits at once).
Files in a folder named lib are helper modules, never served: a job file loads
jobs/lib/util.lua with require 'util' (each served folder is on package.path).
_type (QUEUE, LBQUEUE or DELQUEUE) is stored in RESERVED:QCONFIG when the queue has no type
yet; a queue whose stored type differs is refused. Without _type, set it once with
jobrt queue-type QUEUENAME QUEUE|LBQUEUE|DELQUEUE.
A job with cron = 'EXPR' (or { 'EXPR', tz = ZONE, args = {...}, missed = 'once'|'skip',
hash = H }) is also enqueued on that schedule, once per tick across all workers (see
jobrt cron --help); the workers serving a queue keep its file entries to what their files
declare.

Options:
  --redis URL          redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH or
                       redis+sentinel://HOST:PORT[,...]/MASTERNAME (env JOBRT_REDIS;
                       default redis://127.0.0.1:6379; see the README's "Addresses")
  --tls-ca FILE, --tls-cert FILE, --tls-key FILE, --tls-insecure
                       TLS for rediss:// (env JOBRT_TLS_CA, JOBRT_TLS_CERT, JOBRT_TLS_KEY,
                       JOBRT_TLS_INSECURE=1): the CA of the server's certificate (default:
                       the system CAs), a client certificate and its key, no checks (warns)
  --concurrency N      jobs in flight per process (default 10)
  --procs N            run N worker child processes, supervised and restarted (default: 0,
                       serve in this process)
  --lease SECONDS      how long a reserved job survives without a renewal before another
                       worker takes it back (default 10)
  --grace SECONDS      on SIGTERM, how long jobs in flight may run before they are handed
                       back (default 30)
  --watchdog SECONDS   a loop that stops ticking this long (a handler that never yields) is
                       stopped: with --procs the child is killed and restarted; in a single
                       process the handler is interrupted with an error (default 10)
  --timeout SECONDS    default timeout for handlers that set none (default: none)
  --keep-ok SECONDS    how long a successful job's record is kept, 0 to 315360000 (default
                       3600; 0: removed as soon as the job succeeds)
  --keep-failed SECONDS  how long a failed job's record is kept, 0 to 315360000 (default
                       604800, 7 days; 0: removed at once, not kept in the failed set)
  --max-stalls N       leases a job may lose in a row before it is failed as a poison job
                       (default 2; a lost lease uses up no retry)
  --backoff SECONDS    delay before a failed job's first retry, doubled per attempt (default 1)
  --log-level LEVEL    debug, info, warn or error (default info)
  --log-format FORMAT  text (default) or json: one object per line with ts, level, msg, and for
                       each job queue, job, id, attempt, ms, worker (env JOBRT_LOG_FORMAT)
]]

local SPEC = { redis = "string", concurrency = "count", procs = "number", lease = "seconds",
               grace = "seconds", ["log-level"] = "string", ["log-format"] = "string",
               child = "flag", watchdog = "seconds",
               ["max-stalls"] = "number", ["keep-ok"] = "seconds", ["keep-failed"] = "seconds",
               backoff = "seconds", timeout = "seconds" }
for k, v in pairs(redis.CLI_OPTIONS) do SPEC[k] = v end

-- Loads the job files under paths (see jobrt.jobfiles): desc, nil, info | nil, message.
function _M.load(paths)
  return jobfiles.load(paths)
end

-- Stores the declared types that are missing, then checks every queue has one.
local function check_types(r, desc, types)
  local ok, err = queuetypes.apply(r, types)
  if not ok then return nil, err end
  return queuetypes.check(r, desc)
end

-- A usage error (2) is one plain line; with --log-format json any other failure is a log
-- object like every other line the worker writes.
local function fail(msg, code)
  if code ~= 2 and jobrt.log_format() == "json" then
    jobrt.log("error", "%s", msg)
  else
    io.stderr:write(msg:find("^jobrt ") and "" or "jobrt: ", msg, "\n")
  end
  return code or 1
end

-- Serve in this process until a signal.
local function serve(opts, desc, types)
  local w, err = worker.new{ redis = opts.redis, jobs = desc, queue_types = types, concurrency = opts.concurrency,
                             lease = opts.lease, grace = opts.grace, max_stalls = opts["max-stalls"],
                             keep_ok = opts["keep-ok"], keep_failed = opts["keep-failed"],
                             backoff = opts.backoff, timeout = opts.timeout,
                             watch_handlers = not opts.child and proc.watch_handler or nil }
  if not w then return fail(err) end
  local ok, serr = w:start()
  if not ok then return fail(serr) end
  if opts.child then
    proc.heartbeat(3, 0.5)          -- the supervisor watches this process
    -- Handlers keep the JIT here (the supervisor restarts a stuck child), except those with a
    -- timeout: they run interpreted so that the timeout holds from their first instruction
    -- even in code that never yields (hooks do not reach JIT-compiled code).
    for _, jobs in pairs(desc) do
      for _, spec in pairs(jobs) do
        if spec.timeout or opts.timeout then jit.off(spec.handler, true) end
      end
    end
    proc.watchdog(0)                -- job deadlines only
  else
    -- One process serves everything: a handler that never yields must not stall it. The
    -- watchdog interrupts such a handler with an error through a debug hook; hooks do not reach
    -- JIT-compiled code, so handlers run interpreted here (with --procs they keep the JIT: the
    -- supervisor restarts a stuck child instead).
    for _, jobs in pairs(desc) do
      for _, spec in pairs(jobs) do jit.off(spec.handler, true) end
    end
    proc.watchdog(opts.watchdog or 10)
  end
  local signals = 0
  local function on_sig(name)
    signals = signals + 1
    if signals > 1 then
      jobrt.log("warn", "%s again: exiting now; jobs in flight return when their lease expires", name)
      jobrt.exit(1)
      return
    end
    jobrt.log("info", "%s: stopping gracefully (send it again to exit at once)", name)
    w:stop()
  end
  local h1 = jobrt.on_signal("SIGTERM", on_sig)
  local h2 = jobrt.on_signal("SIGINT", on_sig)
  w:wait()
  h1:close()
  h2:close()
  return 0
end

-- The --procs supervisor: N children running `jobrt work PATHS --child ...`.
local function supervise(opts, paths, argv_opts)
  local n = opts.procs
  local watchdog = opts.watchdog or 10
  local exe = proc.exepath() or arg[0]
  local children, stopping = {}, false
  local all_done = jobrt.cond()

  local function start_child(slot)
    local a = { exe, "work" }
    for _, p in ipairs(paths) do a[#a + 1] = p end
    for _, o in ipairs(argv_opts) do a[#a + 1] = o end
    a[#a + 1] = "--child"
    -- detached: a Ctrl-C at the terminal reaches the supervisor only, which stops the
    -- children gracefully (they exit by themselves if the supervisor dies: see heartbeat)
    local p, err = proc.spawn{ file = exe, args = a, heartbeat = true, detached = true }
    if not p then
      jobrt.log("error", "cannot start worker child %d: %s (trying again in 1s)", slot, err)
      jobrt.spawn(function()
        jobrt.sleep(1)
        if not stopping and not children[slot] then start_child(slot) end
      end)
      return nil
    end
    children[slot] = { p = p, started = jobrt.monotime() }
    jobrt.log("info", "worker child %d started (pid %d)", slot, p:pid())
    jobrt.spawn(function()
      local code, sig = p:wait()
      local c = children[slot]
      if c and c.p == p then children[slot] = nil end
      if stopping then
        if next(children) == nil then all_done:broadcast() end
        return
      end
      jobrt.log("warn", "worker child %d (pid %d) %s; restarting it", slot, p:pid(),
        sig and ("was killed by signal " .. sig) or ("exited with status " .. code))
      -- a child that dies at once again and again is restarted at most once a second
      if c and jobrt.monotime() - c.started < 1 then jobrt.sleep(1) end
      if not stopping then start_child(slot) end
    end)
    return p
  end

  for i = 1, n do start_child(i) end

  -- Watchdog: a child whose loop stopped ticking (e.g. a handler spinning in pure Lua).
  local dog = jobrt.timer()
  dog:start(0.5, function()
    for slot, c in pairs(children) do
      local age = c.p:beat_age()
      if not c.killed and age > watchdog then
        c.killed = true
        jobrt.log("error", "worker child %d (pid %d) has not ticked for %.1fs (a handler that never yields?); killing it",
          slot, c.p:pid(), age)
        c.p:kill("SIGKILL")
      end
    end
  end, 0.5)

  local done = jobrt.cond()
  local signals = 0
  local function on_sig(name)
    signals = signals + 1
    if signals > 1 then
      for _, c in pairs(children) do c.p:kill("SIGKILL") end
      jobrt.exit(1)
      return
    end
    stopping = true
    local alive = 0
    for _ in pairs(children) do alive = alive + 1 end
    jobrt.log("info", "%s: stopping %d worker children gracefully", name, alive)
    for _, c in pairs(children) do c.p:kill("SIGTERM") end
    done:broadcast()
  end
  local h1 = jobrt.on_signal("SIGTERM", on_sig)
  local h2 = jobrt.on_signal("SIGINT", on_sig)
  while not stopping do done:wait() end
  -- the watchdog stays on (a stuck child cannot act on SIGTERM), and a child still running
  -- after its grace time and the hand-back is killed: its jobs come back by lease expiry
  local deadline = jobrt.monotime() + (opts.grace or 30) + 5
  while next(children) ~= nil do
    all_done:wait(1)
    if next(children) ~= nil and jobrt.monotime() > deadline then
      for slot, c in pairs(children) do
        if not c.killed then
          c.killed = true
          jobrt.log("error", "worker child %d (pid %d) did not stop within its grace time; killing it",
            slot, c.p:pid())
          c.p:kill("SIGKILL")
        end
      end
    end
  end
  dog:close()
  h1:close()
  h2:close()
  jobrt.log("info", "all worker children stopped")
  return 0
end

function _M.main(argv, cmd)
  local opts, pos = args.parse(argv, SPEC, "jobrt work")
  if not opts then return fail(pos, 2) end
  if opts.help then
    io.stdout:write(USAGE)
    return 0
  end
  if cmd == "work" and #pos == 0 then
    return fail("jobrt work: give at least one PATH of job files, e.g. jobrt work jobs/", 2)
  end
  local lok, lerr = args.apply_logging(opts, "jobrt work")
  if not lok then return fail(lerr, 2) end
  if opts.procs and (opts.procs < 0 or opts.procs > 256 or opts.procs ~= math.floor(opts.procs)) then
    return fail("jobrt work: --procs wants a whole number from 0 to 256 (0: serve in this process)", 2)
  end
  if opts.concurrency and opts.concurrency > 100000 then
    return fail("jobrt work: --concurrency wants a whole number from 1 to 100000", 2)
  end
  if opts.lease and opts.lease < 0.1 then
    return fail("jobrt work: --lease wants seconds >= 0.1 (how long a reserved job survives without a renewal)", 2)
  end
  if opts.watchdog and opts.watchdog < 0.5 then
    return fail("jobrt work: --watchdog wants seconds >= 0.5", 2)
  end
  if opts.timeout and opts.timeout <= 0 then
    return fail("jobrt work: --timeout wants seconds > 0", 2)
  end
  for _, k in ipairs({ "keep-ok", "keep-failed" }) do
    local v = opts[k]
    if v and (v > 315360000 or v ~= math.floor(v)) then
      return fail(fmt("jobrt work: --%s wants whole seconds from 0 to 315360000 (0: remove the record when the job ends), got %s", k, v), 2)
    end
  end
  if opts["max-stalls"] and (opts["max-stalls"] < 0 or opts["max-stalls"] > 1000 or opts["max-stalls"] ~= math.floor(opts["max-stalls"])) then
    return fail("jobrt work: --max-stalls wants a whole number from 0 to 1000", 2)
  end
  local url, perr = redis.address(opts.redis)
  if url == false then return fail(perr, 2) end
  local tok, terr = redis.use_cli_tls(opts, url)
  if not tok then return fail("jobrt work: " .. terr, 2) end
  local desc, err, info = _M.load(pos)
  if not desc then return fail(err) end
  -- Check the queue types before serving anything.
  if not url and not opts.child then          -- no address given: the embedded default
    local started
    url, started = require('jobrt.localredis').ensure()
    if not url then return fail(started) end
  end
  url = url or redis.DEFAULT_URL
  opts.redis = url
  local r, cerr = redis.connect(url)
  if not r then
    return fail(cerr .. " (is redis-server running? point --redis or JOBRT_REDIS at it)")
  end
  local ok, terr = check_types(r, desc, info.types)
  r:close()
  if not ok then return fail(terr) end
  if opts.procs and opts.procs > 0 and not opts.child then
    local pass = {}
    for _, k in ipairs({ "redis", "concurrency", "lease", "grace", "log-level", "max-stalls",
                         "keep-ok", "keep-failed", "backoff", "timeout", "tls-ca", "tls-cert",
                         "tls-key", "tls-insecure" }) do
      if opts[k] == true then pass[#pass + 1] = "--" .. k
      elseif opts[k] ~= nil then pass[#pass + 1] = "--" .. k .. "=" .. tostring(opts[k]) end
    end
    return supervise(opts, pos, pass)
  end
  return serve(opts, desc, info.types)
end

return _M
