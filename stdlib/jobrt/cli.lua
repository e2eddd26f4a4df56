-- jobrt.cli: the command line. main(arg) runs as the host's main coroutine
-- and returns the process exit status (0 ok, 1 failure, 2 usage error).
local jobrt = require 'jobrt'

local io, os, type, unpack = io, os, type, unpack

local _M = {}

local USAGE = [[
usage: jobrt COMMAND [ARGS] [OPTIONS]

Serve jobs:
  jobrt DIR|FILE...                 load every *.lua job definition and serve its queues
  jobrt work PATH...                the same
Enqueue and inspect:
  jobrt enqueue QUEUE JOB [JSON]    enqueue one job (- reads JSON lines from stdin)
  jobrt queue-type QUEUE [TYPE]     read or set a queue's type (QUEUE, LBQUEUE, DELQUEUE)
  jobrt stats [QUEUE]               counts per state, and workers alive
  jobrt failed QUEUE [list|retry|delete]
  jobrt job QUEUE ID                one job's record as JSON
  jobrt delete QUEUE ID             delete (cancel) one job
  jobrt health [QUEUE...]           exit 0 when Redis answers and live workers serve the QUEUEs
Schedule and control (across all workers):
  jobrt cron add NAME QUEUE JOB 'EXPR' [JSON]   repeat a job (cron expression, @every 30s)
  jobrt cron list | delete NAME
  jobrt pause QUEUE | resume QUEUE  stop starting a queue's jobs, and start again
  jobrt limit QUEUE [--rate N --per S] [--max-active N] [--clear]
  jobrt queues                      every queue: type, counts, paused, limits, crons
  jobrt drain QUEUE                 remove its waiting and delayed jobs
  jobrt obliterate QUEUE [--force]  delete the queue and all its keys
  jobrt repl                        interactive Lua prompt with a connected `queue`
  jobrt web [--listen HOST:PORT]    REST API, dashboard and /metrics over HTTP
Run Lua on the loop:
  jobrt run FILE.lua [ARGS]         run a script (arguments in the global arg)
  jobrt -e 'CODE' [ARGS]            run a chunk
Other:
  jobrt --version                   versions of jobrt, LuaJIT, libuv and hiredis
  jobrt COMMAND --help              options of one command

Common options: --redis URL (redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH,
redis+sentinel://HOST:PORT[,...]/MASTERNAME or redis+cluster://HOST:PORT[,...] (a Redis
Cluster; any node's plain address works too); env JOBRT_REDIS; default ./.jobrt/redis.sock (this
directory's private Redis) if it exists, else redis://127.0.0.1:6379),
--tls-ca FILE, --tls-cert FILE, --tls-key FILE, --tls-insecure (for rediss://; env JOBRT_TLS_CA,
JOBRT_TLS_CERT, JOBRT_TLS_KEY, JOBRT_TLS_INSECURE), --log-level debug|info|warn|error,
--log-format text|json (env JOBRT_LOG_FORMAT; json: one object per line).
]]

local function version()
  local v = jobrt.versions()
  io.stdout:write(("jobrt %s (LuaJIT %s, libuv %s, hiredis %s)\n"):format(
    v.jobrt, v.luajit:gsub("^LuaJIT ", ""), v.libuv, v.hiredis))
  return 0
end

-- Runs chunk fn with script args; returns its exit status. A raised error
-- propagates (the host prints it with its traceback and exits 1).
local function run_chunk(fn, name, args)
  local a = { [0] = name }
  for i = 1, #args do a[i] = args[i] end
  _G.arg = a
  local r = fn(unpack(a))
  if type(r) == "number" then return r end
  return 0
end

-- Takes the common options (--redis URL, --log-level L, --log-format F, --tls-*) from
-- argv[first...] while they lead; --redis and the TLS options are passed on through JOBRT_REDIS
-- and JOBRT_TLS_*, so jobrt.connect() and every command see them. Returns the index of the
-- first other argument, or nil, message.
local function take_common(argv, first)
  local redis = require 'jobrt.redis'
  local i = first
  local tls, url, seen = {}, nil, {}
  while argv[i] do
    local a = argv[i]
    local name, val = a:match("^%-%-([%w-]+)=(.*)$")
    name = name or a:match("^%-%-([%w-]+)$")
    local kind = redis.CLI_OPTIONS[name]
    if name ~= "redis" and name ~= "log-level" and name ~= "log-format" and not kind then break end
    if kind == "flag" then
      if val then return nil, ("--%s takes no value"):format(name) end
      val = true
    else
      if not val then
        val = argv[i + 1]
        if val == nil then return nil, ("--%s needs a value"):format(name) end
        i = i + 1
      end
      -- one value each, as jobrt.args takes options (a flag may repeat)
      if seen[name] then
        return nil, ("--%s is given twice (%s and %s): give it once"):format(name,
          name == "redis" and redis.mask_url(seen[name]) or seen[name], name == "redis" and redis.mask_url(val) or val)
      end
      seen[name] = val
    end
    if name == "redis" then
      local ok, err = redis.parse_url(val)
      if not ok then return nil, "--redis: " .. err end
      url = val
      local ffi = require 'ffi'
      pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
      ffi.C.setenv("JOBRT_REDIS", val, 1)
    elseif kind then
      tls[name] = val
    else
      local ok, err = require('jobrt.args').apply_logging({ [name] = val }, "jobrt")
      if not ok then return nil, (err:gsub("^jobrt: ", "")) end
    end
    i = i + 1
  end
  local ok, err = redis.use_cli_tls(tls, url)
  if not ok then return nil, err end
  return i
end

local RUN_USAGE = [[
usage: jobrt run [--redis URL] [--log-level L] [--log-format F] FILE.lua [ARGS]
       jobrt -e [--redis URL] [--log-level L] [--log-format F] 'CODE' [ARGS]
Runs the file (or chunk) inside a coroutine on the jobrt loop: Redis calls, jobrt.sleep and
friends yield instead of blocking. Its arguments are in the global arg (arg[0] is the file).
--redis sets JOBRT_REDIS for it, so jobrt.connect() with no address goes there; the TLS options
--tls-ca FILE, --tls-cert FILE, --tls-key FILE and --tls-insecure set JOBRT_TLS_* likewise.
]]

local function cmd_run(argv)
  local at, err = take_common(argv, 2)
  if not at then
    io.stderr:write("jobrt run: ", err, "\n")
    return 2
  end
  local file = argv[at]
  if file == nil then
    io.stderr:write("jobrt run: missing FILE.lua: usage: jobrt run FILE.lua [ARGS] (see jobrt run --help)\n")
    return 2
  end
  if file == "--help" or file == "-h" then
    io.stdout:write(RUN_USAGE)
    return 0
  end
  argv = { "run", unpack(argv, at) }
  local fn, err = loadfile(file)
  local exists = not fn and io.open(file)
  if exists then exists:close() end
  if not fn and file:find("^%-") and not exists then
    io.stderr:write(("jobrt run: unknown option %s (see jobrt run --help)\n"):format(file))
    return 2
  end
  if not fn then
    io.stderr:write("jobrt run: ", err, "\n")
    return 1
  end
  return run_chunk(fn, file, { unpack(argv, 3) })
end

local function cmd_eval(argv)
  local at, err = take_common(argv, 2)
  if not at then
    io.stderr:write("jobrt -e: ", err, "\n")
    return 2
  end
  local code = argv[at]
  if code == nil then
    io.stderr:write("jobrt -e: missing CODE: usage: jobrt -e 'CODE' [ARGS] (see jobrt run --help)\n")
    return 2
  end
  if code == "--help" or code == "-h" then
    io.stdout:write(RUN_USAGE)
    return 0
  end
  argv = { "-e", unpack(argv, at) }
  local fn, err = loadstring(code, "=(command line)")
  if not fn then
    io.stderr:write("jobrt -e: ", err, "\n")
    return 1
  end
  return run_chunk(fn, "-e", { unpack(argv, 3) })
end

-- Commands implemented in other modules: name -> module with main(argv).
local MODULES = {
  work = "jobrt.worker_cli",
  repl = "jobrt.repl",
  enqueue = "jobrt.commands",
  ["queue-type"] = "jobrt.commands",
  stats = "jobrt.commands",
  failed = "jobrt.commands",
  job = "jobrt.commands",
  delete = "jobrt.commands",
  health = "jobrt.health",
  web = "jobrt.web",
  cron = "jobrt.sched_commands",
  pause = "jobrt.sched_commands",
  resume = "jobrt.sched_commands",
  limit = "jobrt.sched_commands",
  queues = "jobrt.sched_commands",
  drain = "jobrt.sched_commands",
  obliterate = "jobrt.sched_commands",
}

-- Every command, in the order the man page lists them: these first, then any other command of
-- MODULES (sorted), so a new command is documented without anyone remembering to add it.
-- tools/help_docs.lua builds the man page and the bash completion from their --help texts.
function _M.commands()
  local order = { "work", "enqueue", "queue-type", "stats", "failed", "job", "delete", "health",
                  "repl", "web", "run" }
  local seen, rest = {}, {}
  for _, c in ipairs(order) do seen[c] = true end
  for c in pairs(MODULES) do if not seen[c] then rest[#rest + 1] = c end end
  table.sort(rest)
  for _, c in ipairs(rest) do order[#order + 1] = c end
  return order
end

function _M.main(argv)
  local at, err = take_common(argv, 1)     -- `jobrt --redis URL stats` works too
  if not at then
    io.stderr:write("jobrt: ", err, "\n")
    return 2
  end
  if at > 1 then argv = { unpack(argv, at) } end
  local cmd = argv[1]
  if cmd == nil or cmd == "--help" or cmd == "-h" or cmd == "help" then
    io.stdout:write(USAGE)
    return cmd == nil and 2 or 0
  end
  if cmd == "--version" or cmd == "-v" or cmd == "version" then return version() end
  if cmd == "-e" then return cmd_eval(argv) end
  if cmd == "run" then return cmd_run(argv) end
  local modname = MODULES[cmd]
  local sub = { unpack(argv, 2) }
  if not modname then
    -- `jobrt jobs/` or `jobrt a.lua b.lua`: serve those paths.
    if cmd:sub(1, 1) ~= "-" and (cmd:find("/") or cmd:match("%.lua$") or io.open(cmd, "r")) then
      modname, sub = "jobrt.worker_cli", { unpack(argv, 1) }
    else
      io.stderr:write(("jobrt: unknown command '%s' (see jobrt --help)\n"):format(cmd))
      return 2
    end
  end
  local ok, mod = pcall(require, modname)
  if not ok then
    io.stderr:write(("jobrt %s: this build cannot load %s: %s\n"):format(cmd, modname, tostring(mod)))
    return 70
  end
  return mod.main(sub, cmd) or 0
end

return _M
