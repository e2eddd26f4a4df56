-- The Lua client (jobrt.connect / jobrt.client): every call in both forms (trailing callback:
-- returns at once, callback later; none: yields and returns or raises) and every bad argument,
-- with exact messages. Real redis-server; jobs are served by the real worker (q:registerWorker)
-- or, where a spec needs a failed job at once, by jobrt.ops calls (reserve + complete).
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local client = require 'jobrt.client'
local ops = require 'jobrt.ops'

local unpack, select = unpack, select
local function pack(...) return { n = select('#', ...), ... } end

-- Calls method `name` of q with a trailing callback; checks that it returns nothing at once and
-- that the callback comes later, exactly once. Returns what the callback got (err, values...).
local function via_callback(q, name, ...)
  local c = jobrt.cond()
  local got, calls = nil, 0
  local args = pack(...)
  args.n = args.n + 1
  args[args.n] = function(...)
    calls = calls + 1
    got = pack(...)
    c:signal()
  end
  local ret = pack(q[name](q, unpack(args, 1, args.n)))
  assert.equal(0, ret.n)                       -- returned at once, with nothing
  assert.is_nil(got)                           -- and the callback has not run yet
  local ok = c:wait(10)
  assert.is_true(ok, name .. ': the callback never came')
  jobrt.sleep(0)
  assert.equal(1, calls)
  return unpack(got, 1, got.n)
end

-- raises -> the message
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, 'expected an error')
  return e
end

local Q = 'cq'

-- the in-process workers' "serving"/"stopped" lines would clutter the test output
setup(function() jobrt.set_log_level('warn') end)
teardown(function() jobrt.set_log_level('info') end)

describe('jobrt.client', function()
  local q, r, o

  before_each(function()
    h.flush()
    q = jobrt.connect(h.url)
    r = h.redis()
    o = assert(ops.new(r))
    assert(q:queueType(Q, 'QUEUE'))
  end)

  after_each(function()
    q:close()
    r:close()
  end)

  -- a job of Q that failed for good (through ops, the way a worker reports it)
  local function failed_job(fn, reason)
    local id = q:enqueueJob(Q, fn or 'boom', { n = 1 }, { retries = 0 })
    local res = assert(o:reserve(Q, 'w-test', 10, 30))
    local outs = {}
    for _, j in ipairs(res.jobs) do
      outs[#outs + 1] = { id = j.id, attempt = j.attempt, ok = false, reason = reason or 'kaput', exception = 'trace' }
    end
    assert(o:complete(Q, 'w-test', outs))
    return id
  end

  describe('connect', function()
    it('takes a URL, a table, or nothing (JOBRT_REDIS)', function()
      local port = tonumber(h.url:match(':(%d+)$'))
      for _, conf in ipairs({ h.url, { host = '127.0.0.1', port = port } }) do
        local c = jobrt.connect(conf)
        assert.equal('QUEUE', c:queueType(Q))
        c:close()
      end
      local c = jobrt.connect()
      assert.equal('QUEUE', c:queueType(Q))
      if h.cluster then   -- the primaries of the cluster (make test-cluster)
        assert.matches('^jobrt client %(127%.0%.0%.1:%d+,127%.0%.0%.1:%d+,127%.0%.0%.1:%d+ %(cluster%), up%)$', tostring(c))
      else
        assert.matches('^jobrt client %(127%.0%.0%.1:%d+, up%)$', tostring(c))
      end
      c:close()
    end)

    it('with a callback returns at once and hands over the client', function()
      local c = jobrt.cond()
      local got
      local ret = pack(jobrt.connect(h.url, function(err, cl) got = { err, cl }; c:signal() end))
      assert.equal(0, ret.n)
      assert.is_nil(got)
      assert.is_true((c:wait(5)))
      assert.is_nil(got[1])
      assert.equal('QUEUE', got[2]:queueType(Q))
      got[2]:close()
    end)

    it('names the address and the fix when nothing answers', function()
      assert.equal('jobrt.connect: cannot connect to redis at 127.0.0.1:1: Connection refused (is redis-server running there? pass another address, or set JOBRT_REDIS)',
        err_of(jobrt.connect, 'redis://127.0.0.1:1'))
    end)

    it('rejects a malformed URL, a bad table and a wrong type', function()
      assert.equal("jobrt.connect: bad redis URL 'http://x': unknown scheme; expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH[?password=PASSWORD&db=N], redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB] or redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]",
        err_of(jobrt.connect, 'http://x'))
      assert.equal("jobrt.connect: unknown option 'hots' (known: host, port, path, user, password, db, timeout, url, connect_timeout, tls, tls_ca, tls_cert, tls_key, tls_insecure, tls_server_name, sentinels, master_name, sentinel_user, sentinel_password, cluster_nodes, cluster)",
        err_of(jobrt.connect, { hots = 'x' }))
      assert.equal('jobrt.connect: expected a redis URL string or a table {host=, port=, ...}, got number',
        err_of(jobrt.connect, 6379))
    end)

    it('delivers a connection error to the callback', function()
      local c = jobrt.cond()
      local got
      jobrt.connect('redis://127.0.0.1:1', function(err, cl) got = { err, cl }; c:signal() end)
      c:wait(5)
      assert.matches('^jobrt.connect: cannot connect to redis at 127.0.0.1:1', got[1])
      assert.is_nil(got[2])
    end)
  end)

  describe('enqueueJob', function()
    it('returns the id and writes the record (coroutine form)', function()
      local r1 = pack(q:enqueueJob(Q, 'send', { to = 'ann', n = 5 }, { jobHash = 'ignored' }))
      assert.same({ n = 1, '1' }, r1)
      local id = r1[1]
      local rec = q:getJob(Q, id)
      assert.equal('send', rec['function'])
      assert.same({ to = 'ann', n = 5 }, require('cjson').decode(rec.args))
      assert.equal('pending', rec.state)
    end)

    it('returns at once and calls back with the id (callback form)', function()
      local err, id = via_callback(q, 'enqueueJob', Q, 'send', { to = 'bob' }, nil)
      assert.is_nil(err)
      assert.equal('send', q:getJob(Q, id)['function'])
      -- opts may be left out before the callback
      err, id = via_callback(q, 'enqueueJob', Q, 'send', { to = 'cy' })
      assert.is_nil(err)
      assert.equal('2', id)
    end)

    it('defaults args to {}', function()
      local id = q:enqueueJob(Q, 'tick')
      assert.equal('{}', q:getJob(Q, id).args)
    end)

    it('does not enqueue a client id twice while it waits', function()
      assert.equal('mail-1', q:enqueueJob(Q, 'send', {}, { id = 'mail-1' }))
      assert.equal('mail-1', q:enqueueJob(Q, 'send', {}, { id = 'mail-1' }))
      assert.equal(1, q:stats(Q).pending)
    end)

    it('holds back jobs with delay and timestamp', function()
      q:enqueueJob(Q, 'later', {}, { delay = 60 })
      q:enqueueJob(Q, 'later', {}, { timestamp = jobrt.now() + 60.5 })
      local s = q:stats(Q)
      assert.equal(2, s.delayed)
      assert.equal(0, s.pending)
    end)

    it('raises the missing queue type with the fix', function()
      assert.equal("enqueueJob: queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE",
        err_of(q.enqueueJob, q, 'nope', 'send', {}))
      local err, id = via_callback(q, 'enqueueJob', 'nope', 'send', {}, {})
      assert.equal("enqueueJob: queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE", err)
      assert.is_nil(id)
    end)

    it('applies the rules of the queue type', function()
      q:queueType('lb', 'LBQUEUE')
      assert.equal("enqueueJob: queue 'lb' is an LBQUEUE: give the option jobHash (jobs with the same jobHash are one entry)",
        err_of(q.enqueueJob, q, 'lb', 'send', {}))
      q:queueType('dq', 'DELQUEUE')
      assert.equal("enqueueJob: option 'priority' applies to QUEUE and LBQUEUE queues only; queue 'dq' is a DELQUEUE (its jobs run at their time)",
        err_of(q.enqueueJob, q, 'dq', 'send', {}, { priority = 2 }))
      assert.equal("enqueueJob: option 'delay' applies to QUEUE and DELQUEUE queues only; queue 'lb' is an LBQUEUE",
        err_of(q.enqueueJob, q, 'lb', 'send', {}, { jobHash = 'h', delay = 1 }))
      local err = via_callback(q, 'enqueueJob', 'lb', 'send', {}, {})
      assert.equal("enqueueJob: queue 'lb' is an LBQUEUE: give the option jobHash (jobs with the same jobHash are one entry)", err)
      local id = q:enqueueJob('lb', 'send', {}, { jobHash = 7, priority = 3 })
      assert.equal('7', q:getJob('lb', id).hash)
    end)

    local BAD = {
      { nil, 'send', {}, nil, "enqueueJob: queue must be a non-empty string, got nil" },
      { '', 'send', {}, nil, "enqueueJob: queue must be a non-empty string, got ''" },
      { Q, nil, {}, nil, "enqueueJob: job must be a job name (a string of 1-256 bytes), got nil" },
      { Q, ('x'):rep(257), {}, nil, "enqueueJob: job must be a job name (a string of 1-256 bytes), got a string of 257 bytes" },
      { Q, 'send', { f = print }, nil, "enqueueJob: args.f: a function cannot be written as JSON: use tables, strings, numbers, booleans and jobrt.null" },
      { Q, 'send', { [1] = 1, [1000] = 2 }, nil, "enqueueJob: args: sparse array: [1000] is set but [2] is nil; JSON arrays have no holes: fill them with jobrt.null, or use string keys" },
      { Q, 'send', { n = 0 / 0 }, nil, "enqueueJob: args.n: NaN cannot be written as JSON: use a finite number, a string or jobrt.null" },
      { Q, 'send', { s = '\255' }, nil, "enqueueJob: args.s: string is not valid UTF-8 (byte offset 0 in the string is 0xff; JSON text must be UTF-8: send binary data as base64)" },
      { Q, 'send', { 1, x = 2 }, nil, [[enqueueJob: args: table mixes array items ([1]...) with named keys ("x"): a JSON value is either an array or an object; nest one in the other]] },
      { Q, 'send', {}, 'fast', "enqueueJob: opts must be a table, got string" },
      { Q, 'send', {}, { hash = 'x' }, "enqueueJob: unknown option 'hash' (known: jobHash, priority, timestamp, delay, id, retries, timeout)" },
      { Q, 'send', {}, { jobHash = {} }, "enqueueJob: option 'jobHash' must be a string, got table" },
      { Q, 'send', {}, { jobHash = '' }, "enqueueJob: option 'jobHash' must be 1-256 bytes, got 0" },
      { Q, 'send', {}, { priority = 'high' }, "enqueueJob: option 'priority' must be a number, got string" },
      { Q, 'send', {}, { priority = 0 / 0 }, "enqueueJob: option 'priority' must be a number, got nan" },
      { Q, 'send', {}, { timestamp = '2030-01-01' }, "enqueueJob: option 'timestamp' must be a number, got string" },
      { Q, 'send', {}, { timestamp = -1 }, "enqueueJob: option 'timestamp' must be absolute Unix seconds (>= 0), got -1" },
      { Q, 'send', {}, { timestamp = 1893456000000 }, "enqueueJob: option 'timestamp' must be Unix seconds, got 1893456000000 (milliseconds? divide by 1000)" },
      { Q, 'send', {}, { delay = -5 }, "enqueueJob: option 'delay' must be seconds from now (0 to 3.2e8), got -5" },
      { Q, 'send', {}, { delay = 1 / 0 }, "enqueueJob: option 'delay' must be a finite number, got inf" },
      { Q, 'send', {}, { timestamp = 1, delay = 1 }, "enqueueJob: options 'timestamp' and 'delay' exclude each other: give one of them" },
      { Q, 'send', {}, { id = 5 }, "enqueueJob: option 'id' must be a string, got number" },
      { Q, 'send', {}, { id = '' }, "enqueueJob: option 'id' must be 1-256 bytes, got 0" },
      { Q, 'send', {}, { id = '42' }, "enqueueJob: option 'id' must not be all digits (generated ids are), got '42': add a prefix, e.g. 'job-42'" },
      { 'a}:job:x', 'send', {}, nil, "enqueueJob: the queue name may use only A-Z a-z 0-9 _ . : - (got 'a}:job:x', with '}' at byte 2)" },
      { '}a', 'send', {}, nil, "enqueueJob: the queue name may use only A-Z a-z 0-9 _ . : - (got '}a', with '}' at byte 1)" },
      { 'my queue', 'send', {}, nil, "enqueueJob: the queue name may use only A-Z a-z 0-9 _ . : - (got 'my queue', with ' ' at byte 3)" },
      { ('q'):rep(129), 'send', {}, nil, "enqueueJob: the queue name must be at most 128 bytes, got 129" },
      { Q, 'se\nnd', {}, nil, [[enqueueJob: the job name must not contain control characters (newline, tab...) or '{' '}' (got "se\nnd", with "\n" at byte 3)]] },
      { Q, 'send', {}, { id = 'x}:wait' }, "enqueueJob: option 'id' must not contain control characters (newline, tab...) or '{' '}' (got 'x}:wait', with '}' at byte 2)" },
      { Q, 'send', {}, { id = 'line\nbreak' }, [[enqueueJob: option 'id' must not contain control characters (newline, tab...) or '{' '}' (got "line\nbreak", with "\n" at byte 5)]] },
      { Q, 'send', {}, { retries = 1.5 }, "enqueueJob: option 'retries' must be a whole number from 0 to 1000, got 1.5" },
      { Q, 'send', {}, { retries = -1 }, "enqueueJob: option 'retries' must be a whole number from 0 to 1000, got -1" },
      { Q, 'send', {}, { timeout = 0 }, "enqueueJob: option 'timeout' must be seconds from 0.001 to 3.2e7 (about a year), got 0" },
      { Q, 'send', {}, { timeout = '30' }, "enqueueJob: option 'timeout' must be a number, got string" },
      { Q, 'e\255cho', {}, nil, [[enqueueJob: the job name must be UTF-8: byte offset 1 is 0xff (got "e\255cho")]] },
      { Q, 'send', {}, { id = 'id\254' }, [[enqueueJob: option 'id' must be UTF-8: byte offset 2 is 0xfe (got "id\254")]] },
      { Q, 'send', {}, { jobHash = 'h\192\175' }, [[enqueueJob: option 'jobHash' must be UTF-8: byte offset 1 is 0xc0 (got "h\192\175")]] },
    }
    for i, case in ipairs(BAD) do
      it(('raises at once in both forms on bad input #%d: %s'):format(i, case[5]:sub(13, 60)), function()
        assert.equal(case[5], err_of(q.enqueueJob, q, case[1], case[2], case[3], case[4]))
        local called = false
        assert.equal(case[5], err_of(q.enqueueJob, q, case[1], case[2], case[3], case[4],
          function() called = true end))
        jobrt.sleep(0.01)
        assert.is_false(called)
        assert.equal(0, q:stats(Q).pending)
      end)
    end

    it('must be called with a colon', function()
      assert.equal('enqueueJob: call it with a colon, q:enqueueJob(...)', err_of(q.enqueueJob, Q, 'send', {}))
    end)

    it('refuses extra arguments', function()
      assert.equal('enqueueJob: expected (queue, job, args, opts[, callback]), got 5 arguments',
        err_of(q.enqueueJob, q, Q, 'send', {}, {}, 'x'))
    end)
  end)

  describe('enqueueJobs', function()
    it('enqueues a list pipelined and returns the ids in order', function()
      local list = {}
      for i = 1, 2000 do list[i] = { job = 'n', args = { i = i } } end
      list[2001] = { 'pos', { i = 'p' }, { id = 'pos-1' } }
      local ids = q:enqueueJobs(Q, list)
      assert.equal(2001, #ids)
      assert.equal('1', ids[1])
      assert.equal('2000', ids[2000])
      assert.equal('pos-1', ids[2001])
      assert.equal('{"i":1500}', q:getJob(Q, ids[1500]).args)
      assert.equal(2001, q:stats(Q).pending)
    end)

    it('works with a callback', function()
      local err, ids = via_callback(q, 'enqueueJobs', Q, { { job = 'a' }, { job = 'b', args = { 1 } } })
      assert.is_nil(err)
      assert.same({ '1', '2' }, ids)
    end)

    it('checks every job before sending any', function()
      assert.equal("enqueueJobs: jobs[2]: unknown option 'prio' (known: jobHash, priority, timestamp, delay, id, retries, timeout)",
        err_of(q.enqueueJobs, q, Q, { { job = 'a' }, { job = 'b', opts = { prio = 1 } } }))
      assert.equal('enqueueJobs: jobs[1]: job must be a job name (a string of 1-256 bytes), got nil',
        err_of(q.enqueueJobs, q, Q, { { args = {} } }))
      assert.equal('enqueueJobs: jobs[1]: must be a table {job=, args=, opts=}, got string',
        err_of(q.enqueueJobs, q, Q, { 'a' }))
      assert.equal('enqueueJobs: jobs must be an array of {job=, args=, opts=}, got nil',
        err_of(q.enqueueJobs, q, Q))
      assert.equal(0, q:stats(Q).pending)
    end)

    it('reports how many failed on the server side', function()
      q:queueType('lb', 'LBQUEUE')
      assert.equal("enqueueJobs: 1 of 2 jobs were not enqueued; the first error: jobs[2]: queue 'lb' is an LBQUEUE: give the option jobHash (jobs with the same jobHash are one entry)",
        err_of(q.enqueueJobs, q, 'lb', { { job = 'a', opts = { jobHash = 'x' } }, { job = 'b' } }))
    end)
  end)

  describe('run', function()
    local w
    before_each(function()
      w = assert(q:registerWorker(h.url, {
        [Q] = {
          echo = function(args) return { got = args } end,
          boom = function() error('kaboom', 0) end,
          none = function() end,
        },
      }, { concurrency = 4, log_jobs = false }))
    end)
    after_each(function() w:stop(1) end)

    it('waits for the result (coroutine form)', function()
      local v, id = q:run(Q, 'echo', { x = 1 })
      assert.same({ got = { x = 1 } }, v)
      assert.equal('finished', q:getJob(Q, id).state)
      assert.is_nil(q:run(Q, 'none', {}))
    end)

    it('reads no record through get.lua when the results message comes, and asks the registry once, not per job', function()
      local r = h.redis()
      q:run(Q, 'none', {})                       -- subscribed, registry asked
      local function calls(cmd)
        return tonumber(r:call('INFO', 'commandstats'):match('cmdstat_' .. cmd .. ':calls=(%d+)')) or 0
      end
      local get0, list0 = calls('hgetall'), calls('zremrangebyscore')
      for _ = 1, 50 do q:run(Q, 'none', {}) end
      assert.equal(0, calls('hgetall') - get0)   -- get.lua reads with HGETALL: never called
      assert.is_true(calls('zremrangebyscore') - list0 <= 2)   -- the registry: once per 5 s, not per job
      r:close()
    end)

    it('waits for the result (callback form)', function()
      local err, v = via_callback(q, 'run', Q, 'echo', { y = 2 }, { wait = 10 })
      assert.is_nil(err)
      assert.same({ got = { y = 2 } }, v)
    end)

    it('runs many at once on one client', function()
      local wg = jobrt.waitgroup()
      local results = {}
      for i = 1, 50 do
        wg:spawn(function() results[i] = q:run(Q, 'echo', { i = i }).got.i end)
      end
      assert.is_true(wg:wait(20))
      for i = 1, 50 do assert.equal(i, results[i]) end
    end)

    it("raises the job's error", function()
      local e = err_of(q.run, q, Q, 'boom', {}, { retries = 0 })
      assert.matches("^job %d+ %(boom%) on queue 'cq' failed: kaboom", e)
      local err, v = via_callback(q, 'run', Q, 'boom', {}, { retries = 0 })
      assert.matches("^job %d+ %(boom%) on queue 'cq' failed: kaboom", err)
      assert.is_nil(v)
    end)
  end)

  describe('run without a worker', function()
    it('gives up after opts.wait seconds; the job stays queued', function()
      assert.equal("run: job 1 on queue 'cq' did not finish within 0.2 s (state: pending; is a worker serving 'cq'? the job stays queued)",
        err_of(q.run, q, Q, 'echo', {}, { wait = 0.2 }))
      assert.equal(1, q:stats(Q).pending)
    end)

    it('checks the wait option', function()
      assert.equal("run: option 'wait' must be seconds > 0, got 0", err_of(q.run, q, Q, 'echo', {}, { wait = 0 }))
      assert.equal("run: option 'wait' must be a number of seconds, got string", err_of(q.run, q, Q, 'echo', {}, { wait = '1' }))
      assert.equal("run: unknown option 'wiat' (known: jobHash, priority, timestamp, delay, id, retries, timeout, on_progress, wait)",
        err_of(q.run, q, Q, 'echo', {}, { wiat = 1 }))
    end)

    it('gets a result published while it waits (ops worker)', function()
      local co = jobrt.spawn(function()
        h.wait_for(function() return q:stats(Q).pending == 1 end, 5, 'the job')
        local res = assert(o:reserve(Q, 'w-x', 1, 30))
        assert(o:complete(Q, 'w-x', { { id = res.jobs[1].id, attempt = res.jobs[1].attempt, ok = true, value = '[1,2,3]' } }))
      end)
      assert.same({ 1, 2, 3 }, q:run(Q, 'x', {}, { wait = 5 }))
      assert.is_truthy(co)
    end)

    it('gets a result published while its subscription was down (the record is read again)', function()
      local got
      local done = jobrt.cond()
      jobrt.spawn(function()
        got = { pcall(q.run, q, Q, 'x', {}, { wait = 10 }) }
        done:signal()
      end)
      h.wait_for(function() return q:stats(Q).pending == 1 end, 5, 'the job')
      local res = assert(o:reserve(Q, 'w-x', 1, 30))
      -- close the client's subscriber connection, then finish the job at once: the results
      -- message is published while nobody listens, so only the re-read after resubscribing
      -- can wake run
      local killed = 0
      for _, port in ipairs(h.cluster and h.cluster:ports() or { false }) do   -- a cluster: every node
        local c = port and h.cluster:node(port) or r
        killed = killed + assert(c:call('CLIENT', 'KILL', 'TYPE', 'pubsub'))
        if port then c:close() end
      end
      assert.is_true(killed >= 1)
      assert(o:complete(Q, 'w-x', { { id = res.jobs[1].id, attempt = res.jobs[1].attempt, ok = true, value = '"seen"' } }))
      assert.is_true(done:wait(10), 'run never returned')
      assert.same({ true, 'seen', res.jobs[1].id }, got)
    end)

    it('raises at once when its pending job is deleted', function()
      local got
      local done = jobrt.cond()
      jobrt.spawn(function()
        got = { pcall(q.run, q, Q, 'x', {}, { id = 'gone-1', delay = 100, wait = 10 }) }
        done:signal()
      end)
      h.wait_for(function() return q:stats(Q).delayed == 1 end, 5, 'the job')
      assert.is_true(q:deleteJob(Q, 'gone-1'))
      assert.is_true(done:wait(5), 'run still waits for a deleted job')
      assert.same({ false, "run: job gone-1 on queue 'cq' was deleted before it finished" }, got)
    end)

    it('survives a Redis restart while it waits (AOF on)', function()
      local s = h.start_redis{ aof = true }
      local qq = jobrt.connect(s.url)
      assert(qq:queueType('rr', 'QUEUE'))
      local release, started = jobrt.cond(), false
      local w = assert(qq:registerWorker(s.url, { rr = {
        slow = function(args)
          started = true
          release:wait(20)
          return { n = args.n + 1 }
        end,
      } }, { log_jobs = false }))
      local got
      local done = jobrt.cond()
      jobrt.spawn(function()
        got = { pcall(qq.run, qq, 'rr', 'slow', { n = 41 }, { wait = 30 }) }
        done:signal()
      end)
      h.wait_for(function() return started end, 5, 'the handler to start')
      s:kill()
      s:restart()
      release:broadcast()
      assert.is_true(done:wait(30), 'run never returned')
      assert.same({ true, { n = 42 }, '1' }, got)
      w:stop(1)
      qq:close()
      s:stop()
    end)

    it('waitJob waits for a job enqueued earlier', function()
      local id = q:enqueueJob(Q, 'x', {})
      jobrt.spawn(function()
        local res = assert(o:reserve(Q, 'w-x', 1, 30))
        assert(o:complete(Q, 'w-x', { { id = res.jobs[1].id, attempt = res.jobs[1].attempt, ok = true, value = '"done"' } }))
      end)
      assert.equal('done', q:waitJob(Q, id, 5))
      -- already finished: answered from the record
      local err, v = via_callback(q, 'waitJob', Q, id)
      assert.is_nil(err)
      assert.equal('done', v)
    end)
  end)

  describe('getJob and deleteJob', function()
    it('read and delete by id, both ways', function()
      local id = q:enqueueJob(Q, 'send', { a = 1 }, { id = 'user-5' })
      assert.equal('user-5', id)
      assert.equal('send', q:getJob(Q, 'user-5')['function'])
      local err, rec = via_callback(q, 'getJob', Q, 'user-5')
      assert.is_nil(err)
      assert.equal('{"a":1}', rec.args)
      assert.is_true(q:deleteJob(Q, 'user-5'))
      assert.is_nil(q:getJob(Q, 'user-5'))
      err, rec = via_callback(q, 'getJob', Q, 'user-5')
      assert.is_nil(err)
      assert.is_nil(rec)
      assert.is_false(q:deleteJob(Q, 'user-5'))
      q:enqueueJob(Q, 'send', {}, { id = 'user-5' })
      local derr, deleted = via_callback(q, 'deleteJob', Q, 'user-5')
      assert.is_nil(derr)
      assert.is_true(deleted)
      assert.equal(0, q:stats(Q).pending)
    end)

    it('check their arguments', function()
      assert.equal('getJob: id must be a non-empty string, got nil', err_of(q.getJob, q, Q))
      assert.equal('deleteJob: queue must be a non-empty string, got number', err_of(q.deleteJob, q, 5, 'x'))
      assert.equal('getJob: expected 2 arguments and an optional callback, got 3', err_of(q.getJob, q, Q, 'a', 'b'))
      assert.equal("getJob: queue 'zz' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type zz QUEUE|LBQUEUE|DELQUEUE",
        err_of(q.getJob, q, 'zz', 'a'))
    end)
  end)

  describe('the failed set', function()
    it('lists, retries and deletes (coroutine form)', function()
      local a = failed_job('boom', 'first')
      local b = failed_job('boom', 'second')
      local list, total = q:listFailedJobs(Q)
      assert.equal(2, total)
      assert.equal(b, list[1].id)
      assert.equal('second', list[1]['error-reason'])
      assert.equal(a, list[2].id)
      local one = q:listFailedJobs(Q, 1, 1)
      assert.equal(1, #one)
      assert.equal(a, one[1].id)
      assert.equal(2, q:retryFailedJobs(Q))
      assert.equal(2, q:stats(Q).pending)
      assert.equal(0, select(2, q:listFailedJobs(Q)))
    end)

    it('lists, retries and deletes (callback form)', function()
      failed_job()
      failed_job()
      local err, list, total = via_callback(q, 'listFailedJobs', Q)
      assert.is_nil(err)
      assert.equal(2, #list)
      assert.equal(2, total)
      local n
      err, n = via_callback(q, 'deleteFailedJobs', Q)
      assert.is_nil(err)
      assert.equal(2, n)
      failed_job()
      err, n = via_callback(q, 'retryFailedJobs', Q)
      assert.is_nil(err)
      assert.equal(1, n)
    end)

    it('checks offset and count', function()
      assert.equal("listFailedJobs: offset must be a whole number >= 0, got -1", err_of(q.listFailedJobs, q, Q, -1))
      assert.equal("listFailedJobs: count must be a whole number >= 1, got 0", err_of(q.listFailedJobs, q, Q, 0, 0))
      assert.equal("retryFailedJobs: queue must be a non-empty string, got nil", err_of(q.retryFailedJobs, q))
    end)
  end)

  describe('stats and workers', function()
    it('counts one queue or every queue', function()
      failed_job()
      q:enqueueJob(Q, 'a', {})
      q:enqueueJob(Q, 'a', {}, { delay = 100 })
      q:queueType('other', 'DELQUEUE')
      local s = q:stats(Q)
      assert.equal('QUEUE', s.type)
      assert.equal(1, s.pending)
      assert.equal(1, s.delayed)
      assert.equal(1, s.failed)
      local err, all = via_callback(q, 'stats')
      assert.is_nil(err)
      assert.same({ 'cq', 'other' }, (function()
        local t = {}
        for k in pairs(all) do t[#t + 1] = k end
        table.sort(t)
        return t
      end)())
      assert.equal('DELQUEUE', all.other.type)
      assert.equal(0, all.other.pending)
      local err2, one = via_callback(q, 'stats', Q)
      assert.is_nil(err2)
      assert.equal(1, one.delayed)
      assert.equal("stats: queue 'zz' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type zz QUEUE|LBQUEUE|DELQUEUE",
        err_of(q.stats, q, 'zz'))
    end)

    it('lists the workers whose registry entry is alive', function()
      local t = r:call('TIME')
      r:call('ZADD', 'jobrt:{workers}', tonumber(t[1]) * 1000 + 60000, 'w-alive', 1000, 'w-dead')
      r:call('HSET', 'jobrt:{workers}:w-alive', 'id', 'w-alive', 'host', 'h1', 'pid', '12', 'queues', 'cq')
      r:call('HSET', 'jobrt:{workers}:w-dead', 'id', 'w-dead')    -- a hash that outlived its entry
      local ws = q:workers()
      assert.equal(1, #ws)
      assert.equal('w-alive', ws[1].id)
      assert.equal('h1', ws[1].host)
      local err, ws2 = via_callback(q, 'workers')
      assert.is_nil(err)
      assert.equal(1, #ws2)
      -- the dead id is gone from the registry: nothing grows with every worker that ever ran
      assert.same({ 'w-alive' }, r:call('ZRANGE', 'jobrt:{workers}', 0, -1))
    end)
  end)

  describe('queueType', function()
    it('reads and sets, both ways', function()
      assert.is_nil(q:queueType('fresh'))
      assert.equal('LBQUEUE', q:queueType('fresh', 'LBQUEUE'))
      assert.equal('LBQUEUE', q:queueType('fresh'))
      local err, t = via_callback(q, 'queueType', 'fresh', 'DELQUEUE')
      assert.is_nil(err)
      assert.equal('DELQUEUE', t)
      err, t = via_callback(q, 'queueType', 'fresh')
      assert.is_nil(err)
      assert.equal('DELQUEUE', t)
      assert.equal('DELQUEUE', r:call('HGET', 'RESERVED:QCONFIG', 'fresh'))
    end)

    it('refuses an unknown type', function()
      assert.equal("queueType: unknown queue type 'FIFO': use QUEUE, LBQUEUE or DELQUEUE", err_of(q.queueType, q, Q, 'FIFO'))
      assert.equal("queueType: unknown queue type 3: use QUEUE, LBQUEUE or DELQUEUE", err_of(q.queueType, q, Q, 3))
    end)
  end)

  describe('registerWorker', function()
    it('serves the description from this process (callback form too)', function()
      local err, w = via_callback(q, 'registerWorker', nil, { [Q] = { double = function(a) return a.n * 2 end } })
      assert.is_nil(err)
      assert.equal(42, q:run(Q, 'double', { n = 21 }, { wait = 10 }))
      w:stop(1)
    end)

    it('a queue that cannot reserve (its type was removed) does not stop the others', function()
      assert(q:queueType('qa', 'QUEUE'))
      local w = assert(q:registerWorker(h.url, {
        qa = { a = function() return 'a' end },
        [Q] = { b = function() return 'b' end },
      }, { concurrency = 1, log_jobs = false }))
      assert.equal('b', q:run(Q, 'b', {}, { wait = 5 }))
      assert(r:call('HDEL', 'RESERVED:QCONFIG', 'qa'))
      w.ops.types = {}                -- forget the cached types: the next reserve of qa fails
      local wake_a = ops.channels('qa').wake
      -- qa's pump is woken first and claims the only slot for a reserve that fails; then a job
      -- of Q arrives, in the same moment
      jobrt.spawn(function() r:call('PUBLISH', wake_a, '0') end)
      local id = o:enqueue(Q, 'b', '{}', {})
      assert.equal('b', q:waitJob(Q, id, 5))
      w:stop(1)
    end)

    it('checks its arguments', function()
      assert.equal('registerWorker: jobDescription must be a table { QUEUE = { job = function(args, job) ... end } }, got nil',
        err_of(q.registerWorker, q, h.url))
      assert.equal('registerWorker: redisConfig must be a URL string, a table {host=, port=} or nil, got number',
        err_of(q.registerWorker, q, 1, {}))
    end)
  end)

  describe('outside a coroutine-friendly call', function()
    it('a closed client says so', function()
      local c = jobrt.connect(h.url)
      c:close()
      assert.equal('getJob: the client is closed', err_of(c.getJob, c, Q, 'x'))
    end)

    it('callback errors are reported, not raised into the loop', function()
      local seen
      local saved = client.report_error
      client.report_error = function(msg) seen = msg end
      local c = jobrt.cond()
      q:queueType(Q, function() c:signal(); error('in callback') end)
      c:wait(5)
      h.wait_for(function() return seen end, 5, 'the report')
      client.report_error = saved
      assert.matches('^callback failed: .*in callback', seen)
    end)
  end)
end)
