-- redis+sentinel:// against one primary, one replica and three sentinels on loopback: finding
-- the primary, sentinels that are down or do not know the name, and SENTINEL FAILOVER while a
-- producer enqueues and a worker serves (zero jobs lost; the worker goes on, on the new primary).
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local sentinel = require 'jobrt.sentinel'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'

describe("redis+sentinel://", function()
  local set
  setup(function() set = h.start_sentinel_set{ name = "mymaster" } end)
  teardown(function() set:stop() end)

  it("connects to the primary the sentinels name, checked with ROLE", function()
    local r = assert(redis.connect(set.url))
    local info = r:info()
    assert.equal(("127.0.0.1:%d"):format(set.primary.port), info.addr)
    assert.equal("mymaster", info.label)
    assert.equal("OK", r:call("SET", "s:k", "v"))
    assert.equal("master", r:call("ROLE")[1])
    r:close()
  end)

  it("skips sentinels that do not answer, and asks the one that did first next time", function()
    local url = set.url:gsub("//", "//127.0.0.1:1,")
    local r = assert(redis.connect(url))
    assert.equal(("127.0.0.1:%d"):format(set.primary.port), r:info().addr)
    local t = redis.options_of(r)
    assert.same({ host = "127.0.0.1", port = set.sentinels[1] }, t.sentinels[1])
    assert.same({ host = "127.0.0.1", port = 1 }, t.sentinels[2])
    r:close()
  end)

  it("a name the sentinels do not know is EINVAL, at once", function()
    local url = set.url:gsub("/mymaster$", "/nosuchmaster")
    local t0 = jobrt.monotime()
    local r, err, code = redis.connect(url)
    assert.is_nil(r)
    assert.equal("EINVAL", code)
    assert.matches("^EINVAL: cannot find the primary 'nosuchmaster': sentinel 127.0.0.1:%d+: it knows no primary named 'nosuchmaster' %(check the name in the address: redis%+sentinel://HOST:PORT/MASTERNAME%)", err)
    assert.is_true(jobrt.monotime() - t0 < 2)
  end)

  it("no sentinel answering is ECONNREFUSED naming each, at once", function()
    local r, err, code = redis.connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster")
    assert.is_nil(r)
    assert.equal("ECONNREFUSED", code)
    assert.equal("ECONNREFUSED: cannot find the primary 'mymaster': sentinel 127.0.0.1:1: Connection refused; sentinel 127.0.0.1:2: Connection refused", err)
  end)

  it("after a failover, a connection not told by +switch-master finds the new primary, subscriptions too", function()
    -- Sentinel demotes the old primary and kills its clients (CLIENT KILL in the same MULTI),
    -- so a connection learns it by losing its link (or by READONLY, should a write come
    -- first); either way it asks the sentinels again when it reconnects
    local r = assert(redis.connect(set.url))
    assert.is_true(sentinel.unwatch(r))
    local resubscribed, msgs = 0, {}
    assert(r:subscribe("s:ch", function(_, m)
      if m then msgs[#msgs + 1] = m else resubscribed = resubscribed + 1 end
    end))
    local old = r:info().addr
    local new = set:failover()
    local newaddr = ("127.0.0.1:%d"):format(new.port)
    assert.are_not.equal(old, newaddr)
    local oldsrv = h.redis("redis://" .. old)
    h.wait_for(function()
      local role = oldsrv:call("ROLE")          -- nil while its own link was just killed
      return role and role[1] == "slave"
    end, 20, "the old primary to be demoted")
    oldsrv:close()
    h.wait_for(function()
      return r:call("SET", "s:after", "1") == "OK" and r:info().addr == newaddr
    end, 20, "a write to succeed on the new primary")
    h.wait_for(function() return resubscribed >= 1 end, 10, "the subscription to move")
    local pub = h.redis("redis://" .. newaddr)
    h.wait_for(function() return pub:call("PUBLISH", "s:ch", "on new") >= 1 end, 10, "the subscriber on the new primary")
    h.wait_for(function() return msgs[#msgs] == "on new" end, 5, "the message")
    pub:close()
    r:close()
  end)
end)

describe("SENTINEL FAILOVER while a producer enqueues and a worker serves", function()
  local set, dir
  setup(function()
    set = h.start_sentinel_set{ name = "jobs" }
    dir = h.tmpdir()
    local f = assert(io.open(dir .. "/s.lua", "w"))
    f:write("return { SQ = { work = function(args, job) return { n = args.n, pid = require('jobrt').pid() } end } }\n")
    f:close()
  end)
  teardown(function()
    set:stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("loses no job, and the same worker goes on on the new primary", function()
    local code, _, err = h.run_jobrt({ "queue-type", "SQ", "QUEUE", "--redis", set.url })
    assert.equal(0, code, err)
    local w = h.spawn_jobrt({ "work", dir, "--redis", set.url, "--lease", "2", "--log-level", "info" })
    local r = assert(redis.connect(set.url))
    h.wait_for(function() return r:call("ZCARD", "jobrt:{workers}") == 1 end, 10, "the worker")
    local o = assert(ops_mod.new(r))
    -- the producer: an enqueue counts once WAIT says a replica has it (replication is
    -- asynchronous: a write the old primary took just before it was demoted is gone)
    local N, produced = 150, 0
    local producer = jobrt.spawn(function()
      for n = 1, N do
        while true do
          local id = o:enqueue("SQ", "work", ('{"n":%d}'):format(n), { id = "s" .. n })
          if id and (r:call("WAIT", 1, 1000) or 0) >= 1 then break end
          jobrt.sleep(0.02)
        end
        produced = n
        jobrt.sleep(0.01)
      end
    end)
    h.wait_for(function() return produced >= 40 end, 20, "the first jobs")
    local old = set:primary_port()
    local new = set:failover()
    assert.are_not.equal(old, new.port)
    h.wait_for(function() return produced == N end, 60, "the producer to enqueue every job")
    -- every job finishes, on the new primary, served by the same worker process
    local admin = h.redis(new.url)
    local ao = assert(ops_mod.new(admin))
    local missing
    h.wait_for(function()
      missing = {}
      for n = 1, N do
        local rec = ao:get("SQ", "s" .. n)
        if not (rec and rec.state == "finished" and rec.result == "successful") then missing[#missing + 1] = n end
      end
      return #missing == 0
    end, 60, "every job to finish")
    assert.same({}, missing)
    local last = ao:get("SQ", "s" .. N)
    assert.equal(w:pid(), require('cjson').decode(last["result-value"]).pid)
    assert.is_false(w:exited())
    assert.equal("master", admin:call("ROLE")[1])
    w:kill("SIGTERM")
    assert.equal(0, (w:wait()))
    local _, werr = w:output()
    -- the worker's connection layer said what happened, once per link, not once per retry
    local lost = 0
    for _ in werr:gmatch("lost connection to redis at") do lost = lost + 1 end
    assert.is_true(lost <= 1, werr)
    jobrt.cancel(producer)
    admin:close()
    r:close()
  end)
end)
