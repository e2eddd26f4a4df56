-- jobrt.worker_cli: `jobrt jobs/` and `jobrt work PATH...`: load job definitions, check
-- them and their queue types, then serve (in this process, or in --procs supervised children:
-- jobrt.supervisor) until SIGINT/SIGTERM. SIGHUP, and with --watch a change of the files,
-- reloads the definitions (jobrt.hotreload; in this process through the worker's W:reload).
local jobrt = require 'jobrt'
local args = require 'jobrt.args'
local worker = require 'jobrt.worker'
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local json = require 'jobrt.json'
local jobfiles = require 'jobrt.jobfiles'
local queuetypes = require 'jobrt.queuetypes'
local hotreload = require 'jobrt.hotreload'
local watcher = require 'jobrt.watcher'
local supervisor = require 'jobrt.supervisor'

local fmt = string.format


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
  --redis URL          redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH,
                       redis+sentinel://HOST:PORT[,...]/MASTERNAME or
                       redis+cluster://HOST:PORT[,...] (env JOBRT_REDIS; see the
                       README's "Addresses"); default: ./.jobrt/redis.sock (this directory's
                       private Redis) if it exists, else redis://127.0.0.1:6379; when neither
                       answers, the private redis-server is started
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
  --watch              reload the job files when a *.lua file under the PATHs changes
                       (helpers in lib/ included; edits are coalesced, 200 ms after the last);
                       SIGHUP reloads with or without it. New jobs and queues are served at once,
                       removed queues are reserved no more; jobs in flight finish on the code
                       they started with. A file that fails to load (the error is logged with
                       file:line) leaves the previous definitions serving. With --procs the
                       children are replaced one at a time, each once its successor serves.
  --max-payload BYTES  the largest args a job may bring and result it may return, as JSON text
                       (default 16777216, 16 MiB; at most 536870912); a job over it fails
  --log-level LEVEL    debug, info, warn or error (default info)
  --log-format FORMAT  text (default) or json: one object per line with ts, level, msg, and for
                       each job queue, job, id, attempt, ms, worker (env JOBRT_LOG_FORMAT)
]]

local SPEC = { redis = "string", concurrency = "count", procs = "number", lease = "seconds",
               grace = "seconds", ["log-level"] = "string", ["log-format"] = "string",
               child = "flag", watchdog = "seconds",
               ["max-stalls"] = "number", ["keep-ok"] = "seconds", ["keep-failed"] = "seconds",
               backoff = "seconds", timeout = "seconds", watch = "flag", ["max-payload"] = "count" }
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

-- Readies the handlers of desc for this process (at start and for every reload).
local function prepare(opts, desc)
  for _, jobs in pairs(desc) do
    for _, spec in pairs(jobs) do
      if type(spec) == "table" and type(spec.handler) == "function" then
        if opts.child then
          -- Handlers keep the JIT here (the supervisor restarts a stuck child), except those
          -- with a timeout: they run interpreted so that the timeout holds from their first
          -- instruction even in code that never yields (hooks do not reach JIT-compiled code).
          if spec.timeout or opts.timeout then jit.off(spec.handler, true) end
        else
          -- One process serves everything: a handler that never yields must not stall it. The
          -- watchdog interrupts such a handler with an error through a debug hook; hooks do not
          -- reach JIT-compiled code, so handlers run interpreted here (with --procs they keep
          -- the JIT: the supervisor restarts a stuck child instead).
          jit.off(spec.handler, true)
        end
      end
    end
  end
end

-- Serve in this process until a signal; SIGHUP (and with --watch a change of the files)
-- reloads the definitions in place (W:reload).
local function serve(opts, desc, types, paths, seen)
  local w, err = worker.new{ redis = opts.redis, jobs = desc, queue_types = types, concurrency = opts.concurrency,
                             lease = opts.lease, grace = opts.grace, max_stalls = opts["max-stalls"],
                             keep_ok = opts["keep-ok"], keep_failed = opts["keep-failed"],
                             backoff = opts.backoff, timeout = opts.timeout,
                             max_payload = opts["max-payload"],
                             watch_handlers = not opts.child and proc.watch_handler or nil }
  if not w then return fail(err) end
  local ok, serr = w:start()
  if not ok then return fail(serr) end
  prepare(opts, desc)
  if opts.child then
    proc.heartbeat(3, 0.5)          -- the supervisor watches this process (and knows it serves)
    proc.watchdog(0)                -- job deadlines only
  else
    proc.watchdog(opts.watchdog or 10)
  end
  local function reload()
    local new, lerr, info = hotreload.load(paths)
    if not new then return nil, lerr end
    prepare(opts, new)
    local rok, res = w:reload(new, info.types)
    if not rok then
      info.restore()
      return nil, res
    end
    return true, hotreload.summary(res)
  end
  -- a child is told to reload by its supervisor replacing it; SIGHUP sent to it still works
  local watch = opts.watch and not opts.child
  local reloader, werr = hotreload.start{ paths = paths, watch = watch, reload = reload, seen = seen }
  if not reloader then
    jobrt.log("error", "cannot watch the job files: %s (serving without --watch; SIGHUP reloads)", tostring(werr))
    reloader = hotreload.start{ paths = paths, watch = false, reload = reload }
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
    reloader:close()
    w:stop()
  end
  local h1 = jobrt.on_signal("SIGTERM", on_sig)
  local h2 = jobrt.on_signal("SIGINT", on_sig)
  w:wait()
  reloader:close()
  h1:close()
  h2:close()
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
  if opts["max-payload"] then
    local ok, lerr = json.check_limit(opts["max-payload"], "--max-payload")
    if not ok then return fail("jobrt work: " .. lerr, 2) end
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
  -- with --watch, the sources as they are loaded: a change before the watches are in place
  -- is then seen too
  local seen = opts.watch and not opts.child and watcher.sources(pos) or nil
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
  -- leaving, the program that uses the directory's private Redis says it keeps running
  local localredis = require 'jobrt.localredis'
  local function done(code)
    if not opts.child and localredis.is_local(url) then io.stderr:write(localredis.exit_note()) end
    return code
  end
  local r, cerr = redis.connect(url)
  if not r then
    return done(fail(cerr .. " (is redis-server running? point --redis or JOBRT_REDIS at it)"))
  end
  local ok, terr = check_types(r, desc, info.types)
  r:close()
  if not ok then return done(fail(terr)) end
  if opts.procs and opts.procs > 0 and not opts.child then
    -- The children find Redis through JOBRT_REDIS in their environment, never in their
    -- command line: a password there would be visible to every local user in ps.
    local ffi = require 'ffi'
    pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
    ffi.C.setenv("JOBRT_REDIS", url, 1)
    local pass = {}
    for _, k in ipairs({ "concurrency", "lease", "grace", "log-level", "max-stalls",
                         "keep-ok", "keep-failed", "backoff", "timeout", "tls-ca", "tls-cert",
                         "tls-key", "tls-insecure", "max-payload" }) do
      if opts[k] == true then pass[#pass + 1] = "--" .. k
      elseif opts[k] ~= nil then pass[#pass + 1] = "--" .. k .. "=" .. tostring(opts[k]) end
    end
    local queues = {}
    for q in pairs(desc) do queues[#queues + 1] = q end
    table.sort(queues)
    -- what reloaded job files must pass before any child is replaced
    local function check(new, new_info)
      local rc, rcerr = redis.connect(url)
      if not rc then return nil, rcerr end
      local cok, cerr = check_types(rc, new, new_info.types)
      rc:close()
      return cok, cerr
    end
    return done(supervisor.run(opts, pos, pass, { check = check, queues = queues, seen = seen }))
  end
  return done(serve(opts, desc, info.types, pos, seen))
end

return _M
