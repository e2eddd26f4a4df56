-- Flow control end to end with real `jobrt work` processes: pause with jobs in flight, a rate
-- limit and max-active held across three workers, job:retry_later, job:progress seen by q:run
-- and by `enqueue --wait` on a terminal, and QUEUE priorities. Times are the server's: the
-- records' executing-created and finished-created (reserve and complete stamp them).
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'
local pty = require 'tests.05-client.pty'

local JOBS = [[
local jobrt = require 'jobrt'
return {
  F = {
    work = function(args, job)
      if args.s then jobrt.sleep(args.s) end
      job.redis:call("RPUSH", "test:ran", job.id)
      return job.id
    end,
    later = { retries = 0, handler = function(args, job)
      if job.attempt == 1 then job:retry_later(args.s or 0.5, "the API said 429") end
      return { attempt = job.attempt }
    end },
    prog = function(args, job)
      job:progress(10)
      jobrt.sleep(0.05)
      job:progress(50)
      jobrt.sleep(0.05)
      job:progress({ step = "done", n = 3 })
      jobrt.sleep(args.s or 0)
      return "ok"
    end,
    badprog = function(args, job) job:progress("half") end,
  },
}
]]

describe("flow control", function()
  local r, o, dir, workers
  setup(function() dir = ws.jobs_dir{ ["f.lua"] = JOBS } end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
    assert(o:set_queue_type("F", "QUEUE"))
    workers = {}
  end)
  after_each(function()
    for _, p in ipairs(workers) do ws.stop_worker(p) end
    r:close()
  end)

  local function start(n, extra)
    for _ = 1, n do workers[#workers + 1] = ws.start_worker(dir, extra or { "--concurrency", "10" }) end
  end
  local function enqueue(fn, args, opts) return ws.enqueue(o, "F", fn, args, opts) end
  local function rec(id) return o:get("F", id) end
  local function all_finished(ids)
    for _, id in ipairs(ids) do
      local x = rec(id)
      if not x or x.state ~= "finished" then return false end
    end
    return true
  end
  local function commands_stat(name)
    local info = r:call("INFO", "commandstats")
    return tonumber(info:match("cmdstat_" .. name .. ":calls=(%d+)")) or 0
  end

  describe("pause and resume", function()
    it("lets the jobs in flight finish, starts nothing more (also after a worker restart), and resume runs the rest", function()
      start(1, { "--concurrency", "5" })
      local first = {}
      for i = 1, 3 do first[i] = enqueue("work", { s = 0.6 }) end
      h.wait_for(function() return o:stats("F").executing == 3 end, 5, "three jobs running")
      local code, out = h.run_jobrt({ "pause", "F" })
      assert.equal(0, code)
      assert.equal("paused queue 'F'\n", out)
      local later = {}
      for i = 1, 3 do later[i] = enqueue("work", {}) end         -- enqueueing still works
      later[4] = enqueue("work", {}, { delay = 0.01 })            -- due at once: bait for a timer
      h.wait_for(function() return all_finished(first) end, 5, "the jobs in flight to finish")
      -- a worker started now, and the running one, leave the queue alone, without polling it
      start(1, { "--concurrency", "5" })
      local evals = commands_stat("evalsha")
      jobrt.sleep(0.7)
      assert.is_true(commands_stat("evalsha") - evals < 20, (commands_stat("evalsha") - evals) .. " script calls while paused")
      for _, id in ipairs(later) do assert.equal("pending", rec(id).state) end
      local st = o:stats("F")
      assert.same({ 4, 0, 1 }, { st.pending, st.executing, st.paused })
      local _, sout = h.run_jobrt({ "stats" })
      assert.matches("paused: F", sout, 1, true)
      code, out = h.run_jobrt({ "resume", "F" })
      assert.equal(0, code)
      assert.equal("resumed queue 'F'\n", out)
      h.wait_for(function() return all_finished(later) end, 5, "the paused jobs after resume")
    end)
  end)

  describe("a rate limit", function()
    it("holds 5 jobs per second across 3 workers, and idle workers wait on a timer, not by polling", function()
      start(3)
      assert.equal(0, (h.run_jobrt({ "limit", "F", "--rate", "5", "--per", "1" })))
      local evals = commands_stat("evalsha")
      local ids = {}
      for i = 1, 20 do ids[i] = enqueue("work", {}) end
      -- (waits on a plain list: o:get would be script calls of our own)
      h.wait_for(function() return r:call("LLEN", "test:ran") == 20 end, 15, "20 jobs at 5 per second")
      local calls = commands_stat("evalsha") - evals
      h.wait_for(function() return all_finished(ids) end, 5, "20 jobs stored")
      local starts, by = {}, {}
      for _, id in ipairs(ids) do
        local x = rec(id)
        starts[#starts + 1] = tonumber(x["executing-created"])
        by[x.worker] = true
      end
      table.sort(starts)
      local nworkers = 0
      for _ in pairs(by) do nworkers = nworkers + 1 end
      assert.is_true(nworkers >= 2, "the jobs ran on " .. nworkers .. " worker(s)")
      -- no window of one second holds more than 5 starts (on the millisecond clock the limiter
      -- keeps; with microseconds, within one job)
      for i = 1, #starts do
        local n, m = 0, 0
        for j = i, #starts do
          if math.floor(starts[j] * 1000) < math.floor(starts[i] * 1000) + 1000 then n = n + 1 end
          if starts[j] < starts[i] + 1 then m = m + 1 end
        end
        assert.is_true(n <= 5, ("%d starts within a second from start %d"):format(n, i))
        assert.is_true(m <= 6, ("%d starts within a second from start %d"):format(m, i))
      end
      local span = starts[#starts] - starts[1]
      assert.is_true(span >= 3.79 and span < 6, "20 starts took " .. span .. " s")
      -- enqueue, reserve and complete: about 20 + 3 x 20 + 20; a worker that polled every 10 ms
      -- would have made hundreds more
      assert.is_true(calls < 150, calls .. " script calls for 20 jobs")
    end)
  end)

  describe("max-active", function()
    it("holds 2 jobs running at once across 3 workers, and uses both", function()
      start(3)
      assert.equal(0, (h.run_jobrt({ "limit", "F", "--max-active", "2" })))
      local ids = {}
      for i = 1, 12 do ids[i] = enqueue("work", { s = 0.25 }) end
      h.wait_for(function() return all_finished(ids) end, 15, "12 jobs two at a time")
      local events = {}
      for _, id in ipairs(ids) do
        local x = rec(id)
        events[#events + 1] = { tonumber(x["executing-created"]), 1 }
        events[#events + 1] = { tonumber(x["finished-created"]), -1 }
      end
      table.sort(events, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[2] < b[2]                         -- an end before a start at the same time
      end)
      local cur, most = 0, 0
      for _, e in ipairs(events) do
        cur = cur + e[2]
        if cur > most then most = cur end
      end
      assert.equal(2, most)
      local _, out = h.run_jobrt({ "limit", "F" })
      assert.equal("queue 'F': at most 2 running at once\n", out)
    end)
  end)

  describe("job:retry_later", function()
    it("puts the job back for the time asked without using up a retry", function()
      start(1)
      local id = enqueue("later", { s = 0.5 })
      h.wait_for(function() local x = rec(id); return x and x.state == "finished" end, 5, "the job")
      local x = rec(id)
      assert.same({ "successful", "2" }, { x.result, x.attempts })
      assert.same({ attempt = 2 }, cjson.decode(x["result-value"]))
      assert.is_nil(x.failures)
      assert.equal(1, o:stats("F").postponed)
      assert.equal(0, o:stats("F").retried)
    end)
  end)

  describe("job:progress", function()
    it("reaches q:run's on_progress as it changes, and stays in the record", function()
      start(1)
      local q = jobrt.connect(h.url)
      local seen = {}
      local v, id = q:run("F", "prog", {}, { on_progress = function(p, pid)
        seen[#seen + 1] = { p, pid }
      end })
      assert.equal("ok", v)
      assert.same({ { 10, id }, { 50, id }, { { step = "done", n = 3 }, id } }, seen)
      assert.same({ step = "done", n = 3 }, cjson.decode(rec(id).progress))
      local code, out = h.run_jobrt({ "job", "F", id })
      assert.equal(0, code)
      assert.same({ step = "done", n = 3 }, cjson.decode(cjson.decode(out).progress))
      -- a value that is neither a percentage nor a table fails the job with the fix
      local ok, err = pcall(q.run, q, "F", "badprog", {})
      assert.is_false(ok)
      assert.matches("job:progress: value must be a number from 0 to 100 or a table (stored as JSON), got string", err, 1, true)
      q:close()
    end)

    it("shows on the terminal of enqueue --wait", function()
      if not pty.available() then return pending("script(1) is not installed") end
      start(1)
      local t = pty.spawn({ "enqueue", "F", "prog", '{"s":0.3}', "--wait", "--redis", h.url })
      t:expect('"ok"', 10)
      local shown = t:output()
      assert.matches("jobrt enqueue: job %d+: 10%%", shown)
      assert.matches("jobrt enqueue: job %d+: 50%%", shown)
      assert.matches('jobrt enqueue: job %d+: {"n":3,"step":"done"}', shown)
      t:close()
    end)
  end)

  describe("QUEUE priorities", function()
    it("runs the highest first and keeps enqueue order among equals", function()
      local order = {}
      for i, p in ipairs({ 0, 5, -2, 5, 0, 9, -2, 5 }) do
        order[i] = enqueue("work", { i = i }, p ~= 0 and { priority = p } or {})
      end
      start(1, { "--concurrency", "1" })
      h.wait_for(function() return r:call("LLEN", "test:ran") == 8 end, 10, "8 jobs")
      local want = { order[6], order[2], order[4], order[8], order[1], order[5], order[3], order[7] }
      assert.same(want, r:call("LRANGE", "test:ran", 0, -1))
      -- the command line takes --priority for a QUEUE, and refuses it for a DELQUEUE
      assert.equal(0, (h.run_jobrt({ "enqueue", "F", "work", "{}", "--priority", "3" })))
      o:set_queue_type("D", "DELQUEUE")
      local code, _, err = h.run_jobrt({ "enqueue", "D", "work", "{}", "--priority", "3" })
      assert.equal(2, code)
      assert.equal("jobrt enqueue: --priority applies to QUEUE and LBQUEUE queues only; queue 'D' is a DELQUEUE (its jobs run at their time)\n", err)
    end)
  end)
end)
