-- The example job definitions in jobs/ (what `make run` serves) do what their comments say.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local h = require 'tests.helpers'

describe("the examples in jobs/", function()

  local q, p
  setup(function()
    h.flush()                     -- a clean Redis: the job files declare their queue types
    q = jobrt.connect(h.url)
    p = h.spawn_jobrt({ "jobs/", "--redis", h.url })
    h.wait_for(function() return #q:workers() == 1 end, 10, "the example worker")
  end)
  teardown(function()
    p:kill("SIGTERM")
    assert.equal(0, p:wait())
    q:close()
  end)

  it("declare their queue types, which the worker stores on a clean Redis", function()
    assert.equal("QUEUE", q:queueType("ECHO"))
    assert.equal("LBQUEUE", q:queueType("INDEX"))
    assert.equal("DELQUEUE", q:queueType("MAIL"))
  end)

  it("ECHO.echo returns its arguments", function()
    assert.same({ hello = "world" }, q:run("ECHO", "echo", { hello = "world" }, { wait = 5 }))
  end)

  it("ECHO.sum adds numbers and fails clearly on a bad one", function()
    assert.same({ sum = 6 }, q:run("ECHO", "sum", { numbers = { 1, 2, 3 } }, { wait = 5 }))
    local ok, err = pcall(q.run, q, "ECHO", "sum", { numbers = { 1, "x" } }, { wait = 5 })
    assert.is_false(ok)
    assert.matches("sum: numbers[2] is not a number", err, 1, true)
  end)

  it("INDEX.user records the reindex in Redis", function()
    local res = q:run("INDEX", "user", { user = 7 }, { jobHash = "user-7", wait = 5 })
    assert.same({ user = 7, key = "example:index:user:7" }, res)
    local r = h.redis()
    assert.is_truthy(tonumber(r:call("HGET", "example:index:user:7", "indexed-at")))
    r:close()
  end)

  it("BOOK.assemble runs after its PAGES children and reads their results", function()
    assert.equal("QUEUE", q:queueType("BOOK"))
    local id = q:enqueueFlow{ queue = "BOOK", job = "assemble", args = { title = "T" }, children = {
      { queue = "PAGES", job = "render", args = { page = 1, text = "one two three" } },
      { queue = "PAGES", job = "render", args = { page = 2, text = "four" } },
      { queue = "PAGES", job = "render", args = { page = "x" }, ignoreFailure = true } } }
    local book = q:waitJob("BOOK", id, 10)
    assert.same({ title = "T", pages = { 1, 2 }, words = 4 }, { title = book.title, pages = book.pages, words = book.words })
    assert.equal(1, #book.missing)
    assert.matches(": render: args.page must be a page number$", book.missing[1])
  end)

  it("MAIL.welcome runs after its delay and can be cancelled by id before", function()
    local t0 = jobrt.now()
    q:enqueueJob("MAIL", "welcome", { user = 42 }, { delay = 0.3, id = "welcome-42" })
    q:enqueueJob("MAIL", "welcome", { user = 43 }, { delay = 0.3, id = "welcome-43" })
    assert.is_true(q:deleteJob("MAIL", "welcome-43"))
    local rec = h.wait_for(function()
      local j = q:getJob("MAIL", "welcome-42")
      return j and j.state == "finished" and j
    end, 5, "the welcome mail")
    assert.equal("successful", rec.result)
    local at = cjson.decode(rec["result-value"]).at
    assert.is_true(at >= t0 + 0.3 - 0.002, ("ran at +%.4fs"):format(at - t0))   -- due times are kept in ms
    local r = h.redis()
    local outbox = r:call("LRANGE", "example:mail:outbox", 0, -1)
    r:close()
    assert.equal(1, #outbox)
    assert.matches("^to user 42: welcome!", outbox[1])
    assert.is_nil(q:getJob("MAIL", "welcome-43"))
  end)
end)

describe("make run (tools/make_run.lua)", function()
  it("serves jobs/ on a clean Redis (the job files declare the types) and stops on SIGTERM", function()
    h.flush()
    local p = h.spawn_jobrt({ "run", "tools/make_run.lua", "jobs/" },
      { env = { JOBRT_REDIS = h.url, JOBRT_WEB_LISTEN = "127.0.0.1:0" } })
    local q = jobrt.connect(h.url)
    h.wait_for(function() return #q:workers() == 1 end, 10, "the make run worker")
    assert.equal("QUEUE", q:queueType("ECHO"))
    assert.equal("LBQUEUE", q:queueType("INDEX"))
    assert.equal("DELQUEUE", q:queueType("MAIL"))
    assert.same({ hi = 1 }, q:run("ECHO", "echo", { hi = 1 }, { wait = 5 }))
    -- jobrt web runs beside the worker and says where
    local port = tonumber(select(2, p:output()):match("make run: dashboard and API at http://127%.0%.0%.1:(%d+)/"))
    assert.is_number(port)
    local st, _, _, body = require('tests.07-web.webclient').request(port, "GET", "/api/queues/ECHO")
    assert.equal(200, st)
    assert.equal(1, body.completed)
    q:close()
    p:kill("SIGTERM")
    assert.equal(0, p:wait())
    local _, err = p:output()
    assert.matches("queue ECHO: type QUEUE stored in RESERVED:QCONFIG (declared by _type in jobs/echo.lua:6)", err, 1, true)
  end)

  it("watches the job files: a file added while it runs is served", function()
    h.flush()
    local dir = h.tmpdir()
    assert(os.execute("cp -r jobs '" .. dir .. "/'") == 0)
    local p = h.spawn_jobrt({ "run", "tools/make_run.lua", dir .. "/jobs" },
      { env = { JOBRT_REDIS = h.url, JOBRT_WEB_LISTEN = "off" } })
    local q = jobrt.connect(h.url)
    h.wait_for(function() return #q:workers() == 1 end, 10, "the make run worker")
    local f = assert(io.open(dir .. "/jobs/extra.lua", "w"))
    f:write("return { EXTRA = { _type = 'QUEUE', twice = function(a) return a.n * 2 end } }\n")
    f:close()
    h.wait_for(function()
      local w = q:workers()[1]
      return w and w.queues:find("EXTRA", 1, true)
    end, 10, "the new file to be served")
    assert.equal(42, q:run("EXTRA", "twice", { n = 21 }, { wait = 5 }))
    q:close()
    p:kill("SIGTERM")
    assert.equal(0, p:wait())
    os.execute("rm -rf '" .. dir .. "'")
    local _, err = p:output()
    assert.matches("edits are served as soon as they are saved", err, 1, true)
    assert.matches("reloaded job files: serving BOOK, ECHO, EXTRA, INDEX, MAIL, PAGES; new: EXTRA", err, 1, true)
  end)
end)
