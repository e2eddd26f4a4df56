-- The Redis connection layer (jobrt.redis): reply types, errors, pipelining, pub/sub,
-- deadlines, and surviving a Redis restart. Addresses: url_spec.lua; broken servers and error
-- codes: protocol_spec.lua; failover: failover_spec.lua.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local cjson = require 'cjson'
local h = require 'tests.helpers'

describe("jobrt.redis", function()
  local r
  before_each(function() h.flush(); r = h.redis() end)
  after_each(function() r:close() end)

  describe("replies", function()
    it("status replies are strings", function()
      assert.equal("OK", r:call("SET", "k", "v"))
      assert.equal("PONG", r:call("PING"))
    end)

    it("integers are numbers", function()
      assert.equal(1, r:call("INCR", "n"))
      assert.equal(-5, r:call("DECRBY", "m", 5))
    end)

    it("bulk strings are strings, binary-safe, numbers as arguments included", function()
      local bin = "a\0b\255\n"
      assert.equal("OK", r:call("SET", "b", bin))
      assert.equal(bin, r:call("GET", "b"))
      assert.equal("OK", r:call("SET", "num", 42.5))
      assert.equal("42.5", r:call("GET", "num"))
    end)

    it("a nil bulk is redis.null, the same value as cjson.null, not nil", function()
      local v = r:call("GET", "missing")
      assert.equal(redis.null, v)
      assert.equal(cjson.null, v)
      assert.is_not_nil(v)
    end)

    it("arrays are tables, nested arrays nest, nil elements are redis.null", function()
      r:call("RPUSH", "l", "a", "b", "c")
      assert.same({ "a", "b", "c" }, r:call("LRANGE", "l", 0, -1))
      assert.same({}, r:call("LRANGE", "none", 0, -1))
      r:call("SET", "x", "1")
      assert.same({ "1", redis.null }, r:call("MGET", "x", "y"))
      local nested = r:call("EVAL", "return {1, {2, 'three'}, {}}", 0)
      assert.same({ 1, { 2, "three" }, {} }, nested)
    end)

    it("an error inside an array is { err = message }", function()
      r:call("MULTI")
      r:call("SET", "s", "str")
      r:call("INCR", "s")
      local res = r:call("EXEC")
      assert.equal("OK", res[1])
      assert.matches("^ERR value is not an integer", res[2].err)
    end)

    it("an error reply is nil, message", function()
      r:call("SET", "s", "x")
      local v, err = r:call("LPUSH", "s", "y")
      assert.is_nil(v)
      assert.equal("WRONGTYPE Operation against a key holding the wrong kind of value", err)
      v, err = r:call("NOSUCHCOMMAND")
      assert.is_nil(v)
      assert.matches("^ERR unknown command 'NOSUCHCOMMAND'", err)
    end)

    it("replies longer than one socket read arrive whole, nested ones too", function()
      local big = ("0123456789"):rep(100000)
      r:call("SET", "big", big)
      assert.equal(big, r:call("GET", "big"))
      local items = {}
      for i = 1, 500 do items[i] = ("item-%04d"):format(i) end
      for _ = 1, 40 do r:call("RPUSH", "l", unpack(items)) end
      local all = r:call("LRANGE", "l", 0, -1)
      assert.equal(20000, #all)
      assert.equal("item-0001", all[1])
      assert.equal("item-0500", all[20000])
      local nested = r:call("EVAL", [[
        local t = {}
        for i = 1, 3000 do t[i] = { i, { tostring(i), redis.error_reply('e' .. i) }, {} } end
        return t]], 0)
      assert.equal(3000, #nested)
      assert.same({ 3000, { "3000", { err = "ERR e3000" } }, {} }, nested[3000])
      assert.same({ 1, { 2, { 3, { 4, { 5, { 6, "deep" } } } } } },
        r:call("EVAL", "return {1, {2, {3, {4, {5, {6, 'deep'}}}}}}", 0))
    end)

    it("arguments that are not strings or numbers raise, naming the argument", function()
      assert.has_error(function() r:call("SET", "k", {}) end,
        "redis: argument 3 of SET must be a string or number, got table")
    end)
  end)

  describe("pipelining", function()
    it("100 coroutines on one connection each get their own reply, in order", function()
      r:call("CONFIG", "RESETSTAT")
      local wg = jobrt.waitgroup()
      local got = {}
      for i = 1, 100 do
        wg:spawn(function()
          r:call("SET", "p" .. i, i)
          got[i] = r:call("GET", "p" .. i)
        end)
      end
      assert.is_true(wg:wait(5))
      for i = 1, 100 do assert.equal(tostring(i), got[i]) end
      local info = r:call("INFO", "commandstats")
      assert.matches("cmdstat_set:calls=100", info, 1, true)
    end)

    it("50 coroutines with large replies in flight at once each get their own", function()
      local function value(i) return ("%02d"):format(i):rep(20000) end
      for i = 1, 50 do r:call("SET", "v" .. i, value(i)) end
      local wg = jobrt.waitgroup()
      local wrong = 0
      for i = 1, 50 do
        wg:spawn(function()
          for _ = 1, 5 do
            if r:call("GET", "v" .. i) ~= value(i) then wrong = wrong + 1 end
          end
        end)
      end
      assert.is_true(wg:wait(10))
      assert.equal(0, wrong)
    end)

    it("2000 calls from 50 coroutines all complete", function()
      local wg = jobrt.waitgroup()
      for _ = 1, 50 do
        wg:spawn(function() for _ = 1, 40 do r:call("INCR", "ctr") end end)
      end
      assert.is_true(wg:wait(10))
      assert.equal("2000", r:call("GET", "ctr"))
    end)
  end)

  describe("deadlines", function()
    it("call_timeout returns ETIMEDOUT, and the connection still works", function()
      local t0 = jobrt.monotime()
      local v, err = r:call_timeout(0.05, "BLPOP", "nothing", 2)
      assert.is_nil(v)
      assert.matches("^ETIMEDOUT: redis at 127%.0%.0%.1:%d+ did not answer BLPOP in time$", err)
      assert.is_true(jobrt.monotime() - t0 < 1)
      -- the late BLPOP reply is dropped; later calls get their own replies
      assert.equal("OK", r:call("SET", "after", "1"))
      r:call("LPUSH", "nothing", "x")   -- ends the pending BLPOP
      assert.equal("1", r:call("GET", "after"))
    end)

    it("a caller resumed by its deadline may close the connection under other waiting calls", function()
      local c = h.redis()
      local other
      jobrt.spawn(function() other = { c:call_timeout(5, "BLPOP", "nothing3", 5) } end)
      local v, err = c:call_timeout(0.05, "BLPOP", "nothing4", 5)
      assert.is_nil(v)
      assert.matches("^ETIMEDOUT", err)
      c:close()
      h.wait_for(function() return other end, 2, "the other call")
      assert.is_nil(other[1])
      assert.matches("^ECLOSED", other[2])
    end)

    it("a connection-wide timeout applies to every call", function()
      local r2 = assert(redis.connect{ url = h.url, timeout = 0.05 })
      local v, err = r2:call("BLPOP", "nothing2", 2)
      assert.is_nil(v)
      assert.matches("^ETIMEDOUT", err)
      r2:close()
    end)
  end)

  describe("pub/sub", function()
    it("subscribe waits until subscribed, then delivers messages to the function", function()
      local got = {}
      assert.is_true(r:subscribe("news", function(ch, msg) got[#got + 1] = ch .. "=" .. msg end))
      local pub = h.redis()
      assert.equal(1, pub:call("PUBLISH", "news", "a"))
      pub:call("PUBLISH", "news", "b")
      h.wait_for(function() return #got == 2 end, 2, "two messages")
      assert.same({ "news=a", "news=b" }, got)
      r:unsubscribe("news")
      h.wait_for(function() return pub:call("PUBLISH", "news", "c") == 0 end, 2, "unsubscribe")
      assert.equal(2, #got)
      pub:close()
    end)

    it("SUBSCRIBE, PSUBSCRIBE and MONITOR through call are refused with the way to do it", function()
      for _, cmd in ipairs({ "SUBSCRIBE", "psubscribe", "MONITOR" }) do
        local ok, err = pcall(r.call, r, cmd, "ch")
        assert.is_false(ok)
        assert.matches(cmd .. " cannot go through call: use conn:subscribe(channel, fn)", err, 1, true)
      end
      assert.equal("PONG", r:call("PING"))
    end)

    it("commands still work on a connection that subscribes", function()
      assert.is_true(r:subscribe("c1", function() end))
      assert.equal("OK", r:call("SET", "k", "v"))
    end)
  end)

  describe("connect", function()
    it("reports a refused connection naming the address", function()
      local c, err = redis.connect("redis://127.0.0.1:1")
      assert.is_nil(c)
      assert.equal("ECONNREFUSED: cannot connect to redis at 127.0.0.1:1: Connection refused", err)
    end)

    it("reports a missing unix socket naming the path", function()
      local c, err = redis.connect("unix:///nonexistent/redis.sock")
      assert.is_nil(c)
      assert.equal("ECONNREFUSED: cannot connect to redis at unix:///nonexistent/redis.sock: No such file or directory", err)
    end)

    it("rejects unknown and mistyped options", function()
      local c, err = redis.connect{ hots = "x" }
      assert.is_nil(c)
      assert.matches("unknown option 'hots'", err, 1, true)
      c, err = redis.connect{ port = "6379" }
      assert.is_nil(c)
      assert.equal("redis.connect: option 'port' must be a number, got string", err)
    end)

    it("selects the database given in the URL", function()
      local r3 = assert(redis.connect(h.url .. "/3"))
      r3:call("SET", "indb3", "yes")
      assert.equal(redis.null, r:call("GET", "indb3"))
      r:call("SELECT", 3)
      assert.equal("yes", r:call("GET", "indb3"))
      r3:call("FLUSHDB")
      r3:close()
    end)

    it("a wrong password is EAUTH with the server's reason", function()
      local c, err = redis.connect(h.url:gsub("//", "//:wrong@"))
      assert.is_nil(c)
      assert.matches("^EAUTH: redis at 127%.0%.0%.1:%d+ refused the connection setup: ", err)
    end)
  end)

  describe("connections reset by the server", function()
    it("calls go on after resets that land while replies are still unread", function()
      -- a reset with data unread makes libuv stop the poll handle itself; the bridge must
      -- poll again, or every later call on that connection waits for ever
      local items = {}
      for i = 1, 3000 do items[i] = "v" .. i end
      r:call("RPUSH", "L", unpack(items))
      local conns = {}
      for n = 1, 4 do conns[n] = assert(redis.connect(h.url)) end
      local stop, total = false, 0
      local wg = jobrt.waitgroup()
      for n = 1, 4 do
        for _ = 1, 30 do
          wg:spawn(function()
            while not stop do
              if conns[n]:call("LRANGE", "L", 0, -1) then total = total + 1 else jobrt.sleep(0.01) end
            end
          end)
        end
      end
      for _ = 1, 6 do
        jobrt.sleep(0.1)
        assert(r:call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
      end
      -- every connection answers again
      for n = 1, 4 do
        h.wait_for(function() return conns[n]:call_timeout(1, "PING") == "PONG" end, 5, "connection " .. n .. " to answer")
      end
      local before = total
      h.wait_for(function() return total > before + 100 end, 5, "the callers to go on")
      stop = true
      assert.is_true(wg:wait(5), "callers stuck on a connection that no longer polls")
      for n = 1, 4 do conns[n]:close() end
    end)
  end)

  describe("close", function()
    it("pending calls end with ECLOSED and later calls fail at once", function()
      local c = h.redis()
      local got
      jobrt.spawn(function() got = { c:call("BLPOP", "never", 5) } end)
      c:close()
      h.wait_for(function() return got end, 2, "the pending call")
      assert.is_nil(got[1])
      assert.matches("^ECLOSED: connection to redis at .- lost before it answered BLPOP", got[2])
      local v, err = c:call("PING")
      assert.is_nil(v)
      assert.matches("^ECLOSED: redis connection to .- is closed$", err)
    end)

    it("a connection collected while its late reply is parsed is closed once the parse ends", function()
      -- The reply comes after the caller gave up and dropped the connection; it is
      -- built on the Lua heap as it is parsed, so the connection's finalizer may run
      -- in the middle of that (under ASan, freeing the context there is caught).
      local script = [[
        local t0 = redis.call('TIME')
        repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1e6 + (t[2] - t0[2]) > 50000
        local t = {}
        for i = 1, 20000 do t[i] = { i, 'x' .. i } end
        return t]]
      local pause, stepmul = collectgarbage("setpause", 100), collectgarbage("setstepmul", 400)
      finally(function()
        collectgarbage("setpause", pause)
        collectgarbage("setstepmul", stepmul)
      end)
      local function clients()
        local n = 0
        for _ in r:call("CLIENT", "LIST"):gmatch("\n") do n = n + 1 end
        return n
      end
      local baseline = clients()
      for _ = 1, 3 do
        local lost = h.redis()
        local v, err = lost:call_timeout(0.01, "EVAL", script, 0)
        assert.is_nil(v)
        assert.matches("^ETIMEDOUT", err)
        lost = nil   -- unreachable now: collected when the reply allocates
        -- the late reply is parsed, the connection collected and closed
        h.wait_for(function()
          collectgarbage("step")
          return clients() == baseline
        end, 5, "the collected connection to close")
      end
      assert.equal("PONG", r:call("PING"))
    end)
  end)
end)

describe("jobrt.redis with its server restarted", function()
  it("fails pending calls, reconnects with backoff, restores subscriptions", function()
    local s = h.start_redis()
    local c = h.redis(s.url)
    local msgs, resubscribed = {}, 0
    assert(c:subscribe("events", function(_, m)
      if m == nil then resubscribed = resubscribed + 1 else msgs[#msgs + 1] = m end
    end))
    local pending
    jobrt.spawn(function() pending = { c:call("BLPOP", "q", 10) } end)
    s:kill()
    h.wait_for(function() return pending end, 5, "the pending call to fail")
    assert.is_nil(pending[1])
    assert.matches("^ECONN: connection to redis at .- lost before it answered BLPOP", pending[2])
    local v, err = c:call("PING")
    assert.is_nil(v)
    assert.matches("^ECONN: not connected to redis at ", err)
    s:restart()
    h.wait_for(function() return c:call("PING") == "PONG" end, 10, "the reconnect")
    h.wait_for(function() return resubscribed == 1 end, 10, "the resubscription")
    local pub = h.redis(s.url)
    h.wait_for(function() return pub:call("PUBLISH", "events", "after") == 1 end, 5, "a subscriber")
    h.wait_for(function() return msgs[1] == "after" end, 5, "the message")
    pub:close()
    c:close()
    s:stop()
  end)
end)
