-- What enqueueing tells the user: q:run returns the job's id beside its result, `enqueue --wait`
-- names the job on stderr before it waits, and merging an identical LBQUEUE job is reported as
-- the normal outcome it is.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'

local function run(args, stdin)
  local a = { 'enqueue' }
  for _, x in ipairs(args) do a[#a + 1] = x end
  a[#a + 1] = '--redis'
  a[#a + 1] = h.url
  return h.run_jobrt(a, { stdin = stdin })
end

describe('enqueue outcomes', function()
  setup(function() jobrt.set_log_level('warn') end)
  teardown(function() jobrt.set_log_level('info') end)

  local q, w
  before_each(function()
    h.flush()
    q = jobrt.connect(h.url)
  end)
  after_each(function()
    if w then w:stop(1) end
    w = nil
    q:close()
  end)

  it('q:run returns the result and the job id, in both calling forms', function()
    w = q:registerWorker(h.url, { RUNQ = { _type = 'QUEUE', echo = function(a) return a end } }, { log_jobs = false })
    local v, id = q:run('RUNQ', 'echo', { n = 1 }, { wait = 5 })
    assert.same({ n = 1 }, v)
    assert.equal('finished', q:getJob('RUNQ', id).state)
    local got = jobrt.cond()
    q:run('RUNQ', 'echo', { n = 2 }, { id = 'mine-2', wait = 5 }, function(err, value, jid)
      got:signal({ err = err, value = value, id = jid })
    end)
    local _, res = got:wait(5)
    assert.same({ value = { n = 2 }, id = 'mine-2' }, res)
  end)

  it('enqueue --wait names the job on stderr, then prints the result on stdout', function()
    w = q:registerWorker(h.url, { WQ = { _type = 'QUEUE', echo = function(a) return a end } }, { log_jobs = false })
    local code, out, err = run({ 'WQ', 'echo', '{"a":1}', '--wait', '--id', 'w-1' })
    assert.equal(0, code)
    assert.equal('{"a":1}\n', out)
    assert.equal("jobrt enqueue: job w-1 enqueued in queue 'WQ'; waiting for its result\n", err)
  end)

  describe('an identical LBQUEUE job', function()
    before_each(function() q:queueType('LB', 'LBQUEUE') end)

    it('is merged, and the command says so as a normal outcome (exit 0, the id on stdout)', function()
      local code, out, err = run({ 'LB', 'user', '{"user":7}', '--hash', 'user-7' })
      assert.same({ 0, '1\n', '' }, { code, out, err })
      code, out, err = run({ 'LB', 'user', '{"user":7}', '--hash', 'user-7' })
      assert.same({ 0, '1\n' }, { code, out })
      assert.equal("jobrt enqueue: merged with job 1, which waits with the same jobHash 'user-7' in queue 'LB' (identical LBQUEUE jobs run once)\n", err)
      assert.is_nil(err:find('not enqueued twice', 1, true))
      local s = q:stats('LB')
      assert.equal(1, s.pending)
      assert.equal('2', q:getJob('LB', '1').priority)    -- the entry counts both enqueues
    end)

    it('from stdin: the count says how many were merged', function()
      local code, out, err = run({ 'LB', 'user', '-', '--hash', 'h' }, '{"n":1}\n{"n":2}\n{"n":3}\n')
      assert.equal(0, code, err)
      assert.equal('enqueued 1 job, 2 merged with identical waiting jobs\n', out)
      assert.equal('', err)
    end)

    it('with --wait: merged, named on stderr, and the wait is for the merged job', function()
      local id = q:enqueueJob('LB', 'user', { u = 1 }, { jobHash = 'same' })
      local p = h.spawn_jobrt({ 'enqueue', 'LB', 'user', '{"u":1}', '--hash', 'same', '--wait', '--redis', h.url })
      h.wait_for(function() return select(2, p:output()):find('waiting', 1, true) end, 5, 'the merged line')
      w = q:registerWorker(h.url, { LB = { user = function(a) return a end } }, { log_jobs = false })
      assert.equal(0, p:wait())
      local out, err = p:output()
      assert.equal('{"u":1}\n', out)
      err = err:gsub("[^\n]*warn: enqueue: no live worker serves queue 'LB'[^\n]*\n", '')   -- none did yet
      assert.equal("jobrt enqueue: merged with job " .. id .. ", which waits with the same jobHash 'same' in queue 'LB' " ..
        "(identical LBQUEUE jobs run once); waiting for its result\n", err)
    end)
  end)

  -- new-user finding: the waiting command died ("nothing is left that could wake them") as soon
  -- as Redis went away, because only its subscription could wake it and a lost subscriber link
  -- did not keep the process alive while it reconnected
  it('enqueue --wait survives a Redis restart and prints the result', function()
    local srv = h.start_redis{ aof = true }
    local ws = require 'tests.worker_support'
    local dir = ws.jobs_dir{ ['nap.lua'] = [[
return { NAP = { _type = "QUEUE", nap = function(args, job)
  job.redis:call("SET", "test:started", "1")
  while job.redis:call("GET", "test:go") ~= "1" do require("jobrt").sleep(0.05) end
  return { slept = args.n }
end } }
]] }
    local wk = ws.start_worker(dir, { '--lease', '3' }, srv.url)
    -- a GET in flight when Redis is killed fails that attempt (whether it ran is unknown):
    -- a retry covers it; calls made while Redis is down wait for it instead
    local p = h.spawn_jobrt({ 'enqueue', 'NAP', 'nap', '{"n":7}', '--retries', '3', '--wait', '--redis', srv.url })
    local ok, err = pcall(function()
      h.wait_for(function()
        local r = h.redis(srv.url)
        local v = r:call('GET', 'test:started')
        r:close()
        return v == '1'
      end, 10, 'the job to start')
      srv:restart()                                   -- kill -9, then back on its AOF
      local r = h.redis(srv.url)
      r:call('SET', 'test:go', '1')
      r:close()
      local code = p:wait()
      local out, perr = p:output()
      assert.equal(0, code, perr)
      assert.equal('{"slept":7}\n', out)
    end)
    if not p:exited() then p:kill('SIGKILL'); p:wait() end
    ws.stop_worker(wk)
    srv:stop()
    assert(ok, err)
  end)
end)
