-- Queue maintenance end to end: jobrt queues, jobrt drain and jobrt obliterate, counting every
-- key of the server before and after.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

describe("queue maintenance", function()
  local r, o
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
  end)
  after_each(function() r:close() end)

  local function keys()
    local k = r:call("KEYS", "*")
    table.sort(k)
    return k
  end
  local function enq(q, opts) return assert(o:enqueue(q, "f", "{}", opts or {})) end

  -- Queue M (LBQUEUE) with a job in every state, settings, a cron entry and metrics; queue N
  -- (QUEUE) beside it. Returns the ids by state.
  local function populate()
    assert(o:set_queue_type("M", "LBQUEUE"))
    assert(o:set_queue_type("N", "QUEUE"))
    local ids = {}
    ids.running = enq("M", { jobHash = "a" })
    ids.done = enq("M", { jobHash = "b" })
    ids.bad = enq("M", { jobHash = "c" })
    ids.retry = enq("M", { jobHash = "d", retries = 5 })
    local res = o:reserve("M", "w1", 4, 60)
    assert.equal(4, #res.jobs)
    o:complete("M", "w1", { { id = ids.done, attempt = 1, ok = true },
                             { id = ids.bad, attempt = 1, ok = false, reason = "x" },
                             { id = ids.retry, attempt = 1, ok = false, reason = "y" } })
    ids.parked = enq("M", { jobHash = "a" })
    ids.waiting = enq("M", { jobHash = "e" })
    ids.other = enq("M", { jobHash = "f", priority = 9 })
    assert.is_true(o:pause("M"))
    o:limit("M", { rate = { 10, 1 }, max_active = 3 })
    assert.equal(1, o:cron_set("M", "nightly", { job = "f", args = "{}", schedule = "0 3 * * *", tz = "UTC",
      id_prefix = "cron:nightly:", missed = "once", source = "cli" }))
    r:call("HINCRBY", "jobrt:{M}:metrics", "count", 3)
    r:call("HINCRBY", "jobrt:{M}:metrics:29000000", "completed", 1)
    ids.n1 = enq("N")
    enq("N", { delay = 60 })
    return ids
  end

  it("jobrt queues lists every queue with its type, counts, pause, limits and crons", function()
    populate()
    local code, out = h.run_jobrt({ "queues" })
    assert.equal(0, code)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(3, #lines)
    assert.matches("^QUEUE +TYPE +PENDING +DELAYED +PARKED +EXECUTING +FAILED +COMPLETED +PAUSED +RATE +ACTIVE +CRONS$", lines[1])
    assert.matches("^M +LBQUEUE +2 +1 +1 +1 +1 +1 +yes +10/1s +3 +1$", lines[2])
    assert.matches("^N +QUEUE +1 +1 +0 +0 +0 +0 +no +%- +%- +0$", lines[3])
    local _, js = h.run_jobrt({ "queues", "--json" })
    local list = cjson.decode(js)
    assert.same({ "M", 1, 10, 1, 3, 1 }, { list[1].name, list[1].paused, list[1].rate_max, list[1].rate_per,
      list[1].max_active, list[1].crons })
  end)

  it("jobrt drain removes the waiting and delayed jobs and leaves exactly the other keys", function()
    local ids = populate()
    local before = keys()
    local code, out = h.run_jobrt({ "drain", "M" })
    assert.equal(0, code)
    assert.equal("drained queue 'M': removed 4 waiting or delayed jobs\n", out)
    -- gone: the records of the waiting (2), parked and retrying jobs, and the structures that held
    -- only them: ready set, due set, lb:entry, lb:parked
    local gone = {}
    for _, id in ipairs({ ids.parked, ids.waiting, ids.other, ids.retry }) do gone["jobrt:{M}:job:" .. id] = true end
    for _, k in ipairs({ "ready", "due", "lb:entry", "lb:parked" }) do gone["jobrt:{M}:" .. k] = true end
    local want = {}
    for _, k in ipairs(before) do if not gone[k] then want[#want + 1] = k end end
    assert.same(want, keys())
    local left = { "jobrt:{M}:active", "jobrt:{M}:failed", "jobrt:{M}:job:" .. ids.bad, "jobrt:{M}:job:" .. ids.done,
      "jobrt:{M}:job:" .. ids.running, "jobrt:{M}:lb:running", "jobrt:{M}:metrics", "jobrt:{M}:metrics:29000000",
      "jobrt:{M}:seq", "jobrt:{M}:stats" }
    table.sort(left)
    local have = r:call("KEYS", "jobrt:{M}:*")
    table.sort(have)
    assert.same(left, have)
    -- what stays works: the running job, its jobHash claim, the settings and the cron entry
    assert.same({ "a", ids.running }, r:call("HGETALL", "jobrt:{M}:lb:running"))
    assert.same({ rate_max = 10, rate_per = 1, max_active = 3, paused = 1 }, o:limit("M"))
    assert.is_truthy(o:cron_entries("M").nightly)
    local st = o:stats("M")
    assert.same({ 0, 0, 0, 1, 1 }, { st.pending, st.delayed, st.parked, st.executing, st.failed })
    assert.equal("jobrt drain: missing QUEUE: usage: jobrt drain QUEUE (see jobrt drain --help)\n",
      select(3, h.run_jobrt({ "drain" })))
  end)

  it("jobrt obliterate deletes every key of the queue and its type, and nothing else", function()
    populate()
    local before = keys()
    local code, out = h.run_jobrt({ "obliterate", "M" })
    assert.equal(0, code)
    local n = 0
    local want = {}
    for _, k in ipairs(before) do
      if k:find("^jobrt:{M}:") then n = n + 1 else want[#want + 1] = k end
    end
    assert.equal(("obliterated queue 'M' (LBQUEUE): deleted %d keys\n"):format(n), out)
    assert.is_true(n >= 15, n)
    assert.same(want, keys())
    assert.same({ "N", "QUEUE" }, r:call("HGETALL", "RESERVED:QCONFIG"))
    assert.equal(1, o:stats("N").pending)
    code, _, out = h.run_jobrt({ "obliterate", "M" })
    assert.equal(1, code)
    assert.equal("jobrt obliterate: there is no queue 'M' (no type in RESERVED:QCONFIG and no keys jobrt:{M}:*)\n", out)
  end)

  it("jobrt obliterate refuses while a live worker serves the queue, unless --force", function()
    populate()
    local dir = ws.jobs_dir{ ["m.lua"] = "return { N = { f = function() end } }" }
    local p = ws.start_worker(dir)
    local code, out, err = h.run_jobrt({ "obliterate", "N" })
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^jobrt obliterate: queue 'N' is served by 1 live worker %(.+%): stop it first, or force it %(%-%-force%)", err)
    assert.equal(1, o:stats("N").delayed)
    code, out = h.run_jobrt({ "obliterate", "N", "--force" })
    assert.equal(0, code)
    assert.matches("^obliterated queue 'N' %(QUEUE%): deleted %d+ keys\n$", out)
    assert.same({}, r:call("KEYS", "jobrt:{N}:*"))
    ws.stop_worker(p)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
