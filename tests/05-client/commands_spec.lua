-- The inspect-and-repair command line, end to end: `jobrt enqueue`, `queue-type`, `stats`,
-- `failed`, `job`, `delete` as child processes against the suite's redis-server (JOBRT_REDIS),
-- checking exit status, stdout and the one-line messages on stderr.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local ops = require 'jobrt.ops'
local cjson = require 'cjson'

local function run(args, stdin)
  local code, out, err = h.run_jobrt(args, { stdin = stdin })
  return code, out, err
end

local Q = 'mail'


setup(function() jobrt.set_log_level('warn') end)
teardown(function() jobrt.set_log_level('info') end)

describe('jobrt commands', function()
  local q, r, o
  before_each(function()
    h.flush()
    q = jobrt.connect(h.url)
    r = h.redis()
    o = assert(ops.new(r))
    q:queueType(Q, 'QUEUE')
  end)
  after_each(function()
    q:close()
    r:close()
  end)

  describe('--help', function()
    for _, c in ipairs({ 'enqueue', 'queue-type', 'stats', 'failed', 'job', 'delete', 'repl' }) do
      it('jobrt ' .. c .. ' --help prints its usage and the common options', function()
        local code, out = run({ c, '--help' })
        assert.equal(0, code)
        assert.matches('^usage: jobrt ' .. c:gsub('%-', '%%-'), out)
        assert.matches('--redis URL', out, 1, true)
        assert.matches('--log-level', out, 1, true)
      end)
    end
  end)

  describe('enqueue', function()
    it('prints the id of the new job', function()
      local code, out, err = run({ 'enqueue', Q, 'send', '{"to":"ann@example.com"}' })
      assert.equal(0, code)
      assert.equal('1\n', out)
      assert.equal('', err)
      local rec = q:getJob(Q, '1')
      assert.equal('send', rec['function'])
      assert.equal('{"to":"ann@example.com"}', rec.args)
    end)

    it('passes every option', function()
      local code, out = run({ 'enqueue', Q, 'send', '{}', '--id', 'welcome-ann', '--retries', '3',
                              '--timeout', '2.5', '--hash', 'h1', '--in', '60' })
      assert.equal(0, code)
      assert.equal('welcome-ann\n', out)
      local rec = q:getJob(Q, 'welcome-ann')
      assert.equal('3', rec.retries)
      assert.equal('2.5', rec.timeout)
      assert.equal(1, q:stats(Q).delayed)
      q:queueType('lb', 'LBQUEUE')
      code, out = run({ 'enqueue', 'lb', 'sync', '--hash', 'user-1', '--priority', '7' })
      assert.equal(0, code)
      assert.equal('7', q:getJob('lb', (out:gsub('\n', ''))).priority)
      q:queueType('del', 'DELQUEUE')
      local at = ('%.3f'):format(jobrt.now() + 100.25)
      code, out = run({ 'enqueue', 'del', 'remind', '--at', at })
      assert.equal(0, code)
      assert.equal(1, q:stats('del').delayed)
    end)

    it('says when an id is already waiting', function()
      run({ 'enqueue', Q, 'send', '--id', 'once' })
      local code, out, err = run({ 'enqueue', Q, 'send', '--id', 'once' })
      assert.equal(0, code)
      assert.equal('once\n', out)
      assert.equal("jobrt enqueue: job once is already waiting or running in queue 'mail'; it was not enqueued twice\n", err)
      assert.equal(1, q:stats(Q).pending)
    end)

    local USAGE = {
      { {}, "jobrt enqueue: missing QUEUE: usage: jobrt enqueue QUEUE JOB [JSON-ARGS] [OPTIONS] (see jobrt enqueue --help)" },
      { { Q }, "jobrt enqueue: missing JOB: usage: jobrt enqueue QUEUE JOB [JSON-ARGS] [OPTIONS] (see jobrt enqueue --help)" },
      { { Q, 'send', '{user:42}' }, [[jobrt enqueue: JSON-ARGS is not valid JSON (byte offset 1: expected a string key, found 'u'): quote it in single quotes, e.g. '{"user":42}']] },
      { { Q, 'send', 'hello' }, [[jobrt enqueue: JSON-ARGS is not valid JSON (byte offset 0: expected a value, found 'h'): quote it in single quotes, e.g. '{"user":42}']] },
      { { Q, 'send', '{"a":', '1}' }, "jobrt enqueue: unexpected argument '1}': quote JSON-ARGS in single quotes so the shell keeps it one word (see jobrt enqueue --help)" },
      { { Q, 'send', '--priority', 'high' }, "jobrt enqueue: --priority wants a number, got 'high'" },
      { { Q, 'send', '--in', '-3' }, "jobrt enqueue: --in wants seconds (a number >= 0), got '-3'" },
      { { Q, 'send', '--at', '1', '--in', '2' }, "jobrt enqueue: --at and --in exclude each other: give one of them" },
      { { Q, 'send', '--at', '1700000000000' }, "jobrt enqueue: --at must be Unix seconds, got 1700000000000 (milliseconds? divide by 1000)" },
      { { Q, 'send', '--id', '123' }, "jobrt enqueue: --id must not be all digits (generated ids are), got '123': add a prefix, e.g. 'job-123'" },
      { { 'a}:job:x', 'send' }, "jobrt enqueue: the queue name may use only A-Z a-z 0-9 _ . : - (got 'a}:job:x', with '}' at byte 2)" },
      { { Q, 'send', '--id', 'x{y' }, "jobrt enqueue: --id must not contain control characters (newline, tab...) or '{' '}' (got 'x{y', with '{' at byte 2)" },
      { { Q, 'send', '--retries', '2.5' }, "jobrt enqueue: --retries must be a whole number from 0 to 1000, got 2.5" },
      { { Q, 'send', '--timeout', '0' }, "jobrt enqueue: --timeout must be seconds from 0.001 to 3.2e7 (about a year), got 0" },
      { { Q, 'send', '--timeout', '1e12' }, "jobrt enqueue: --timeout must be seconds from 0.001 to 3.2e7 (about a year), got 1000000000000" },
      { { Q, 'send', '--priority', '1', '--priority', '2' }, "jobrt enqueue: --priority is given twice (1 and 2): give it once" },
      { { Q, 'e\255cho' }, [[jobrt enqueue: the job name must be UTF-8: byte offset 1 is 0xff (got "e\255cho")]] },
      { { Q, 'send', '--id', 'id\254' }, [[jobrt enqueue: --id must be UTF-8: byte offset 2 is 0xfe (got "id\254")]] },
      { { Q, 'send', '--hash', 'h\192\175' }, [[jobrt enqueue: --hash must be UTF-8: byte offset 1 is 0xc0 (got "h\192\175")]] },
      { { Q, 'send', '--hash' }, "jobrt enqueue: --hash needs a value" },
      { { Q, 'send', '--frob' }, "jobrt enqueue: unknown option --frob (see jobrt enqueue --help)" },
      { { Q, 'send', '--wait-timeout', '3' }, "jobrt enqueue: --wait-timeout needs --wait" },
      { { Q, 'send', '-', '--wait' }, "jobrt enqueue: --wait works with one job: enqueue from stdin without it, or one job at a time" },
      { { Q, 'send', '-', '--id', 'x-1' }, [[jobrt enqueue: --id names one job: put an "id" in each line of stdin instead (jobrt enqueue QUEUE -)]] },
      { { Q, '-', 'x' }, "jobrt enqueue: unexpected argument 'x' after - (see jobrt enqueue --help)" },
      { { Q, 'send', '--log-level', 'loud' }, "jobrt enqueue: --log-level: unknown log level 'loud': use debug, info, warn or error" },
    }
    for _, case in ipairs(USAGE) do
      it('exits 2 with one line: ' .. case[2]:sub(16, 70), function()
        local args = { 'enqueue' }
        for _, a in ipairs(case[1]) do args[#args + 1] = a end
        local code, out, err = run(args)
        assert.equal(case[2] .. '\n', err)
        assert.equal('', out)
        assert.equal(2, code)
      end)
    end

    it('exits 1 naming the queue without a type and the fix', function()
      local code, out, err = run({ 'enqueue', 'nope', 'send' })
      assert.equal(1, code)
      assert.equal('', out)
      assert.equal("jobrt enqueue: queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE\n", err)
    end)

    it("exits 2 when the options do not fit the queue's type, and enqueues nothing", function()
      q:queueType('lb', 'LBQUEUE')
      local code, _, err = run({ 'enqueue', 'lb', 'send' })
      assert.equal(2, code)
      assert.equal("jobrt enqueue: queue 'lb' is an LBQUEUE: give --hash (jobs with the same jobHash are one entry)\n", err)
      code, _, err = run({ 'enqueue', 'lb', 'send', '--hash', 'h', '--in', '5' })
      assert.equal(2, code)
      assert.equal("jobrt enqueue: --in applies to QUEUE and DELQUEUE queues only; queue 'lb' is an LBQUEUE\n", err)
      q:queueType('dq', 'DELQUEUE')
      code, _, err = run({ 'enqueue', 'dq', 'send', '--priority', '2' })
      assert.equal(2, code)
      assert.equal("jobrt enqueue: --priority applies to QUEUE and LBQUEUE queues only; queue 'dq' is a DELQUEUE (its jobs run at their time)\n", err)
      code, _, err = run({ 'enqueue', 'dq', 'send', '--priority', '2', '--wait' })
      assert.equal(2, code)
      assert.equal("jobrt enqueue: --priority applies to QUEUE and LBQUEUE queues only; queue 'dq' is a DELQUEUE (its jobs run at their time)\n", err)
      code, _, err = run({ 'enqueue', 'lb', '-' }, '{"job":"a","jobHash":"h"}\n{"job":"b"}\n')
      assert.equal(2, code)
      assert.equal("jobrt enqueue: line 2 of stdin: queue 'lb' is an LBQUEUE: give the option jobHash (jobs with the same jobHash are one entry)\n", err)
      assert.equal(0, q:stats('lb').pending)
      assert.equal(0, q:stats(Q).pending)
    end)

    it('exits 1 with the address and the fix when Redis does not answer', function()
      local code, out, err = run({ 'enqueue', Q, 'send', '--redis', 'redis://127.0.0.1:1' })
      assert.equal(1, code)
      assert.equal('', out)
      assert.equal('jobrt enqueue: cannot connect to redis at 127.0.0.1:1: Connection refused: start redis-server there, or pass --redis URL (or set JOBRT_REDIS)\n', err)
    end)

    it('exits 2 naming a malformed address, given by --redis or JOBRT_REDIS', function()
      local code, _, err = run({ 'stats', '--redis', 'nowhere' })
      assert.equal(2, code)
      assert.equal("jobrt stats: bad redis URL 'nowhere': unknown scheme; expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH[?password=PASSWORD&db=N], redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB] or redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]\n", err)
      for _, c in ipairs({ { 'enqueue', Q, 'send' }, { 'repl' }, { 'work', 'jobs/' } }) do
        local out
        code, out, err = h.run_jobrt(c, { env = { JOBRT_REDIS = 'redis://h:0' } })
        assert.equal(2, code)
        assert.equal('', out)
        assert.matches("bad redis URL 'redis://h:0': port must be 1%-65535; .* %(from JOBRT_REDIS%)\n$", err)
      end
    end)

    describe('--wait', function()
      local w
      before_each(function()
        w = assert(q:registerWorker(h.url, { [Q] = {
          echo = function(args) return { echoed = args } end,
          boom = function() error('no mail today', 0) end,
        } }, { log_jobs = false }))
      end)
      after_each(function() w:stop(1) end)

      it("prints the job's result as JSON", function()
        local code, out, err = run({ 'enqueue', Q, 'echo', '{"n":[1,2]}', '--wait' })
        assert.equal("jobrt enqueue: job 1 enqueued in queue 'mail'; waiting for its result\n", err)
        assert.equal(0, code)
        assert.same({ echoed = { n = { 1, 2 } } }, cjson.decode(out))
      end)

      it('exits 1 with the reason and the traceback on stderr when the job failed', function()
        local code, out, err = run({ 'enqueue', Q, 'boom', '--wait', '--retries', '0' })
        assert.equal(1, code)
        assert.equal('', out)
        assert.matches("^jobrt enqueue: job 1 enqueued in queue 'mail'; waiting for its result\njobrt enqueue: job 1 %(boom%) on queue 'mail' failed: no mail today\n", err)
      end)
    end)

    it('--wait exits 1 at once when the job is deleted while it waits', function()
      local p = h.spawn_jobrt({ 'enqueue', Q, 'echo', '--in', '100', '--id', 'del-1', '--wait' })
      h.wait_for(function() return q:getJob(Q, 'del-1') ~= nil end, 5, 'the job')
      assert.is_true(q:deleteJob(Q, 'del-1'))
      local guard = jobrt.timer()
      guard:start(10, function() p:kill('SIGKILL') end)
      local code = p:wait()
      guard:close()
      local out, err = p:output()
      assert.equal(1, code)
      assert.equal('', out)
      -- no worker serves the queue in this spec: that is said after the id, before the wait
      assert.matches("^jobrt enqueue: job del%-1 enqueued in queue 'mail'; waiting for its result\n" ..
        "[%d%-]+T[%d:.]+Z jobrt%[%d+%] warn: enqueue: no live worker serves queue 'mail': job del%-1 waits until one does[^\n]*\n" ..
        "jobrt enqueue: job del%-1 in queue 'mail' was deleted before it finished\n$", err)
    end)

    it('--wait-timeout gives up (exit 1) and the job stays queued', function()
      local code, out, err = run({ 'enqueue', Q, 'echo', '--wait', '--wait-timeout', '0.2' })
      assert.equal(1, code)
      assert.equal('', out)
      assert.matches("^jobrt enqueue: job 1 enqueued in queue 'mail'; waiting for its result\n" ..
        "[%d%-]+T[%d:.]+Z jobrt%[%d+%] warn: enqueue: no live worker serves queue 'mail': job 1 waits until one does[^\n]*\n" ..
        "jobrt enqueue: job 1 on queue 'mail' did not finish within 0%.2 s %(state: pending; is a worker serving 'mail'%? the job stays queued%)\n$", err)
      assert.equal(1, q:stats(Q).pending)
    end)

    it('--wait-timeout on a delayed job says when it is due, not that no worker serves it', function()
      local code, out, err = run({ 'enqueue', Q, 'echo', '--in', '30', '--wait', '--wait-timeout', '0.2' })
      assert.equal(1, code)
      assert.equal('', out)
      local last = err:match('([^\n]*)\n$')
      assert.matches("^jobrt enqueue: job 1 on queue 'mail' did not finish within 0%.2 s: it is delayed, due at %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%dZ %(in %d+ s%); the job stays queued$", last)
      local n = tonumber(last:match('%(in (%d+) s%)'))
      assert.is_true(n >= 20 and n <= 30, last)
      assert.falsy(last:find('is a worker serving', 1, true))
    end)

    describe('from stdin', function()
      it('QUEUE JOB - takes one JSON-ARGS per line', function()
        local code, out, err = run({ 'enqueue', Q, 'send', '-', '--retries', '2' }, '{"n":1}\n\n[1,2]\n"x"\n')
        assert.equal('', err)
        assert.equal(0, code)
        assert.equal('enqueued 3 jobs\n', out)
        assert.equal('[1,2]', q:getJob(Q, '2').args)
        assert.equal('2', q:getJob(Q, '3').retries)
      end)

      it('QUEUE - takes one JSON object per line with the job name and its options', function()
        local code, out = run({ 'enqueue', Q, '-' },
          '{"job":"a","args":{"k":1}}\n{"job":"b","id":"b-1","retries":1}\n{"job":"b","id":"b-1"}\n')
        assert.equal(0, code)
        assert.equal('enqueued 2 jobs (1 already waiting or running, not enqueued twice)\n', out)
        assert.equal('b', q:getJob(Q, 'b-1')['function'])
        assert.equal('{"k":1}', q:getJob(Q, '1').args)
      end)

      it('checks every line before enqueueing any', function()
        local code, out, err = run({ 'enqueue', Q, 'send', '-' }, '{"n":1}\n{"n":\n')
        assert.equal(2, code)
        assert.equal('', out)
        assert.equal('jobrt enqueue: line 2 of stdin is not valid JSON (byte offset 5: expected a value at the end of the text): write one JSON value per line\n', err)
        code, _, err = run({ 'enqueue', Q, '-' }, '{"job":"a"}\n{"args":{}}\n')
        assert.equal(2, code)
        assert.equal('jobrt enqueue: line 2 of stdin must be a JSON object with a "job" name, e.g. {"job":"send","args":{"to":"ann"}}\n', err)
        code, _, err = run({ 'enqueue', Q, '-' }, '{"job":"a","prio":1}\n')
        assert.equal(2, code)
        assert.equal("jobrt enqueue: line 1 of stdin: unknown option 'prio' (known: jobHash, priority, timestamp, delay, id, retries, timeout)\n", err)
        assert.equal(0, q:stats(Q).pending)
      end)

      it('pipelines many jobs', function()
        local lines = {}
        for i = 1, 5000 do lines[i] = ('{"i":%d}'):format(i) end
        local t0 = jobrt.monotime()
        local code, out = run({ 'enqueue', Q, 'n', '-' }, table.concat(lines, '\n') .. '\n')
        assert.equal(0, code)
        assert.equal('enqueued 5000 jobs\n', out)
        assert.equal(5000, q:stats(Q).pending)
        assert.is_true(jobrt.monotime() - t0 < 10)
      end)

      it('empty input enqueues nothing', function()
        local code, out = run({ 'enqueue', Q, 'send', '-' }, '')
        assert.equal(0, code)
        assert.equal('enqueued 0 jobs\n', out)
      end)
    end)
  end)

  describe('queue-type', function()
    it('reads and sets the type', function()
      local code, out = run({ 'queue-type', Q })
      assert.equal(0, code)
      assert.equal('QUEUE\n', out)
      code, out = run({ 'queue-type', 'new', 'lbqueue' })
      assert.equal(0, code)
      assert.equal('LBQUEUE\n', out)
      assert.equal('LBQUEUE', r:call('HGET', 'RESERVED:QCONFIG', 'new'))
    end)

    it('names a missing type and the fix', function()
      local code, out, err = run({ 'queue-type', 'none' })
      assert.equal(1, code)
      assert.equal('', out)
      assert.equal("jobrt queue-type: queue 'none' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type none QUEUE|LBQUEUE|DELQUEUE\n", err)
    end)

    it('refuses an unknown type and a missing queue (exit 2)', function()
      local code, _, err = run({ 'queue-type', Q, 'FIFO' })
      assert.equal(2, code)
      assert.equal("jobrt queue-type: unknown queue type 'FIFO': use QUEUE, LBQUEUE or DELQUEUE\n", err)
      code, _, err = run({ 'queue-type' })
      assert.equal(2, code)
      assert.equal('jobrt queue-type: missing QUEUE: usage: jobrt queue-type QUEUE [QUEUE|LBQUEUE|DELQUEUE] (see jobrt queue-type --help)\n', err)
    end)

    it('will not strand waiting jobs unless --force', function()
      q:enqueueJob(Q, 'a', {})
      local code, _, err = run({ 'queue-type', Q, 'DELQUEUE' })
      assert.equal(1, code)
      assert.equal("jobrt queue-type: queue 'mail' is a QUEUE holding 1 job; changing its type would strand them: let them finish first, or pass --force\n", err)
      assert.equal('QUEUE', q:queueType(Q))
      code = run({ 'queue-type', Q, 'DELQUEUE', '--force' })
      assert.equal(0, code)
      assert.equal('DELQUEUE', r:call('HGET', 'RESERVED:QCONFIG', Q))
    end)
  end)

  describe('stats', function()
    it('shows a table of every queue and the workers alive', function()
      q:queueType('alpha', 'LBQUEUE')
      q:enqueueJob(Q, 'a', {})
      q:enqueueJob(Q, 'a', {})
      q:enqueueJob(Q, 'b', {}, { delay = 50 })
      -- w1 registered (its expiry ahead), 'gone' expired long ago
      local t = r:call('TIME')
      r:call('ZADD', 'jobrt:{workers}', tonumber(t[1]) * 1000 + 60000, 'w1', 1000, 'gone')
      r:call('HSET', 'jobrt:{workers}:w1', 'id', 'w1', 'host', 'box', 'pid', '77', 'queues', 'mail',
        'heartbeat', ('%.6f'):format(jobrt.now()), 'done', '5', 'failed', '1')
      local code, out, err = run({ 'stats' })
      assert.equal('', err)
      assert.equal(0, code)
      local lines = {}
      for l in out:gmatch('[^\n]+') do lines[#lines + 1] = l end
      assert.matches('^QUEUE%s+TYPE%s+PENDING%s+DELAYED%s+PARKED%s+EXECUTING%s+FAILED%s+COMPLETED$', lines[1])
      assert.matches('^alpha%s+LBQUEUE%s+0%s+0%s+0%s+0%s+0%s+0$', lines[2])
      assert.matches('^mail%s+QUEUE%s+2%s+1%s+0%s+0%s+0%s+0$', lines[3])
      assert.equal('workers alive: 1', lines[4])
      assert.matches('^  ID%s+HOST%s+PID%s+QUEUES%s+DONE%s+FAILED%s+HEARTBEAT$', lines[5])
      assert.matches('^  w1%s+box%s+77%s+mail%s+5%s+1%s+%d+s ago$', lines[6])
    end)

    it('shows one queue, and JSON with --json', function()
      q:enqueueJob(Q, 'a', {})
      local code, out = run({ 'stats', Q, '--json' })
      assert.equal(0, code)
      local t = cjson.decode(out)
      assert.equal(1, t.queues.mail.pending)
      assert.equal('QUEUE', t.queues.mail.type)
      assert.same({}, t.workers)
      assert.matches('"workers": []', out, 1, true)
    end)

    it('says when there are no queues, and names an unknown one', function()
      r:call('DEL', 'RESERVED:QCONFIG')
      local code, out = run({ 'stats' })
      assert.equal(0, code)
      assert.equal('no queues in RESERVED:QCONFIG: create one with  jobrt queue-type QUEUE QUEUE|LBQUEUE|DELQUEUE\nworkers alive: 0\n', out)
      local err
      code, out, err = run({ 'stats', 'nope' })
      assert.equal(1, code)
      assert.equal("jobrt stats: queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE\n", err)
    end)
  end)

  describe('failed', function()
    local function fail_one(fn, reason)
      local id = q:enqueueJob(Q, fn, {}, { retries = 0 })
      local res = assert(o:reserve(Q, 'w-t', 1, 30))
      assert(o:complete(Q, 'w-t', { { id = res.jobs[1].id, attempt = res.jobs[1].attempt, ok = false, reason = reason, exception = 'tb' } }))
      return id
    end

    it('lists, retries and deletes', function()
      fail_one('a', 'first reason\nmore')
      fail_one('b', 'second')
      local code, out = run({ 'failed', Q })
      assert.equal(0, code)
      local lines = {}
      for l in out:gmatch('[^\n]+') do lines[#lines + 1] = l end
      assert.equal("2 failed jobs in queue 'mail'", lines[1])
      assert.matches('^ID%s+JOB%s+FAILED AT%s+ATTEMPTS%s+ERROR$', lines[2])
      assert.matches('^2%s+b%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%dZ%s+1%s+second$', lines[3])
      assert.matches('^1%s+a%s+.-%s+1%s+first reason$', lines[4])
      code, out = run({ 'failed', Q, 'list', '--limit', '1' })
      assert.equal(0, code)
      assert.matches("^2 failed jobs in queue 'mail' %(newest 1 shown; %-%-limit N for more%)\n", out)
      code, out = run({ 'failed', Q, 'list', '--json' })
      assert.equal(0, code)
      local list = cjson.decode(out)
      assert.equal('second', list[1]['error-reason'])
      code, out = run({ 'failed', Q, 'retry', '1' })
      assert.equal(0, code)
      assert.equal("retried failed job 1 of queue 'mail'\n", out)
      local err
      code, out, err = run({ 'failed', Q, 'retry', '1' })
      assert.equal(1, code)
      assert.equal("jobrt failed: job 1 is not in the failed set of queue 'mail' (see jobrt failed mail list)\n", err)
      code, out = run({ 'failed', Q, 'retry' })
      assert.equal(0, code)
      assert.equal("retried 1 failed job of queue 'mail'\n", out)
      assert.equal(2, q:stats(Q).pending)
      fail_one('c', 'x')
      code, out = run({ 'failed', Q, 'delete' })
      assert.equal(0, code)
      assert.equal("deleted 1 failed job of queue 'mail'\n", out)
      code, out = run({ 'failed', Q, '--json' })
      assert.equal('[]\n', out)
    end)

    it('refuses an unknown action and a missing queue', function()
      local code, _, err = run({ 'failed', Q, 'purge' })
      assert.equal(2, code)
      assert.equal("jobrt failed: unknown action 'purge': use list, retry or delete\n", err)
      code, _, err = run({ 'failed' })
      assert.equal(2, code)
      assert.equal('jobrt failed: missing QUEUE: usage: jobrt failed QUEUE [list|retry|delete] (see jobrt failed --help)\n', err)
      code, _, err = run({ 'failed', 'nope' })
      assert.equal(1, code)
      assert.equal("jobrt failed: queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE\n", err)
    end)
  end)

  describe('job and delete', function()
    it('job prints the record as JSON with sorted keys, args as a JSON value', function()
      q:enqueueJob(Q, 'send', { to = 'ann' }, { id = 'welcome-ann' })
      local code, out = run({ 'job', Q, 'welcome-ann' })
      assert.equal(0, code)
      local rec = cjson.decode(out)
      assert.equal('send', rec['function'])
      assert.same({ to = 'ann' }, rec.args)
      assert.equal('pending', rec.state)
      assert.matches('^{\n  "args": {\n    "to": "ann"\n  },\n  "attempts": "0",\n  "function": "send",\n', out)
    end)

    it('job names a missing job', function()
      local code, out, err = run({ 'job', Q, 'ghost' })
      assert.equal(1, code)
      assert.equal('', out)
      assert.equal("jobrt job: no job 'ghost' in queue 'mail' (finished jobs expire; failed ones are listed by  jobrt failed mail)\n", err)
      code, _, err = run({ 'job', Q })
      assert.equal(2, code)
      assert.equal('jobrt job: missing ID: usage: jobrt job QUEUE ID (see jobrt job --help)\n', err)
    end)

    it('delete cancels a job by id', function()
      q:enqueueJob(Q, 'send', {}, { id = 'cancel-me' })
      local code, out = run({ 'delete', Q, 'cancel-me' })
      assert.equal(0, code)
      assert.equal("deleted job cancel-me of queue 'mail'\n", out)
      assert.is_nil(q:getJob(Q, 'cancel-me'))
      local err
      code, out, err = run({ 'delete', Q, 'cancel-me' })
      assert.equal(1, code)
      assert.equal("jobrt delete: no job 'cancel-me' in queue 'mail' (nothing deleted)\n", err)
      code, _, err = run({ 'delete', Q, 'a', 'b' })
      assert.equal(2, code)
      assert.equal("jobrt delete: unexpected argument 'b' (see jobrt delete --help)\n", err)
    end)
  end)
end)
