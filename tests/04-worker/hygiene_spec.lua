-- Order, hygiene and limits through the worker (issue 9): wake-ups after outages, handler time
-- limits, nested coroutines, and what a client says when no worker serves a queue. Real
-- redis-server; where a fault must happen at an exact moment it is injected into this process's
-- own worker (its calls still go to the real Redis).
local jobrt = require 'jobrt'
local ops_mod = require 'jobrt.ops'
local worker_mod = require 'jobrt.worker'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

describe("order, hygiene and limits", function()
  local r, o
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
  end)
  after_each(function() r:close() end)

  describe("an in-process worker", function()
    local w
    local inject_for, restore = ws.injector()
    after_each(function()
      if w then w:stop(0); w = nil end
      restore()
    end)

    it("tries again at once when a wake-up comes during its error backoff (Redis is back)", function()
      assert(o:set_queue_type("OUT", "QUEUE"))
      local started = {}
      w = assert(worker_mod.new{ redis = h.url, name = "spec", log_jobs = false,
        jobs = { OUT = { f = function() started[#started + 1] = jobrt.monotime(); return true end } } })
      -- Redis "down" for the worker's reserve: every call fails until we say so; the gaps
      -- between its tries grow to the longest backoff
      local down, tries, poked_at = true, {}, nil
      inject_for("reserve", function(real, self, ...)
        tries[#tries + 1] = jobrt.monotime()
        if down then return nil, "ECONN: injected: Redis is down" end
        return real(self, ...)
      end, w)
      assert(w:start())
      local q = w.queues.OUT
      h.wait_for(function() return #tries >= 2 and tries[#tries] - tries[#tries - 1] >= 1.5 end, 20,
        "the worker's tries to back off to about 2 s")
      -- right after a failed try (its next is about 2 s away) Redis comes back, and the
      -- restored subscription wakes the worker (the message a resubscribe delivers)
      local n = #tries
      h.wait_for(function() return #tries > n end, 5, "one more failed try")
      assert(o:enqueue("OUT", "f", "{}", {}))
      down = false
      poked_at = jobrt.monotime()
      w:poke(q, "resubscribed")
      h.wait_for(function() return #started == 1 end, 5, "the job")
      assert.is_true(started[1] - poked_at < 0.5, ("the job started %.2fs after the wake-up"):format(started[1] - poked_at))
    end)
  end)
end)
