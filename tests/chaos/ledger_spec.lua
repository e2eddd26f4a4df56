-- The checks of `make chaos` themselves (tests/chaos/ledger.lua, tests/chaos/faults.lua): the
-- fencing script on a real redis-server, and each check on a small hand-made ledger, so that a
-- soak that passes is known to be able to fail. Fast; runs in every `make test`.
local cjson = require 'cjson'
local h = require 'tests.helpers'
local ledger = require 'tests.chaos.ledger'
local faults = require 'tests.chaos.faults'

-- A ledger line as the fencing script writes it.
local function line(t, acc, rec) return ('%.6f\t%d\t%s'):format(t, acc and 1 or 0, cjson.encode(rec)) end

-- One run of a handler: start at t, end at t + d (ok), each write accepted unless said. The
-- lines are kept in L.pending; build(L) adds them in time order, as the ledger server does.
local function run(L, r)
  local base = { q = r.q or 'Q', id = r.id, att = r.att or 1, hash = r.hash, fn = r.fn or 'ok',
                 pid = r.pid or 100, rid = r.rid, due = r.due }
  local function rec(ev, extra)
    local x = {}
    for k, v in pairs(base) do x[k] = v end
    x.ev = ev
    for k, v in pairs(extra or {}) do x[k] = v end
    return x
  end
  L.pending = L.pending or {}
  local function add(t, acc, x) L.pending[#L.pending + 1] = { t = t, line = line(t, acc, x) } end
  add(r.t, r.start_acc ~= false, rec('start', { tl = ('%.6f'):format(r.tl or r.t) }))
  for _, p in ipairs(r.progress or {}) do add(p[1], p[2], rec('progress')) end
  if r.d then add(r.t + r.d, r.end_acc ~= false, rec('end', { ok = r.ok ~= false })) end
end

local function build(L)
  table.sort(L.pending, function(a, b) return a.t < b.t end)
  for _, p in ipairs(L.pending) do L:add(p.line) end
  L.pending = nil
  return L
end

local function job(id, fn, q) return { q = q or 'Q', id = id, fn = fn or 'ok', acks = 1, t = 1000 } end
local function done(id) return { state = 'finished', result = 'successful' } end

describe("chaos ledger", function()
  describe("the fencing script", function()
    local r, sha
    before_each(function()
      h.flush()
      r = h.redis()
      sha = ledger.load(r)
    end)
    after_each(function() r:close() end)

    local function write(ev, q, id, att, fence, hash)
      return r:call('EVALSHA', sha, 2, ledger.KEYS[1], ledger.KEYS[2], ev, q, id, att, fence or '', hash or '',
        cjson.encode{ ev = ev, q = q, id = id, att = att, rid = q .. id .. att, ok = ev == 'end' or nil })
    end

    it("refuses every write of an attempt once a higher attempt of the same job has started", function()
      assert.are.equal(1, write('start', 'Q', '1', 1))
      assert.are.equal(1, write('progress', 'Q', '1', 1))
      assert.are.equal(1, write('start', 'Q', '1', 2))
      assert.are.equal(0, write('progress', 'Q', '1', 1))
      assert.are.equal(0, write('end', 'Q', '1', 1))
      assert.are.equal(0, write('start', 'Q', '1', 1))     -- a stale attempt starting late
      assert.are.equal(1, write('end', 'Q', '1', 2))
      -- another queue's job 1 and another job of the same queue are fenced apart
      assert.are.equal(1, write('start', 'R', '1', 1))
      assert.are.equal(1, write('end', 'Q', '2', 1))
      local lines = r:call('LRANGE', ledger.KEYS[1], 0, -1)
      assert.are.equal(9, #lines)
      local L = ledger.new()
      for _, l in ipairs(lines) do L:add(l) end
      assert.are.equal(9, L.n)
      assert.are.equal(0, #L.bad)
      local refused = 0
      for _, run_ in ipairs(L.order) do
        for _, w in ipairs(run_.writes) do if not w.acc then refused = refused + 1 end end
      end
      assert.are.equal(3, refused)
      assert.is_true(L.done_ok['Q\t1'] and L.done_ok['Q\t2'])
    end)

    it("with job.fence, fences a jobHash too: a later job of it refuses the earlier job's writes", function()
      assert.are.equal(1, write('start', 'LB', '1', 1, 5, 'h'))
      assert.are.equal(1, write('start', 'LB', '2', 1, 7, 'h'))
      assert.are.equal(0, write('progress', 'LB', '1', 1, 5, 'h'))   -- job 1 never ran again
      assert.are.equal(0, write('end', 'LB', '1', 1, 5, 'h'))
      assert.are.equal(1, write('start', 'LB', '3', 1, 6, 'other'))  -- another jobHash
      assert.are.equal(1, write('end', 'LB', '2', 1, 7, 'h'))
      -- a job without a jobHash is fenced on itself only
      assert.are.equal(1, write('start', 'Q', '1', 1, 3))
      assert.are.equal(1, write('start', 'Q', '1', 2, 4))
      assert.are.equal(0, write('end', 'Q', '1', 1, 3))
    end)

    it("answers a clear error for an attempt that is not a number", function()
      local ok, err = write('start', 'Q', '1', 'x')
      assert.is_nil(ok)
      assert.matches('attempt must be a number', err)
    end)
  end)

  describe("checks", function()
    local function analyse(L, input)
      if L.pending then build(L) end
      input.outcomes = input.outcomes or {}
      input.faults = input.faults or {}
      input.lease, input.t_base = 2, 1000
      input.lb_queues = input.lb_queues or { LB = true }
      return L:analyse(input)
    end

    it("pass a clean ledger", function()
      local L = ledger.new()
      run(L, { id = '1', rid = 'a', t = 1001, d = 0.1 })
      run(L, { id = '2', rid = 'b', t = 1001.05, d = 0.1, fn = 'flaky', ok = false })
      run(L, { id = '2', rid = 'c', t = 1002.5, d = 0.1, fn = 'flaky', att = 2 })
      local rep = analyse(L, { jobs = { ['Q\t1'] = job('1'), ['Q\t2'] = job('2', 'flaky'), ['Q\t3'] = job('3', 'doom') },
        outcomes = { ['Q\t1'] = done(), ['Q\t2'] = done(), ['Q\t3'] = { state = 'finished', result = 'failed' } } })
      assert.are.same({}, rep.violations)
      assert.are.equal(2, rep.completed)
      assert.are.equal(1, rep.failed_intended)
    end)

    it("count a job that never ended as LOST, and one Redis failed as failed unexpectedly", function()
      local L = ledger.new()
      run(L, { id = '1', rid = 'a', t = 1001 })                 -- started, never ended
      local rep = analyse(L, { jobs = { ['Q\t1'] = job('1'), ['Q\t2'] = job('2'), ['Q\t3'] = job('3', 'slow') },
        outcomes = { ['Q\t1'] = { state = 'pending' }, ['Q\t2'] = { state = 'finished', result = 'failed', reason = 'lease expired' },
                     ['Q\t3'] = { missing = true } } })
      assert.are.equal(2, rep.lost.n)
      assert.matches('Q/1 %(ok%).-in state pending', rep.lost[1] .. rep.lost[2])
      assert.are.equal(1, rep.failed_unexpectedly.n)
      assert.matches('lease expired', rep.failed_unexpectedly[1])
      assert.is_true(#rep.violations > 0)
    end)

    it("explain a duplicate only by a fault on the earlier run's process or on Redis", function()
      local L = ledger.new()
      run(L, { id = '1', rid = 'a', t = 1001, d = 0.5, pid = 7 })
      run(L, { id = '1', rid = 'b', t = 1004, d = 0.5, pid = 8, att = 2 })
      local jobs = { ['Q\t1'] = job('1') }
      local outcomes = { ['Q\t1'] = done() }
      local rep = analyse(L, { jobs = jobs, outcomes = outcomes })
      assert.are.equal(1, rep.duplicates.unexplained.n)
      -- a fault on another process explains nothing
      rep = analyse(L, { jobs = jobs, outcomes = outcomes,
        faults = { { kind = 'kill9-child', t0 = 1001.2, t1 = 1001.2, pids = { [9] = true } } } })
      assert.are.equal(1, rep.duplicates.unexplained.n)
      -- on its process, during the run, it does
      rep = analyse(L, { jobs = jobs, outcomes = outcomes,
        faults = { { kind = 'kill9-child', t0 = 1001.6, t1 = 1001.6, pids = { [7] = true } } } })
      assert.are.equal(0, rep.duplicates.unexplained.n or 0)
      assert.are.equal(1, rep.duplicates.explained.n)
      assert.matches('kill9%-child', rep.duplicates.explained[1])
      -- Redis frozen before the run started, plus the lease, still counts; long before does not
      rep = analyse(L, { jobs = jobs, outcomes = outcomes,
        faults = { { kind = 'redis-sigstop', t0 = 997, t1 = 1000, redis = true } } })
      assert.are.equal(1, rep.duplicates.explained.n)
      rep = analyse(L, { jobs = jobs, outcomes = outcomes,
        faults = { { kind = 'redis-sigstop', t0 = 990, t1 = 993, redis = true } } })
      assert.are.equal(1, rep.duplicates.unexplained.n)
    end)

    it("flag an attempt that started twice", function()
      local L = ledger.new()
      run(L, { id = '1', rid = 'a', t = 1001, pid = 7 })
      run(L, { id = '1', rid = 'b', t = 1003, d = 0.1, pid = 8 })
      local rep = analyse(L, { jobs = { ['Q\t1'] = job('1') }, outcomes = { ['Q\t1'] = done() } })
      assert.are.equal(1, rep.same_attempt.n)
    end)

    it("flag two jobs of one LBQUEUE jobHash whose accepted writes overlap", function()
      local L = ledger.new()
      run(L, { q = 'LB', id = '1', hash = 'h', rid = 'a', t = 1001, d = 1 })
      run(L, { q = 'LB', id = '2', hash = 'h', rid = 'b', t = 1001.5, d = 1 })
      run(L, { q = 'LB', id = '3', hash = 'other', rid = 'c', t = 1001.5, d = 1 })
      local jobs = { ['LB\t1'] = job('1', 'ok', 'LB'), ['LB\t2'] = job('2', 'ok', 'LB'), ['LB\t3'] = job('3', 'ok', 'LB') }
      -- job 1's record is gone, so which run's result was stored is unknown: only the fence speaks
      local outcomes = { ['LB\t1'] = { missing = true }, ['LB\t2'] = done(), ['LB\t3'] = done() }
      local rep = analyse(L, { jobs = jobs, outcomes = outcomes })
      assert.are.equal(1, rep.overlaps.accepted.n)
      assert.matches('jobHash LB/h', rep.overlaps.accepted[1])
      -- the same runs in a QUEUE (no jobHash promise) are no overlap
      rep = analyse(L, { jobs = jobs, outcomes = outcomes, lb_queues = {} })
      assert.are.equal(0, rep.overlaps.accepted.n or 0)
    end)

    it("flag a jobHash handed out while the run whose result was stored still held it, fault or not", function()
      local L = ledger.new()
      run(L, { q = 'LB', id = '1', hash = 'h', rid = 'a', t = 1001, d = 1, pid = 7 })
      run(L, { q = 'LB', id = '2', hash = 'h', rid = 'b', t = 1001.5, d = 1, pid = 8 })
      -- job 1's end is refused by the fence (job 2's token is larger), but its result was stored
      for _, p in ipairs(L.pending) do if p.line:find('"rid":"a"') and p.line:find('"end"') then
        p.line = p.line:gsub('\t1\t', '\t0\t', 1) end end
      local jobs = { ['LB\t1'] = job('1', 'ok', 'LB'), ['LB\t2'] = job('2', 'ok', 'LB') }
      local rep = analyse(L, { jobs = jobs, outcomes = { ['LB\t1'] = done(), ['LB\t2'] = done() },
        faults = { { kind = 'redis-sigstop', t0 = 1000.5, t1 = 1001.4, redis = true } } })
      assert.are.equal(1, rep.overlaps.held.n)
      assert.matches('held its lease until its result was stored', rep.overlaps.held[1])
      -- when its result was not stored (another run finished the job), the usual rules apply
      rep = L:analyse{ jobs = jobs, outcomes = { ['LB\t1'] = { state = 'pending' }, ['LB\t2'] = done() },
        faults = { { kind = 'redis-sigstop', t0 = 1000.5, t1 = 1001.4, redis = true } }, lease = 2, t_base = 1000,
        lb_queues = { LB = true } }
      assert.are.equal(0, rep.overlaps.held.n or 0)
      assert.are.equal(1, rep.overlaps.fenced_explained.n)
    end)

    it("allow one refused write of a stale run when a fault explains it, not more", function()
      local function ledger_with(nrefused)
        local L = ledger.new()
        local progress = {}
        for i = 1, nrefused - 1 do progress[i] = { 1003 + i * 0.1, false } end
        run(L, { id = '1', rid = 'a', t = 1001, pid = 7, progress = progress, d = 2.5, end_acc = false })
        run(L, { id = '1', rid = 'b', t = 1002.9, pid = 8, att = 2, d = 0.5 })
        return L
      end
      local input = function(fs)
        return { jobs = { ['Q\t1'] = job('1') }, outcomes = { ['Q\t1'] = done() }, faults = fs }
      end
      local stop = { { kind = 'sigstop-worker', t0 = 1001.1, t1 = 1004, pids = { [7] = true } } }
      local rep = analyse(ledger_with(1), input(stop))
      assert.are.equal(1, rep.overlaps.fenced_explained.n)
      assert.are.equal(0, rep.overlaps.kept_running.n or 0)
      assert.are.equal(1, rep.duplicates.explained.n)
      assert.are.same({}, rep.violations)
      rep = analyse(ledger_with(1), input({}))
      assert.are.equal(1, rep.overlaps.fenced_unexplained.n)
      rep = analyse(ledger_with(3), input(stop))
      assert.are.equal(1, rep.overlaps.kept_running.n)
      assert.matches('3 writes, all refused', rep.overlaps.kept_running[1])
    end)

    it("flag a start before the due time, with a millisecond of leeway", function()
      local L = ledger.new()
      run(L, { id = '1', rid = 'a', t = 1002, tl = 1001.990, due = 1002, d = 0.1 })
      run(L, { id = '2', rid = 'b', t = 1002, tl = 1001.9995, due = 1002, d = 0.1 })
      local rep = analyse(L, { jobs = { ['Q\t1'] = job('1'), ['Q\t2'] = job('2') },
        outcomes = { ['Q\t1'] = done(), ['Q\t2'] = done() } })
      assert.are.equal(1, rep.early.n)
      assert.matches('Q/1 .-10%.0 ms before', rep.early[1])
    end)
  end)

  describe("keys left", function()
    it("accept live workers, records within retention and counters; name every other key", function()
      local listing = {
        { key = 'RESERVED:QCONFIG', type = 'hash', ttl = -1 },
        { key = 'jobrt:workers', type = 'set', ttl = -1, members = { 'w1', 'dead' } },
        { key = 'jobrt:worker:w1', type = 'hash', ttl = 6 },
        { key = 'jobrt:worker:gone', type = 'hash', ttl = 3 },
        { key = 'jobrt:{Q}:job:1', type = 'hash', ttl = 3500, state = 'finished', result = 'successful' },
        { key = 'jobrt:{Q}:job:2', type = 'hash', ttl = -1, state = 'finished', result = 'failed' },
        { key = 'jobrt:{Q}:job:3', type = 'hash', ttl = -1, state = 'pending' },
        { key = 'jobrt:{Q}:stats', type = 'hash', ttl = -1 },
        { key = 'jobrt:{Q}:metrics', type = 'hash', ttl = -1 },
        { key = 'jobrt:{Q}:metrics:29934258', type = 'hash', ttl = 7100 },
        { key = 'jobrt:{Q}:metrics:29934000', type = 'hash', ttl = -1 },
        { key = 'jobrt:{Q}:failed', type = 'zset', ttl = -1, missing = { '9' } },
        { key = 'jobrt:{Q}:active', type = 'zset', ttl = -1 },
        { key = 'chaos:work:Q', type = 'string', ttl = -1 },
      }
      local v = ledger.check_keys(listing, { w1 = true }, { ok = 3600, failed = 604800, worker = 7, metrics = 7200 })
      local bad = {}
      for _, k in ipairs(v) do if not k.ok then bad[k.key] = k.why end end
      assert.are.same({ 'jobrt:workers', 'jobrt:{Q}:active', 'jobrt:{Q}:failed', 'jobrt:{Q}:job:2', 'jobrt:{Q}:job:3',
                        'jobrt:{Q}:metrics:29934000' },
        (function() local t = {}; for k in pairs(bad) do t[#t + 1] = k end; table.sort(t); return t end)())
      assert.matches('dead', bad['jobrt:workers'])
      assert.matches('never expires', bad['jobrt:{Q}:job:2'])
      assert.matches('state pending', bad['jobrt:{Q}:job:3'])
    end)

    it("accept finished parents' children hashes (flows), and no other flow bookkeeping", function()
      local listing = {
        { key = 'jobrt:{F}:children:1', type = 'hash', ttl = 3500 },
        { key = 'jobrt:{F}:children:2', type = 'hash', ttl = -1 },
        { key = 'jobrt:{F}:flow', type = 'hash', ttl = -1, sample = 'l:7' },
        { key = 'jobrt:{F}:flow:out', type = 'zset', ttl = -1, sample = 'u:7' },
        { key = 'jobrt:{F}:flow:waiting', type = 'zset', ttl = -1, sample = '3' },
      }
      local v = ledger.check_keys(listing, {}, { ok = 3600, failed = 604800, worker = 7, metrics = 7200 })
      local verdict = {}
      for _, k in ipairs(v) do verdict[k.key] = k end
      assert.is_true(verdict['jobrt:{F}:children:1'].ok)
      assert.is_false(verdict['jobrt:{F}:children:2'].ok)
      assert.matches('never expires', verdict['jobrt:{F}:children:2'].why)
      for _, k in ipairs({ 'jobrt:{F}:flow', 'jobrt:{F}:flow:out', 'jobrt:{F}:flow:waiting' }) do
        assert.is_false(verdict[k].ok, k)
        assert.matches('flow bookkeeping', verdict[k].why)
      end
      assert.matches('u:7', verdict['jobrt:{F}:flow:out'].why)
    end)

    it("accept the zset registry's gone workers until they drop out, not ever after", function()
      local listing = {
        { key = 'jobrt:{workers}', type = 'zset', ttl = -1, members = { 'w1', 'd1', 'd2' },
          expires = { w1 = 6, d1 = 3, d2 = -100 } },
        { key = 'jobrt:{workers}:w1', type = 'hash', ttl = 6 },
        { key = 'jobrt:{workers}:d1', type = 'hash', ttl = 3 },
        { key = 'jobrt:{workers}:d3', type = 'hash', ttl = -1 },
      }
      local v = ledger.check_keys(listing, { w1 = true }, { ok = 3600, failed = 604800, worker = 7, metrics = 7200 })
      local verdict = {}
      for _, k in ipairs(v) do verdict[k.key] = k end
      assert.is_false(verdict['jobrt:{workers}'].ok)
      assert.matches('1 id%(s%) of gone workers that stay listed: d2 %(expiry %-100s%)', verdict['jobrt:{workers}'].why)
      assert.is_true(verdict['jobrt:{workers}:w1'].ok)
      assert.is_true(verdict['jobrt:{workers}:d1'].ok)
      assert.is_false(verdict['jobrt:{workers}:d3'].ok)
    end)
  end)

  describe("fault schedule", function()
    it("is the same for the same seed, differs for another, and has every kind in 60 s", function()
      local a, b = faults.schedule(12345, 60, 3, 2), faults.schedule(12345, 60, 3, 2)
      assert.are.same(a, b)
      assert.are_not.same(a, faults.schedule(12346, 60, 3, 2))
      local kinds = {}
      for i, ev in ipairs(a) do
        kinds[ev.kind] = true
        assert.is_true(ev.at >= 5 and ev.at <= 54)
        if i > 1 then assert.is_true(ev.at - a[i - 1].at >= 3) end
        if ev.kind == 'sigstop-worker' then assert.is_true(ev.dur > 2) end   -- longer than the lease
      end
      for _, k in ipairs(faults.KINDS) do assert.is_true(kinds[k], k) end
    end)
  end)
end)
