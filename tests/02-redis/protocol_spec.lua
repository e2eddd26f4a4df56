-- The connection layer against servers that break the protocol (a fake server on the loop, and
-- real redis-server made to answer what nobody asked), commands that would switch the protocol,
-- and the error codes every failure carries (nil, message, code).
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local net = require 'jobrt.core.net'
local h = require 'tests.helpers'

-- Splits the RESP commands at the start of buf: list of commands (arrays of strings), rest.
local function parse_commands(buf)
  local cmds, pos = {}, 1
  while true do
    local n, p = buf:match("^%*(%d+)\r\n()", pos)
    if not n then break end
    local args, ok = {}, true
    for i = 1, tonumber(n) do
      local len, q = buf:match("^%$(%d+)\r\n()", p)
      if not len or #buf < q + tonumber(len) + 1 then ok = false; break end
      args[i] = buf:sub(q, q + tonumber(len) - 1)
      p = q + tonumber(len) + 2
    end
    if not ok then break end
    cmds[#cmds + 1] = args
    pos = p
  end
  return cmds, buf:sub(pos)
end

-- A fake Redis on a free loopback port. answer(cmd, client) returns the bytes to send for each
-- command (nil: nothing); on_connect(client) may send bytes first. Returns server, url.
-- The specs connect to it with cluster = false: connect would otherwise ask it INFO cluster
-- (jobrt.redis, Cluster detection), which these fakes answer with garbage or not at all.
local function fake(answer, on_connect)
  local srv = assert(net.listen("127.0.0.1", 0, function(c)
    if on_connect then on_connect(c) end
    local buf = ""
    while true do
      local data = c:read()
      if not data then break end
      local cmds
      cmds, buf = parse_commands(buf .. data)
      for _, cmd in ipairs(cmds) do
        local out = answer(cmd, c)
        if out then c:write(out) end
      end
    end
    c:close()
  end))
  return srv, ("redis://127.0.0.1:%d"):format(srv:port())
end

-- Answers the connection setup (PING) like Redis; other commands through fn.
local function setup_then(fn)
  return function(cmd, c)
    if cmd[1] == "PING" then return "+PONG\r\n" end
    return fn(cmd, c)
  end
end

describe("jobrt.redis against a server that breaks the protocol", function()
  it("garbage instead of the first reply fails connect with EPROTO, naming the server", function()
    local srv, url = fake(function() return "hello, I am not redis\r\n" end)
    local r, err, code = redis.connect{ url = url, cluster = false }
    assert.is_nil(r)
    assert.equal("EPROTO", code)
    assert.matches("^EPROTO: redis at 127%.0%.0%.1:%d+ sent bytes that are not a RESP2 reply %(Protocol error, got \"h\" as reply type byte%): is that a Redis server%?$", err)
    srv:close()
  end)

  it("a reply nobody asked for closes the connection with EPROTO, and it reconnects", function()
    local extra = false
    local srv, url = fake(setup_then(function(cmd)
      if cmd[1] == "GET" then
        extra = true
        return "$5\r\nvalue\r\n+SURPRISE\r\n"      -- one reply too many
      end
      return "+OK\r\n"
    end))
    local r = assert(redis.connect{ url = url, cluster = false })
    local v, err, code = r:call("GET", "k")
    assert.equal("value", v)            -- its own reply arrives first
    assert.is_nil(err)
    assert.is_nil(code)
    h.wait_for(function() return r:info().state ~= "up" end, 5, "the connection to close")
    assert.matches("sent a reply nobody asked for %('SURPRISE'%): closing the connection", r:info().error)
    v, err, code = r:call("SET", "k", "v")
    assert.is_nil(v)
    assert.equal("ECONN", code)
    assert.matches("^ECONN: not connected to redis at 127%.0%.0%.1:%d+ %(reconnecting: redis at .- sent a reply nobody asked for", err)
    h.wait_for(function() return r:info().state == "up" end, 5, "the reconnect")
    assert.equal("OK", r:call("SET", "k", "v"))
    assert.is_true(extra)
    r:close()
    srv:close()
  end)

  it("a RESP3 push while calls are pending fails every pending call with EPROTO", function()
    local srv, url = fake(setup_then(function(cmd)
      if cmd[1] == "GET" and cmd[2] == "b" then
        return ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n"
      end
    end))
    local r = assert(redis.connect{ url = url, cluster = false })
    local got = {}
    local wg = jobrt.waitgroup()
    for _, k in ipairs({ "a", "b", "c" }) do
      wg:spawn(function() got[k] = { r:call("GET", k) } end)
    end
    assert.is_true(wg:wait(5))
    for _, k in ipairs({ "a", "b", "c" }) do
      assert.is_nil(got[k][1])
      assert.equal("EPROTO", got[k][3])
      assert.matches("^EPROTO: connection to redis at 127%.0%.0%.1:%d+ lost before it answered GET %(redis at .- sent bytes that are not a RESP2 reply %(Protocol error, got \">\" as reply type byte%)", got[k][2])
    end
    r:close()
    srv:close()
  end)

  it("an unasked reply on an idle connection closes it (logged) and the process goes on", function()
    local srv, url = fake(setup_then(function() return "+OK\r\n" end), function(c)
      jobrt.spawn(function()
        jobrt.sleep(0.2)
        c:write("+UNASKED\r\n")
      end)
    end)
    local r = assert(redis.connect{ url = url, cluster = false })
    h.wait_for(function() return r:info().state ~= "up" end, 5, "the connection to close")
    assert.matches("sent a reply nobody asked for %('UNASKED'%)", r:info().error)
    r:close()
    srv:close()
  end)

  it("a bulk length out of range and arrays nested deeper than 7 are protocol errors", function()
    for _, bad in ipairs({ "$99999999999\r\n", ("*1\r\n"):rep(9) .. ":1\r\n" }) do
      local srv, url = fake(setup_then(function() return bad end))
      local r = assert(redis.connect{ url = url, cluster = false })
      local v, err, code = r:call("GET", "x")
      assert.is_nil(v)
      assert.equal("EPROTO", code)
      assert.matches("not a RESP2 reply %(.*%)", err)
      r:close()
      srv:close()
    end
  end)

  it("the subscriber connection: messages are delivered; an unasked confirmation closes it", function()
    local subs = {}
    local srv, url = fake(setup_then(function(cmd, c)
      if cmd[1] == "SUBSCRIBE" then
        subs[#subs + 1] = c
        return ("*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n"):format(#cmd[2], cmd[2])
      end
    end))
    local r = assert(redis.connect{ url = url, cluster = false })
    local msgs, resubscribed = {}, 0
    assert.is_true(r:subscribe("ch", function(_, m)
      if m then msgs[#msgs + 1] = m else resubscribed = resubscribed + 1 end
    end))
    subs[1]:write("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n")
    h.wait_for(function() return msgs[1] == "hi" end, 5, "the message")
    subs[1]:write("*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:2\r\n")     -- nobody asked
    h.wait_for(function() return resubscribed == 1 end, 5, "the subscriber to reconnect and resubscribe")
    assert.equal(2, #subs)
    assert.equal("up", r:info().state)    -- the command connection was not touched
    r:close()
    srv:close()
  end)
end)

describe("jobrt.redis against real redis answering what nobody asked", function()
  local r
  before_each(function() r = h.redis() end)
  after_each(function() r:close() end)

  it("bytes written behind the connection's back make it close with EPROTO and reconnect", function()
    assert.is_true(r:_inject("PING\r\n"))          -- its +PONG has no call waiting
    h.wait_for(function() return r:info().state ~= "up" end, 5, "the connection to close")
    assert.matches("sent a reply nobody asked for %('PONG'%)", r:info().error)
    h.wait_for(function() return r:call("PING") == "PONG" end, 5, "the reconnect")
  end)

  it("a switch to RESP3 behind its back is a protocol error, not an abort", function()
    assert.is_true(r:_inject("HELLO 3\r\n"))
    h.wait_for(function() return r:info().state ~= "up" end, 5, "the connection to close")
    assert.matches("not a RESP2 reply %(Protocol error, got \"%%\" as reply type byte%)", r:info().error)
    h.wait_for(function() return r:call("PING") == "PONG" end, 5, "the reconnect")
  end)

  local refused = {
    { { "SUBSCRIBE", "ch" }, "use conn:subscribe(channel, fn)" },
    { { "psubscribe", "c*" }, "use conn:subscribe(channel, fn)" },
    { { "SSUBSCRIBE", "ch" }, "use conn:subscribe(channel, fn)" },
    { { "UNSUBSCRIBE", "ch" }, "use conn:unsubscribe(channel)" },
    { { "PUNSUBSCRIBE" }, "use conn:unsubscribe(channel)" },
    { { "SUNSUBSCRIBE", "ch" }, "use conn:unsubscribe(channel)" },
    { { "MONITOR" }, "MONITOR wants a connection of its own" },
    { { "CLIENT", "REPLY", "OFF" }, "every call waits for its reply" },
    { { "client", "reply", "skip" }, "every call waits for its reply" },
    { { "HELLO", "3" }, "jobrt speaks RESP2 (HELLO 2 is fine)" },
    { { "RESET" }, "it would drop the connection's login and database" },
    { { "QUIT" }, "use conn:close()" },
    { { "SYNC" }, "replication stream" },
    { { "PSYNC", "?", "-1" }, "replication stream" },
  }
  for _, case in ipairs(refused) do
    it(table.concat(case[1], " ") .. " through call is refused before anything is sent", function()
      local ok, err = pcall(r.call, r, unpack(case[1]))
      assert.is_false(ok)
      assert.matches("redis: " .. case[1][1] .. " cannot go through call", err, 1, true)
      assert.matches(case[2], err, 1, true)
      assert.equal("PONG", r:call("PING"))
      assert.equal("up", r:info().state)
    end)
  end

  it("CLIENT REPLY ON and HELLO 2 go through", function()
    assert.equal("OK", r:call("CLIENT", "REPLY", "ON"))
    local hello = r:call("HELLO", "2")
    assert.equal("table", type(hello))
    assert.equal("PONG", r:call("PING"))
  end)
end)

describe("jobrt.redis error codes (nil, message, code)", function()
  it("every failure has a stable code beside a readable message", function()
    local r = h.redis()
    r:call("SET", "s", "x")
    local v, err, code, kind = r:call("LPUSH", "s", "y")
    assert.same({ nil, "WRONGTYPE Operation against a key holding the wrong kind of value", "EREDIS", "WRONGTYPE" },
      { v, err, code, kind })
    v, err, code, kind = r:call("EVALSHA", ("0"):rep(40), 0)
    assert.equal("EREDIS", code)
    assert.equal("NOSCRIPT", kind)
    assert.matches("^NOSCRIPT ", err)
    v, err, code = r:call_timeout(0.05, "BLPOP", "nothing", 1)
    assert.equal("ETIMEDOUT", code)
    assert.matches("^ETIMEDOUT: ", err)
    r:close()
    v, err, code = r:call("PING")
    assert.equal("ECLOSED", code)
    assert.matches("^ECLOSED: ", err)
    local c
    c, err, code = redis.connect("redis://127.0.0.1:1")
    assert.equal("ECONNREFUSED", code)
    c, err, code = redis.connect(h.url:gsub("//", "//:wrong@"))
    assert.equal("EAUTH", code)
    assert.matches("^EAUTH: ", err)
    c, err, code = redis.connect("redis://nohost:x")
    assert.equal("EINVAL", code)
    c, err, code = redis.connect{ hots = 1 }
    assert.equal("EINVAL", code)
    assert.is_nil(c)
    for name, text in pairs(redis.codes) do
      assert.matches("^E[A-Z]+$", name)
      assert.equal("string", type(text))
    end
  end)

  it("a lost connection is ECONN, calls made while it is down fail at once with ECONN", function()
    local s = h.start_redis()
    local r = h.redis(s.url)
    local pending
    jobrt.spawn(function() pending = { r:call("BLPOP", "q", 10) } end)
    local admin = h.redis(s.url)
    h.wait_blocked(admin)
    admin:close()
    s:kill()
    h.wait_for(function() return pending end, 5, "the pending call to fail")
    assert.equal("ECONN", pending[3])
    local v, err, code = r:call("PING")
    assert.is_nil(v)
    assert.equal("ECONN", code)
    assert.matches("^ECONN: not connected to redis at 127%.0%.0%.1:%d+ %(reconnecting: ", err)
    r:close()
    s:stop()
  end)
end)
