-- A worker held back by max-active waits for the wake-up the next ending lease publishes, and
-- arms no timer meanwhile. Found by `make chaos` with flows in the mix (retries of an LBQUEUE
-- with max-active waited until the limits were cleared), two ways to wait forever:
--   * reserve reported the hold whenever a worker asked for more jobs than the limit's room,
--     even when nothing ready was left (nothing was held back): with no lease left to end, no
--     wake-up ever came, and the due retry was never reserved (includes/flow.lua flow_settle);
--   * the wake-up comes on the subscription connection, the reserve reply on the command
--     connection, so the wake-up can arrive first: the worker must not then hold the queue for
--     a wake-up that has already come (the race is forced by delaying the reply).
-- Real redis-server and in-process workers.
local jobrt = require 'jobrt'
local ops_mod = require 'jobrt.ops'
local worker_mod = require 'jobrt.worker'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

describe("a worker held by max-active", function()
  local r, o, w
  local inject_for, restore = ws.injector()
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
    assert(o:set_queue_type("HELD", "QUEUE"))
  end)
  after_each(function()
    if w then w:stop(0); w = nil end
    restore()
    r:close()
  end)

  it("is not held when fewer jobs were ready than the limit's room: a due retry runs", function()
    assert(o:limit("HELD", { max_active = 3 }))
    local id = ws.enqueue(o, "HELD", "flaky", {}, { retries = 1 })
    w = assert(worker_mod.new{ redis = h.url, concurrency = 10, lease = 5, log_jobs = false, name = "held",
      backoff = 0.2, jobs = { HELD = { flaky = function(args, job)
        if job.attempt == 1 then error("first attempt fails", 0) end
        return "second"
      end } } })
    assert(w:start())
    h.wait_for(function() return ws.state_of(o, "HELD", id) == "finished" end, 5, "the retry to run")
    assert.equal('"second"', o:get("HELD", id)["result-value"])
    -- and at the level of the script (the worker stopped): room for 2 more, nothing ready, a
    -- retry due later
    w:stop(0)
    w = nil
    local other = ws.enqueue(o, "HELD", "flaky", {})
    assert.equal(1, #o:reserve("HELD", "x", 1, 30).jobs)
    r:call("ZADD", "jobrt:{HELD}:due", 9999999999999, "0000000000000000|later")
    local res = assert(o:reserve("HELD", "y", 10, 30))
    assert.same({ 0, nil, 9999999999999 }, { #res.jobs, res.held, res.next_due })
    assert.equal(require('cjson').null, r:call("HGET", "jobrt:{HELD}:stats", "held"))
    assert.truthy(other)
  end)

  it("reserves again when the wake-up it is owed came before the reply that held it", function()
    assert(o:limit("HELD", { max_active = 1 }))
    -- another worker holds the only slot
    local a = ws.enqueue(o, "HELD", "work", {})
    local taken = assert(o:reserve("HELD", "other", 1, 30))
    assert.equal(a, taken.jobs[1].id)
    local b = ws.enqueue(o, "HELD", "work", {})
    w = assert(worker_mod.new{ redis = h.url, concurrency = 2, lease = 5, log_jobs = false, name = "held",
      jobs = { HELD = { work = function() return "done" end } } })
    local forced, released, handled_first = false, false, false
    inject_for("reserve", function(real, self, ...)
      local res, err = real(self, ...)
      if res and res.held == "max-active" and not forced then
        forced = true
        -- the other worker's lease ends now: complete publishes the wake-up this hold is owed,
        -- and the worker handles it before it reads this reply
        -- (the pump cleared q.dirty before this reserve; the wake-up sets it again)
        local q = w.queues.HELD
        assert.is_false(q.dirty)
        assert.equal(1, o:complete("HELD", "other", { { id = a, attempt = 1, ok = true, value = '"a"' } }).completed)
        pcall(h.wait_for, function() return q.dirty end, 5, "the worker to get the wake-up")
        handled_first = q.dirty
        released = true
      end
      return res, err
    end, w)
    assert(w:start())
    -- until the held reply is handed on (forced alone flips before the wake-up has come: on a
    -- busy machine the check below then ran too early)
    h.wait_for(function() return released end, 10, "a reserve held back by max-active")
    assert.is_true(handled_first, "the wake-up was handled first")
    h.wait_for(function() return ws.state_of(o, "HELD", b) == "finished" end, 5, "the waiting job to run")
    assert.equal('"done"', o:get("HELD", b)["result-value"])
  end)
end)
