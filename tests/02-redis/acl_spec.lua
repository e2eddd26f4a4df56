-- A worker, the Lua client and every jobrt command under exactly the least ACL the README
-- documents (its `user jobrt on >PASSWORD ...` line is read from README.md, so the two cannot
-- drift apart): everything works, and Redis denies nothing (its ACL LOG stays empty).
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local h = require 'tests.helpers'

-- The rules of the README's ACL line, with the password put in.
local function readme_acl(password)
  local f = assert(io.open(h.root .. "/README.md"))
  local text = f:read("*a")
  f:close()
  local line = text:match("\nuser jobrt (on >PASSWORD [^\n]+)\n")
  assert(line, "README.md has no 'user jobrt on >PASSWORD ...' line")
  local rules = {}
  for w in line:gmatch("%S+") do rules[#rules + 1] = w == ">PASSWORD" and (">" .. password) or w end
  return rules
end

describe("the least ACL of the README", function()
  local s, admin, url, dir
  setup(function()
    s = h.start_redis()
    admin = h.redis(s.url)
    assert(admin:call("ACL", "SETUSER", "jobrt", "reset", unpack(readme_acl("acl-s3cret"))))
    assert(admin:call("ACL", "LOG", "RESET"))
    url = s.url:gsub("//", "//jobrt:acl-s3cret@")
    dir = h.tmpdir()
    local f = assert(io.open(dir .. "/acl.lua", "w"))
    f:write([[
local jobrt = require 'jobrt'
return {
  ACLQ = {
    echo = function(args) return args end,
    fail = function() error("failing on purpose") end,
    chain = function(args, job) return job:enqueue("ACLLB", "lb", { from = job.id }, { jobHash = "h1" }) end,
    slow = function() jobrt.sleep(0.3); return "slow done" end,
  },
  ACLLB = { lb = function(args) return args.from end },
  ACLDEL = { later = function() return "on time" end },
}
]])
    f:close()
  end)
  teardown(function()
    admin:close()
    s:stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function run(args, opts)
    opts = opts or {}
    opts.env = { JOBRT_REDIS = url }
    return h.run_jobrt(args, opts)
  end

  it("is enough for the worker, the commands and the Lua client, and Redis denies nothing", function()
    for q, t in pairs({ ACLQ = "QUEUE", ACLLB = "LBQUEUE", ACLDEL = "DELQUEUE" }) do
      local code, _, err = run({ "queue-type", q, t })
      assert.equal(0, code, err)
    end
    local w = h.spawn_jobrt({ "work", dir, "--log-level", "warn", "--lease", "2" }, { env = { JOBRT_REDIS = url } })
    h.wait_for(function() return admin:call("ZCARD", "jobrt:{workers}") == 1 end, 10, "the worker to register")

    -- enqueue and wait for results (the results channel), an LBQUEUE job enqueued by a handler
    local code, out, err = run({ "enqueue", "ACLQ", "echo", '{"n":1}', "--wait" })
    assert.equal(0, code, err)
    assert.equal(1, cjson.decode(out).n)
    code, out, err = run({ "enqueue", "ACLQ", "chain", "{}", "--wait" })
    assert.equal(0, code, err)
    code, out, err = run({ "enqueue", "ACLDEL", "later", "{}", "--in", "0.2", "--hash", "d1", "--wait" })
    assert.equal(0, code, err)
    assert.equal('"on time"\n', out)
    -- a failure, then the failed set: list, retry, delete
    code, out, err = run({ "enqueue", "ACLQ", "fail", "{}", "--retries", "0", "--wait" })
    assert.equal(1, code)
    code, out, err = run({ "failed", "ACLQ", "list" })
    assert.equal(0, code, err)
    assert.matches("failing on purpose", out, 1, true)
    code, _, err = run({ "failed", "ACLQ", "retry" })
    assert.equal(0, code, err)
    h.wait_for(function()
      local c2, o2 = run({ "failed", "ACLQ", "list" })
      return c2 == 0 and o2:find("failing on purpose", 1, true)
    end, 10, "the retried job to fail again")
    code, _, err = run({ "failed", "ACLQ", "delete" })
    assert.equal(0, code, err)
    -- job, delete, stats
    code, out, err = run({ "enqueue", "ACLQ", "echo", '{"n":2}', "--in", "60", "--id", "acl-later" })
    assert.equal(0, code, err)
    code, out, err = run({ "job", "ACLQ", "acl-later" })
    assert.equal(0, code, err)
    assert.matches('"state": "pending"', out, 1, true)
    code, _, err = run({ "delete", "ACLQ", "acl-later" })
    assert.equal(0, code, err)
    code, out, err = run({ "stats" })
    assert.equal(0, code, err)
    assert.matches("ACLQ", out, 1, true)
    -- the Lua client: run (subscribes to results), stats, getJob
    code, out, err = run({ "-e", [[
      local jobrt = require 'jobrt'
      local q = jobrt.connect()
      local r = q:run("ACLQ", "echo", { n = 3 }, { wait = 10 })
      local st = q:stats("ACLQ")
      local id = q:enqueueJob("ACLQ", "slow", {})
      jobrt.sleep(0.05)
      local job = q:getJob("ACLQ", id)
      print(r.n, type(st), job and job.state)
      q:close()
    ]] })
    assert.equal(0, code, err)
    assert.matches("^3\ttable\t%a+\n$", out)
    -- a flow (ids made with INCRBY, news carried between queues), its tree, a parent deleted
    code, out, err = run({ "enqueue", "ACLQ", "echo", '{"n":4}', "--flow", "-", "--wait" },
      { stdin = '[{"queue":"ACLDEL","job":"later"},{"queue":"ACLQ","job":"echo","args":{"n":5}}]' })
    assert.equal(0, code, err)
    assert.matches('"n":4', out, 1, true)
    code, out, err = run({ "enqueue", "--flow", "-" },
      { stdin = '{"queue":"ACLQ","job":"echo","opts":{"id":"acl-flow"},"children":[{"queue":"ACLDEL","job":"later","opts":{"delay":60}}]}' })
    assert.equal(0, code, err)
    code, out, err = run({ "job", "ACLQ", "acl-flow" })
    assert.equal(0, code, err)
    assert.matches('"child-jobs"', out, 1, true)
    code, _, err = run({ "delete", "ACLQ", "acl-flow" })
    assert.equal(0, code, err)
    -- the scheduling and maintenance commands
    for _, a in ipairs({ { "pause", "ACLQ" }, { "resume", "ACLQ" }, { "limit", "ACLQ", "--max-active", "5" },
                         { "limit", "ACLQ" }, { "limit", "ACLQ", "--clear" }, { "queues" },
                         { "cron", "add", "acl-tick", "ACLQ", "echo", "0 0 1 1 *" }, { "cron", "list" },
                         { "cron", "delete", "acl-tick" }, { "drain", "ACLDEL" },
                         { "obliterate", "ACLDEL", "--force" }, { "health" } }) do
      code, out, err = run(a)
      assert.equal(0, code, table.concat(a, " ") .. ": " .. err)
    end
    -- a graceful stop deregisters the worker
    w:kill("SIGTERM")
    assert.equal(0, (w:wait()))
    local _, werr = w:output()
    assert.is_nil(werr:find("NOPERM", 1, true), werr)
    assert.equal(0, admin:call("ZCARD", "jobrt:{workers}"))
    -- Redis denied nothing to the jobrt user
    local log = admin:call("ACL", "LOG")
    local denied = {}
    for _, e in ipairs(log) do
      local t = {}
      for i = 1, #e, 2 do t[e[i]] = e[i + 1] end
      denied[#denied + 1] = ("%s %s (%s, user %s)"):format(t.reason, t.object, t.context, t.username)
    end
    assert.same({}, denied)
  end)

  it("without one of its rules, the worker says which permission is missing", function()
    assert(admin:call("ACL", "SETUSER", "jobrt", "-evalsha"))
    local code, _, err = run({ "enqueue", "ACLQ", "echo", "{}" })
    assert.equal(1, code)
    assert.matches("NOPERM", err, 1, true)
    assert.matches("evalsha", err, 1, true)
    assert(admin:call("ACL", "SETUSER", "jobrt", "+evalsha"))
  end)
end)
