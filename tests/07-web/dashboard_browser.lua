-- The dashboard in a real browser (Debian's chromium, headless, through chromedriver): it loads
-- without console errors, its counts match `jobrt stats`, retrying a failed job from the page
-- makes it run, a <script> in args shows as text, it fits a phone-sized screen, and with a
-- token it asks for it once. Screenshots go to tests/artifacts/. Run by `make test-browser`.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local h = require 'tests.helpers'
local web = require 'tests.07-web.webclient'
local webdriver = require 'tests.07-web.webdriver'

local ARTIFACTS = "tests/artifacts"
local EVIL = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"

describe("the dashboard in chromium", function()
  local w, q, b, worker, jobdir, url
  setup(function()
    os.execute("mkdir -p " .. ARTIFACTS)
    h.flush()
    q = jobrt.connect(h.url)
    q:queueType("ECHO", "QUEUE")
    q:queueType("FLAKY", "QUEUE")
    q:queueType("MAIL", "DELQUEUE")
    -- FLAKY.once fails until the key flaky:fixed exists
    jobdir = h.tmpdir()
    local f = assert(io.open(jobdir .. "/flaky.lua", "w"))
    f:write([[return { FLAKY = { once = function(args, job)
      if job.redis:call("GET", "flaky:fixed") == require('jobrt').null then error("not fixed yet", 0) end
      return { fixed = true, args = args }
    end } }]])
    f:close()
    worker = h.spawn_jobrt({ "jobs/echo.lua", jobdir .. "/flaky.lua", "--redis", h.url, "--concurrency", "4" })
    for i = 1, 5 do q:run("ECHO", "echo", { i = i }, { wait = 10 }) end
    q:enqueueJob("FLAKY", "once", { note = EVIL }, { id = "flaky-1" })
    h.wait_for(function() return q:stats("FLAKY").failed == 1 end, 10, "the flaky job to fail")
    q:enqueueJob("ECHO", "echo", { later = true }, { delay = 3600 })
    q:enqueueJob("MAIL", "welcome", { user = 42 }, { delay = 3600, id = "welcome-42" })
    w = web.start()
    url = "http://127.0.0.1:" .. w.port .. "/"
    b = webdriver.start()
  end)
  teardown(function()
    if b then b:quit() end
    if w then w:stop() end
    if worker then worker:kill("SIGTERM"); worker:wait() end
    os.execute("rm -rf '" .. jobdir .. "'")
    q:close()
  end)

  it("loads without console errors and shows the counts jobrt stats shows", function()
    b:go(url)
    b:until_js("return document.body.dataset.ready === '1' && document.querySelectorAll('#queues tbody tr').length === 3",
      15, "the dashboard to load")
    local code, out = h.run_jobrt({ "stats", "--json", "--redis", h.url })
    assert.equal(0, code)
    local stats = cjson.decode(out).queues
    local shown = b:js([[
      const out = {};
      for (const tr of document.querySelectorAll('#queues tbody tr')) {
        const q = {};
        for (const td of tr.querySelectorAll('td[data-col]')) q[td.dataset.col] = Number(td.textContent);
        q.type = tr.children[1].textContent;
        out[tr.dataset.queue] = q;
      }
      return out;]])
    for name, s in pairs(stats) do
      for _, col in ipairs({ "pending", "delayed", "parked", "executing", "failed", "completed" }) do
        assert.equal(s[col], shown[name][col], name .. " " .. col)
      end
      assert.equal(s.type, shown[name].type)
    end
    assert.equal(5, shown.ECHO.completed)
    assert.equal(1, shown.FLAKY.failed)
    assert.equal(1, b:js("return document.querySelectorAll('#workers tbody tr').length"))
    b:screenshot(ARTIFACTS .. "/dashboard.png")
    assert.same({}, b:console_errors())
  end)

  it("shows a <script> in args as text, in the failed list and on the job's page", function()
    b:js("document.getElementById('failed-queue').value = 'FLAKY'; document.getElementById('failed-queue').dispatchEvent(new Event('change'));")
    local args = b:until_js([[const e = document.querySelector('li.failed-job[data-id="flaky-1"] pre.args');
      return e && e.textContent]], 10, "the failed job in the list")
    assert.truthy(args:find(EVIL, 1, true), args)
    assert.equal("not fixed yet", b:js([[return document.querySelector('li.failed-job[data-id="flaky-1"] .reason').textContent]]))
    b:go(url .. "#/job/FLAKY/flaky-1")
    local shown = b:until_js("const e = document.getElementById('job-args'); return e.textContent !== '' && e.textContent", 10, "the job page")
    assert.truthy(shown:find(EVIL, 1, true), shown)
    assert.equal(1, b:js("return document.querySelectorAll('script').length"))
    assert.equal(0, b:js("return document.querySelectorAll('img').length"))
    assert.is_true(b:js("return window.pwned === undefined"))
    assert.same({}, b:console_errors())
  end)

  it("retrying the failed job from the page makes it run", function()
    local r = h.redis()
    r:call("SET", "flaky:fixed", "1")
    r:close()
    b:go(url)
    b:until_js("return document.body.dataset.ready === '1'", 10, "the dashboard")
    b:js("document.getElementById('failed-queue').value = 'FLAKY'; document.getElementById('failed-queue').dispatchEvent(new Event('change'));")
    b:until_js([[return document.querySelector('li.failed-job[data-id="flaky-1"]') !== null]], 10, "the failed job")
    b:click([[li.failed-job[data-id="flaky-1"] button.retry]])
    h.wait_for(function()
      local rec = q:getJob("FLAKY", "flaky-1")
      return rec and rec.result == "successful"
    end, 15, "the retried job to succeed")
    b:until_js([[const td = document.querySelector('#queues tr[data-queue="FLAKY"] td[data-col="failed"]');
      return td && td.textContent === '0']], 10, "the page to show no failed FLAKY job")
    assert.equal("1", b:js([[return document.querySelector('#queues tr[data-queue="FLAKY"] td[data-col="completed"]').textContent]]))
    assert.same({}, b:console_errors())
  end)

  it("shows a flow as a tree on a job's page", function()
    q:queueType("PAGES", "QUEUE")
    local id, tree = q:enqueueFlow{ queue = "ECHO", job = "echo", opts = { id = "book-<b>" }, children = {
      { queue = "PAGES", job = "render", args = { page = 1 } },
      { queue = "PAGES", job = "render", args = { page = 2 }, children = { { queue = "ECHO", job = "sum", args = { numbers = { 1 } } } } } } }
    local leaf = tree.children[2].children[1].id
    -- the ECHO leaf runs (the worker serves ECHO); the pages wait (nobody serves PAGES)
    h.wait_for(function() local j = q:getJob("ECHO", leaf); return j and j.state == "finished" end, 10, "the leaf to run")
    b:go(url .. "#/job/PAGES/" .. tree.children[2].id)
    b:until_js([[return document.querySelectorAll('#job-flow li').length === 4]], 10, "the flow tree")
    local t = b:js([[return Array.from(document.querySelectorAll('#job-flow li')).map((li) =>
      [li.dataset.job, li.querySelector('.state').textContent, li.classList.contains('here'),
       li.parentElement.closest('li') ? li.parentElement.closest('li').dataset.job : null])]])
    assert.same({ { "ECHO/" .. id, "pending", false, cjson.null },
                  { "PAGES/" .. tree.children[1].id, "pending", false, "ECHO/" .. id },
                  { "PAGES/" .. tree.children[2].id, "pending", true, "ECHO/" .. id },
                  { "ECHO/" .. leaf, "successful", false, "PAGES/" .. tree.children[2].id } }, t)
    assert.equal(0, b:js("return document.querySelectorAll('#job-flow b').length"))   -- the id is text
    -- a job of no flow has no tree
    b:go(url .. "#/job/FLAKY/flaky-1")
    b:until_js("return document.getElementById('job-args').textContent !== ''", 10, "the job page")
    assert.is_true(b:js("return document.getElementById('job-flow-box').hidden"))
    assert.same({}, b:console_errors())
  end)

  it("fits a phone-sized screen", function()
    b:size(390, 844)
    b:go(url)
    b:until_js("return document.body.dataset.ready === '1'", 10, "the dashboard")
    local fit = b:js("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert.is_true(fit[1] <= fit[2], ("page is %d px wide in a %d px window"):format(fit[1], fit[2]))
    b:screenshot(ARTIFACTS .. "/dashboard-phone.png")
    b:size(1280, 900)
    assert.same({}, b:console_errors())
  end)

  it("asks for the token once when one is set, then shows the queues", function()
    local tw = web.start({ "--token", "browser-token-123" })
    finally(function() tw:stop() end)
    b:go("http://127.0.0.1:" .. tw.port .. "/")
    b:until_js("return !document.getElementById('login').hidden", 10, "the token prompt")
    b:type("#login-token", "wrong-token-000")
    b:click("#login-form button")
    b:until_js("return document.getElementById('login-error').textContent === 'wrong token'", 10, "the wrong-token message")
    b:js("document.getElementById('login-token').value = ''")
    b:type("#login-token", "browser-token-123")
    b:click("#login-form button")
    b:until_js("return document.body.dataset.ready === '1' && document.getElementById('login').hidden", 10, "the dashboard after signing in")
    -- the cookie is HttpOnly: the page cannot read it
    assert.equal("", b:js("return document.cookie"))
    b:go("http://127.0.0.1:" .. tw.port .. "/")
    b:until_js("return document.body.dataset.ready === '1'", 10, "the dashboard, signed in")
    assert.is_true(b:js("return document.getElementById('login').hidden"))
    -- the one 401 is the wrong token we typed on purpose
    local errs = b:console_errors()
    for _, e in ipairs(errs) do assert.truthy(e:find("/api/login", 1, true) and e:find("401", 1, true), e) end
  end)
end)
