-- The embedded default Redis (jobrt.localredis): a unix socket in a 0700 directory, CONFIG and
-- friends denied, found by every later command of the same directory, kept running (and said so)
-- when the worker exits, its data kept across restarts, and a directory it does not own refused.
-- Port 6379 is never touched: each directory starts with a stale ./.jobrt/redis.sock (as after a
-- reboot), so the private server is started without asking the default address first.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local h = require 'tests.helpers'
local ffi = require 'ffi'

pcall(ffi.cdef, [[
  struct jr_sockaddr_un { unsigned short sun_family; char sun_path[108]; };
  int socket(int domain, int type, int protocol);
  int bind(int fd, const void *addr, unsigned len);
  int close(int fd);
]])

-- A unix socket file nobody listens on.
local function stale_socket(path)
  local fd = ffi.C.socket(1, 1, 0)                    -- AF_UNIX, SOCK_STREAM
  assert(fd >= 0)
  local a = ffi.new('struct jr_sockaddr_un')
  a.sun_family = 1
  ffi.copy(a.sun_path, path)
  assert(ffi.C.bind(fd, a, ffi.sizeof(a)) == 0, 'bind ' .. path)
  ffi.C.close(fd)
end

-- a project directory with one job file and a stale private socket
local function project()
  local dir = h.tmpdir()
  assert(os.execute("mkdir -p '" .. dir .. "/jobs' '" .. dir .. "/.jobrt' && chmod 755 '" .. dir .. "/.jobrt'") == 0)
  local f = assert(io.open(dir .. '/jobs/e.lua', 'w'))
  f:write("return { LOC = { echo = function(a) return a end } }\n")
  f:close()
  stale_socket(dir .. '/.jobrt/redis.sock')
  return dir
end

-- jobrt in dir with no address anywhere
local function run_in(dir, args, stdin)
  return h.run_jobrt(args, { cwd = dir, env = { JOBRT_REDIS = false, PWD = dir }, stdin = stdin })
end

local function shutdown(dir)
  local r = redis.connect('unix://' .. dir .. '/.jobrt/redis.sock')
  if r then
    r:call('SHUTDOWN')
    r:close()
  end
  local pidf = io.open(dir .. '/.jobrt/redis.pid')
  if pidf then                                   -- wait until it is gone
    local pid = tonumber(pidf:read('*a'))
    pidf:close()
    h.wait_for(function() return not pid or not proc.kill(pid, 0) end, 10, 'the private redis-server to stop')
  end
end

describe('the embedded Redis', function()
  local dir
  before_each(function() dir = project() end)
  after_each(function()
    shutdown(dir)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it('listens on a unix socket only, in a 0700 directory, says so, and keeps running after the worker exits', function()
    local code, _, err = run_in(dir, { 'jobs/' })         -- LOC has no type yet: exits at once
    assert.equal(1, code)
    assert.matches('a private redis%-server was started for this directory: unix socket %./%.jobrt/redis%.sock', err)
    assert.matches("queue 'LOC' has no type", err)
    assert.matches('jobrt: the private redis%-server of this directory keeps running %(jobs and data stay in %./%.jobrt/%); stop it with: redis%-cli %-s %./%.jobrt/redis%.sock shutdown\n$', err)
    local st = assert(proc.lstat(dir .. '/.jobrt'))
    assert.equal('dir', st.kind)
    assert.equal(tonumber('700', 8), st.mode)
    local sock = assert(proc.lstat(dir .. '/.jobrt/redis.sock'))
    assert.equal('socket', sock.kind)
    assert.equal(tonumber('700', 8), sock.mode)
    local r = h.redis('unix://' .. dir .. '/.jobrt/redis.sock')
    local info = r:call('INFO', 'server')
    assert.matches('tcp_port:0\r\n', info)
    r:close()
  end)

  it('refuses CONFIG, DEBUG, MODULE, ACL and REPLICAOF', function()
    run_in(dir, { 'jobs/' })
    local r = h.redis('unix://' .. dir .. '/.jobrt/redis.sock')
    for _, cmd in ipairs({ { 'CONFIG', 'SET', 'dir', '/tmp' }, { 'CONFIG', 'GET', 'dir' },
                           { 'DEBUG', 'SLEEP', '0' }, { 'MODULE', 'LOAD', '/tmp/x.so' },
                           { 'ACL', 'SETUSER', 'default', '+@all' }, { 'REPLICAOF', '127.0.0.1', '1' } }) do
      local v, e = r:call(unpack(cmd))
      assert.is_nil(v, cmd[1])
      assert.matches('^[A-Z]+ ', e)
      assert.matches('permission', e:lower():gsub('not allowed', 'permission'), cmd[1] .. ': ' .. e)
    end
    assert.equal('PONG', r:call('PING'))
    r:close()
  end)

  it('is found by every later command of the same directory, without flags', function()
    run_in(dir, { 'jobs/' })
    local code, out = run_in(dir, { 'queue-type', 'LOC', 'QUEUE' })
    assert.equal(0, code)
    assert.equal('QUEUE\n', out)
    local p = h.spawn_jobrt({ 'jobs/' }, { cwd = dir, env = { JOBRT_REDIS = false, PWD = dir } })
    local r = h.redis('unix://' .. dir .. '/.jobrt/redis.sock')
    h.wait_for(function() return #r:call('ZRANGE', 'jobrt:{workers}', 0, -1) > 0 end, 10, 'the worker')
    code, out = run_in(dir, { 'enqueue', 'LOC', 'echo', '{"n":1796046695261234,"l":[]}', '--wait' })
    assert.equal(0, code)
    assert.same({ n = 1796046695261234, l = {} }, require('jobrt.json').decode(out))
    code, out = run_in(dir, { 'stats', '--json' })
    assert.equal(0, code)
    assert.equal(1, require('jobrt.json').decode(out).queues.LOC.completed)
    code, out = run_in(dir, { '-e', 'print(require("jobrt").connect():queueType("LOC"))' })
    assert.equal(0, code)
    assert.equal('QUEUE\n', out)
    p:kill('SIGTERM')
    p:wait()
    local _, err = p:output()
    assert.matches('keeps running', err)
    r:close()
  end)

  it('comes back on the same data after it was stopped', function()
    run_in(dir, { 'jobs/' })
    assert.equal(0, (run_in(dir, { 'queue-type', 'LOC', 'QUEUE' })))
    assert.equal(0, (run_in(dir, { 'enqueue', 'LOC', 'echo', '{"kept":true}', '--id', 'kept-1' })))
    shutdown(dir)
    local code, _, err = run_in(dir, { 'stats' })
    assert.equal(1, code)                                  -- stopped: no other Redis is used
    assert.equal("jobrt stats: this directory's private Redis (./.jobrt/) is not running: `jobrt jobs/` (or make run) starts it again on its data; or give --redis URL (or set JOBRT_REDIS)\n", err)
    local p = h.spawn_jobrt({ 'jobs/', '--log-level', 'warn' }, { cwd = dir, env = { JOBRT_REDIS = false, PWD = dir } })
    local r
    h.wait_for(function()
      r = r or redis.connect('unix://' .. dir .. '/.jobrt/redis.sock')
      return r and r:call('HGET', 'jobrt:{LOC}:job:kept-1', 'state') == 'finished'
    end, 15, 'the job enqueued before the restart to run')
    r:close()
    p:kill('SIGTERM')
    p:wait()
  end)

  it('refuses a ./.jobrt that is a symbolic link or belongs to someone else', function()
    local elsewhere = h.tmpdir()
    os.execute("rm -rf '" .. dir .. "/.jobrt' && mkdir -m 700 '" .. elsewhere .. "/x' && ln -s '" .. elsewhere .. "/x' '" .. dir .. "/.jobrt'")
    stale_socket(elsewhere .. '/x/redis.sock')
    local code, _, err = run_in(dir, { 'stats' })
    assert.equal(1, code)
    assert.matches('%.jobrt is a symbolic link: jobrt keeps its private Redis only in a real directory it owns; remove the link', err)
    os.execute("rm -f '" .. dir .. "/.jobrt' && mkdir -m 700 '" .. dir .. "/.jobrt'")
    stale_socket(dir .. '/.jobrt/redis.sock')
    if proc.getuid() == 0 and os.execute("chown 4321 '" .. dir .. "/.jobrt'") == 0 then
      code, _, err = run_in(dir, { 'jobs/' })
      assert.equal(1, code)
      assert.matches('%.jobrt belongs to another user %(uid 4321%): jobrt will not use a Redis that someone else can control', err)
      os.execute("chown 0 '" .. dir .. "/.jobrt'")
    end
    os.execute("rm -rf '" .. elsewhere .. "'")
  end)
end)
