-- The server-side queue scripts (lua-server-scripts/*.lua), driven through jobrt.ops and, for
-- argument checks, directly by EVALSHA. Real redis-server (tests.helpers), no mocks.
local h = require 'tests.helpers'
local ops = require 'jobrt.ops'
local scripts = require 'jobrt.scripts'
local jobrt = require 'jobrt'
local cjson = require 'cjson'

local NULL = cjson.null

describe('server scripts', function()
  local r, o, s

  -- server clock, Unix ms
  local function server_ms()
    local t = r:call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end

  local function typed(queue, qtype) assert(o:set_queue_type(queue, qtype)) end

  -- every key with its DUMP and whether it has a TTL: equal snapshots = nothing changed
  local function snapshot()
    local keys = r:call('KEYS', '*')
    table.sort(keys)
    local t = {}
    for _, k in ipairs(keys) do t[k] = { r:call('DUMP', k), r:call('PTTL', k) > 0 } end
    return t
  end

  local function publishes()
    local info = r:call('INFO', 'commandstats')
    return tonumber(info:match('cmdstat_publish:calls=(%d+)')) or 0
  end

  local function rec(queue, id) return o:get(queue, id) end

  local function ids_of(res)
    local t = {}
    for i, j in ipairs(res.jobs) do t[i] = j.id end
    return t
  end

  local function enq(queue, fn, args, opts)
    local id, existed = o:enqueue(queue, fn or 'f', args or '{}', opts)
    assert(id, existed)
    return id, existed
  end

  -- The lease calls take the attempt with each id: these fill in the job's current attempt
  -- (its record's attempts), which is what a worker holding the lease sends.
  local function attempt_of(queue, id)
    return tonumber(r:call('HGET', 'jobrt:{' .. queue .. '}:job:' .. id, 'attempts')) or 1
  end
  local function leases(queue, ids)
    local t = {}
    for i, id in ipairs(ids) do t[i] = { id = id, attempt = attempt_of(queue, id) } end
    return t
  end
  local function complete(oo, queue, worker, outs)
    for _, oc in ipairs(outs) do
      if oc.attempt == nil then oc.attempt = attempt_of(queue, oc.id) end
    end
    return oo:complete(queue, worker, outs)
  end
  local function renew(oo, queue, worker, ids, lease)
    local lost = oo:renew(queue, worker, leases(queue, ids), lease)
    local out = {}
    for i, l in ipairs(lost) do out[i] = l.id end
    return out
  end
  local function release(oo, queue, worker, ids)
    return oo:release(queue, worker, leases(queue, ids))
  end

  -- members of the due set are "<order>|<id>": the member and the score of job id
  local function due_member(queue, id)
    local m = r:call('ZRANGE', 'jobrt:{' .. queue .. '}:due', 0, -1, 'WITHSCORES')
    for i = 1, #m, 2 do
      if m[i]:match('^%d+|(.*)$') == id then return m[i], m[i + 1] end
    end
  end
  local function due_of(queue, id) local _, sc = due_member(queue, id); return sc end
  local function make_due(queue, id) r:call('ZADD', 'jobrt:{' .. queue .. '}:due', 0, (due_member(queue, id))) end

  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops.new(r))
    s = o.s
    typed('q', 'QUEUE')
    typed('lb', 'LBQUEUE')
    typed('dq', 'DELQUEUE')
  end)

  after_each(function()
    r:close()
  end)

  describe('ops.keys and ops.channels', function()
    it('lists the 14 standard keys with the queue as hash tag', function()
      assert.same({ 'jobrt:{q}:job:', 'jobrt:{q}:wait', 'jobrt:{q}:ready', 'jobrt:{q}:due', 'jobrt:{q}:active',
        'jobrt:{q}:failed', 'jobrt:{q}:lb:entry', 'jobrt:{q}:lb:running', 'jobrt:{q}:lb:parked',
        'jobrt:{q}:dedup', 'jobrt:{q}:stats', 'jobrt:{q}:seq', 'jobrt:{q}:wake', 'jobrt:{q}:results' }, ops.keys('q'))
    end)
    it('names the wake and results channels', function()
      assert.same({ wake = 'jobrt:{q}:wake', results = 'jobrt:{q}:results', progress = 'jobrt:{q}:progress' },
        ops.channels('q'))
    end)
    it('gives every key of a queue the same hash tag, the queue name, so one Cluster slot', function()
      for _, k in ipairs(ops.keys('mail.out:eu-1')) do
        -- Redis hashes the text between the first '{' and the first '}' after it
        assert.equal('mail.out:eu-1', k:match('^[^{]*{([^}]*)}'), k)
      end
    end)
    it('refuses a queue name outside the alphabet, so no queue key is another queue\'s', function()
      for _, bad in ipairs({ 'a}:job:x', '}a', '{a}', 'a b', 'a\nb', '', string.rep('q', 129), 'é' }) do
        local ok, err = pcall(ops.keys, bad)
        assert.is_false(ok, bad)
        assert.matches('^jobrt%.ops%.keys: ', err)
      end
    end)
  end)

  describe('queue_type', function()
    it('reads the type from RESERVED:QCONFIG', function()
      r:call('HSET', 'RESERVED:QCONFIG', 'other', 'DELQUEUE')
      assert.equal('DELQUEUE', o:queue_type('other'))
    end)
    it('names the fix when the queue has no type', function()
      local id, err = o:enqueue('nope', 'f', '{}')
      assert.is_nil(id)
      assert.equal("queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE", err)
    end)
    it('rejects an unknown type value', function()
      r:call('HSET', 'RESERVED:QCONFIG', 'odd', 'FIFO')
      local t, err = o:queue_type('odd')
      assert.is_nil(t)
      assert.equal("queue 'odd' has unknown type 'FIFO' in RESERVED:QCONFIG: set it with  jobrt queue-type odd QUEUE|LBQUEUE|DELQUEUE", err)
    end)
    it('set_queue_type refuses an unknown type', function()
      assert.same({ nil, "unknown queue type 'FIFO': use QUEUE, LBQUEUE or DELQUEUE" }, { o:set_queue_type('x', 'FIFO') })
    end)
    it('raises on a queue name that is not a string', function()
      assert.has_error(function() o:queue_type(5) end, 'jobrt.ops.queue_type: queue must be a non-empty string, got number')
    end)
  end)

  describe('enqueue', function()
    it('writes the seed 004 record fields', function()
      local id = enq('q', 'mail', '{"to":"a"}', { retries = 2, timeout = 1.5 })
      local j = rec('q', id)
      assert.equal(id, j.id)
      assert.equal('q', j.queue)
      assert.equal('mail', j['function'])
      assert.equal('{"to":"a"}', j.args)
      assert.equal('pending', j.state)
      assert.equal('0', j.attempts)
      assert.equal('2', j.retries)
      assert.equal('1.5', j.timeout)
      assert.truthy(j['pending-created']:match('^%d+%.%d%d%d%d%d%d$'))
      local created = tonumber(j['pending-created']) * 1000
      assert.is_true(math.abs(created - server_ms()) < 5000)
    end)

    it('stores args verbatim', function()
      local args = '{ "b" : [1, 2.50, "x"],  "a":null }'
      assert.equal(args, rec('q', enq('q', 'f', args)).args)
    end)

    it('generates increasing numeric ids', function()
      local a, b = enq('q'), enq('q')
      assert.truthy(a:match('^%d+$'))
      assert.equal(tonumber(a) + 1, tonumber(b))
    end)

    describe('client ids (seed 002)', function()
      it('uses the given id', function()
        assert.equal('user-5', (enq('q', 'f', '{}', { id = 'user-5' })))
        assert.equal('user-5', rec('q', 'user-5').id)
      end)
      it('does not duplicate an id that is pending', function()
        enq('q', 'f', '{"n":1}', { id = 'user-5' })
        local id, existed = enq('q', 'f', '{"n":2}', { id = 'user-5' })
        assert.equal('user-5', id)
        assert.is_true(existed)
        assert.equal(1, r:call('LLEN', 'jobrt:{q}:wait'))
        assert.equal('{"n":1}', rec('q', 'user-5').args)
      end)
      it('does not duplicate an id that is executing', function()
        enq('q', 'f', '{}', { id = 'user-5' })
        o:reserve('q', 'w', 1, 10)
        local _, existed = enq('q', 'f', '{}', { id = 'user-5' })
        assert.is_true(existed)
        assert.equal(0, r:call('LLEN', 'jobrt:{q}:wait'))
      end)
      it('enqueues a finished id again, replacing its record', function()
        enq('q', 'f', '{"n":1}', { id = 'user-5' })
        o:reserve('q', 'w', 1, 10)
        complete(o, 'q', 'w', { { id = 'user-5', ok = true, value = '1' } })
        assert.is_true(r:call('TTL', 'jobrt:{q}:job:user-5') > 0)
        local _, existed = enq('q', 'f', '{"n":2}', { id = 'user-5' })
        assert.is_false(existed)
        local j = rec('q', 'user-5')
        assert.equal('pending', j.state)
        assert.equal('{"n":2}', j.args)
        assert.is_nil(j.result)
        assert.equal(-1, r:call('TTL', 'jobrt:{q}:job:user-5'))
      end)
      it('enqueues a failed id again and takes it out of the failed set', function()
        enq('q', 'f', '{}', { id = 'user-5' })
        o:reserve('q', 'w', 1, 10)
        complete(o, 'q', 'w', { { id = 'user-5', ok = false, reason = 'no' } })
        assert.equal(1, r:call('ZCARD', 'jobrt:{q}:failed'))
        enq('q', 'f', '{}', { id = 'user-5' })
        assert.equal(0, r:call('ZCARD', 'jobrt:{q}:failed'))
        assert.equal('pending', rec('q', 'user-5').state)
      end)
      it('refuses an all-digit id and suggests a prefix', function()
        local id, err = o:enqueue('q', 'f', '{}', { id = '123' })
        assert.is_nil(id)
        assert.equal("enqueue: ARGV[4] id must not be all digits (those are generated ids), got '123': add a prefix, e.g. 'user-123'", err)
      end)
    end)

    describe('wake-ups', function()
      it('publishes when the wait list goes from empty to one job, not after', function()
        local before = publishes()
        enq('q'); enq('q'); enq('q')
        assert.equal(before + 1, publishes())
      end)
      it('tells subscribers when the new work is ready, in Unix ms', function()
        local sub = h.redis()
        local got = {}
        sub:subscribe('jobrt:{dq}:wake', function(_, msg) if msg then got[#got + 1] = msg end end)
        local due = server_ms() + 60000
        enq('dq', 'f', '{}', { timestamp = due / 1000 })
        local t0 = server_ms()
        enq('q')
        enq('dq', 'f', '{"now":1}')
        h.wait_for(function() return #got == 2 end, 3, 'two wake messages')
        assert.equal(tostring(due), got[1])
        assert.is_true(tonumber(got[2]) >= t0 and tonumber(got[2]) <= server_ms())
        sub:close()
      end)
      it('publishes for a DELQUEUE job only when it becomes the earliest', function()
        local now = server_ms()
        local before = publishes()
        enq('dq', 'f', '{}', { timestamp = (now + 60000) / 1000 })
        enq('dq', 'f', '{"later":1}', { timestamp = (now + 90000) / 1000 })
        enq('dq', 'f', '{"sooner":1}', { timestamp = (now + 30000) / 1000 })
        assert.equal(before + 2, publishes())
      end)
    end)

    describe('options', function()
      it('raises on an unknown option', function()
        assert.has_error(function() o:enqueue('q', 'f', '{}', { jobhash = 'x' }) end,
          "jobrt.ops.enqueue: unknown option 'jobhash' (known: jobHash, priority, timestamp, delay, id, retries, timeout)")
      end)
      it('raises on an option of the wrong type', function()
        assert.has_error(function() o:enqueue('q', 'f', '{}', { priority = 'high' }) end,
          'jobrt.ops.enqueue: option priority must be a number, got string')
      end)
      it('raises when args is not JSON text', function()
        assert.has_error(function() o:enqueue('q', 'f', { a = 1 }) end,
          'jobrt.ops.enqueue: args must be JSON text (a string), got table')
      end)
    end)
  end)

  describe('enqueue_bulk', function()
    it('enqueues many jobs in one call, in order, with generated and client ids', function()
      local jobs = {}
      for i = 1, 12 do jobs[i] = { 'f', '{"i":' .. i .. '}', {} } end
      jobs[13] = { 'g', '{}', { id = 'mine-1', retries = 3, timeout = 2.5 } }
      local p0 = publishes()
      local ids, existed = assert(o:enqueue_bulk('q', jobs))
      assert.equal(13, #ids)
      assert.equal('1', ids[1])
      assert.equal('12', ids[12])
      assert.equal('mine-1', ids[13])
      for i = 1, 13 do assert.is_false(existed[i]) end
      assert.equal(1, publishes() - p0)          -- one wake-up for the whole call
      local got = ids_of(o:reserve('q', 'w', 13, 10))
      assert.same(ids, got)                      -- first in, first out
      local rc = rec('q', 'mine-1')
      assert.same({ 'g', '{}', '3', '2.5', 'mine-1', 'q' }, { rc['function'], rc.args, rc.retries, rc.timeout, rc.id, rc.queue })
    end)
    it('stores no id or queue field in the record (the key holds them); get answers them', function()
      local ids = assert(o:enqueue_bulk('q', { { 'f', '{}', {} } }))
      assert.equal(0, r:call('HEXISTS', 'jobrt:{q}:job:' .. ids[1], 'id'))
      assert.equal(0, r:call('HEXISTS', 'jobrt:{q}:job:' .. ids[1], 'queue'))
      assert.same({ ids[1], 'q', 'pending', '0' }, { rec('q', ids[1]).id, rec('q', ids[1]).queue, rec('q', ids[1]).state,
        rec('q', ids[1]).attempts })
    end)
    it('gives the jobs of one call distinct, growing enqueue times, so equal priorities stay in order', function()
      local jobs = {}
      for i = 1, 12 do jobs[i] = { 'f', '{}', { priority = 5 } } end
      local ids = assert(o:enqueue_bulk('q', jobs))
      local created = {}
      for i = 1, 12 do created[i] = rec('q', ids[i])['pending-created'] end
      for i = 2, 12 do assert.is_true(created[i] > created[i - 1], created[i]) end
      assert.same(ids, ids_of(o:reserve('q', 'w', 12, 10)))   -- 1..12, not 1, 10, 11, 12, 2, ...
    end)
    it('lets later jobs of a call see earlier ones: one client id is one job, LBQUEUE jobs merge', function()
      local ids, existed = assert(o:enqueue_bulk('q', { { 'f', '{}', { id = 'x-1' } }, { 'f', '{}', { id = 'x-1' } } }))
      assert.same({ 'x-1', 'x-1' }, ids)
      assert.same({ false, true }, existed)
      assert.equal(1, r:call('LLEN', 'jobrt:{q}:wait'))
      ids, existed = assert(o:enqueue_bulk('lb', { { 'f', '{"a":1}', { jobHash = 'h' } }, { 'f', '{"a":2}', { jobHash = 'h' } },
        { 'f', '{}', { jobHash = 'k', priority = 9 } } }))
      assert.equal(ids[1], ids[2])
      assert.same({ false, true, false }, existed)
      local res = o:reserve('lb', 'w', 5, 10)
      assert.same({ ids[3], ids[1] }, ids_of(res))          -- priority 9, then 2 (two enqueues)
      assert.equal('{"a":2}', res.jobs[2].args)             -- the latest args win
    end)
    it('DELQUEUE: identical jobs with the same timestamp in one call are one job; the earliest wakes', function()
      local at = (server_ms() + 60000) / 1000
      local p0 = publishes()
      local ids, existed = assert(o:enqueue_bulk('dq', { { 'f', '{}', { timestamp = at + 1 } }, { 'f', '{}', { timestamp = at } },
        { 'f', '{}', { timestamp = at } } }))
      assert.same({ false, false, true }, existed)
      assert.equal(ids[2], ids[3])
      assert.equal(1, publishes() - p0)
      assert.equal(2, r:call('ZCARD', 'jobrt:{dq}:due'))
      -- a later call with only later jobs does not wake anyone
      p0 = publishes()
      assert(o:enqueue_bulk('dq', { { 'f', '{}', { timestamp = at + 5 } } }))
      assert.equal(0, publishes() - p0)
    end)
    it('refuses a client id still stopping after a delete, writing nothing', function()
      enq('q', 'f', '{}', { id = 'busy' })
      local j = o:reserve('q', 'w', 1, 10).jobs[1]
      assert.is_true(o:delete('q', j.id))
      local before = snapshot()
      local ids, err, at = o:enqueue_bulk('q', { { 'f', '{}', {} }, { 'f', '{}', { id = 'busy' } } })
      assert.is_nil(ids)
      assert.equal("enqueue_bulk: ARGV[15] job 'busy' was deleted while running and is still stopping; enqueue it again once it has stopped", err)
      assert.equal(2, at)
      assert.same(before, snapshot())
    end)
  end)

  describe('QUEUE', function()
    it('serves jobs first in, first out', function()
      local want = {}
      for i = 1, 5 do want[i] = enq('q', 'f', '{"i":' .. i .. '}') end
      local got = {}
      for i = 1, 5 do got[i] = o:reserve('q', 'w', 1, 10).jobs[1].id end
      assert.same(want, got)
    end)
    it('ignores a jobHash', function()
      local a = enq('q', 'f', '{}', { jobHash = 'same' })
      local b = enq('q', 'f', '{}', { jobHash = 'same' })
      assert.are_not.equal(a, b)
      assert.equal(2, r:call('LLEN', 'jobrt:{q}:wait'))
      assert.is_nil(rec('q', a).hash)
    end)
    it('keeps enqueue order among equal due times (twelve jobs at the same timestamp)', function()
      local at = (server_ms() + 300) / 1000
      local ids = {}
      for i = 1, 12 do ids[i] = enq('q', 'f', '{"i":' .. i .. '}', { timestamp = at }) end
      h.wait_for(function() return server_ms() >= at * 1000 end, 3, 'the due time')
      local got = {}
      for i = 1, 12 do got[i] = o:reserve('q', 'w', 1, 10).jobs[1].id end
      assert.same(ids, got)       -- 1, 2, ... 12, not 1, 10, 11, 12, 2, ...
    end)
    it('DELQUEUE: keeps enqueue order among jobs due at the same time', function()
      local at = (server_ms() - 1000) / 1000
      local ids = {}
      for i = 1, 12 do ids[i] = enq('dq', 'f', '{"i":' .. i .. '}', { timestamp = at }) end
      assert.same(ids, ids_of(o:reserve('dq', 'w', 12, 10)))
    end)
    it('holds a delayed job until it is due', function()
      local id = enq('q', 'f', '{}', { delay = 0.3 })
      local res = o:reserve('q', 'w', 10, 10)
      assert.same({}, res.jobs)
      assert.is_true(res.next_due > res.now and res.next_due <= res.now + 300)
      local got = h.wait_for(function() return o:reserve('q', 'w', 10, 10).jobs[1] end, 3, 'the delayed job')
      assert.equal(id, got.id)
    end)
  end)

  describe('LBQUEUE', function()
    it('requires a jobHash', function()
      local id, err = o:enqueue('lb', 'f', '{}')
      assert.is_nil(id)
      assert.equal('enqueue: ARGV[5] jobHash is missing (an LBQUEUE job needs one)', err)
    end)
    it('keeps jobs with the same jobHash as one entry', function()
      local a = enq('lb', 'f', '{"n":1}', { jobHash = 'u1' })
      local b, existed = enq('lb', 'f', '{"n":2}', { jobHash = 'u1' })
      assert.equal(a, b)
      assert.is_true(existed)
      assert.equal(1, r:call('ZCARD', 'jobrt:{lb}:ready'))
      local res = o:reserve('lb', 'w', 10, 10)
      assert.equal(1, #res.jobs)
      assert.equal('{"n":2}', res.jobs[1].args)   -- the latest arguments win
      assert.equal('u1', res.jobs[1].hash)
    end)
    it('counts identical enqueues as the priority', function()
      for _ = 1, 3 do enq('lb', 'f', '{}', { jobHash = 'three' }) end
      enq('lb', 'f', '{}', { jobHash = 'one' })
      local id = enq('lb', 'f', '{}', { jobHash = 'two' })
      enq('lb', 'f', '{}', { jobHash = 'two' })
      assert.equal('2', rec('lb', id).priority)
      local order = {}
      for i, j in ipairs(o:reserve('lb', 'w', 10, 10).jobs) do order[i] = j.hash end
      assert.same({ 'three', 'two', 'one' }, order)
    end)
    it('lets the latest explicit priority stand', function()
      enq('lb', 'f', '{}', { jobHash = 'a', priority = 10 })
      enq('lb', 'f', '{}', { jobHash = 'a', priority = 2 })
      enq('lb', 'f', '{}', { jobHash = 'b', priority = 5 })
      local order = {}
      for i, j in ipairs(o:reserve('lb', 'w', 10, 10).jobs) do order[i] = j.hash end
      assert.same({ 'b', 'a' }, order)
    end)
    it('serves the highest priority first', function()
      enq('lb', 'f', '{}', { jobHash = 'low', priority = 1 })
      enq('lb', 'f', '{}', { jobHash = 'high', priority = 9 })
      enq('lb', 'f', '{}', { jobHash = 'mid', priority = 5 })
      local order = {}
      for i, j in ipairs(o:reserve('lb', 'w', 10, 10).jobs) do order[i] = j.hash end
      assert.same({ 'high', 'mid', 'low' }, order)
    end)
    it('serves equal priorities first in, first out', function()
      local want = {}
      for i = 1, 12 do want[i] = 'h' .. i; enq('lb', 'f', '{}', { jobHash = 'h' .. i }) end
      local got = {}
      for i = 1, 12 do got[i] = o:reserve('lb', 'w', 1, 10).jobs[1].hash end
      assert.same(want, got)
    end)
    it('parks a job whose jobHash is executing and never runs two at once', function()
      local first = enq('lb', 'f', '{"n":1}', { jobHash = 'res' })
      assert.equal(first, o:reserve('lb', 'w1', 1, 10).jobs[1].id)
      local parked, existed = enq('lb', 'f', '{"n":2}', { jobHash = 'res' })
      assert.is_false(existed)
      assert.are_not.equal(first, parked)
      local again, existed2 = enq('lb', 'f', '{"n":3}', { jobHash = 'res' })
      assert.equal(parked, again)       -- parked jobs of one jobHash are one entry too
      assert.is_true(existed2)
      assert.same({}, o:reserve('lb', 'w2', 10, 10).jobs)
      assert.equal('pending', rec('lb', parked).state)
      assert.equal('2', rec('lb', parked).priority)
      complete(o, 'lb', 'w1', { { id = first, ok = true, value = 'null' } })
      local res = o:reserve('lb', 'w2', 10, 10)
      assert.same({ parked }, ids_of(res))
      assert.equal('{"n":3}', res.jobs[1].args)
    end)
    it('requeues the parked job when the running one fails for good', function()
      local first = enq('lb', 'f', '{}', { jobHash = 'res' })
      o:reserve('lb', 'w1', 1, 10)
      local parked = enq('lb', 'f', '{}', { jobHash = 'res' })
      complete(o, 'lb', 'w1', { { id = first, ok = false, reason = 'x' } })
      assert.same({ parked }, ids_of(o:reserve('lb', 'w2', 10, 10)))
    end)
    it('keeps the jobHash held while a retry waits', function()
      local first = enq('lb', 'f', '{}', { jobHash = 'res', retries = 1 })
      o:reserve('lb', 'w1', 1, 10)
      complete(o, 'lb', 'w1', { { id = first, ok = false, reason = 'x' } })
      local parked = enq('lb', 'f', '{}', { jobHash = 'res' })
      assert.equal(1, r:call('HLEN', 'jobrt:{lb}:lb:parked'))
      make_due('lb', first)      -- make the retry due now
      assert.same({ first }, ids_of(o:reserve('lb', 'w1', 10, 10)))
      complete(o, 'lb', 'w1', { { id = first, ok = true } })
      assert.same({ parked }, ids_of(o:reserve('lb', 'w1', 10, 10)))
    end)
    it('never runs two jobs of one jobHash at once under concurrent workers', function()
      local running, overlap, done = {}, 0, 0
      local wg = jobrt.waitgroup()
      local conns = {}
      local producing = true
      for c = 1, 8 do
        conns[c] = assert(ops.new(h.redis()))
        wg:spawn(function()
          local oc = conns[c]
          while producing or (oc:stats('lb').pending + oc:stats('lb').parked) > 0 do
            local res = assert(oc:reserve('lb', 'w' .. c, 1, 10))
            local j = res.jobs[1]
            if j then
              if running[j.hash] then overlap = overlap + 1 end
              running[j.hash] = true
              jobrt.sleep(0.003)
              running[j.hash] = nil
              assert(complete(oc, 'lb', 'w' .. c, { { id = j.id, ok = true } }))
              done = done + 1
            else
              jobrt.sleep(0.002)
            end
          end
        end)
      end
      for i = 1, 60 do
        enq('lb', 'f', '{}', { jobHash = 'h' .. (i % 3) })
        if i % 5 == 0 then jobrt.sleep(0.002) end
      end
      producing = false
      assert.is_true(wg:wait(20))
      for c = 1, 8 do conns[c].r:close() end
      assert.equal(0, overlap)
      assert.is_true(done >= 3)
      assert.same({ 0, 0, 0 }, { r:call('HLEN', 'jobrt:{lb}:lb:running'), r:call('HLEN', 'jobrt:{lb}:lb:parked'), r:call('ZCARD', 'jobrt:{lb}:ready') })
    end)
    it('refuses a timestamp', function()
      local id, err = o:enqueue('lb', 'f', '{}', { jobHash = 'a', timestamp = 5 })
      assert.is_nil(id)
      assert.equal('enqueue: ARGV[7] timestamp applies to QUEUE and DELQUEUE only, this queue is LBQUEUE', err)
    end)
  end)

  describe('DELQUEUE', function()
    it('runs a job without a timestamp now', function()
      local id = enq('dq', 'f', '{}')
      assert.same({ id }, ids_of(o:reserve('dq', 'w', 10, 10)))
    end)
    it('does not hand out a job before its timestamp and reports when it falls due', function()
      local due = server_ms() + 300
      local id = enq('dq', 'f', '{}', { timestamp = due / 1000 })
      local res = o:reserve('dq', 'w', 10, 10)
      assert.same({}, res.jobs)
      assert.equal(due, res.next_due)
      local got = h.wait_for(function() return o:reserve('dq', 'w', 10, 10).jobs[1] end, 3, 'the due job')
      assert.equal(id, got.id)
      assert.is_true(server_ms() >= due)
    end)
    it('accepts a delay in seconds', function()
      local before = server_ms()
      local id = enq('dq', 'f', '{}', { delay = 2.5 })
      local due = due_of('dq', id)
      assert.is_true(tonumber(due) >= before + 2500 and tonumber(due) <= server_ms() + 2500)
    end)
    it('serves due jobs in timestamp order', function()
      local now = server_ms()
      local c = enq('dq', 'f', '{"c":1}', { timestamp = (now - 1000) / 1000 })
      local a = enq('dq', 'f', '{"a":1}', { timestamp = (now - 3000) / 1000 })
      local b = enq('dq', 'f', '{"b":1}', { timestamp = (now - 2000) / 1000 })
      assert.same({ a, b, c }, ids_of(o:reserve('dq', 'w', 10, 10)))
    end)
    it('runs identical jobs with the same timestamp once', function()
      local ts = server_ms() / 1000 - 1
      local a = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      local b, existed = enq('dq', 'g', '{"other":1}', { jobHash = 'x', timestamp = ts })
      assert.equal(a, b)
      assert.is_true(existed)
      assert.same({ a }, ids_of(o:reserve('dq', 'w', 10, 10)))
    end)
    it('runs identical jobs with different timestamps both', function()
      local ts = server_ms() / 1000 - 1
      local a = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      local b = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts - 0.5 })
      assert.are_not.equal(a, b)
      assert.same({ b, a }, ids_of(o:reserve('dq', 'w', 10, 10)))
    end)
    it('takes function and args as the identity when there is no jobHash', function()
      local ts = server_ms() / 1000 - 1
      local a = enq('dq', 'f', '{"x":1}', { timestamp = ts })
      assert.equal(a, (enq('dq', 'f', '{"x":1}', { timestamp = ts })))
      assert.are_not.equal(a, (enq('dq', 'f', '{"x":2}', { timestamp = ts })))
      assert.are_not.equal(a, (enq('dq', 'g', '{"x":1}', { timestamp = ts })))
    end)
    it('does not duplicate an identical job while it executes, but after it finished', function()
      local ts = server_ms() / 1000 - 1
      local a = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      o:reserve('dq', 'w', 10, 10)
      local _, existed = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      assert.is_true(existed)
      complete(o, 'dq', 'w', { { id = a, ok = true } })
      assert.equal(0, r:call('HLEN', 'jobrt:{dq}:dedup'))
      local b, existed2 = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      assert.is_false(existed2)
      assert.are_not.equal(a, b)
    end)
  end)

  describe('reserve', function()
    it('leases each job to the worker and counts the attempt', function()
      local id = enq('q')
      local before = server_ms()
      local res = o:reserve('q', 'w1', 5, 10)
      assert.equal(1, #res.jobs)
      local j = res.jobs[1]
      assert.same({ id = id, fn = 'f', args = '{}', attempt = 1 }, { id = j.id, fn = j.fn, args = j.args, attempt = j.attempt })
      local exp = tonumber(r:call('ZSCORE', 'jobrt:{q}:active', 'w1|1|' .. id))
      assert.is_true(exp >= before + 10000 and exp <= server_ms() + 10000)
      assert.equal(exp, res.next_lease)
      local rc = rec('q', id)
      assert.equal('executing', rc.state)
      assert.equal('w1', rc.worker)
      assert.equal('1', rc.attempts)
      assert.truthy(rc['executing-created'])
    end)
    it('hands out up to N jobs in one call', function()
      for _ = 1, 7 do enq('q') end
      assert.equal(5, #o:reserve('q', 'w', 5, 10).jobs)
      assert.equal(2, #o:reserve('q', 'w', 5, 10).jobs)
      local res = o:reserve('q', 'w', 5, 10)
      assert.equal(0, #res.jobs)
      assert.is_nil(res.next_due)
    end)
    it('returns retries, timeout and jobHash of the job', function()
      enq('lb', 'f', '{}', { jobHash = 'h', retries = 3, timeout = 2.5 })
      local j = o:reserve('lb', 'w', 1, 10).jobs[1]
      assert.same({ 3, 2.5, 'h' }, { j.retries, j.timeout, j.hash })
    end)
    it('skips a job whose record vanished', function()
      local a = enq('q'); local b = enq('q')
      r:call('DEL', 'jobrt:{q}:job:' .. a)
      assert.same({ b }, ids_of(o:reserve('q', 'w', 10, 10)))
    end)
    it('hands no job out twice to 50 coroutines reserving at once', function()
      for i = 1, 200 do enq('q', 'f', '{"i":' .. i .. '}') end
      local conns, seen, dup, total = {}, {}, 0, 0
      local wg = jobrt.waitgroup()
      for c = 1, 50 do
        conns[c] = assert(ops.new(h.redis()))
        wg:spawn(function()
          while true do
            local res = assert(conns[c]:reserve('q', 'w' .. c, 3, 10))
            if #res.jobs == 0 then return end
            for _, j in ipairs(res.jobs) do
              if seen[j.id] then dup = dup + 1 end
              seen[j.id] = true
              total = total + 1
            end
          end
        end)
      end
      assert.is_true(wg:wait(20))
      for c = 1, 50 do conns[c].r:close() end
      assert.equal(0, dup)
      assert.equal(200, total)
      assert.equal(200, r:call('ZCARD', 'jobrt:{q}:active'))
    end)
  end)

  describe('renew', function()
    it('extends the leases of all the ids in one call', function()
      local a, b = enq('q'), enq('q')
      o:reserve('q', 'w', 2, 1)
      local lost = renew(o, 'q', 'w', { a, b }, 60)
      assert.same({}, lost)
      assert.is_true(tonumber(r:call('ZSCORE', 'jobrt:{q}:active', 'w|1|' .. a)) > server_ms() + 50000)
      assert.is_true(tonumber(r:call('ZSCORE', 'jobrt:{q}:active', 'w|1|' .. b)) > server_ms() + 50000)
    end)
    it('returns the ids the worker no longer holds', function()
      local a, b = enq('q'), enq('q')
      o:reserve('q', 'w', 2, 10)
      o:delete('q', b)
      assert.same({ b, 'never' }, renew(o, 'q', 'w', { a, b, 'never' }, 10))
      assert.same({ a }, renew(o, 'q', 'other', { a }, 10))
      assert.equal(NULL, r:call('ZSCORE', 'jobrt:{q}:active', 'other|1|' .. a))
    end)
  end)

  describe('complete', function()
    it('records a success and expires the record', function()
      local id = enq('q')
      o:reserve('q', 'w', 1, 10)
      local sum = complete(o, 'q', 'w', { { id = id, ok = true, value = '{"sum":3}' } })
      assert.same({ completed = 1, retried = 0, failed = 0, ignored = {}, cancelled = {} }, sum)
      local j = rec('q', id)
      assert.same({ 'finished', 'successful', '{"sum":3}' }, { j.state, j.result, j['result-value'] })
      assert.truthy(j['finished-created'])
      local ttl = r:call('TTL', 'jobrt:{q}:job:' .. id)
      assert.is_true(ttl > 3590 and ttl <= 3600)
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:active'))
    end)
    it('keeps a success for a configured time', function()
      local o2 = assert(ops.new(r, { ttl_ok = 60 }))
      local id = enq('q')
      o2:reserve('q', 'w', 1, 10)
      complete(o2, 'q', 'w', { { id = id, ok = true } })
      assert.is_true(r:call('TTL', 'jobrt:{q}:job:' .. id) <= 60)
      assert.equal('null', rec('q', id)['result-value'])
    end)
    it('moves a failure without retries to the failed set for 7 days', function()
      local id = enq('q')
      o:reserve('q', 'w', 1, 10)
      local sum = complete(o, 'q', 'w', { { id = id, ok = false, reason = 'boom', exception = 'trace\nback' } })
      assert.equal(1, sum.failed)
      local j = rec('q', id)
      assert.same({ 'finished', 'failed', 'boom', 'trace\nback' }, { j.state, j.result, j['error-reason'], j['error-exception'] })
      assert.truthy(r:call('ZSCORE', 'jobrt:{q}:failed', id) ~= NULL)
      local ttl = r:call('TTL', 'jobrt:{q}:job:' .. id)
      assert.is_true(ttl > 604790 and ttl <= 604800)
    end)
    it('retries a failure with exponential backoff while retries remain', function()
      local o2 = assert(ops.new(r, { backoff = 10 }))
      local id = enq('q', 'f', '{}', { retries = 2 })
      local delays = {}
      for attempt = 1, 2 do
        assert.equal(attempt, o2:reserve('q', 'w', 1, 10).jobs[1].attempt)
        local t0 = server_ms()
        assert.equal(1, complete(o2, 'q', 'w', { { id = id, ok = false, reason = 'r' .. attempt } }).retried)
        delays[attempt] = tonumber(due_of('q', id)) - t0
        assert.equal('pending', rec('q', id).state)
        assert.equal('r' .. attempt, rec('q', id)['error-reason'])
        make_due('q', id)     -- fast-forward the backoff
      end
      assert.is_true(delays[1] >= 10000 and delays[1] < 11000)
      assert.is_true(delays[2] >= 20000 and delays[2] < 21000)
      assert.equal(3, o2:reserve('q', 'w', 1, 10).jobs[1].attempt)
      assert.equal(1, complete(o2, 'q', 'w', { { id = id, ok = false, reason = 'r3' } }).failed)
      assert.equal('failed', rec('q', id).result)
    end)
    it("uses the worker's retries when the job has none", function()
      local id = enq('q')
      o:reserve('q', 'w', 1, 10)
      assert.equal(1, complete(o, 'q', 'w', { { id = id, ok = false, reason = 'x', retries = 1 } }).retried)
    end)
    it('takes a batch of successes and failures in one call', function()
      local ids = {}
      for i = 1, 6 do ids[i] = enq('q') end
      o:reserve('q', 'w', 6, 10)
      local outs = {}
      for i = 1, 6 do outs[i] = i % 2 == 0 and { id = ids[i], ok = true, value = tostring(i) } or { id = ids[i], ok = false, reason = 'odd' } end
      local sum = complete(o, 'q', 'w', outs)
      assert.same({ completed = 3, retried = 0, failed = 3, ignored = {}, cancelled = {} }, sum)
      assert.equal(3, o:stats('q').completed)
      assert.equal(3, o:stats('q').failed)
    end)
    it('ignores jobs the worker does not hold', function()
      local id = enq('q')
      o:reserve('q', 'w', 1, 10)
      local sum = complete(o, 'q', 'other', { { id = id, ok = true } })
      assert.same({ completed = 0, retried = 0, failed = 0, ignored = { id }, cancelled = {} }, sum)
      assert.equal('executing', rec('q', id).state)
    end)
    it('publishes the finished record keys on the results channel in one message', function()
      local a, b = enq('q'), enq('q')
      o:reserve('q', 'w', 2, 10)
      local before = publishes()
      complete(o, 'q', 'w', { { id = a, ok = true }, { id = b, ok = false, reason = 'x' } })
      assert.equal(before + 1, publishes())
    end)
    it('delivers a results message a subscriber can read', function()
      local sub = h.redis()
      local got = {}
      sub:subscribe('jobrt:{q}:results', function(_, msg) if msg then got[#got + 1] = msg end end)
      local a, b = enq('q'), enq('q')
      o:reserve('q', 'w', 2, 10)
      complete(o, 'q', 'w', { { id = a, ok = true } })
      complete(o, 'q', 'w', { { id = b, ok = true } })
      h.wait_for(function() return #got == 2 end, 3, 'two results messages')
      assert.same({ 'jobrt:{q}:job:' .. a, 'jobrt:{q}:job:' .. b }, got)
      sub:close()
    end)
  end)

  describe('requeue_expired', function()
    it('puts a job whose lease ran out back at its place, marked to run alone, using no retry', function()
      local a = enq('q'); local b = enq('q')
      o:reserve('q', 'dead', 1, 0.05)
      local n = h.wait_for(function() local k = o:requeue_expired('q'); return k > 0 and k end, 3, 'lease expiry')
      assert.equal(1, n)
      local j = rec('q', a)
      assert.same({ 'pending', '1', '1' }, { j.state, j.stalls, j.suspect })
      assert.is_nil(j.failures)
      assert.equal('lease expired: worker dead stopped renewing (attempt 1)', j['error-reason'])
      -- a busy worker meets it as the end of the queue for now, and nothing moves
      local busy = o:reserve('q', 'live', 10, 10)
      assert.same({}, ids_of(busy))
      assert.is_true(busy.blocked)
      assert.same({ b, a }, r:call('LRANGE', 'jobrt:{q}:wait', 0, -1))
      -- an idle worker gets it, as its only job
      local res = o:reserve('q', 'live', 10, 10, true)
      assert.same({ a }, ids_of(res))
      assert.same({ 2, true }, { res.jobs[1].attempt, res.jobs[1].alone })
      assert.is_false(res.blocked)
      assert.same({ b }, ids_of(o:reserve('q', 'live', 10, 10)))
    end)
    it('puts taken-back jobs back in enqueue order, not in lease order', function()
      local ids = {}
      for i = 1, 12 do ids[i] = enq('q') end
      o:reserve('q', 'dead', 12, 0.05)
      h.wait_for(function() return o:requeue_expired('q') > 0 end, 3, 'lease expiry')
      local got = {}
      for i = 1, 12 do got[i] = o:reserve('q', 'live', 1, 10, true).jobs[1].id end
      assert.same(ids, got)
    end)
    it('takes each expired job back once when every worker calls it at once', function()
      for _ = 1, 20 do enq('q') end
      o:reserve('q', 'dead', 20, 0.05)
      h.wait_for(function() return server_ms() > tonumber(r:call('ZRANGE', 'jobrt:{q}:active', 0, 0, 'WITHSCORES')[2]) end, 3, 'leases to expire')
      local total = 0
      local wg = jobrt.waitgroup()
      local conns = {}
      for c = 1, 10 do
        conns[c] = assert(ops.new(h.redis()))
        -- read total after the call: `total + call()` would read it before the call yields
        wg:spawn(function() local n = assert(conns[c]:requeue_expired('q')); total = total + n end)
      end
      assert.is_true(wg:wait(10))
      for c = 1, 10 do conns[c].r:close() end
      assert.equal(20, total)
      assert.equal(20, r:call('LLEN', 'jobrt:{q}:wait'))
    end)
    it('fails a poison job after max_stalls lost leases in a row, whatever its retries', function()
      local o1 = assert(ops.new(r, { max_stalls = 1 }))
      local id = enq('q', 'f', '{}', { retries = 5 })
      o1:reserve('q', 'dead', 1, 0.02)
      h.wait_for(function() return o1:requeue_expired('q') > 0 end, 3, 'first expiry')
      o1:reserve('q', 'dead2', 1, 0.02, true)
      local nf = h.wait_for(function() local a, b = o1:requeue_expired('q'); return (a + b) > 0 and b end, 3, 'second expiry')
      assert.equal(1, nf)
      local j = rec('q', id)
      assert.same({ 'finished', 'failed', '2' }, { j.state, j.result, j.stalls })
      assert.is_nil(j.failures)
      assert.equal('poison job: its worker stopped renewing its lease in 2 attempt(s) in a row, the later ones while it ran alone in its worker process (last: worker dead2, attempt 2): it likely crashes or freezes the workers that run it; fix the handler, then retry it (jobrt failed q retry)',
        j['error-reason'])
      assert.equal(1, r:call('ZCARD', 'jobrt:{q}:failed'))
    end)
    it('counts stalls in a row only: an outcome in between starts them again', function()
      local id = enq('q', 'f', '{}', { retries = 1 })
      o:reserve('q', 'dead', 1, 0.02)
      h.wait_for(function() return o:requeue_expired('q') > 0 end, 3, 'first expiry')
      o:reserve('q', 'w', 1, 10, true)
      complete(o, 'q', 'w', { { id = id, ok = false, reason = 'x' } })
      local j = rec('q', id)
      assert.same({ '1' }, { j.failures })
      assert.is_nil(j.stalls)
      assert.is_nil(j.suspect)
    end)
    it('removes the expired lease of an attempt that is not the current one', function()
      local id = enq('q')
      o:reserve('q', 'w', 1, 10)
      -- a stale lease of attempt 7 (as if left behind): only removed, the job is untouched
      r:call('ZADD', 'jobrt:{q}:active', 1, 'old|7|' .. id)
      assert.same({ 0, 0, 0 }, { o:requeue_expired('q') })
      assert.equal('executing', rec('q', id).state)
      assert.equal(1, r:call('ZCARD', 'jobrt:{q}:active'))
    end)
    it('leaves live leases alone', function()
      enq('q')
      o:reserve('q', 'w', 1, 30)
      assert.same({ 0, 0, 0 }, { o:requeue_expired('q') })
    end)
  end)

  describe('release', function()
    it('gives jobs back at their place, counting no failure; the next attempt has a new number', function()
      local a = enq('q'); local b = enq('q')
      o:reserve('q', 'w', 1, 10)
      assert.equal(1, release(o, 'q', 'w', { a, 'unknown' }))
      local j = rec('q', a)
      assert.same({ 'pending', '1' }, { j.state, j.attempts })
      assert.is_nil(j.failures)
      assert.is_nil(j.suspect)
      local res = o:reserve('q', 'w', 1, 10)
      assert.same({ a }, ids_of(res))
      assert.equal(2, res.jobs[1].attempt)
      assert.same({ b }, ids_of(o:reserve('q', 'w', 1, 10)))
    end)
    it('ignores a release for another attempt of the job', function()
      local a = enq('q')
      o:reserve('q', 'w', 1, 10)
      assert.equal(0, o:release('q', 'w', { { id = a, attempt = 2 } }))
      assert.equal('executing', rec('q', a).state)
    end)
    it('keeps an LBQUEUE jobHash held and the job in front of its parked twin', function()
      local a = enq('lb', 'f', '{}', { jobHash = 'h' })
      o:reserve('lb', 'w', 1, 10)
      local p = enq('lb', 'f', '{}', { jobHash = 'h' })
      assert.equal(1, release(o, 'lb', 'w', { a }))
      assert.same({ a }, ids_of(o:reserve('lb', 'w', 10, 10)))
      complete(o, 'lb', 'w', { { id = a, ok = true } })
      assert.same({ p }, ids_of(o:reserve('lb', 'w', 10, 10)))
    end)
  end)

  describe('delete', function()
    it('removes a waiting QUEUE job', function()
      local a = enq('q', 'f', '{}', { id = 'job-a' }); local b = enq('q')
      assert.is_true(o:delete('q', a))
      assert.is_nil(rec('q', a))
      assert.same({ b }, r:call('LRANGE', 'jobrt:{q}:wait', 0, -1))
    end)
    it('removes a delayed job', function()
      local id = enq('dq', 'f', '{}', { delay = 60, jobHash = 'x' })
      assert.is_true(o:delete('dq', id))
      assert.equal(0, r:call('ZCARD', 'jobrt:{dq}:due'))
      assert.equal(0, r:call('HLEN', 'jobrt:{dq}:dedup'))
    end)
    it('removes an LBQUEUE entry and its jobHash', function()
      local id = enq('lb', 'f', '{}', { jobHash = 'h' })
      assert.is_true(o:delete('lb', id))
      assert.equal(0, r:call('ZCARD', 'jobrt:{lb}:ready'))
      assert.equal(0, r:call('HLEN', 'jobrt:{lb}:lb:entry'))
      assert.is_false(enq('lb', 'f', '{}', { jobHash = 'h' }) == id)
    end)
    it('removes a parked job', function()
      enq('lb', 'f', '{}', { jobHash = 'h' })
      o:reserve('lb', 'w', 1, 10)
      local p = enq('lb', 'f', '{}', { jobHash = 'h' })
      assert.is_true(o:delete('lb', p))
      assert.equal(0, r:call('HLEN', 'jobrt:{lb}:lb:parked'))
    end)
    it('removes a failed job', function()
      local id = enq('q')
      o:reserve('q', 'w', 1, 10)
      complete(o, 'q', 'w', { { id = id, ok = false, reason = 'x' } })
      assert.is_true(o:delete('q', id))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:failed'))
    end)
    it('returns false when there is no such job', function()
      assert.is_false(o:delete('q', 'nothing-here'))
    end)
  end)

  describe('delete of an executing job (cancel)', function()
    -- messages of one channel, as they arrive
    local function listen(channel)
      local sub = h.redis()
      local got = {}
      sub:subscribe(channel, function(_, msg) if msg then got[#got + 1] = msg end end)
      return sub, got
    end
    local function exists(queue, id) return r:call('EXISTS', 'jobrt:{' .. queue .. '}:job:' .. id) end

    it('LBQUEUE: keeps the jobHash until the cancelled job stops, then queues the parked one', function()
      local a = enq('lb', 'f', '{}', { jobHash = 'H', id = 'job-a' })
      assert.same({ a }, ids_of(o:reserve('lb', 'w1', 1, 10)))
      local b, existed = enq('lb', 'f', '{"b":1}', { jobHash = 'H' })
      assert.is_false(existed)
      assert.equal(b, r:call('HGET', 'jobrt:{lb}:lb:parked', 'H'))
      local lease = r:call('ZSCORE', 'jobrt:{lb}:active', 'w1|1|' .. a)
      local sub, wake = listen('jobrt:{lb}:wake')
      local t0 = server_ms()

      assert.is_true(o:delete('lb', a))
      h.wait_for(function() return #wake == 1 end, 3, 'the cancel message')
      assert.same({ 'cancel:job-a' }, wake)
      -- the record stays (hidden from get) with its lease and its jobHash claim
      assert.is_nil(o:get('lb', a))
      local cancelled = r:call('HGET', 'jobrt:{lb}:job:' .. a, 'cancelled')
      assert.truthy(cancelled:match('^%d+%.%d%d%d%d%d%d$'), cancelled)
      assert.is_true(tonumber(cancelled) * 1000 >= t0 - 1 and tonumber(cancelled) * 1000 <= server_ms() + 1)
      assert.equal('executing', r:call('HGET', 'jobrt:{lb}:job:' .. a, 'state'))
      -- the lease stays, marked: its score E (ms) becomes E + 0.5
      assert.equal(lease .. '.5', r:call('ZSCORE', 'jobrt:{lb}:active', 'w1|1|' .. a))
      assert.equal(a, r:call('HGET', 'jobrt:{lb}:lb:running', 'H'))
      assert.equal(1, o:stats('lb').executing)
      -- so the parked twin cannot start while it still runs
      assert.same({}, o:reserve('lb', 'w2', 10, 10).jobs)
      assert.equal('pending', o:get('lb', b).state)
      -- its worker learns it from renew, which does not extend its lease
      assert.same({ a }, renew(o, 'lb', 'w1', { a }, 60))
      assert.equal(lease .. '.5', r:call('ZSCORE', 'jobrt:{lb}:active', 'w1|1|' .. a))
      -- its worker reports it stopped: gone for good, and the twin runs
      local sum = complete(o, 'lb', 'w1', { { id = a, ok = false, reason = 'stopped' } })
      assert.same({ completed = 0, retried = 0, failed = 0, ignored = {}, cancelled = { a } }, sum)
      assert.equal(0, exists('lb', a))
      assert.equal(0, r:call('ZCARD', 'jobrt:{lb}:active'))
      assert.equal(0, r:call('ZCARD', 'jobrt:{lb}:failed'))
      assert.same({ b }, ids_of(o:reserve('lb', 'w2', 10, 10)))
      local st = o:stats('lb')
      assert.same({ 1, 0, 0, 1 }, { st.executing, st.completed, st.total_failed, st.cancelled })
      sub:close()
    end)

    it('answers true again while the job stops, keeping the first cancel time', function()
      local a = enq('q')
      o:reserve('q', 'w', 1, 10)
      local sub, wake = listen('jobrt:{q}:wake')
      assert.is_true(o:delete('q', a))
      local first = r:call('HGET', 'jobrt:{q}:job:' .. a, 'cancelled')
      local marked = r:call('ZSCORE', 'jobrt:{q}:active', 'w|1|' .. a)
      assert.truthy(marked:match('^%d+%.5$'), marked)
      assert.is_true(o:delete('q', a))
      assert.equal(marked, r:call('ZSCORE', 'jobrt:{q}:active', 'w|1|' .. a))   -- + 0.5 only once
      h.wait_for(function() return #wake == 2 end, 3, 'two cancel messages')
      assert.same({ 'cancel:' .. a, 'cancel:' .. a }, wake)
      assert.equal(first, r:call('HGET', 'jobrt:{q}:job:' .. a, 'cancelled'))
      complete(o, 'q', 'w', { { id = a, ok = true } })
      assert.is_false(o:delete('q', a))
      sub:close()
    end)

    it('LBQUEUE: a lease that runs out removes the cancelled job and queues the parked one', function()
      local a = enq('lb', 'f', '{}', { jobHash = 'H' })
      o:reserve('lb', 'dead', 1, 0.05)
      local b = enq('lb', 'f', '{}', { jobHash = 'H' })
      assert.is_true(o:delete('lb', a))
      assert.same({}, o:reserve('lb', 'w2', 10, 10).jobs)
      local sub, results = listen('jobrt:{lb}:results')
      local got = h.wait_for(function()
        local n, nf, nc = o:requeue_expired('lb')
        return (n + nf + nc) > 0 and { n, nf, nc }
      end, 3, 'the lease to run out')
      assert.same({ 0, 0, 1 }, got)
      assert.equal(0, exists('lb', a))
      assert.equal(0, r:call('ZCARD', 'jobrt:{lb}:failed'))
      assert.equal(1, r:call('ZCARD', 'jobrt:{lb}:ready'))   -- the parked twin, queued
      assert.same({ b }, ids_of(o:reserve('lb', 'w2', 10, 10)))
      h.wait_for(function() return #results == 1 end, 3, 'the results message')
      assert.same({ 'jobrt:{lb}:job:' .. a }, results)
      local st = o:stats('lb')
      assert.same({ 1, 1, 0 }, { st.cancelled, st.expired, st.total_failed })
      sub:close()
    end)

    it('DELQUEUE: keeps the identity entry until the job stops, stores no result', function()
      local ts = server_ms() / 1000 - 1
      local a = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      local dfield = r:call('HGET', 'jobrt:{dq}:job:' .. a, 'dedup')
      o:reserve('dq', 'w', 1, 10)
      assert.is_true(o:delete('dq', a))
      assert.equal(a, r:call('HGET', 'jobrt:{dq}:dedup', dfield))
      local sum = complete(o, 'dq', 'w', { { id = a, ok = true, value = '{"done":1}' } })
      assert.same({ completed = 0, retried = 0, failed = 0, ignored = {}, cancelled = { a } }, sum)
      assert.equal(0, exists('dq', a))
      assert.equal(0, r:call('HLEN', 'jobrt:{dq}:dedup'))
      assert.equal(0, o:stats('dq').completed)
    end)

    it('DELQUEUE: an identical job enqueued meanwhile is a new job, and keeps its identity entry', function()
      local ts = server_ms() / 1000 - 1
      local a = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      local dfield = r:call('HGET', 'jobrt:{dq}:job:' .. a, 'dedup')
      o:reserve('dq', 'w', 1, 10)
      assert.is_true(o:delete('dq', a))
      local b, existed = enq('dq', 'f', '{}', { jobHash = 'x', timestamp = ts })
      assert.is_false(existed)
      assert.are_not.equal(a, b)
      assert.equal(b, r:call('HGET', 'jobrt:{dq}:dedup', dfield))
      complete(o, 'dq', 'w', { { id = a, ok = true } })
      assert.equal(b, r:call('HGET', 'jobrt:{dq}:dedup', dfield))
      assert.same({ b }, ids_of(o:reserve('dq', 'w', 10, 10)))
    end)

    it('QUEUE: refuses to enqueue its id until it stops; release removes it without requeueing', function()
      local a = enq('q', 'f', '{"n":1}', { id = 'job-a' })
      o:reserve('q', 'w', 1, 10)
      assert.is_true(o:delete('q', a))
      assert.is_nil(o:get('q', a))
      local id, err = o:enqueue('q', 'f', '{"n":2}', { id = 'job-a' })
      assert.is_nil(id)
      assert.equal("enqueue: job 'job-a' was deleted while running and is still stopping; enqueue it again once it has stopped", err)
      assert.equal('{"n":1}', r:call('HGET', 'jobrt:{q}:job:job-a', 'args'))
      local sub, results = listen('jobrt:{q}:results')
      assert.equal(0, release(o, 'q', 'w', { a }))
      assert.equal(0, exists('q', a))
      assert.equal(0, r:call('LLEN', 'jobrt:{q}:wait'))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:active'))
      h.wait_for(function() return #results == 1 end, 3, 'the results message')
      assert.same({ 'jobrt:{q}:job:job-a' }, results)
      assert.equal(1, o:stats('q').cancelled)
      local again, existed = enq('q', 'f', '{"n":3}', { id = 'job-a' })
      assert.same({ 'job-a', false }, { again, existed })
      assert.equal('pending', o:get('q', 'job-a').state)
      sub:close()
    end)

    it('LBQUEUE: release of a cancelled job queues the parked one', function()
      local a = enq('lb', 'f', '{}', { jobHash = 'H' })
      o:reserve('lb', 'w', 1, 10)
      local b = enq('lb', 'f', '{}', { jobHash = 'H' })
      assert.is_true(o:delete('lb', a))
      assert.equal(0, release(o, 'lb', 'w', { a }))
      assert.equal(0, exists('lb', a))
      assert.same({ b }, ids_of(o:reserve('lb', 'w', 10, 10)))
    end)

    it('QUEUE: a success whose record vanished under its lease does not recreate it', function()
      local a = enq('q')
      o:reserve('q', 'w', 1, 10)
      r:call('DEL', 'jobrt:{q}:job:' .. a)
      local sum = complete(o, 'q', 'w', { { id = a, ok = true, value = '1' } })
      assert.same({ completed = 0, retried = 0, failed = 0, ignored = {}, cancelled = { a } }, sum)
      assert.equal(0, exists('q', a))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:active'))
    end)

    it('ignores the outcome of a worker that does not hold the cancelled job', function()
      local a = enq('q')
      o:reserve('q', 'w', 1, 10)
      o:delete('q', a)
      local sum = complete(o, 'q', 'other', { { id = a, ok = true } })
      assert.same({ completed = 0, retried = 0, failed = 0, ignored = { a }, cancelled = {} }, sum)
      assert.equal(1, exists('q', a))
    end)
  end)

  describe('stale fields', function()
    it('a success after a failed attempt drops the error and the due time', function()
      local id = enq('q', 'f', '{}', { retries = 1 })
      o:reserve('q', 'w', 1, 10)
      complete(o, 'q', 'w', { { id = id, ok = false, reason = 'first', exception = 'tb' } })
      local j = rec('q', id)
      assert.same({ 'first', 'tb' }, { j['error-reason'], j['error-exception'] })
      assert.truthy(j.due)
      make_due('q', id)
      o:reserve('q', 'w', 1, 10)
      -- the new attempt starts clean (reserve removes them), so its success keeps none of them
      j = rec('q', id)
      assert.same({ 'executing', '2' }, { j.state, j.attempts })
      assert.same({}, { j['error-reason'], j['error-exception'], j.due })
      complete(o, 'q', 'w', { { id = id, ok = true, value = '2' } })
      j = rec('q', id)
      assert.same({ 'finished', 'successful', '2' }, { j.state, j.result, j['result-value'] })
      assert.same({}, { j['error-reason'], j['error-exception'], j.due })
    end)
    it('a success after a lost lease drops the lease error', function()
      local id = enq('q')
      o:reserve('q', 'dead', 1, 0.05)
      h.wait_for(function() return o:requeue_expired('q') > 0 end, 3, 'lease expiry')
      assert.equal('lease expired: worker dead stopped renewing (attempt 1)', rec('q', id)['error-reason'])
      o:reserve('q', 'w', 1, 10, true)
      assert.is_nil(rec('q', id)['error-reason'])
      complete(o, 'q', 'w', { { id = id, ok = true } })
      local j = rec('q', id)
      assert.equal('successful', j.result)
      assert.same({}, { j['error-reason'], j['error-exception'] })
    end)
    it('a DELQUEUE job that finished has no due time', function()
      local ts = server_ms() / 1000 - 1
      local a = enq('dq', 'f', '{"a":1}', { timestamp = ts })
      local b = enq('dq', 'f', '{"b":1}', { timestamp = ts })
      assert.truthy(rec('dq', a).due)
      o:reserve('dq', 'w', 2, 10)
      complete(o, 'dq', 'w', { { id = a, ok = true }, { id = b, ok = false, reason = 'x' } })
      assert.same({ 'successful', 'failed' }, { rec('dq', a).result, rec('dq', b).result })
      assert.is_nil(rec('dq', a).due)
      assert.is_nil(rec('dq', b).due)
    end)
    it('a final failure after a retry has no due time', function()
      local id = enq('q', 'f', '{}', { retries = 1 })
      o:reserve('q', 'w', 1, 10)
      complete(o, 'q', 'w', { { id = id, ok = false, reason = 'one' } })
      make_due('q', id)
      o:reserve('q', 'w', 1, 10)
      assert.equal(1, complete(o, 'q', 'w', { { id = id, ok = false, reason = 'two' } }).failed)
      local j = rec('q', id)
      assert.same({ 'finished', 'failed', 'two' }, { j.state, j.result, j['error-reason'] })
      assert.is_nil(j.due)
    end)
    it('a DELQUEUE job given back by release runs at its due time again', function()
      local ts = server_ms() - 5000
      local id = enq('dq', 'f', '{}', { timestamp = ts / 1000 })
      o:reserve('dq', 'w', 1, 10)
      assert.is_nil(rec('dq', id).due)
      assert.equal(1, release(o, 'dq', 'w', { id }))
      assert.equal(tostring(ts), due_of('dq', id))
      assert.same({ id }, ids_of(o:reserve('dq', 'w', 10, 10)))
    end)
    it('a job failed by requeue_expired has no due time', function()
      local o0 = assert(ops.new(r, { max_stalls = 0 }))
      local id = enq('dq', 'f', '{}', { timestamp = server_ms() / 1000 - 1 })
      o0:reserve('dq', 'dead', 1, 0.02)
      h.wait_for(function() local _, nf = o0:requeue_expired('dq'); return nf > 0 end, 3, 'the expiry')
      local j = rec('dq', id)
      assert.same({ 'finished', 'failed' }, { j.state, j.result })
      assert.is_nil(j.due)
    end)
  end)

  describe('records that vanished (deleted by hand, evicted)', function()
    local function gone(queue, id) r:call('DEL', 'jobrt:{' .. queue .. '}:job:' .. id) end

    it('LBQUEUE: a waiting entry whose record vanished does not wedge its jobHash', function()
      local a = enq('lb', 'f', '{"n":1}', { jobHash = 'h' })
      gone('lb', a)
      local b, existed = enq('lb', 'f', '{"n":2}', { jobHash = 'h' })
      assert.is_false(existed)
      assert.are_not.equal(a, b)
      assert.same({ b }, ids_of(o:reserve('lb', 'w', 10, 10)))
      assert.equal(1, tonumber(o:stats('lb').dropped))      -- the entry left behind, dropped
    end)
    it('LBQUEUE: a running job whose record vanished frees its jobHash when it ends; the parked job runs', function()
      local a = enq('lb', 'f', '{}', { jobHash = 'h' })
      o:reserve('lb', 'w', 1, 10)
      local p = enq('lb', 'f', '{"parked":1}', { jobHash = 'h' })
      gone('lb', a)
      local sum = complete(o, 'lb', 'w', { { id = a, attempt = 1, ok = true } })
      assert.same({ a }, sum.cancelled)
      assert.equal(0, r:call('EXISTS', 'jobrt:{lb}:job:' .. a))          -- not recreated
      assert.same({ p }, ids_of(o:reserve('lb', 'w2', 10, 10)))
    end)
    it('LBQUEUE: the same when its lease runs out instead', function()
      local a = enq('lb', 'f', '{}', { jobHash = 'h' })
      o:reserve('lb', 'dead', 1, 0.05)
      local p = enq('lb', 'f', '{"parked":1}', { jobHash = 'h' })
      gone('lb', a)
      h.wait_for(function() o:requeue_expired('lb'); return r:call('ZCARD', 'jobrt:{lb}:active') == 0 end, 3, 'the lease to run out')
      assert.equal(0, r:call('EXISTS', 'jobrt:{lb}:job:' .. a))
      assert.same({ p }, ids_of(o:reserve('lb', 'w2', 10, 10)))
    end)
    it('LBQUEUE: an enqueue frees a jobHash still held by a job whose record vanished', function()
      local a = enq('lb', 'f', '{}', { jobHash = 'h' })
      o:reserve('lb', 'w', 1, 10)
      gone('lb', a)
      local b = enq('lb', 'f', '{"n":2}', { jobHash = 'h' })
      assert.same({ b }, ids_of(o:reserve('lb', 'w2', 10, 10)))
    end)
    it('release does not recreate a vanished record, and frees its claims', function()
      local a = enq('dq', 'f', '{}', { jobHash = 'h' })
      o:reserve('dq', 'w', 1, 10)
      gone('dq', a)
      assert.equal(0, release(o, 'dq', 'w', { a }))
      assert.equal(0, r:call('EXISTS', 'jobrt:{dq}:job:' .. a))
      assert.equal(0, r:call('HLEN', 'jobrt:{dq}:dedup'))
      assert.equal(0, r:call('ZCARD', 'jobrt:{dq}:active'))
    end)
    it('DELQUEUE: a vanished running job leaves no identity entry behind', function()
      local a = enq('dq', 'f', '{}', { jobHash = 'h' })
      o:reserve('dq', 'w', 1, 10)
      gone('dq', a)
      complete(o, 'dq', 'w', { { id = a, attempt = 1, ok = false, reason = 'x' } })
      assert.equal(0, r:call('HLEN', 'jobrt:{dq}:dedup'))
      assert.equal(0, r:call('EXISTS', 'jobrt:{dq}:job:' .. a))
    end)
  end)

  describe('hand-written records (seed 004)', function()
    it('drops an id that has no record and counts it', function()
      r:call('LPUSH', 'jobrt:{q}:wait', 'ghost')
      local b = enq('q')
      assert.same({ b }, ids_of(o:reserve('q', 'w', 10, 10)))
      assert.equal(0, r:call('LLEN', 'jobrt:{q}:wait'))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:failed'))
      assert.equal(1, o:stats('q').dropped)
    end)
    it('fails a record without a function where the failed list shows it', function()
      local o2 = assert(ops.new(r, { ttl_failed = 60 }))
      r:call('HSET', 'jobrt:{q}:job:hand-1', 'args', '{}', 'state', 'pending', 'due', '5.000')
      r:call('LPUSH', 'jobrt:{q}:wait', 'hand-1')
      local sub = h.redis()
      local results = {}
      sub:subscribe('jobrt:{q}:results', function(_, msg) if msg then results[#results + 1] = msg end end)
      assert.same({}, o2:reserve('q', 'w', 10, 10).jobs)
      local j = rec('q', 'hand-1')
      assert.same({ 'hand-1', 'q', 'finished', 'failed', '' },
        { j.id, j.queue, j.state, j.result, j['error-exception'] })
      assert.equal("record has no 'function' field: set HSET jobrt:{q}:job:hand-1 function <job name>", j['error-reason'])
      assert.truthy(j['finished-created']:match('^%d+%.%d%d%d%d%d%d$'))
      assert.is_nil(j.due)
      local ttl = r:call('TTL', 'jobrt:{q}:job:hand-1')
      assert.is_true(ttl > 50 and ttl <= 60, tostring(ttl))
      local list, total = o:list_failed('q')
      assert.equal(1, total)
      assert.equal('hand-1', list[1].id)
      local st = o:stats('q')
      assert.same({ 1, 1, 0, 0 }, { st.failed, st.total_failed, st.executing, st.dropped })
      h.wait_for(function() return #results == 1 end, 3, 'the results message')
      assert.same({ 'jobrt:{q}:job:hand-1' }, results)
      sub:close()
      -- fixed by hand and retried, it runs
      r:call('HSET', 'jobrt:{q}:job:hand-1', 'function', 'f')
      assert.equal(1, o:retry_failed('q'))
      assert.same({ 'hand-1' }, ids_of(o:reserve('q', 'w', 10, 10)))
    end)
    it('uses the default ttl_failed of 7 days for such a record', function()
      r:call('HSET', 'jobrt:{q}:job:hand-2', 'args', '{}')
      r:call('LPUSH', 'jobrt:{q}:wait', 'hand-2')
      o:reserve('q', 'w', 10, 10)
      local ttl = r:call('TTL', 'jobrt:{q}:job:hand-2')
      assert.is_true(ttl > 604790 and ttl <= 604800, tostring(ttl))
    end)
    it('fills in the id and queue of a hand-written record it hands out', function()
      r:call('HSET', 'jobrt:{q}:job:hand-3', 'function', 'mail', 'args', '{"to":"x"}')
      r:call('LPUSH', 'jobrt:{q}:wait', 'hand-3')
      local j = o:reserve('q', 'w', 10, 10).jobs[1]
      assert.same({ 'hand-3', 'mail', '{"to":"x"}', 1 }, { j.id, j.fn, j.args, j.attempt })
      local rc = rec('q', 'hand-3')
      assert.same({ 'hand-3', 'q', 'executing', '1', 'w' }, { rc.id, rc.queue, rc.state, rc.attempts, rc.worker })
      complete(o, 'q', 'w', { { id = 'hand-3', ok = true } })
      assert.equal('successful', rec('q', 'hand-3').result)
    end)
    it('does not hand out an id pushed again while it executes', function()
      local a = enq('q')
      o:reserve('q', 'w1', 1, 10)
      r:call('LPUSH', 'jobrt:{q}:wait', a)
      assert.same({}, o:reserve('q', 'w2', 10, 10).jobs)
      assert.equal(1, r:call('ZCARD', 'jobrt:{q}:active'))
      assert.equal(1, o:stats('q').dropped)
    end)
  end)

  describe('get', function()
    it('returns the record', function()
      local id = enq('q', 'f', '{"a":1}')
      assert.equal('{"a":1}', o:get('q', id).args)
    end)
    it('returns nil for an unknown id', function()
      assert.same({}, { o:get('q', 'nope') })
    end)
  end)

  describe('failed set', function()
    local function fail_jobs(queue, n, opts)
      local ids = {}
      for i = 1, n do ids[i] = enq(queue, 'f', '{"i":' .. i .. '}', opts and opts(i)) end
      local res = o:reserve(queue, 'w', n, 10)
      local outs = {}
      for i, j in ipairs(res.jobs) do outs[i] = { id = j.id, ok = false, reason = 'bad ' .. j.id } end
      complete(o, queue, 'w', outs)
      return ids
    end

    it('does not count or list failed jobs whose record has expired', function()
      local o1 = assert(ops.new(r, { ttl_failed = 1 }))
      for i = 1, 3 do enq('q', 'f', '{"i":' .. i .. '}', { retries = 0 }) end
      local res = o1:reserve('q', 'w', 3, 10)
      local outs = {}
      for i, j in ipairs(res.jobs) do outs[i] = { id = j.id, attempt = j.attempt, ok = false, reason = 'x' } end
      o1:complete('q', 'w', outs)
      assert.equal(3, o:stats('q').failed)
      h.wait_for(function() return r:call('EXISTS', 'jobrt:{q}:job:' .. res.jobs[1].id) == 0 end, 5, 'the records to expire')
      assert.equal(0, o:stats('q').failed)
      local recs, total = o:list_failed('q')
      assert.same({ 0, 0 }, { #recs, total })
    end)
    it('keep 0: a finished record is removed at once (ttl_ok 0, ttl_failed 0: not listed)', function()
      local o0 = assert(ops.new(r, { ttl_ok = 0, ttl_failed = 0 }))
      local a = enq('q', 'f', '{}')
      local b = enq('q', 'f', '{}', { retries = 0 })
      o0:reserve('q', 'w', 2, 10)
      local sum = o0:complete('q', 'w', { { id = a, attempt = 1, ok = true, value = '1' },
                                          { id = b, attempt = 1, ok = false, reason = 'x' } })
      assert.same({ 1, 1 }, { sum.completed, sum.failed })
      assert.equal(0, r:call('EXISTS', 'jobrt:{q}:job:' .. a, 'jobrt:{q}:job:' .. b))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:failed'))
      assert.same({ 1, 1 }, { o:stats('q').completed, o:stats('q').total_failed })
    end)
    it('list_failed pages newest first', function()
      local ids = fail_jobs('q', 5)
      local page, total = o:list_failed('q', 0, 2)
      assert.equal(5, total)
      assert.equal(2, #page)
      local all = o:list_failed('q', 0, 10)
      assert.equal(5, #all)
      assert.equal('bad ' .. ids[1], all[5]['error-reason'])
      local rest = o:list_failed('q', 4, 10)
      assert.equal(1, #rest)
    end)
    it('retry_failed queues every failed job again with fresh retries (attempts only grow)', function()
      local ids = fail_jobs('q', 3)
      assert.equal(3, o:retry_failed('q'))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:failed'))
      local j = rec('q', ids[2])
      assert.same({ 'pending', '1' }, { j.state, j.attempts })
      assert.is_nil(j.failures)
      assert.is_nil(j.result)
      assert.equal(-1, r:call('TTL', 'jobrt:{q}:job:' .. ids[2]))
      assert.equal(3, #o:reserve('q', 'w', 10, 10).jobs)
    end)
    it('retry_failed with an id queues that one job only', function()
      local ids = fail_jobs('q', 3)
      assert.is_true(o:retry_failed_job('q', ids[2]))
      assert.is_false(o:retry_failed_job('q', ids[2]))        -- not in the failed set any more
      assert.is_false(o:retry_failed_job('q', 'never-failed'))
      assert.equal(2, r:call('ZCARD', 'jobrt:{q}:failed'))
      assert.same({ ids[2] }, ids_of(o:reserve('q', 'w', 10, 10)))
    end)
    it('retry_failed merges an LBQUEUE job into the waiting entry of its jobHash', function()
      local failed = fail_jobs('lb', 1, function() return { jobHash = 'h' } end)[1]
      local waiting = enq('lb', 'f', '{}', { jobHash = 'h' })
      assert.equal(1, o:retry_failed('lb'))
      assert.is_nil(rec('lb', failed))
      assert.equal('2', rec('lb', waiting).priority)
      assert.same({ waiting }, ids_of(o:reserve('lb', 'w', 10, 10)))
    end)
    it('retry_failed queues DELQUEUE jobs now', function()
      fail_jobs('dq', 2)
      assert.equal(2, o:retry_failed('dq'))
      assert.equal(2, #o:reserve('dq', 'w', 10, 10).jobs)
    end)
    it('delete_failed deletes every failed job', function()
      local ids = fail_jobs('q', 3)
      assert.equal(3, o:delete_failed('q'))
      assert.is_nil(rec('q', ids[1]))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:failed'))
    end)
  end)

  describe('stats', function()
    it('counts jobs per state', function()
      local now = server_ms()
      enq('q'); enq('q'); enq('q'); enq('q')
      enq('q', 'f', '{}', { timestamp = (now + 60000) / 1000 })
      local res = o:reserve('q', 'w', 2, 10)
      complete(o, 'q', 'w', { { id = res.jobs[1].id, ok = true } })
      local st = o:stats('q')
      assert.same({ pending = 2, delayed = 1, parked = 0, executing = 1, failed = 0, completed = 1,
                    total_failed = 0, retried = 0, expired = 0, cancelled = 0, dropped = 0,
                    postponed = 0, paused = 0, rate_max = 0, rate_per = '0', max_active = 0, crons = 0,
                    waiting_children = 0 }, st)
    end)
  end)

  describe('EVALSHA first', function()
    local function script_cmds()
      local info = r:call('INFO', 'commandstats')
      return tonumber(info:match('cmdstat_script|load:calls=(%d+)') or info:match('cmdstat_script:calls=(%d+)')) or 0
    end
    it('knows every script\'s SHA-1 without asking Redis (the name SCRIPT LOAD answers)', function()
      for _, n in ipairs(scripts.NAMES) do
        local text = scripts.source(n)
        assert.is_string(text, n)
        assert.equal(r:call('SCRIPT', 'LOAD', text), scripts.sha(n), n)
      end
    end)
    it('sends no SCRIPT LOAD on connect, and none for scripts Redis has already', function()
      r:call('SCRIPT', 'FLUSH')
      enq('q')                                       -- enqueue is loaded now (NOSCRIPT, then SCRIPT LOAD)
      local before = script_cmds()
      local r2 = h.redis()
      local o2 = assert(ops.new(r2))
      assert(o2:enqueue('q', 'f', '{}'))
      assert(o2:stats('q'))                          -- stats: loaded by this call, once
      assert(o2:stats('q'))
      r2:close()
      assert.equal(1, script_cmds() - before)
    end)
  end)

  describe('NOSCRIPT recovery', function()
    it('reloads the scripts after SCRIPT FLUSH and retries once', function()
      enq('q')
      assert.equal('OK', r:call('SCRIPT', 'FLUSH'))
      local id = enq('q')
      assert.equal('pending', rec('q', id).state)
      assert.equal(2, o:stats('q').pending)
    end)
    it('reloads a script whose sha the server does not know', function()
      r:call('SCRIPT', 'FLUSH')
      local s2 = assert(scripts.load(r))
      s2.sha.stats = string.rep('0', 40)
      local res, err = s2:call('stats', ops.keys('q'), { 'QUEUE' })
      assert.is_nil(err)
      assert.equal('pending', res[1])
    end)
  end)

  describe('KEYS checks', function()
    it('refuses a KEYS list of the wrong length', function()
      local res, err = s:call('stats', { 'a', 'b', 'c' }, { 'QUEUE' })
      assert.is_nil(res)
      assert.equal('stats: expected the 14 standard KEYS of one queue (see lua-server-scripts/README.md), got 3', err)
    end)
    it('refuses a queue name that would break key isolation, whatever the caller sends', function()
      -- job id "x}:wait" of queue "a" would be the wait list of queue "a}:job:x"
      local k = {}
      for i, suffix in ipairs({ 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                                'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }) do
        k[i] = 'jobrt:{a}:job:x}:' .. suffix
      end
      local before = snapshot()
      local _, err = s:call('enqueue', k, { 'QUEUE', 'f', '{}' })
      assert.equal("enqueue: KEYS[1] must be 'jobrt:{QUEUE}:job:', got 'jobrt:{a}:job:x}:job:'", err)
      for _, q in ipairs({ 'a b', 'x\ny' }) do
        local kk = {}
        for i, suffix in ipairs({ 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                                  'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }) do
          kk[i] = 'jobrt:{' .. q .. '}:' .. suffix
        end
        local _, e2 = s:call('stats', kk, { 'QUEUE' })
        assert.matches('^stats: the queue name must be 1%-128 characters of A%-Z a%-z 0%-9 _ %. : %-, got', e2)
      end
      assert.same(before, snapshot())
    end)
    it('refuses keys of two queues', function()
      local k = {}
      for i, v in ipairs(ops.keys('a')) do k[i] = v end
      k[2] = 'jobrt:{b}:wait'
      local _, err = s:call('enqueue', k, { 'QUEUE', 'f', '{}' })
      assert.equal("enqueue: KEYS[2] must be 'jobrt:{a}:wait', got 'jobrt:{b}:wait'", err)
    end)
  end)

  describe('malformed arguments', function()
    local long = string.rep('x', 300)
    -- { script, queue, ARGV, exact error }
    local cases = {
      { 'enqueue', 'q', {}, 'enqueue: ARGV[1] type is missing (read it from RESERVED:QCONFIG)' },
      { 'enqueue', 'q', { 'FIFO', 'f', '{}' }, "enqueue: ARGV[1] type must be QUEUE, LBQUEUE or DELQUEUE, got 'FIFO'" },
      { 'enqueue', 'q', { 'QUEUE' }, 'enqueue: ARGV[2] function is missing' },
      { 'enqueue', 'q', { 'QUEUE', long, '{}' }, 'enqueue: ARGV[2] function must be at most 256 bytes, got 300' },
      { 'enqueue', 'q', { 'QUEUE', 'f' }, 'enqueue: ARGV[3] args is missing (JSON text, e.g. {} or [])' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{bad' }, "enqueue: ARGV[3] args must be JSON text, got '{bad'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '42' }, "enqueue: ARGV[4] id must not be all digits (those are generated ids), got '42': add a prefix, e.g. 'user-42'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', long }, 'enqueue: ARGV[4] id must be at most 256 bytes, got 300' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', 'a\nb' }, "enqueue: ARGV[4] id must not contain control characters (newline, tab...) or '{' '}', got 'a\\10b'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', 'x}:wait' }, "enqueue: ARGV[4] id must not contain control characters (newline, tab...) or '{' '}', got 'x}:wait'" },
      { 'enqueue', 'q', { 'QUEUE', 'f\t', '{}' }, "enqueue: ARGV[2] function must not contain control characters (newline, tab...) or '{' '}', got 'f\\9'" },
      { 'get', 'q', { 'QUEUE', 'a{b' }, "get: ARGV[2] id must not contain control characters (newline, tab...) or '{' '}', got 'a{b'" },
      { 'delete', 'q', { 'QUEUE', 'a\rb' }, "delete: ARGV[2] id must not contain control characters (newline, tab...) or '{' '}', got 'a\\13b'" },
      { 'enqueue', 'lb', { 'LBQUEUE', 'f', '{}', '', '' }, 'enqueue: ARGV[5] jobHash is missing (an LBQUEUE job needs one)' },
      { 'enqueue', 'lb', { 'LBQUEUE', 'f', '{}', '', 'h', 'abc' }, "enqueue: ARGV[6] priority must be a number, got 'abc'" },
      { 'enqueue', 'lb', { 'LBQUEUE', 'f', '{}', '', 'h', '1e999' }, "enqueue: ARGV[6] priority must be a number, got '1e999'" },
      { 'enqueue', 'lb', { 'LBQUEUE', 'f', '{}', '', 'h', '1e16' }, "enqueue: ARGV[6] priority must be between -1e+15 and 1e+15, got '1e16'" },
      { 'enqueue', 'lb', { 'LBQUEUE', 'f', '{}', '', 'h', '0x10' }, "enqueue: ARGV[6] priority must be a number, got '0x10'" },
      { 'enqueue', 'dq', { 'DELQUEUE', 'f', '{}', '', '', '5' }, 'enqueue: ARGV[6] priority applies to QUEUE and LBQUEUE only, this queue is DELQUEUE' },
      { 'enqueue', 'dq', { 'DELQUEUE', 'f', '{}', '', '', '', '-5' }, "enqueue: ARGV[7] timestamp must be between 0 and 100000000000, got '-5'" },
      { 'enqueue', 'dq', { 'DELQUEUE', 'f', '{}', '', '', '', 'soon' }, "enqueue: ARGV[7] timestamp must be a number, got 'soon'" },
      { 'enqueue', 'dq', { 'DELQUEUE', 'f', '{}', '', '', '', '', '-1' }, "enqueue: ARGV[8] delay must be between 0 and 320000000, got '-1'" },
      { 'enqueue', 'dq', { 'DELQUEUE', 'f', '{}', '', '', '', '5', '5' }, 'enqueue: ARGV[8] delay cannot be given with ARGV[7] timestamp' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '1.5' }, "enqueue: ARGV[9] retries must be a whole number, got '1.5'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '-1' }, "enqueue: ARGV[9] retries must be between 0 and 1000, got '-1'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '99999999' }, "enqueue: ARGV[9] retries must be between 0 and 1000, got '99999999'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '0' }, "enqueue: ARGV[10] timeout must be between 0.001 and 32000000, got '0'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '', 'c', '1', '', '', 'extra' }, 'enqueue: expected at most 14 ARGV, got 15' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '', 'c' }, 'enqueue: ARGV[12] tick is missing' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '', 'a\nb', '1' }, "enqueue: ARGV[11] cron name must not contain control characters (newline, tab...) or '{' '}', got 'a\\10b'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '', 'c', '1.5' }, "enqueue: ARGV[12] tick must be a whole number, got '1.5'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '', 'c', '1', '-1' }, "enqueue: ARGV[13] skip_late must be between 0 and 1e+14, got '-1'" },
      -- enqueue_bulk: [3] max_payload, then groups of 9 (enqueue's ARGV[2..10]) or 2 (function, args); a bad job anywhere writes nothing
      { 'enqueue_bulk', 'q', { 'QUEUE' }, "enqueue_bulk: ARGV[2] width must be '2' (function, args) or '9' (function, args, id, jobHash, priority, timestamp, delay, retries, timeout), got 'nil'" },
      { 'enqueue_bulk', 'q', { 'QUEUE', '9', '' }, 'enqueue_bulk: ARGV[4] function is missing (give at least one job)' },
      { 'enqueue_bulk', 'q', { 'QUEUE', '9', '', 'f', '{}' }, 'enqueue_bulk: ARGV after [3] must come in groups of 9, got 2 values' },
      { 'enqueue_bulk', 'q', { 'QUEUE', '9', '', 'f', '{}', '', '', '', '', '', '', '', 'g', '{bad', '', '', '', '', '', '', '' }, "enqueue_bulk: ARGV[14] args must be JSON text, got '{bad'" },
      { 'enqueue_bulk', 'q', { 'QUEUE', '9', '', 'f', '{}', '', '', '', '', '', '', '', 'g', '{}', '7', '', '', '', '', '', '' }, "enqueue_bulk: ARGV[15] id must not be all digits (those are generated ids), got '7': add a prefix, e.g. 'user-7'" },
      { 'enqueue_bulk', 'lb', { 'LBQUEUE', '9', '', 'f', '{}', '', 'h', '', '', '', '', '', 'g', '{}', '', '', '', '', '', '', '' }, 'enqueue_bulk: ARGV[16] jobHash is missing (an LBQUEUE job needs one)' },
      { 'enqueue_bulk', 'dq', { 'DELQUEUE', '9', '', 'f', '{}', '', '', '', '5', '5', '', '' }, 'enqueue_bulk: ARGV[10] delay cannot be given with ARGV[9] timestamp' },
      { 'enqueue_bulk', 'q', { 'QUEUE', '2', '', 'f', '{}', 'g', '{bad' }, "enqueue_bulk: ARGV[7] args must be JSON text, got '{bad'" },
      { 'enqueue_bulk', 'q', { 'QUEUE', '2', '', 'f', '{}', 'g\n', '{}' }, "enqueue_bulk: ARGV[6] function must not contain control characters (newline, tab...) or '{' '}', got 'g\\10'" },
      { 'enqueue_bulk', 'q', { 'QUEUE', '2', '', 'f', '{}', '', '{}' }, 'enqueue_bulk: ARGV[6] function is missing' },
      { 'enqueue_bulk', 'lb', { 'LBQUEUE', '2', '', 'f', '{}' }, 'enqueue_bulk: ARGV[4] function is an LBQUEUE job without a jobHash: send it in a group of 9 with one' },
      { 'enqueue_bulk', 'q', { 'QUEUE', '3', '', 'f', '{}', '' }, "enqueue_bulk: ARGV[2] width must be '2' (function, args) or '9' (function, args, id, jobHash, priority, timestamp, delay, retries, timeout), got '3'" },
      { 'enqueue_bulk', 'q', { 'QUEUE', '9', '', 'f', '{}', '', '', '', '', '', '', '', 'g', '{}', '', '', '', '', '', '1.5', '' }, "enqueue_bulk: ARGV[20] retries must be a whole number, got '1.5'" },
      { 'enqueue_bulk', 'q', { 'QUEUE', '2', '0', 'f', '{}' }, "enqueue_bulk: ARGV[3] max_payload must be between 1 and 536870912, got '0'" },
      { 'enqueue_bulk', 'q', { 'QUEUE', '2', '10', 'f', '{}', 'g', '{"a":"0123456789"}' }, 'enqueue_bulk: ARGV[7] args is 18 bytes, more than the limit of 10 bytes' },
      { 'enqueue_bulk', 'q', { 'QUEUE', '9', '10', 'g', '{"a":"0123456789"}', '', '', '', '', '', '', '' }, 'enqueue_bulk: ARGV[5] args is 18 bytes, more than the limit of 10 bytes' },
      { 'enqueue_bulk', 'q', { 'QUEUE', '2', '', 'f', '{"s":"\255\254"}' }, 'enqueue_bulk: ARGV[5] args must be UTF-8 (RFC 8259): byte offset 6 is 0xff (send binary data as base64)' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '', '', '', '', 'extra' }, "enqueue: ARGV[14] max_payload must be a number, got 'extra'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{}', '', '', '', '', '', '', '', '', '', '', '0' }, "enqueue: ARGV[14] max_payload must be between 1 and 536870912, got '0'" },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{"a":"0123456789"}', '', '', '', '', '', '', '', '', '', '', '10' }, 'enqueue: ARGV[3] args is 18 bytes, more than the limit of 10 bytes' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '{"s":"\255\254"}' }, 'enqueue: ARGV[3] args must be UTF-8 (RFC 8259): byte offset 6 is 0xff (send binary data as base64)' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '["caf\195\169","\192\175"]' }, 'enqueue: ARGV[3] args must be UTF-8 (RFC 8259): byte offset 10 is 0xc0 (send binary data as base64)' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '["\237\160\128"]' }, 'enqueue: ARGV[3] args must be UTF-8 (RFC 8259): byte offset 2 is 0xed (send binary data as base64)' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '["\244\144\128\128"]' }, 'enqueue: ARGV[3] args must be UTF-8 (RFC 8259): byte offset 2 is 0xf4 (send binary data as base64)' },
      { 'enqueue', 'q', { 'QUEUE', 'f', '["\226\130"]' }, 'enqueue: ARGV[3] args must be UTF-8 (RFC 8259): byte offset 2 is 0xe2 (send binary data as base64)' },
      { 'reserve', 'q', { 'QUEUE' }, 'reserve: ARGV[2] worker is missing' },
      { 'reserve', 'q', { 'QUEUE', 'a|b', '1', '10' }, "reserve: ARGV[2] worker must not contain '|', got 'a|b'" },
      { 'reserve', 'q', { 'QUEUE', long, '1', '10' }, 'reserve: ARGV[2] worker must be at most 128 bytes, got 300' },
      { 'reserve', 'q', { 'QUEUE', 'w' }, 'reserve: ARGV[3] count is missing' },
      { 'reserve', 'q', { 'QUEUE', 'w', 'ten', '10' }, "reserve: ARGV[3] count must be a number, got 'ten'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '0', '10' }, "reserve: ARGV[3] count must be between 1 and 1000, got '0'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '1001', '10' }, "reserve: ARGV[3] count must be between 1 and 1000, got '1001'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '2.5', '10' }, "reserve: ARGV[3] count must be a whole number, got '2.5'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '1' }, 'reserve: ARGV[4] lease is missing' },
      { 'reserve', 'q', { 'QUEUE', 'w', '1', '-1' }, "reserve: ARGV[4] lease must be between 0.001 and 86400, got '-1'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '1', '1e9' }, "reserve: ARGV[4] lease must be between 0.001 and 86400, got '1e9'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '1', '10', 'x' }, "reserve: ARGV[5] ttl_failed must be a number, got 'x'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '1', '10', '-1' }, "reserve: ARGV[5] ttl_failed must be between 0 and 315360000, got '-1'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '1', '10', '', 'yes' }, "reserve: ARGV[6] alone must be '1', '0' or '', got 'yes'" },
      { 'reserve', 'q', { 'QUEUE', 'w', '1', '10', '', '', 'x' }, 'reserve: expected at most 6 ARGV, got 7' },
      { 'renew', 'q', { 'QUEUE', '' }, 'renew: ARGV[2] worker is missing' },
      { 'renew', 'q', { 'QUEUE', 'w', 'long' }, "renew: ARGV[3] lease must be a number, got 'long'" },
      { 'renew', 'q', { 'QUEUE', 'w', '10' }, 'renew: ARGV[4] id is missing (give id, attempt pairs)' },
      { 'renew', 'q', { 'QUEUE', 'w', '10', 'a' }, 'renew: ARGV[4] id is missing (give id, attempt pairs)' },
      { 'renew', 'q', { 'QUEUE', 'w', '10', 'a', '1', 'b' }, 'renew: ARGV after [3] must come in pairs (id, attempt), got 3 values' },
      { 'renew', 'q', { 'QUEUE', 'w', '10', 'a', '1', '', '1' }, 'renew: ARGV[6] id is missing' },
      { 'renew', 'q', { 'QUEUE', 'w', '10', 'a', 'first' }, "renew: ARGV[5] attempt must be a number, got 'first'" },
      { 'renew', 'q', { 'QUEUE', 'w', '10', 'a', '0' }, "renew: ARGV[5] attempt must be between 1 and 1e+15, got '0'" },
      { 'complete', 'q', { 'QUEUE', 'w' }, 'complete: ARGV[6] id is missing (give at least one job: id, attempt, outcome, value, exception, retries)' },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '1', 'ok', '1', '' }, 'complete: ARGV after [5] must come in groups of 6 (id, attempt, outcome, value, exception, retries), got 5 values' },
      { 'complete', 'q', { 'QUEUE', 'w', '-1', '', '', 'a', '1', 'ok', '1', '', '' }, "complete: ARGV[3] ttl_ok must be between 0 and 315360000, got '-1'" },
      { 'complete', 'q', { 'QUEUE', 'w', '', 'week', '', 'a', '1', 'ok', '1', '', '' }, "complete: ARGV[4] ttl_failed must be a number, got 'week'" },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '-2', 'a', '1', 'ok', '1', '', '' }, "complete: ARGV[5] backoff must be between 0 and 86400, got '-2'" },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', '', '1', 'ok', '1', '', '' }, 'complete: ARGV[6] id is missing' },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '', 'ok', '1', '', '' }, 'complete: ARGV[7] attempt is missing' },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '1.5', 'ok', '1', '', '' }, "complete: ARGV[7] attempt must be a whole number, got '1.5'" },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '1', 'maybe', '1', '', '' }, "complete: ARGV[8] outcome must be 'ok' or 'failed', got 'maybe'" },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '1', 'ok', '{x', '', '' }, "complete: ARGV[9] value must be JSON text, got '{x'" },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '1', 'ok', '"\255"', '', '' }, 'complete: ARGV[9] value must be UTF-8 (RFC 8259): byte offset 1 is 0xff (send binary data as base64)' },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '1', 'ok', '1', 'tb', '' }, "complete: ARGV[10] exception must be '' for outcome 'ok', got 'tb'" },
      { 'complete', 'q', { 'QUEUE', 'w', '', '', '', 'a', '1', 'ok', '1', '', '', 'b', '1', 'failed', 'x', '', 'many' }, "complete: ARGV[17] retries must be a number, got 'many'" },
      { 'requeue_expired', 'q', { 'QUEUE', '0' }, "requeue_expired: ARGV[2] limit must be between 1 and 10000, got '0'" },
      { 'requeue_expired', 'q', { 'QUEUE', '', '-1' }, "requeue_expired: ARGV[3] max_stalls must be between 0 and 1000, got '-1'" },
      { 'requeue_expired', 'q', { 'QUEUE', '', '', '1e12' }, "requeue_expired: ARGV[4] ttl_failed must be between 0 and 315360000, got '1e12'" },
      { 'release', 'q', { 'QUEUE', 'w' }, 'release: ARGV[3] id is missing (give id, attempt pairs)' },
      { 'release', 'q', { 'QUEUE', 'w', 'a', '1', 'b' }, 'release: ARGV after [2] must come in pairs (id, attempt), got 3 values' },
      { 'release', 'q', { 'DELQUEUE' }, 'release: ARGV[2] worker is missing' },
      { 'delete', 'q', { 'QUEUE' }, 'delete: ARGV[2] id is missing' },
      { 'delete', 'q', { 'QUEUE', 'a', 'b' }, 'delete: expected at most 2 ARGV, got 3' },
      { 'get', 'q', { 'QUEUE', '' }, 'get: ARGV[2] id is missing' },
      { 'get', 'q', { 'queue', 'a' }, "get: ARGV[1] type must be QUEUE, LBQUEUE or DELQUEUE, got 'queue'" },
      { 'retry_failed', 'q', { 'QUEUE', 'all' }, "retry_failed: ARGV[2] limit must be a number, got 'all'" },
      { 'delete_failed', 'q', { 'QUEUE', '100000' }, "delete_failed: ARGV[2] limit must be between 1 and 10000, got '100000'" },
      { 'list_failed', 'q', { 'QUEUE', '-1' }, "list_failed: ARGV[2] offset must be between 0 and 1000000000000, got '-1'" },
      { 'list_failed', 'q', { 'QUEUE', '0', '5000' }, "list_failed: ARGV[3] count must be between 1 and 1000, got '5000'" },
      { 'stats', 'q', {}, 'stats: ARGV[1] type is missing (read it from RESERVED:QCONFIG)' },
      { 'stats', 'q', { 'QUEUE', 'x' }, 'stats: expected at most 1 ARGV, got 2' },
      -- scheduling and flow control (tests/06-sched has their behaviour)
      { 'pause', 'q', { 'QUEUE' }, "pause: ARGV[2] action must be 'pause' or 'resume', got ''" },
      { 'pause', 'q', { 'QUEUE', 'stop' }, "pause: ARGV[2] action must be 'pause' or 'resume', got 'stop'" },
      { 'pause', 'q', { 'QUEUE', 'pause', 'x' }, 'pause: expected at most 2 ARGV, got 3' },
      { 'limit', 'q', { 'QUEUE', 'rate' }, 'limit: ARGV after [1] must come in pairs (name, value), got 1 values' },
      { 'limit', 'q', { 'QUEUE', 'speed', '1' }, "limit: ARGV[2] name must be 'rate' or 'max-active', got 'speed'" },
      { 'limit', 'q', { 'QUEUE', 'rate', '5' }, "limit: ARGV[3] rate must be 'N/SECONDS' (e.g. '5/1': 5 jobs per second), got '5'" },
      { 'limit', 'q', { 'QUEUE', 'rate', '0/1' }, "limit: ARGV[3] rate N must be a whole number from 1 to 1000000, got '0/1'" },
      { 'limit', 'q', { 'QUEUE', 'rate', '5/0' }, "limit: ARGV[3] rate SECONDS must be from 0.001 to 86400, got '5/0'" },
      { 'limit', 'q', { 'QUEUE', 'rate', '5/1', 'max-active', '0' }, "limit: ARGV[5] max-active must be between 1 and 1000000, got '0'" },
      { 'limit', 'q', { 'QUEUE', 'max-active', '2', 'max-active', '3' }, "limit: ARGV[4] name 'max-active' is given twice" },
      { 'limit', 'q', { 'QUEUE', 'max-active', '2.5' }, "limit: ARGV[3] max-active must be a whole number, got '2.5'" },
      { 'progress', 'q', { 'QUEUE', 'w', 'a', '1', '' }, 'progress: expected the 14 standard KEYS of one queue and 1 more (jobrt:{QUEUE}:progress) (see lua-server-scripts/README.md), got 14' },
      { 'postpone', 'q', { 'QUEUE', 'w' }, 'postpone: ARGV[3] id is missing (give at least one job: id, attempt, delay, reason)' },
      { 'postpone', 'q', { 'QUEUE', 'w', 'a', '1', '5' }, 'postpone: ARGV after [2] must come in groups of 4 (id, attempt, delay, reason), got 3 values' },
      { 'postpone', 'q', { 'QUEUE', 'w', 'a', '1', '-5', '' }, "postpone: ARGV[5] delay must be between 0 and 31536000, got '-5'" },
      { 'postpone', 'q', { 'QUEUE', 'w', 'a', 'x', '5', '' }, "postpone: ARGV[4] attempt must be a number, got 'x'" },
      { 'drain', 'q', { 'QUEUE', '0' }, "drain: ARGV[2] limit must be between 1 and 10000, got '0'" },
      { 'drain', 'q', { 'QUEUE', '', 'x' }, 'drain: expected at most 2 ARGV, got 3' },
      { 'cron_set', 'q', { 'QUEUE' }, 'cron_set: ARGV[2] cron name is missing' },
      { 'cron_set', 'q', { 'QUEUE', 'a{b}', '{}' }, "cron_set: ARGV[2] cron name must not contain control characters (newline, tab...) or '{' '}', got 'a{b}'" },
      { 'cron_set', 'q', { 'QUEUE', 'n', '[1' }, "cron_set: ARGV[3] entry must be a JSON object, got '[1'" },
      { 'cron_set', 'q', { 'QUEUE', 'n', '{"job":"f"}' }, 'cron_set: ARGV[3] entry field args must be a non-empty string' },
      { 'cron_set', 'q', { 'QUEUE', 'n', '{"job":"f","args":"{x","schedule":"* * * * *","tz":"UTC","id_prefix":"p","missed":"once","source":"cli"}' },
        "cron_set: ARGV[3] entry field args must be JSON text, got '{x'" },
      { 'cron_set', 'q', { 'QUEUE', 'n', '{"job":"f","args":"{}","schedule":"* * * * *","tz":"UTC","id_prefix":"p","missed":"never","source":"cli"}' },
        "cron_set: ARGV[3] entry field missed must be 'once' or 'skip'" },
      { 'cron_delete', 'q', { 'QUEUE' }, 'cron_delete: ARGV[2] cron name is missing' },
      { 'cron_delete', 'q', { 'QUEUE', 'n', 'user' }, "cron_delete: ARGV[3] source must be '', 'cli' or 'file', got 'user'" },
      -- flows (tests/08-flows has their behaviour)
      { 'flow_deliver', 'q', { 'QUEUE' }, 'flow_deliver: ARGV[3] key is missing (give key, text pairs)' },
      { 'flow_deliver', 'lb', { 'LBQUEUE', '', 'c:lb|a', 'x' }, 'flow_deliver: ARGV[1] type must be QUEUE or DELQUEUE: an LBQUEUE merges identical jobs, so it takes no flows' },
      { 'flow_deliver', 'q', { 'QUEUE', 'x', 'c:q|a', 'x' }, "flow_deliver: ARGV[2] ttl_failed must be a number, got 'x'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a' }, 'flow_deliver: ARGV after [2] must come in pairs (key, text), got 1 values' },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'x:q|a', 't' }, "flow_deliver: ARGV[3] key must start with 'c:', 'u:' or 'd:', got 'x:q|a'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:other|a', 't' }, "flow_deliver: ARGV[3] key must be c:q|<id> (an entry for this queue), got 'c:other|a'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a{', 't' }, "flow_deliver: ARGV[3] key id must not contain control characters or '{' '}', got 'a{'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'nope' }, [[flow_deliver: ARGV[4] text must be "<flow id>\n<parent queue>\n<parent id>\n<ignore>\n<index>\n<spec>", got 'nope']] },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n2\n0\n{"job":"f","args":"{}"}' }, "flow_deliver: ARGV[4] text ignore must be '0' or '1', got '2'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{x"}' }, "flow_deliver: ARGV[4] text spec args must be JSON text (a string), got '{x'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{}","opts":{"speed":"1"}}' }, "flow_deliver: ARGV[4] text spec opts has an unknown option 'speed' (known: priority, timestamp, delay, retries, timeout)" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{}","opts":{"retries":"1.5"}}' }, "flow_deliver: ARGV[4] text spec opts.retries must be a number from 0 to 1000 (whole) as a string, got '1.5'" },
      { 'flow_deliver', 'dq', { 'DELQUEUE', '', 'c:dq|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{}","opts":{"priority":"1"}}' }, 'flow_deliver: ARGV[4] text spec opts.priority applies to QUEUE only, this queue is DELQUEUE' },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{}","children":[{"queue":"q","id":"b","job":"g","args":"{}"},{"queue":"q","id":"b","job":"g","args":"{}"}]}' }, 'flow_deliver: ARGV[4] text spec children[2] is q|b again: each child once' },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{}","children":[{"queue":"q{","id":"b","job":"g","args":"{}"}]}' }, "flow_deliver: ARGV[4] text spec children[1] queue must be 1-128 characters of A-Z a-z 0-9 _ . : -, got 'q{'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{}","children":[{"queue":"q","id":"b","args":"{}"}]}' }, 'flow_deliver: ARGV[4] text spec children[1] job must be a non-empty string' },
      -- a good entry first, then a bad one: nothing is written
      { 'flow_deliver', 'q', { 'QUEUE', '', 'c:q|a', 'f1\n\n\n0\n0\n{"job":"f","args":"{}"}', 'u:b', 'f1\nq\nother\np\n1\nok\nnull' }, "flow_deliver: ARGV[6] text is news for a parent in queue 'other', not in 'q'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'u:b', 'f1\nq\nq\np\nx\nok\nnull' }, "flow_deliver: ARGV[4] text gen must be a whole number, got 'x'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'u:b', 'f1\nq\nq\np\n1\nmaybe\nnull' }, "flow_deliver: ARGV[4] text outcome must be 'ok', 'failed', 'deleted' or 'retry', got 'maybe'" },
      { 'flow_deliver', 'q', { 'QUEUE', '', 'd:q|b', 'f1\nq' }, [[flow_deliver: ARGV[4] text must be "<flow id>\n<parent queue>\n<parent id>", got 'f1\10q']] },
      { 'flow_take', 'q', { 'QUEUE', '0' }, "flow_take: ARGV[2] limit must be between 1 and 1000, got '0'" },
      { 'flow_take', 'q', { 'QUEUE', '', '-1' }, "flow_take: ARGV[3] horizon must be between 0 and 86400000, got '-1'" },
      { 'flow_take', 'q', { 'QUEUE', '', '', '0' }, "flow_take: ARGV[4] hold must be between 1 and 86400000, got '0'" },
      { 'flow_take', 'q', { 'QUEUE', '', '', '', 'x' }, 'flow_take: expected at most 4 ARGV, got 5' },
      { 'flow_ack', 'q', { 'QUEUE' }, 'flow_ack: ARGV[2] key is missing (give key, stamp pairs)' },
      { 'flow_ack', 'q', { 'QUEUE', 'u:a' }, 'flow_ack: ARGV after [1] must come in pairs (key, stamp), got 1 values' },
      { 'flow_ack', 'q', { 'QUEUE', '', '1' }, 'flow_ack: ARGV[2] key is missing' },
    }

    -- a keyspace with something in every structure, so "unchanged" means something
    local function populate()
      for i = 1, 3 do enq('q', 'f', '{"i":' .. i .. '}') end
      local res = o:reserve('q', 'w', 2, 60)
      complete(o, 'q', 'w', { { id = res.jobs[1].id, ok = false, reason = 'x' } })
      enq('q', 'f', '{}', { delay = 60 })
      enq('lb', 'f', '{}', { jobHash = 'h' })
      o:reserve('lb', 'w', 1, 60)
      enq('lb', 'f', '{}', { jobHash = 'h' })
      enq('lb', 'f', '{}', { jobHash = 'g' })
      enq('dq', 'f', '{}', { jobHash = 'h', delay = 60 })
      -- a flow: a parent of q waiting for its child in dq (with outbox entries carried over)
      assert(o:flow_deliver('q', { { key = 'c:q|parent', text = 'f0\n\n\n0\n0\n' ..
        '{"job":"f","args":"{}","children":[{"queue":"dq","id":"kid","job":"g","args":"{}"}]}' } }))
    end

    for _, c in ipairs(cases) do
      local name, queue, argv, want = c[1], c[2], c[3], c[4]
      it(name .. ' ' .. table.concat(argv, ' '):sub(1, 60), function()
        populate()
        local before = snapshot()
        local res, err = s:call(name, ops.script_keys(name, queue), argv)
        assert.is_nil(res)
        assert.equal(want, err)
        assert.same(before, snapshot())
      end)
    end

    it('the scripts that take the flow keys refuse the 14 standard KEYS alone', function()
      populate()
      local before = snapshot()
      for name in pairs(ops.FLOW_SCRIPTS) do
        local res, err = s:call(name, ops.keys('q'), { 'QUEUE' })
        assert.is_nil(res)
        assert.equal(name .. ': expected the 14 standard KEYS of one queue and 4 more (jobrt:{QUEUE}:flow, ' ..
          'jobrt:{QUEUE}:flow:out, jobrt:{QUEUE}:flow:waiting, jobrt:{QUEUE}:children:) (see lua-server-scripts/README.md), got 14', err)
      end
      assert.same(before, snapshot())
    end)

    -- register.lua takes the registry keys, not a queue's
    local REG = { 'jobrt:{workers}', 'jobrt:{workers}:w1' }
    local reg_cases = {
      { { 'jobrt:workers', 'jobrt:{workers}:w1' }, { 'beat', '6', 'id', 'w1' }, "register: expected KEYS 'jobrt:{workers}' and 'jobrt:{workers}:<id>' (or the prefix 'jobrt:{workers}:' to list)" },
      { REG, { 'dance' }, "register: ARGV[1] op must be 'beat', 'stop' or 'list', got 'dance'" },
      { REG, { 'beat', '0', 'id', 'w1' }, "register: ARGV[2] ttl must be seconds from 1 to 86400, got '0'" },
      { REG, { 'beat', '6', 'id' }, 'register: ARGV after [2] must be 1 to 64 field, value pairs, got 1 values' },
      { { 'jobrt:{workers}', 'jobrt:{workers}:a|b' }, { 'beat', '6', 'id', 'x' }, "register: the worker id (after jobrt:{workers}:) must be 1-128 bytes without control characters, braces or |, got 'a|b'" },
    }
    for _, c in ipairs(reg_cases) do
      it('register ' .. table.concat(c[2], ' '), function()
        populate()
        local before = snapshot()
        local res, err = s:call('register', c[1], c[2])
        assert.is_nil(res)
        assert.equal(c[3], err)
        assert.same(before, snapshot())
      end)
    end

    it('has a case for every script', function()
      local covered = { register = #reg_cases > 0 }
      for _, c in ipairs(cases) do covered[c[1]] = true end
      for _, n in ipairs(scripts.NAMES) do assert.is_true(covered[n] == true, n) end
    end)
  end)

  describe('script files', function()
    it('have a header naming KEYS, ARGV and the return value', function()
      for _, n in ipairs(scripts.NAMES) do
        local text = assert(scripts.source(n))
        assert.truthy(text:match('^%-%-%[%[ ' .. n .. '%.lua: '), n)
        assert.truthy(text:find('\nKEYS:', 1, true), n)
        assert.truthy(text:find('\nARGV', 1, true), n)
        assert.truthy(text:find('\nReturns:', 1, true), n)
      end
    end)
    it('are built from src/ and includes/, and the committed files are up to date', function()
      local build = dofile('tools/scripts.lua')
      local names = build.names('lua-server-scripts')
      assert.same(scripts.NAMES_SORTED or (function()
        local t = {}
        for i, n in ipairs(scripts.NAMES) do t[i] = n end
        table.sort(t)
        return t
      end)(), names)
      local stale = build.stale('lua-server-scripts')
      assert.same({}, stale)
    end)
    it('carry each helper once, and only the helpers they use', function()
      local build = dofile('tools/scripts.lua')
      for _, n in ipairs(scripts.NAMES) do
        local text = assert(scripts.source(n))
        local seen = {}
        for inc in text:gmatch('%-%- %-%-%-%- includes/([%w_]+)%.lua %(') do
          assert.is_nil(seen[inc], n .. ' includes ' .. inc .. ' twice')
          seen[inc] = true
        end
        -- every helper function the script carries is called somewhere besides its definition
        local carried = 0
        for fname in text:gmatch('\nlocal function ([%w_]+)%(') do
          carried = carried + 1
          local uses = select(2, text:gsub('%f[%w_]' .. fname .. '%f[^%w_]', ''))
          assert.is_true(uses >= 2, n .. ' carries ' .. fname .. ' but never calls it')
        end
        assert.is_true(carried > 0, n)
        assert.is_nil(build.expand('lua-server-scripts', n):find('@include', 1, true))
      end
    end)
  end)
end)
