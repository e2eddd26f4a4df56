-- tests/helpers.lua: what every spec needs — a private redis-server, fresh
-- connections, waiting on conditions with a deadline, and running jobrt
-- itself as a child process.
--
--   h.url                 URL of the suite's redis-server (env JOBRT_TEST_REDIS)
--   h.redis([url])        a new connection (raises if it cannot connect)
--   h.flush()             FLUSHALL on the suite's server
--   h.wait_for(fn, timeout, what)  fn() until truthy; raises "timed out ... waiting for <what>"
--   h.start_redis{aof=, fsync=}  another private server: s.url, s.port, s:stop(), s:kill(), s:restart()
--                         (fsync: its appendfsync policy, "always" unless given)
--   h.jobrt_bin           the jobrt binary under test (env JOBRT_BIN, else ./jobrt)
--   h.run_jobrt(args, {stdin=, env=, timeout=}) -> code, stdout, stderr, signal
--   h.spawn_jobrt(args, {env=, capture=}) -> process (p:kill(), p:wait(), p:output(), p:pid())
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local ffi = require 'ffi'

pcall(ffi.cdef, [[
  int setenv(const char *name, const char *value, int overwrite);
  int unsetenv(const char *name);
  extern char **environ;
]])

local h = {}

do  -- distinct ports and directories for suites running side by side
  local b = require('jobrt.core').random_bytes(4)
  math.randomseed(b:byte(1) * 16777216 + b:byte(2) * 65536 + b:byte(3) * 256 + b:byte(4))
end

h.root = os.getenv("PWD") or "."
h.jobrt_bin = os.getenv("JOBRT_BIN") or (h.root .. "/jobrt")
h.url = os.getenv("JOBRT_TEST_REDIS")

function h.setenv(k, v)
  if v == nil then ffi.C.unsetenv(k) else ffi.C.setenv(k, v, 1) end
end

-- The environment of this process as a list of "K=V", with overrides
-- (a value of false removes the variable).
function h.environ(over)
  local env = {}
  over = over or {}
  local i = 0
  while ffi.C.environ[i] ~= nil do
    local kv = ffi.string(ffi.C.environ[i])
    local k = kv:match("^([^=]*)=")
    if k and over[k] == nil then env[#env + 1] = kv end
    i = i + 1
  end
  for k, v in pairs(over) do
    if v ~= false then env[#env + 1] = k .. "=" .. tostring(v) end
  end
  return env
end

function h.wait_for(fn, timeout, what)
  local deadline = jobrt.monotime() + (timeout or 5)
  local delay = 0.002
  while true do
    local v = fn()
    if v then return v end
    if jobrt.monotime() > deadline then
      error(("timed out after %gs waiting for %s"):format(timeout or 5, what or "a condition"), 2)
    end
    jobrt.sleep(delay)
    if delay < 0.05 then delay = delay * 2 end
  end
end

function h.redis(url)
  local r, err = redis.connect(url or h.url)
  if not r then error("tests: cannot connect to the test redis-server: " .. tostring(err), 2) end
  return r
end

function h.flush()
  local r = h.redis()
  assert(r:call("FLUSHALL"))
  r:close()
end

local tmp_n = 0
function h.tmpdir()
  tmp_n = tmp_n + 1
  local d = ("/tmp/jobrt-test-%d-%d-%d"):format(jobrt.pid(), tmp_n, math.random(1e6))
  assert(os.execute("mkdir -p '" .. d .. "'") == 0)
  return d
end

-- Private redis-server on a free loopback port (never 6379).
local Server = {}
Server.__index = Server

local function start_on(self, port)
  local args = { "redis-server", "--port", tostring(port), "--bind", "127.0.0.1",
                 "--save", "", "--dir", self.dir, "--logfile", self.dir .. "/redis.log",
                 "--appendonly", self.aof and "yes" or "no", "--daemonize", "no",
                 "--appendfsync", self.fsync or "always" }
  local p, err = proc.spawn{ file = "redis-server", args = args, capture = true }
  if not p then error("tests: cannot start redis-server: " .. tostring(err)) end
  h.spawned[p] = table.concat(args, " ")
  local url = ("redis://127.0.0.1:%d"):format(port)
  local deadline = jobrt.monotime() + 10
  while jobrt.monotime() < deadline do
    if p:exited() then return nil end          -- port taken, most likely
    local r = redis.connect(url)
    if r then
      r:close()
      self.proc, self.port, self.url = p, port, url
      return true
    end
    jobrt.sleep(0.01)
  end
  p:kill("SIGKILL")
  error("tests: redis-server did not answer on port " .. port .. " within 10 s")
end

function h.start_redis(opts)
  opts = opts or {}
  local self = setmetatable({ aof = opts.aof, fsync = opts.fsync, dir = h.tmpdir() }, Server)
  for _ = 1, 50 do
    local port = opts.port or math.random(20000, 59999)
    if port ~= 6379 and start_on(self, port) then return self end
  end
  error("tests: no free port for redis-server after 50 tries")
end

function Server:kill()
  if self.proc and not self.proc:exited() then
    self.proc:kill("SIGKILL")
    self.proc:wait()
  end
end

function Server:stop()
  self:kill()
  os.execute("rm -rf '" .. self.dir .. "'")
end

-- Restart on the same port (data kept when aof is on).
function Server:restart()
  self:kill()
  for _ = 1, 100 do
    if start_on(self, self.port) then return self end
    jobrt.sleep(0.05)
  end
  error("tests: redis-server could not restart on port " .. self.port)
end

-- Every process a spec starts, so the suite can stop what a failed spec left running.
h.spawned = {}

-- Kills whatever specs started and did not stop (called by tests/run.lua at the end).
function h.kill_leftovers()
  local n = 0
  for p, what in pairs(h.spawned) do
    if not p:exited() then
      io.stderr:write("tests: still running, killed: ", tostring(what), "\n")
      p:kill("SIGKILL")
      n = n + 1
    end
  end
  return n
end

function h.spawn_jobrt(args, opts)
  opts = opts or {}
  local argv = { h.jobrt_bin }
  for i = 1, #args do argv[#argv + 1] = args[i] end
  local env = h.environ(opts.env or {})
  local p, err = proc.spawn{ file = h.jobrt_bin, args = argv, env = env, cwd = opts.cwd,
                             stdin = opts.stdin, capture = opts.capture ~= false }
  if not p then error("tests: cannot start jobrt: " .. tostring(err), 2) end
  h.spawned[p] = table.concat(argv, ' ')
  return p
end

-- Runs jobrt to completion; kills it after opts.timeout seconds (default 30).
function h.run_jobrt(args, opts)
  opts = opts or {}
  local p = h.spawn_jobrt(args, opts)
  local guard = jobrt.timer()
  guard:start(opts.timeout or 30, function() p:kill("SIGKILL") end)
  local code, sig = p:wait()
  guard:close()
  local out, err = p:output()
  return code, out, err, sig
end

return h
