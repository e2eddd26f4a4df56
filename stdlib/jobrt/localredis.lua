-- jobrt.localredis: the embedded default Redis, one per project directory.
--
-- Which Redis a command uses when it is given no address (no --redis, no JOBRT_REDIS):
--   1. the private redis-server of the current directory, when ./.jobrt/redis.sock exists;
--   2. otherwise redis://127.0.0.1:6379.
-- `jobrt jobs/` (and `make run`) go one step further: when neither answers they start that
-- private redis-server and say so on stderr. It keeps running when they exit (so enqueue,
-- stats and repl in the same directory still reach it, and jobs keep their queue); on exit
-- they say so and how to stop it: redis-cli -s .jobrt/redis.sock shutdown. Its append-only
-- file keeps the data across restarts: the next `jobrt jobs/` starts it again on the same data.
--
-- Security model (the directory's owner is the only one who can reach it):
--   * no TCP port at all: a unix socket, ./.jobrt/redis.sock, mode 0700, inside ./.jobrt/,
--     mode 0700 and owned by the user running jobrt; a ./.jobrt/ that is a symbolic link or
--     belongs to someone else is refused, and one with wider permissions is narrowed to 0700
--     (so other local users can neither connect nor read the data files or the log);
--   * protected mode on; the default user may not run CONFIG (which would let a client make
--     Redis write files anywhere with CONFIG SET dir + SAVE), DEBUG, MODULE (loading code),
--     ACL (which could undo this), REPLICAOF/SLAVEOF, MIGRATE, FAILOVER, SYNC/PSYNC;
--   * data in ./.jobrt/appendonlydir/ (AOF), log in ./.jobrt/redis.log.
--
--   localredis.DIR                              ".jobrt"
--   localredis.find() -> url | nil[, problem]   the private server's URL when ./.jobrt/redis.sock
--                                               exists (problem: why it may not be used)
--   localredis.default_url() -> url | nil, problem   what a command uses when given no address
--   localredis.ensure() -> url, started | nil, message   for `jobrt jobs/`: the private server
--                                               or the default one, starting the private one
--                                               when nothing answers
--   localredis.is_local(url) -> whether url is this directory's private server
--   localredis.exit_note() -> the line to print when the program that uses it exits
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local jobrt = require 'jobrt'

local fmt = string.format

local _M = { DIR = ".jobrt", SOCKET = "redis.sock" }

-- Commands the private server's default user may not run (see the header).
local DENIED = { "-config", "-debug", "-module", "-acl", "-replicaof", "-slaveof", "-migrate",
                 "-failover", "-sync", "-psync" }

local function cwd()
  return os.getenv("PWD") or "."
end

local function paths()
  local dir = cwd():gsub("/+$", "") .. "/" .. _M.DIR
  return dir, dir .. "/" .. _M.SOCKET
end

local function url_of(sock) return "unix://" .. sock end

-- Checks (and narrows) the permissions of the private directory. Returns true, or nil and
-- why it must not be used.
local function check_dir(dir)
  local st, err = proc.lstat(dir)
  if not st then return nil, err end
  if st.kind == "link" then
    return nil, fmt("%s is a symbolic link: jobrt keeps its private Redis only in a real directory it owns; remove the link", dir)
  end
  if st.kind ~= "dir" then return nil, fmt("%s is not a directory: remove it", dir) end
  if st.uid ~= proc.getuid() then
    return nil, fmt("%s belongs to another user (uid %d): jobrt will not use a Redis that someone else can control; remove it or give --redis URL",
      dir, st.uid)
  end
  if st.mode % 64 ~= 0 then                  -- group or other bits: ours, so narrow them
    local ok, cerr = proc.chmod(dir, 448)    -- 0700
    if not ok then return nil, cerr end
  end
  return true
end

function _M.is_local(url)
  local _, sock = paths()
  return url == url_of(sock)
end

_M.NOT_RUNNING = "this directory's private Redis (./.jobrt/) is not running: `jobrt jobs/` (or make run) starts it again on its data; or give --redis URL (or set JOBRT_REDIS)"

-- The pid of a redis-server still running with dir as its data directory but without our
-- socket: one started by an older jobrt, on TCP 127.0.0.1:6379 with no password.
local function old_server(dir)
  local f = io.open(dir .. "/redis.pid")
  if not f then return nil end
  local pid = tonumber(f:read("*a"))
  f:close()
  if not pid or not proc.kill(pid, 0) then return nil end
  local c = io.open("/proc/" .. pid .. "/cmdline")
  local cmd = c and c:read("*a") or ""
  if c then c:close() end
  if not cmd:find("redis-server", 1, true) then return nil end   -- the pid was reused
  return pid
end

-- url | nil, problem | nil, nil, "stopped" (./.jobrt/ exists but has no socket) | nil (none)
function _M.find()
  local dir, sock = paths()
  if not proc.lstat(dir) then return nil end
  local ok, err = check_dir(dir)
  if not ok then return nil, err end
  local st = proc.lstat(sock)
  if not st then return nil, nil, "stopped" end
  if st.kind ~= "socket" then return nil, fmt("%s is not a socket: remove it", sock) end
  if st.uid ~= proc.getuid() then
    return nil, fmt("%s belongs to another user (uid %d): remove it or give --redis URL", sock, st.uid)
  end
  return url_of(sock)
end

function _M.default_url()
  local url, problem, state = _M.find()
  if url then return url end
  if problem then return nil, problem end
  if state == "stopped" then
    if old_server((paths())) then return redis.DEFAULT_URL end
    return nil, _M.NOT_RUNNING
  end
  return redis.DEFAULT_URL
end

local function answers(url)
  local r = redis.connect(url)
  if r then r:close() end
  return r ~= nil
end

-- Starts the private redis-server (daemonized) and waits until it answers.
local function start(dir, sock)
  local args = { "redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
    "--dir", dir, "--protected-mode", "yes", "--appendonly", "yes", "--save", "",
    "--maxmemory-policy", "noeviction", "--daemonize", "yes", "--pidfile", dir .. "/redis.pid",
    "--logfile", dir .. "/redis.log", "--enable-debug-command", "no", "--enable-module-command", "no",
    "--user", "default", "on", "nopass", "~*", "&*", "+@all" }
  for _, d in ipairs(DENIED) do args[#args + 1] = d end
  local p, err = proc.spawn{ file = "redis-server", capture = true, args = args }
  if not p then
    return nil, "no Redis answers and redis-server cannot be started (" .. tostring(err) ..
      "): install it (make deps) or give --redis URL"
  end
  local code = p:wait()
  if code ~= 0 then
    local out, e = p:output()
    return nil, fmt("redis-server could not start in ./%s (exit status %d): %s%s", _M.DIR, code, out, e)
  end
  local url = url_of(sock)
  local deadline = jobrt.monotime() + 10
  while jobrt.monotime() < deadline do
    if answers(url) then return url end
    jobrt.sleep(0.02)
  end
  return nil, fmt("started redis-server in ./%s but it does not answer at %s: see ./%s/redis.log",
    _M.DIR, sock, _M.DIR)
end

function _M.ensure()
  local dir, sock = paths()
  if #sock > 100 then
    -- sockaddr_un holds 108 bytes: too deep a directory cannot have its socket
    if answers(redis.DEFAULT_URL) then return redis.DEFAULT_URL, false end
    return nil, fmt("nothing answers at %s, and this directory's path is too long for the private Redis's unix socket (%s, %d bytes; at most 100): run from a shorter path, or give --redis URL",
      redis.DEFAULT_URL, sock, #sock)
  end
  local url, problem, state = _M.find()
  if problem then return nil, problem end
  if url and answers(url) then return url, false end
  local old = state == "stopped" and old_server(dir)
  if old then
    io.stderr:write(fmt("jobrt: warning: the redis-server that an older jobrt started for this directory (pid %d) still runs, on TCP 127.0.0.1:6379 with no password, so any local user can reach it: stop it with  redis-cli -p 6379 shutdown  and the next `jobrt jobs/` starts a private one on a unix socket, on the same data\n",
      old))
    return redis.DEFAULT_URL, false
  end
  if not url and not state and answers(redis.DEFAULT_URL) then return redis.DEFAULT_URL, false end
  -- start the private server (again: its socket may be left from a reboot or a kill)
  local ok, merr, code = proc.mkdir(dir, 448)          -- 0700
  if not ok and code ~= "EEXIST" then return nil, "cannot make " .. dir .. ": " .. tostring(merr) end
  local dok, derr = check_dir(dir)
  if not dok then return nil, derr end
  -- one starter at a time: another `jobrt jobs/` here may be starting it right now
  local lock = dir .. "/starting"
  local deadline = jobrt.monotime() + 15
  while true do
    local got, lerr, lcode = proc.mkdir(lock, 448)
    if got then break end
    if lcode ~= "EEXIST" then return nil, "cannot make " .. lock .. ": " .. tostring(lerr) end
    if answers(url_of(sock)) then return url_of(sock), false end
    if jobrt.monotime() > deadline then proc.rmdir(lock) end    -- left by a killed starter
    jobrt.sleep(0.05)
  end
  local started, serr
  if answers(url_of(sock)) then
    started = url_of(sock)
  else
    started, serr = start(dir, sock)
    if started then
      io.stderr:write(fmt("jobrt: no Redis was running, so a private redis-server was started for this directory: unix socket ./%s/%s (only you can reach it), data and log in ./%s/\n",
        _M.DIR, _M.SOCKET, _M.DIR))
    end
  end
  proc.rmdir(lock)
  if not started then return nil, serr end
  return started, true
end

function _M.exit_note()
  return fmt("jobrt: the private redis-server of this directory keeps running (jobs and data stay in ./%s/); stop it with: redis-cli -s ./%s/%s shutdown\n",
    _M.DIR, _M.DIR, _M.SOCKET)
end

return _M
