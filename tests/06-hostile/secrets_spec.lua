-- The Redis password never shows: not in any process's command line (what ps shows every local
-- user), not in the worker registry, not in `jobrt stats`, not in the worker's log.
local jobrt = require 'jobrt'
local proc = require 'jobrt.core.proc'
local h = require 'tests.helpers'

local SECRET = 'pw-' .. jobrt.random_bytes(6):gsub('.', function(c) return ('%02x'):format(c:byte()) end)

-- every command line on this machine that contains s
local function cmdlines_with(s)
  local found = {}
  for _, e in ipairs(assert(proc.scandir('/proc'))) do
    if e.name:match('^%d+$') then
      local f = io.open('/proc/' .. e.name .. '/cmdline', 'rb')
      if f then
        local c = f:read('*a') or ''
        f:close()
        if c:find(s, 1, true) then found[#found + 1] = e.name .. ': ' .. c:gsub('%z', ' ') end
      end
    end
  end
  return found
end

describe('the Redis password', function()
  local server, url, dir, r
  setup(function()
    server = h.start_redis()
    local admin = h.redis(server.url)
    assert(admin:call('CONFIG', 'SET', 'requirepass', SECRET))
    admin:close()
    url = ('redis://:%s@127.0.0.1:%d'):format(SECRET, server.port)
    r = h.redis(url)
    assert(r:call('HSET', 'RESERVED:QCONFIG', 'SEC', 'QUEUE'))
    dir = h.tmpdir()
    local f = assert(io.open(dir .. '/s.lua', 'w'))
    f:write("return { SEC = { ok = function(a) return { got = a.n } end } }\n")
    f:close()
  end)
  teardown(function()
    r:close()
    server:stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function workers()
    return #r:call('ZRANGE', 'jobrt:{workers}', 0, -1)
  end

  -- runs a --procs 2 worker given the address by `how`, checks what others can see, stops it
  local function check(args, env)
    local p = h.spawn_jobrt(args, { env = env })
    h.wait_for(function()
      if p:exited() then error('the worker exited: ' .. table.concat({ p:output() }, '')) end
      return workers() >= 2
    end, 15, 'two worker children')
    assert.same({}, cmdlines_with(SECRET))
    -- a job runs; the registry and stats hold no password either
    local code, out = h.run_jobrt({ 'enqueue', 'SEC', 'ok', '{"n":1}', '--wait' }, { env = { JOBRT_REDIS = url } })
    assert.equal(0, code)
    assert.equal('{"got":1}\n', out)
    for _, id in ipairs(r:call('ZRANGE', 'jobrt:{workers}', 0, -1)) do
      local flat = r:call('HGETALL', 'jobrt:{workers}:' .. id)
      assert.is_false(table.concat(flat, ' '):find(SECRET, 1, true) ~= nil)
    end
    for _, a in ipairs({ { 'stats' }, { 'stats', '--json' } }) do
      local c, o, e = h.run_jobrt(a, { env = { JOBRT_REDIS = url } })
      assert.equal(0, c)
      assert.is_nil((o .. e):find(SECRET, 1, true))
    end
    p:kill('SIGTERM')
    p:wait()
    local o, e = p:output()
    assert.is_nil((o .. e):find(SECRET, 1, true))
    h.wait_for(function() return workers() == 0 end, 10, 'the workers to leave the registry')
  end

  it('given with --redis, is in no command line of the worker or its children', function()
    check({ 'work', dir, '--procs', '2', '--redis', url, '--log-level', 'debug' })
  end)

  it('given with --redis=URL, is masked in the command line too', function()
    check({ 'work', dir, '--procs', '2', '--redis=' .. url })
  end)

  it('given in JOBRT_REDIS, reaches the children without their command lines', function()
    check({ 'work', dir, '--procs', '2' }, { JOBRT_REDIS = url })
  end)

  it('is masked where jobrt names an address (client.describe, used by jobrt web\'s logs and errors)', function()
    local client = require 'jobrt.client'
    local CASES = {
      { 'redis://user:' .. SECRET .. '@h:1/0', 'h:1' },
      { { url = 'redis://:' .. SECRET .. '@h:7' }, 'h:7' },
      { 'redis://:' .. SECRET .. '@h:notaport', 'redis://:***@h:notaport' },
      { 'unix:///tmp/s?password=' .. SECRET .. '&db=1', 'unix:///tmp/s' },
      { 'redis+sentinel://a:' .. SECRET .. '@h1:1,h2:2/m', "primary 'm' via sentinels h1:1,h2:2" },
    }
    for _, c in ipairs(CASES) do assert.equal(c[2], client.describe(c[1])) end
  end)

  it('is not echoed when it is wrong', function()
    local wrong = ('redis://:%sx@127.0.0.1:%d'):format(SECRET, server.port)
    local code, out, err = h.run_jobrt({ 'stats' }, { env = { JOBRT_REDIS = wrong } })
    assert.equal(1, code)
    assert.matches('WRONGPASS', err)
    assert.is_nil((out .. err):find(SECRET, 1, true))
  end)
end)
