-- `jobrt health [QUEUE...]`: exit 0 when Redis answers and a live worker serves each named
-- queue; otherwise exit 1 with one line saying what is wrong (and never hang: --timeout).
local h = require 'tests.helpers'
local jobrt = require 'jobrt'

local function health(args, url)
  local a = { 'health' }
  for _, x in ipairs(args) do a[#a + 1] = x end
  a[#a + 1] = '--redis'
  a[#a + 1] = url or h.url
  return h.run_jobrt(a, { timeout = 20 })
end

local addr = function(url) return url:match('^redis://(.*)$') end

describe('jobrt health', function()
  local q
  before_each(function()
    h.flush()
    q = jobrt.connect(h.url)
  end)
  after_each(function() q:close() end)

  it('exits 0 when Redis answers and no queue is named', function()
    local code, out, err = health({})
    assert.same({ 0, 'ok: redis at ' .. addr(h.url) .. ' answers\n', '' }, { code, out, err })
  end)

  it('exits 0 when a live worker serves each named queue, 1 naming the queues nobody serves', function()
    local dir = h.tmpdir()
    local f = assert(io.open(dir .. '/a.lua', 'w'))
    f:write("return { HA = { _type = 'QUEUE', j = function() end }, HB = { _type = 'QUEUE', k = function() end } }")
    f:close()
    local p = h.spawn_jobrt({ 'work', dir, '--redis', h.url })
    h.wait_for(function() return #q:workers() == 1 end, 10, 'the worker')
    local code, out, err = health({ 'HA', 'HB' })
    assert.same({ 0, 'ok: redis at ' .. addr(h.url) .. ' answers; served: HA by 1, HB by 1\n', '' }, { code, out, err })
    code, out, err = health({ 'HA', 'MAIL', 'OTHER' })
    assert.same({ 1, '' }, { code, out })
    assert.equal("jobrt health: no live worker serves queues 'MAIL', 'OTHER' (1 live worker, serving HA, HB)\n", err)
    -- a worker killed with -9 stops renewing its entry: health fails once the entry expires
    p:kill('SIGKILL')
    p:wait()
    h.wait_for(function() return (health({ 'HA' })) == 1 end, 15, 'health to notice the dead worker')
    code, _, err = health({ 'HA' })
    assert.equal(1, code)
    assert.equal("jobrt health: no live worker serves queue 'HA' (0 live workers)\n", err)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it('a registry entry that expired (its worker died) does not count as live', function()
    local r = h.redis()
    r:call('ZADD', 'jobrt:{workers}', 1000, 'ghost:1:abc')           -- expired long ago
    r:call('HSET', 'jobrt:{workers}:ghost:1:abc', 'id', 'ghost:1:abc', 'queues', 'Q')
    r:close()
    local code, _, err = health({ 'Q' })
    assert.equal(1, code)
    assert.equal("jobrt health: no live worker serves queue 'Q' (0 live workers)\n", err)
  end)

  it('exits 1 when nothing answers at the address', function()
    local code, out, err = health({ 'Q' }, 'redis://127.0.0.1:1')
    assert.same({ 1, '' }, { code, out })
    assert.equal('jobrt health: cannot connect to redis at 127.0.0.1:1: Connection refused: start redis-server there, or pass --redis URL (or set JOBRT_REDIS)\n', err)
  end)

  it('exits 1 within --timeout when Redis accepts but never answers', function()
    local s = h.start_redis()
    s.proc:kill('SIGSTOP')
    local t0 = jobrt.monotime()
    local code, out, err = health({ '--timeout', '0.5' }, s.url)
    local took = jobrt.monotime() - t0
    s.proc:kill('SIGCONT')
    s:stop()
    assert.same({ 1, '' }, { code, out })
    assert.equal('jobrt health: no answer from redis at ' .. addr(s.url) .. ' within 0.5 s\n', err)
    assert.is_true(took < 5, ('took %.1fs'):format(took))
  end)

  it('usage errors exit 2', function()
    local code, _, err = h.run_jobrt({ 'health', '--timeout', 'soon' })
    assert.equal(2, code)
    assert.equal("jobrt health: --timeout wants seconds (a number >= 0), got 'soon'\n", err)
    code, _, err = h.run_jobrt({ 'health', '--redis', 'http://x' })
    assert.equal(2, code)
    assert.matches("^jobrt health: bad redis URL 'http://x': unknown scheme", err)
    -- the TLS options every command takes (rediss://)
    code, _, err = h.run_jobrt({ 'health', '--redis', 'redis://127.0.0.1:1', '--tls-insecure' })
    assert.equal(2, code)
    assert.equal("jobrt health: --tls-* options apply to TLS addresses, but 127.0.0.1:1 is plain: use rediss://127.0.0.1:1\n", err)
  end)
end)
