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
--       also {args = {...}} extra redis-server arguments, {tls = "no"|"yes"|"optional"} a TLS
--       port besides the plain one (s.tls_port, s.tls_url; "yes": clients need a certificate)
--   h.certs()             a throwaway CA and certificates it signed (made once per run)
--   h.start_sentinel_set{name=}  a primary, a replica and three sentinels: set.url, set:stop()
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
  if self.tls then
    local c = h.certs()
    self.tls_port = self.tls_port or (port + 1 == 6379 and port + 2 or port + 1)
    for _, a in ipairs({ "--tls-port", tostring(self.tls_port), "--tls-cert-file", c.server_cert,
                         "--tls-key-file", c.server_key, "--tls-ca-cert-file", c.ca,
                         "--tls-auth-clients", self.tls }) do
      args[#args + 1] = a
    end
  end
  for _, a in ipairs(self.args or {}) do args[#args + 1] = a end
  local p, err = proc.spawn{ file = "redis-server", args = args, capture = true }
  if not p then error("tests: cannot start redis-server: " .. tostring(err)) end
  h.spawned[p] = table.concat(args, " ")
  local url = ("redis://127.0.0.1:%d"):format(port)
  local deadline = jobrt.monotime() + 10
  while jobrt.monotime() < deadline do
    if p:exited() then return nil end          -- port taken, most likely
    -- cluster = false: a cluster node (tests/cluster.lua) is not part of a cluster yet
    local r, _, code = redis.connect{ url = url, cluster = false }
    -- the server that answers must be this one, not another suite's on the same port
    local theirs = false
    if r then
      local info = r:call("INFO", "server")
      theirs = type(info) == "string" and tonumber(info:match("process_id:(%d+)")) ~= p:pid()
    end
    if theirs then
      r:close()
      if not p:exited() then p:kill("SIGKILL") end
      p:wait()
      return nil
    end
    if r or code == "EAUTH" then                -- answering (a password may be required)
      if r then r:close() end
      self.proc, self.port, self.url = p, port, url
      if self.tls then self.tls_url = ("rediss://127.0.0.1:%d"):format(self.tls_port) end
      return true
    end
    jobrt.sleep(0.01)
  end
  p:kill("SIGKILL")
  error("tests: redis-server did not answer on port " .. port .. " within 10 s")
end

-- Waits until the server `conn` talks to has at least n clients blocked in a command (BLPOP,
-- XREAD BLOCK...): the moment a test may cut the connection of a call that is in flight.
-- conn: a connection (not closed here); raises after `timeout` seconds (default 5).
function h.wait_blocked(conn, n, timeout)
  h.wait_for(function()
    local info = conn:call("INFO", "clients") or ""
    return tonumber(info:match("blocked_clients:(%d+)") or "0") >= (n or 1)
  end, timeout or 5, "a client blocked in a command on the server")
end

function h.start_redis(opts)
  opts = opts or {}
  local self = setmetatable({ aof = opts.aof, fsync = opts.fsync, dir = h.tmpdir(), args = opts.args,
                              tls = opts.tls == true and "no" or opts.tls }, Server)
  for _ = 1, 50 do
    self.tls_port = nil
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

-- ---- TLS and Sentinel (the transport specs) ----------------------------------------------

local certs
-- A throwaway CA and certificates it signed, made with openssl once per run:
--   c.ca, c.server_cert/c.server_key (for the names localhost and 127.0.0.1),
--   c.client_cert/c.client_key (a client certificate), c.other_ca (a CA that signed none of
--   them), c.dir. Removed by h.cleanup_certs() (tests/run.lua calls it at the end).
function h.certs()
  if certs then return certs end
  local d = h.tmpdir()
  local script = ([[
set -e
cd '%s'
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=jobrt test CA" -out ca.crt 2>/dev/null
key other.key
openssl req -x509 -new -key other.key -sha256 -days 2 -subj "/CN=jobrt other CA" -out other.crt 2>/dev/null
key server.key
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 1 -days 2 -sha256 -extfile server.ext -out server.crt 2>/dev/null
key client.key
openssl req -new -key client.key -subj "/CN=jobrt client" -out client.csr 2>/dev/null
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 2 -sha256 -out client.crt 2>/dev/null
]]):format(d)
  local f = assert(io.open(d .. "/make.sh", "w"))
  f:write(script)
  f:close()
  if os.execute("sh '" .. d .. "/make.sh'") ~= 0 then error("tests: openssl could not make the test certificates in " .. d) end
  certs = { dir = d, ca = d .. "/ca.crt", server_cert = d .. "/server.crt", server_key = d .. "/server.key",
            client_cert = d .. "/client.crt", client_key = d .. "/client.key", other_ca = d .. "/other.crt" }
  return certs
end

function h.cleanup_certs()
  if certs then os.execute("rm -rf '" .. certs.dir .. "'") end
  certs = nil
end

-- A Sentinel set on loopback: a primary, a replica in sync with it, and three sentinels that
-- monitor it under opts.name (default "mymaster") with a quorum of 2.
--   set.url ("redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster"), set.primary,
--   set.replica (servers), set.sentinels (ports), set:primary_port() (what the sentinels say),
--   set:failover() (SENTINEL FAILOVER, returns once the replica is the primary), set:stop()
local Set = {}
Set.__index = Set

function h.start_sentinel_set(opts)
  opts = opts or {}
  local name = opts.name or "mymaster"
  local set = setmetatable({ name = name, sentinels = {}, procs = {}, dir = h.tmpdir() }, Set)
  local pargs = { "--repl-diskless-sync-delay", "0" }
  for _, a in ipairs(opts.args or {}) do pargs[#pargs + 1] = a end
  set.primary = h.start_redis{ args = pargs }
  local rargs = { "--replicaof", "127.0.0.1", tostring(set.primary.port), "--repl-diskless-sync-delay", "0" }
  for _, a in ipairs(opts.args or {}) do rargs[#rargs + 1] = a end
  set.replica = h.start_redis{ args = rargs }
  local rr = h.redis(set.replica.url)
  h.wait_for(function() return rr:call("INFO", "replication"):find("master_link_status:up", 1, true) end,
    20, "the replica to sync")
  rr:close()
  for i = 1, 3 do
    for _ = 1, 50 do
      local port = math.random(20000, 59999)
      local conf = ("%s/sentinel-%d.conf"):format(set.dir, i)
      local f = assert(io.open(conf, "w"))
      f:write(("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s/sentinel-%d.log\n"
        .. "sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s 2000\n"
        .. "sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n")
        :format(port, set.dir, set.dir, i, name, set.primary.port, name, name, name))
      f:close()
      local p = assert(proc.spawn{ file = "redis-server", args = { "redis-server", conf, "--sentinel" }, capture = true })
      h.spawned[p] = "redis-server " .. conf .. " --sentinel"
      local up = false
      local deadline = jobrt.monotime() + 5
      while jobrt.monotime() < deadline and not p:exited() do
        local r = redis.connect(("redis://127.0.0.1:%d"):format(port))
        if r then
          -- the server that answers must be this sentinel, not another suite's server
          local info = r:call("INFO", "server") or ""
          r:close()
          up = info:find("redis_mode:sentinel", 1, true) ~= nil and info:find("tcp_port:" .. port .. "\r", 1, true) ~= nil
          break
        end
        jobrt.sleep(0.02)
      end
      if up then
        set.sentinels[i], set.procs[i] = port, p
        break
      end
      if not p:exited() then p:kill("SIGKILL"); p:wait() end
    end
    if not set.sentinels[i] then error("tests: no free port for sentinel " .. i) end
  end
  -- every sentinel knows the replica and the two others
  for _, port in ipairs(set.sentinels) do
    local s = h.redis(("redis://127.0.0.1:%d"):format(port))
    h.wait_for(function()
      return #s:call("SENTINEL", "REPLICAS", name) >= 1 and #s:call("SENTINEL", "SENTINELS", name) >= 2
    end, 60, "sentinel " .. port .. " to see the replica and the other sentinels")   -- hellos every 2 s; slow under load
    s:close()
  end
  local hs = {}
  for i, port in ipairs(set.sentinels) do hs[i] = "127.0.0.1:" .. port end
  set.url = "redis+sentinel://" .. table.concat(hs, ",") .. "/" .. name
  return set
end

-- The primary's port as the first sentinel reports it.
function Set:primary_port()
  local s = h.redis(("redis://127.0.0.1:%d"):format(self.sentinels[1]))
  local a = s:call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
  s:close()
  return tonumber(a[2])
end

-- The server (primary or replica object) listening on port.
function Set:server_on(port)
  if self.primary.port == port then return self.primary end
  if self.replica.port == port then return self.replica end
end

-- Forces a failover and waits until the other node is the primary: every sentinel says so and
-- it answers ROLE master. Returns the new primary's server.
function Set:failover()
  local old = self:primary_port()
  local s = h.redis(("redis://127.0.0.1:%d"):format(self.sentinels[1]))
  h.wait_for(function()
    local ok, err = s:call("SENTINEL", "FAILOVER", self.name)
    return ok or not tostring(err):find("INPROG")
  end, 20, "SENTINEL FAILOVER to be accepted")
  s:close()
  local new
  h.wait_for(function()
    for _, port in ipairs(self.sentinels) do
      local c = redis.connect(("redis://127.0.0.1:%d"):format(port))
      if not c then return false end
      local a = c:call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
      c:close()
      if type(a) ~= "table" or tonumber(a[2]) == old then return false end
      new = tonumber(a[2])
    end
    local n = redis.connect(("redis://127.0.0.1:%d"):format(new))
    if not n then return false end
    local role = n:call("ROLE")
    n:close()
    return type(role) == "table" and role[1] == "master"
  end, 30, "the failover to finish")
  return self:server_on(new)
end

function Set:stop()
  for _, p in ipairs(self.procs) do
    if not p:exited() then p:kill("SIGKILL"); p:wait() end
  end
  self.primary:stop()
  self.replica:stop()
  os.execute("rm -rf '" .. self.dir .. "'")
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
