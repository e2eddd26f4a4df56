-- The scheduling and flow-control scripts (pause, limit, progress, postpone, drain, cron_set,
-- cron_delete, and what they add to reserve, enqueue, complete, release, requeue_expired,
-- retry_failed and delete), through jobrt.ops against a real redis-server.
local h = require 'tests.helpers'
local ops = require 'jobrt.ops'
local cjson = require 'cjson'
local jobrt_sleep = require('jobrt').sleep

describe('scheduling scripts', function()
  local r, o

  local function server_ms()
    local t = r:call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local function enq(queue, fn, opts)
    local id, existed = o:enqueue(queue, fn or 'f', '{}', opts)
    assert(id, existed)
    return id, existed
  end
  local function ids_of(res)
    local t = {}
    for i, j in ipairs(res.jobs) do t[i] = j.id end
    return t
  end
  local function publishes()      -- a cluster: the sum over every node (each counts its own)
    local n = 0
    for _, port in ipairs(h.cluster and h.cluster:ports() or { false }) do
      local c = port and h.cluster:node(port) or r
      local info = c:call('INFO', 'commandstats')
      if port then c:close() end
      n = n + (tonumber(info:match('cmdstat_publish:calls=(%d+)')) or 0)
    end
    return n
  end
  local function stat(queue, field) return r:call('HGET', 'jobrt:{' .. queue .. '}:stats', field) end

  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops.new(r))
    assert(o:set_queue_type('q', 'QUEUE'))
    assert(o:set_queue_type('lb', 'LBQUEUE'))
    assert(o:set_queue_type('dq', 'DELQUEUE'))
  end)
  after_each(function() r:close() end)

  describe('pause', function()
    it('holds reserve while paused, keeps enqueue working, and resume publishes a wake-up', function()
      enq('q')
      assert.is_true(o:pause('q'))
      assert.is_false(o:pause('q'))
      assert.matches('^%d+%.%d+$', stat('q', 'paused'))
      local id2 = enq('q')
      local res = o:reserve('q', 'w', 10, 30)
      assert.same({}, ids_of(res))
      assert.equal('paused', res.held)
      assert.equal(2, o:stats('q').pending)
      assert.equal(1, o:stats('q').paused)
      local before = publishes()
      assert.is_true(o:resume('q'))
      assert.equal(before + 1, publishes())
      assert.is_false(o:resume('q'))
      res = o:reserve('q', 'w', 10, 30)
      assert.equal(2, #res.jobs)
      assert.equal(id2, res.jobs[2].id)
      assert.is_nil(res.held)
    end)
  end)

  describe('limit', function()
    it('sets, reads and clears the limits, each apart', function()
      assert.same({ rate_max = 0, rate_per = 0, max_active = 0, paused = 0 }, o:limit('q'))
      assert.same({ rate_max = 5, rate_per = 1, max_active = 0, paused = 0 }, o:limit('q', { rate = { 5, 1 } }))
      assert.same({ rate_max = 5, rate_per = 1, max_active = 2, paused = 0 }, o:limit('q', { max_active = 2 }))
      assert.same({ rate_max = 5, rate_per = 0.5, max_active = 2, paused = 0 }, o:limit('q', { rate = { 5, 0.5 } }))
      assert.same({ rate_max = 0, rate_per = 0, max_active = 2, paused = 0 }, o:limit('q', { rate = false }))
      assert.same({ rate_max = 0, rate_per = 0, max_active = 0, paused = 0 }, o:limit('q', { max_active = false }))
      local st = o:stats('q')
      assert.same({ 0, '0', 0 }, { st.rate_max, st.rate_per, st.max_active })
    end)

    it('a rate of N per S starts one job every S/N seconds, across callers, and says when the next may start', function()
      for _ = 1, 6 do enq('q') end
      o:limit('q', { rate = { 4, 1 } })                   -- one every 250 ms
      local t0 = server_ms()
      local a = o:reserve('q', 'w1', 10, 30)
      assert.equal(1, #a.jobs)
      assert.equal('rate', a.held)
      assert.is_true(a.retry_at >= t0 + 249 and a.retry_at <= t0 + 400, tostring(a.retry_at - t0))
      local b = o:reserve('q', 'w2', 10, 30)             -- another worker, at once: nothing
      assert.equal(0, #b.jobs)
      assert.equal('rate', b.held)
      assert.equal(a.retry_at, b.retry_at)
      h.wait_for(function() return server_ms() >= a.retry_at end, 2, 'the next start')
      local c = o:reserve('q', 'w2', 10, 30)
      assert.equal(1, #c.jobs)
      -- GCRA: the next start is 250 ms after this one (a start that came late is not made up for)
      assert.is_true(c.retry_at >= a.retry_at + 250 and c.retry_at <= server_ms() + 250, tostring(c.retry_at - a.retry_at))
    end)

    it('max-active caps the leases held at once; the lease that ends wakes the held workers, once', function()
      for _ = 1, 5 do enq('q') end
      o:limit('q', { max_active = 2 })
      local a = o:reserve('q', 'w1', 10, 30)
      assert.equal(2, #a.jobs)
      assert.equal('max-active', a.held)
      local b = o:reserve('q', 'w2', 10, 30)
      assert.equal(0, #b.jobs)
      assert.equal('max-active', b.held)
      assert.equal('1', stat('q', 'held'))
      local wakes = {}
      local sub = h.redis()
      assert(sub:subscribe('jobrt:{q}:wake', function(_, m) wakes[#wakes + 1] = m end))
      o:complete('q', 'w1', { { id = a.jobs[1].id, attempt = 1, ok = true } })
      h.wait_for(function() return #wakes == 1 end, 2, 'the wake-up for the held worker')
      assert.equal(cjson.null, stat('q', 'held'))
      local c = o:reserve('q', 'w2', 10, 30)
      assert.equal(1, #c.jobs)
      -- release and requeue_expired end leases too
      assert.equal(0, #o:reserve('q', 'w3', 10, 30).jobs)      -- held again
      assert.equal(1, o:release('q', 'w2', { { id = c.jobs[1].id, attempt = 1 } }))
      h.wait_for(function() return #wakes == 2 end, 2, 'the wake-up after a release')
      o:complete('q', 'w1', { { id = a.jobs[2].id, attempt = 1, ok = true } })   -- nobody held: no wake-up
      jobrt_sleep(0.05)
      assert.equal(2, #wakes)
      sub:close()
    end)
  end)

  describe('max-active with nothing ready', function()
    it('is not held when no job is ready now: a retry due later gets its due time, not a wait for a lease to end', function()
      -- the soak found this: with max-active set, a reserve that found nothing ready was
      -- reported held, the worker dropped its due timer and waited for a lease to end, and
      -- with no lease left the retry waited until something else happened
      o:limit('lb', { max_active = 6 })
      local id = enq('lb', 'f', { jobHash = 'h', retries = 1 })
      assert.equal(1, #o:reserve('lb', 'w', 10, 30).jobs)
      o:complete('lb', 'w', { { id = id, attempt = 1, ok = false, reason = 'flaky' } })
      local res = o:reserve('lb', 'w', 10, 30)
      assert.equal(0, #res.jobs)
      assert.is_nil(res.held)
      assert.is_number(res.next_due)
      assert.equal(cjson.null, stat('lb', 'held'))
      -- and when the retry is due, it is handed out
      h.wait_for(function() return server_ms() >= res.next_due end, 5, 'the retry to be due')
      assert.equal(id, o:reserve('lb', 'w', 10, 30).jobs[1].id)
    end)
    it('is held when jobs are ready now but the limit keeps them back', function()
      for _ = 1, 3 do enq('q') end
      o:limit('q', { max_active = 1 })
      local a = o:reserve('q', 'w1', 10, 30)
      assert.same({ 1, 'max-active' }, { #a.jobs, a.held })
      local empty = o:reserve('q', 'w2', 10, 30)
      assert.same({ 0, 'max-active' }, { #empty.jobs, empty.held })
    end)
  end)

  describe('QUEUE priorities', function()
    it('serves higher priorities first, the wait list as priority 0, first in first out among equals', function()
      local a = enq('q')                                -- priority 0
      local b = enq('q', 'f', { priority = 5 })
      local c = enq('q', 'f', { priority = -1 })
      local d = enq('q', 'f', { priority = 5 })
      local e = enq('q', 'f', { priority = 0 })         -- 0 is the wait list
      local f = enq('q', 'f', { priority = 7 })
      local res = o:reserve('q', 'w', 3, 30)
      assert.same({ f, b, d }, ids_of(res))
      res = o:reserve('q', 'w', 10, 30)
      assert.same({ a, e, c }, ids_of(res))
      assert.equal(cjson.null, r:call('HGET', 'jobrt:{q}:job:' .. e, 'priority'))   -- priority 0: none kept
    end)

    it('puts a due QUEUE job with a priority in its place by priority', function()
      local now = server_ms()
      local late = enq('q', 'f', { priority = 1, timestamp = (now + 300) / 1000 })
      local plain = enq('q')
      local high = enq('q', 'f', { priority = 9 })
      h.wait_for(function() return server_ms() > now + 320 end, 2, 'the due time')
      assert.same({ high, late, plain }, ids_of(o:reserve('q', 'w', 10, 30)))
    end)

    it('gives back, retries and deletes a job with a priority in the ready set', function()
      local p = enq('q', 'f', { priority = 3 })
      local plain = enq('q')
      local res = o:reserve('q', 'w', 1, 30)
      assert.same({ p }, ids_of(res))
      assert.equal(1, o:release('q', 'w', { { id = p, attempt = 1 } }))
      assert.equal(1, r:call('ZCARD', 'jobrt:{q}:ready'))
      res = o:reserve('q', 'w', 1, 30)
      assert.same({ p }, ids_of(res))
      o:complete('q', 'w', { { id = p, attempt = 2, ok = false, reason = 'x' } })
      assert.equal(1, o:retry_failed('q'))
      assert.equal(1, r:call('ZCARD', 'jobrt:{q}:ready'))
      assert.is_true(o:delete('q', p))
      assert.equal(0, r:call('ZCARD', 'jobrt:{q}:ready'))
      assert.same({ plain }, ids_of(o:reserve('q', 'w', 10, 30)))
    end)

    it('refuses a priority on a DELQUEUE', function()
      local id, err = o:enqueue('dq', 'f', '{}', { priority = 1 })
      assert.is_nil(id)
      assert.equal('enqueue: ARGV[6] priority applies to QUEUE and LBQUEUE only, this queue is DELQUEUE', err)
    end)
  end)

  describe('progress', function()
    it('stores and publishes the value for the attempt that holds the lease, and refuses the others', function()
      local id = enq('q')
      o:reserve('q', 'w', 1, 30)
      local got = {}
      local sub = h.redis()
      assert(sub:subscribe('jobrt:{q}:progress', function(_, m) got[#got + 1] = m end))
      assert.is_true(o:progress('q', 'w', id, 1, '42'))
      assert.is_true(o:progress('q', 'w', id, 1, '{"step":"b"}'))
      assert.is_false(o:progress('q', 'w', id, 2, '50'))           -- another attempt
      assert.is_false(o:progress('q', 'other', id, 1, '50'))       -- another worker
      h.wait_for(function() return #got == 2 end, 2, 'two progress messages')
      assert.same({ 'jobrt:{q}:job:' .. id .. '\n42', 'jobrt:{q}:job:' .. id .. '\n{"step":"b"}' }, got)
      assert.equal('{"step":"b"}', o:get('q', id).progress)
      local _, err = o:progress('q', 'w', id, 1, '101')
      assert.equal("progress: ARGV[5] value must be from 0 to 100 when it is a number, got '101'", err)
      _, err = o:progress('q', 'w', id, 1, '"text"')
      assert.equal([[progress: ARGV[5] value must be a number from 0 to 100 or a JSON object or array, got '"text"']], err)
      o:delete('q', id)                                  -- cancelled while it runs: no more reports
      assert.is_false(o:progress('q', 'w', id, 1, '60'))
      sub:close()
    end)
  end)

  describe('postpone', function()
    it('puts the job back for a while without counting a failure; the next attempt runs it', function()
      local id = enq('q', 'f', { retries = 0 })
      o:reserve('q', 'w', 1, 30)
      local t0 = server_ms()
      assert.equal(1, o:postpone('q', 'w', { { id = id, attempt = 1, delay = 0.3, reason = 'API says 429' } }))
      local rec = o:get('q', id)
      assert.same({ 'pending', 'API says 429', '1' }, { rec.state, rec['error-reason'], rec.attempts })
      assert.is_nil(rec.failures)
      assert.equal(0, #o:reserve('q', 'w', 1, 30).jobs)
      assert.equal(0, o:stats('q').executing)
      assert.equal(1, o:stats('q').postponed)
      h.wait_for(function() return server_ms() >= t0 + 310 end, 2, 'the delay')
      local res = o:reserve('q', 'w', 1, 30)
      assert.same({ id }, ids_of(res))
      assert.equal(2, res.jobs[1].attempt)
      assert.equal(0, o:postpone('q', 'w', { { id = id, attempt = 1, delay = 1 } }))   -- not that attempt's lease
    end)

    it('keeps an LBQUEUE jobHash held meanwhile, as a retry does', function()
      local a = enq('lb', 'f', { jobHash = 'h' })
      o:reserve('lb', 'w', 1, 30)
      o:postpone('lb', 'w', { { id = a, attempt = 1, delay = 60 } })
      local b, existed = enq('lb', 'f', { jobHash = 'h' })
      assert.is_false(existed)
      assert.equal(b, r:call('HGET', 'jobrt:{lb}:lb:parked', 'h'))
      assert.equal(a, r:call('HGET', 'jobrt:{lb}:lb:running', 'h'))
    end)
  end)

  describe('drain', function()
    it('removes waiting, delayed, backoff and parked jobs with what they claimed; running and failed ones stay', function()
      local run = enq('lb', 'f', { jobHash = 'h' })
      local retry = enq('lb', 'f', { jobHash = 'k', retries = 3 })
      assert.same({ run, retry }, ids_of(o:reserve('lb', 'w', 2, 30)))
      o:complete('lb', 'w', { { id = retry, attempt = 1, ok = false, reason = 'x' } })   -- in backoff
      local parked = enq('lb', 'f', { jobHash = 'h' })
      local waiting = enq('lb', 'f', { jobHash = 'g' })
      assert.equal(3, o:drain('lb'))
      for _, id in ipairs({ parked, waiting, retry }) do assert.is_nil(o:get('lb', id)) end
      assert.equal('executing', o:get('lb', run).state)
      assert.equal(0, r:call('HLEN', 'jobrt:{lb}:lb:entry') + r:call('HLEN', 'jobrt:{lb}:lb:parked'))
      assert.same({ 'h', run }, r:call('HGETALL', 'jobrt:{lb}:lb:running'))   -- k was freed
      -- DELQUEUE identities and QUEUE lists
      local d1 = enq('dq', 'f', { delay = 60, jobHash = 'x' })
      assert.equal(1, o:drain('dq'))
      assert.is_nil(o:get('dq', d1))
      assert.equal(0, r:call('HLEN', 'jobrt:{dq}:dedup'))
      for _ = 1, 2500 do enq('q') end
      enq('q', 'f', { priority = 2 })
      assert.equal(2501, o:drain('q'))
      assert.equal(0, r:call('LLEN', 'jobrt:{q}:wait') + r:call('ZCARD', 'jobrt:{q}:ready'))
    end)
  end)

  describe('cron entries', function()
    local function entry(over)
      local e = { job = 'tick', args = '{}', schedule = '@every 1s', tz = 'UTC', id_prefix = 'cron:n:',
                  missed = 'once', source = 'cli' }
      for k, v in pairs(over or {}) do e[k] = v end
      return e
    end

    it('creates, keeps, replaces and deletes an entry; its ticks start when it is made', function()
      local t0 = server_ms()
      assert.equal(1, o:cron_set('q', 'n', entry()))
      local last = tonumber(stat('q', 'cron-last:n'))
      assert.is_true(last >= t0 and last <= t0 + 100)
      assert.equal(0, o:cron_set('q', 'n', entry()))                               -- unchanged
      assert.equal(3, o:cron_set('q', 'n', entry({ args = '{"a":1}' })))          -- same schedule
      assert.equal(last, tonumber(stat('q', 'cron-last:n')))
      r:call('HSET', 'jobrt:{q}:stats', 'cron-last:n', '1000')
      assert.equal(2, o:cron_set('q', 'n', entry({ schedule = '@every 2s', args = '{"a":1}' })))  -- starts again now
      assert.is_true(tonumber(stat('q', 'cron-last:n')) >= t0)
      local e = o:cron_entries('q')
      assert.equal('@every 2s', e.n.entry.schedule)
      assert.equal('{"a":1}', e.n.entry.args)
      assert.is_false(o:cron_delete('q', 'n', 'file'))                            -- not a file entry
      assert.is_true(o:cron_delete('q', 'n'))
      assert.same({}, o:cron_entries('q'))
      assert.equal(cjson.null, stat('q', 'cron-last:n'))
    end)

    it('keeps a file entry and a cli entry of one name apart', function()
      assert.equal(1, o:cron_set('q', 'n', entry({ source = 'file', file = 'jobs/a.lua' })))
      local res, err = o:cron_set('q', 'n', entry())
      assert.is_nil(res)
      assert.equal("cron_set: cron entry 'n' of queue 'q' is declared in a job file (jobs/a.lua): change it there", err)
    end)

    it('enqueues each tick once: again is taken, a deleted entry is gone, a late tick can be skipped', function()
      o:cron_set('q', 'n', entry())
      local tick = server_ms() + 1000
      local id, v = o:enqueue_tick('q', 'n', tick, nil, 'tick', '{}', { id = 'cron:n:' .. tick })
      assert.same({ 'cron:n:' .. tick, 'new' }, { id, v })
      -- the same tick again (another worker), also after the job finished: no second job
      o:delete('q', id)
      id, v = o:enqueue_tick('q', 'n', tick, nil, 'tick', '{}', { id = 'cron:n:' .. tick })
      assert.same({ '', 'taken' }, { id, v })
      _, v = o:enqueue_tick('q', 'n', tick - 1000, nil, 'tick', '{}', { id = 'cron:n:old' })
      assert.equal('taken', v)
      assert.equal(0, o:stats('q').pending)
      -- a tick two minutes old, with skip_late 60 s: recorded, no job
      o:cron_set('q', 'm', entry({ id_prefix = 'cron:m:' }))
      r:call('HSET', 'jobrt:{q}:stats', 'cron-last:m', '0')
      _, v = o:enqueue_tick('q', 'm', server_ms() - 120000, 60000, 'tick', '{}', { id = 'cron:m:1' })
      assert.equal('skipped', v)
      assert.equal(0, o:stats('q').pending)
      o:cron_delete('q', 'm')
      _, v = o:enqueue_tick('q', 'm', server_ms() + 5000, nil, 'tick', '{}', { id = 'cron:m:2' })
      assert.equal('gone', v)
      assert.equal(0, o:stats('q').pending)
      assert.equal(1, o:stats('q').crons)
    end)
  end)
end)
