-- Failover without Sentinel (a managed service moving a name, a replica promoted): READONLY and
-- LOADING make the connection reconnect with backoff instead of retrying the same node, and
-- the log says what happened once per outage, not once per retry.
local jobrt = require 'jobrt'
local h = require 'tests.helpers'

-- Lines of text that match pattern (plain).
local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

local function stat(r, field)
  return tonumber(r:call("INFO", "stats"):match(field .. ":(%d+)"))
end

describe("a connection to a node that cannot serve it", function()
  it("READONLY (a replica): reconnects with backoff, logs once, and goes on when it is promoted", function()
    local p = h.start_redis{ args = { "--repl-diskless-sync-delay", "0" } }
    local rep = h.start_redis{ args = { "--replicaof", "127.0.0.1", tostring(p.port) } }
    local admin = h.redis(rep.url)
    h.wait_for(function() return admin:call("INFO", "replication"):find("master_link_status:up", 1, true) end,
      10, "the replica to sync")
    local conns_before = stat(admin, "total_connections_received")
    -- writes every 20 ms until ten in a row succeed; prints how each call ended
    local w = h.spawn_jobrt({ "-e", [[
      local jobrt = require 'jobrt'
      local r = assert(require('jobrt.redis').connect())
      local seen, ok_in_row, calls = {}, 0, 0
      while ok_in_row < 10 and calls < 1000 do
        calls = calls + 1
        local v, err, code, kind = r:call_timeout(2, "INCR", "ro:n")
        local k = v and "OK" or (code .. (kind and (":" .. kind) or ""))
        seen[k] = (seen[k] or 0) + 1
        ok_in_row = v and ok_in_row + 1 or 0
        if calls == 5 then r:call("PING") end
        jobrt.sleep(0.02)
      end
      for k, n in pairs(seen) do print(k, n) end
    ]] }, { env = { JOBRT_REDIS = rep.url } })
    jobrt.sleep(1.5)                       -- about seventy writes against the replica
    local conns_during = stat(admin, "total_connections_received") - conns_before
    assert(admin:call("REPLICAOF", "NO", "ONE"))
    local code = w:wait()
    local out, err = w:output()
    assert.equal(0, code, err)
    local seen = {}
    for k, n in out:gmatch("(%S+)\t(%d+)") do seen[k] = tonumber(n) end
    assert.is_true((seen["EREDIS:READONLY"] or 0) >= 1, out)
    assert.is_true((seen["ECONN"] or 0) >= 10, out)         -- calls while it waited to reconnect failed at once
    assert.equal(10, seen.OK, out)
    -- reconnects backed off: a handful in 1.5 s, not one per write
    assert.is_true(conns_during >= 2 and conns_during <= 10, "connections during READONLY: " .. conns_during)
    assert.equal(1, count(err, "lost connection to redis at 127%.0%.0%.1:%d+ %(it answered READONLY: it is a replica now %(a failover%?%)%); reconnecting with backoff"), err)
    assert.equal(1, count(err, "reconnected to redis at 127%.0%.0%.1:%d+ after %d+%.%d s"), err)
    assert.equal(2, count(err, "\n"), err)                   -- and nothing else
    admin:close()
    rep:stop()
    p:stop()
  end)

  it("READONLY with a resolver (Sentinel's hook): the connection asks it for the address again", function()
    local p = h.start_redis{ args = { "--repl-diskless-sync-delay", "0" } }
    local rep = h.start_redis{ args = { "--replicaof", "127.0.0.1", tostring(p.port) } }
    local core = require 'jobrt.core.redis'
    local asked = 0
    local function resolver(conn)              -- what jobrt.sentinel does, minus the sentinels
      asked = asked + 1
      jobrt.sleep(0.01)
      conn:_target("127.0.0.1", p.port)
    end
    local r = assert(core.new{ host = "127.0.0.1", port = rep.port, resolver = resolver })
    assert.is_true(r:_connect())              -- a stale address: the replica
    local v, err, code, kind = r:call("SET", "rs:k", "v")
    assert.is_nil(v)
    assert.same({ "EREDIS", "READONLY" }, { code, kind })
    assert.matches("^READONLY ", err)
    h.wait_for(function() return r:call("SET", "rs:k", "v") == "OK" end, 10, "a write on the primary")
    assert.equal(("127.0.0.1:%d"):format(p.port), r:info().addr)
    assert.equal(1, asked)
    r:close()
    rep:stop()
    p:stop()
  end)

  it("LOADING after a restart: waits it out (said once, at info level), old and new connections", function()
    local s = h.start_redis{ aof = true, args = { "--key-load-delay", "150", "--aof-use-rdb-preamble", "no",
                                                 "--appendfsync", "no",
                                                 "--loading-process-events-interval-bytes", "1024" } }
    local r = h.redis(s.url)
    local wg = jobrt.waitgroup()
    for c = 1, 50 do wg:spawn(function() for i = c, 10000, 50 do r:call("SET", "ld:" .. i, i) end end) end
    assert.is_true(wg:wait(60))
    r:close()
    -- a connection made before the restart: writes every 20 ms until 10 in a row succeed
    local script = [[
      local jobrt = require 'jobrt'
      local redis = require 'jobrt.redis'
      local r
      repeat r = redis.connect(); if not r then jobrt.sleep(0.02) end until r
      r:call("SET", "ld:ready:" .. arg[1], "1")
      local seen, ok_in_row, calls = {}, 0, 0
      while ok_in_row < 10 and calls < 2000 do
        calls = calls + 1
        local v, err, code, kind = r:call_timeout(2, "INCR", "ld:n")
        local k = v and "OK" or (code .. (kind and (":" .. kind) or ""))
        seen[k] = (seen[k] or 0) + 1
        ok_in_row = v and ok_in_row + 1 or 0
        jobrt.sleep(0.02)
      end
      for k, n in pairs(seen) do print(k, n) end
    ]]
    local env = { JOBRT_REDIS = s.url }
    local before = h.spawn_jobrt({ "-e", script, "before" }, { env = env })
    local admin = h.redis(s.url)
    h.wait_for(function() return admin:call("GET", "ld:ready:before") == "1" end, 10, "the first client")
    admin:close()
    s:kill()
    -- a connection made while the server is down and then loading: connect() waits for it
    local during = h.spawn_jobrt({ "-e", script, "during" }, { env = env })
    jobrt.sleep(0.2)
    s:restart()                            -- returns once it answers (loading done)
    for name, p in pairs({ before = before, during = during }) do
      local code = p:wait()
      local out, err = p:output()
      assert.equal(0, code, name .. ": " .. err)
      assert.is_true(tonumber(out:match("OK\t(%d+)") or 0) >= 10, out)
      assert.equal(1, count(err, "redis at 127%.0%.0%.1:%d+ is loading its dataset into memory %(replaying its AOF or RDB after a restart%): waiting for it"), name .. ": " .. err)
      assert.matches("info: redis at 127.0.0.1:%d+ is loading", err)
      if name == "before" then
        assert.equal(1, count(err, "warn: lost connection to redis at 127%.0%.0%.1:%d+ %(closed by the server%)"), err)
        assert.equal(1, count(err, "reconnected to redis at 127%.0%.0%.1:%d+ after"), err)
        assert.equal(3, count(err, "\n"), err)
      else
        assert.equal(1, count(err, "info: redis at 127%.0%.0%.1:%d+ is ready after %d+%.%d s"), err)
        assert.equal(2, count(err, "\n"), err)
      end
    end
    s:stop()
  end)

  it("a restart storm logs one line per outage for every connection of a process", function()
    local s = h.start_redis()
    local p = h.spawn_jobrt({ "-e", [[
      local jobrt = require 'jobrt'
      local redis = require 'jobrt.redis'
      local conns = {}
      for i = 1, 8 do conns[i] = assert(redis.connect()) end
      for i = 1, 8 do assert(conns[i]:subscribe("storm", function() end)) end
      conns[1]:call("SET", "storm:ready", "1")
      local ok_in_row = 0
      while ok_in_row < 5 do
        local all = true
        for i = 1, 8 do if not conns[i]:call("PING") then all = false end end
        ok_in_row = all and ok_in_row + 1 or 0
        jobrt.sleep(0.05)
      end
    ]] }, { env = { JOBRT_REDIS = s.url } })
    local admin = h.redis(s.url)
    h.wait_for(function() return admin:call("GET", "storm:ready") == "1" end, 10, "the client")
    admin:close()
    s:kill()
    jobrt.sleep(1.5)                       -- eight connections, sixteen links, retrying with backoff
    s:restart()
    assert.equal(0, (p:wait()))
    local _, err = p:output()
    assert.equal(1, count(err, "lost connection to redis at"), err)
    assert.equal(1, count(err, "reconnected to redis at 127%.0%.0%.1:%d+ after %d+%.%d s"), err)
    s:stop()
  end)
end)
