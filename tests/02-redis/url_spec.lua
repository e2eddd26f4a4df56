-- Redis addresses: every URL form (with percent-decoding and ACL users), malformed ones (whose
-- messages never show the password), and connecting as ACL users and over a unix socket.
local redis = require 'jobrt.redis'
local h = require 'tests.helpers'

local HELP = "expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH[?password=PASSWORD&db=N], redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB] or redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]"

describe("redis.parse_url", function()
  local forms = {
    { "redis://127.0.0.1", { host = "127.0.0.1", port = 6379, db = 0 } },
    { "redis://localhost:6380/2", { host = "127.0.0.1", port = 6380, db = 2 } },
    { "redis://redis.example.com:7000", { host = "redis.example.com", port = 7000, db = 0 } },
    { "redis://[::1]:7000/1", { host = "::1", port = 7000, db = 1 } },
    { "redis://:s3cret@h:1/3", { host = "h", port = 1, db = 3, password = "s3cret" } },
    { "redis://s3cret@h", { host = "h", port = 6379, db = 0, password = "s3cret" } },       -- as redis-cli -u
    { "redis://app:s3cret@h", { host = "h", port = 6379, db = 0, user = "app", password = "s3cret" } },
    { "redis://app:@h", { host = "h", port = 6379, db = 0, user = "app", password = "" } },  -- a nopass user
    { "redis://we%3Aird:p%40ss%2Fw%25rd%3A@h", { host = "h", port = 6379, db = 0, user = "we:ird", password = "p@ss/w%rd:" } },
    { "redis://app:p@ss@h:5", { host = "h", port = 5, db = 0, user = "app", password = "p@ss" } },
    { "REDIS://H:1", { host = "H", port = 1, db = 0 } },
    { "rediss://h:6380", { host = "h", port = 6380, db = 0, tls = true } },
    { "rediss://app:pw@localhost/4", { host = "127.0.0.1", port = 6379, db = 4, tls = true, user = "app",
                                        password = "pw", tls_server_name = "localhost" } },
    { "unix:///tmp/r.sock", { path = "/tmp/r.sock", db = 0 } },
    { "unix:///tmp/r.sock?password=s3cret&db=2", { path = "/tmp/r.sock", db = 2, password = "s3cret" } },
    { "unix:///tmp/r.sock?user=app&password=p%26w", { path = "/tmp/r.sock", db = 0, user = "app", password = "p&w" } },
    { "unix://:s3cret@/run/redis.sock?db=2", { path = "/run/redis.sock", db = 2, password = "s3cret" } },
    { "unix://app:pw@/run/redis.sock", { path = "/run/redis.sock", db = 0, user = "app", password = "pw" } },
    { "unix:///tmp/with%20space.sock", { path = "/tmp/with space.sock", db = 0 } },
    { "redis+sentinel://s1:26380,s2,[::1]:26381/mymaster/2",
      { sentinels = { { host = "s1", port = 26380 }, { host = "s2", port = 26379 }, { host = "::1", port = 26381 } },
        master_name = "mymaster", db = 2 } },
    { "redis+sentinel://app:pw@s1/my%20master?sentinel_user=sen&sentinel_password=sp",
      { sentinels = { { host = "s1", port = 26379 } }, master_name = "my master", db = 0, user = "app",
        password = "pw", sentinel_user = "sen", sentinel_password = "sp" } },
    { "rediss+sentinel://s1:1/m", { sentinels = { { host = "s1", port = 1 } }, master_name = "m", db = 0, tls = true } },
  }
  for _, f in ipairs(forms) do
    it("reads " .. f[1], function()
      assert.same(f[2], assert(redis.parse_url(f[1])))
    end)
  end

  local bad = {
    { "http://localhost", "unknown scheme" },
    { "localhost:6379", "unknown scheme" },
    { "redis://:6379", "missing host" },
    { "redis://host:99999", "port must be 1-65535" },
    { "redis://host:0", "port must be 1-65535" },
    { "redis://host:6379/x", "database must be a number" },
    { "redis://h?timeout=1", "unknown query parameter 'timeout'" },
    { "unix:///s?foo=1", "unknown query parameter 'foo' (known: password, user, db)" },
    { "unix://relative.sock", "a unix socket path must be absolute: unix:///path/to/socket" },
    { "unix:///s?db=two", "database must be a number" },
    { "redis://app:b%zzd@h", "bad percent-encoding in the user or password", "redis://app:***@h" },
    { "redis+sentinel://s1:26379", "missing the primary's name: redis+sentinel://HOST:PORT/MASTERNAME" },
    { "redis+sentinel://s1,,s2/m", "missing host (an empty entry in the sentinel list)" },
    { "redis+sentinel://s1/m?x=1", "unknown query parameter 'x' (known: sentinel_user, sentinel_password)" },
  }
  for _, b in ipairs(bad) do
    it("refuses " .. b[1] .. " (EINVAL, naming what is wrong)", function()
      local t, err, code = redis.parse_url(b[1])
      assert.is_nil(t)
      assert.equal("EINVAL", code)
      assert.equal(("bad redis URL '%s': %s; %s"):format(b[3] or b[1], b[2], HELP), err)
    end)
  end

  local secret = {
    "redis://:s3cret@host:0",
    "redis://app:s3cret@host/x",
    "redis://app:s3%zzcret@h",
    "rediss://s3cret@h:99999",
    "unix:///s?password=s3cret&db=x",
    "redis+sentinel://app:s3cret@h1,h2?sentinel_password=s3cret",
    "redis://app:s3cr@t@h:1/z",
  }
  for _, url in ipairs(secret) do
    it("never echoes the password of " .. url:gsub("s3cr[^@&:]*", "***"), function()
      local t, err = redis.parse_url(url)
      assert.is_nil(t)
      assert.matches("bad redis URL '", err, 1, true)
      assert.is_nil(err:find("s3cr", 1, true), err)
      assert.matches("***", err, 1, true)
      local c, cerr = redis.connect(url)
      assert.is_nil(c)
      assert.is_nil(cerr:find("s3cr", 1, true))
    end)
  end

  it("a malformed address with a password never reaches stderr in clear, from --redis or JOBRT_REDIS", function()
    local code, _, err = h.run_jobrt({ "stats", "--redis", "redis://app:s3cret@host:0" })
    assert.equal(2, code)
    assert.matches("bad redis URL 'redis://app:***@host:0': port must be 1%-65535", err)
    assert.is_nil(err:find("s3cret", 1, true))
    code, _, err = h.run_jobrt({ "work", "jobs/" }, { env = { JOBRT_REDIS = "redis://:s3cret@host/x" } })
    assert.equal(2, code)
    assert.matches("bad redis URL 'redis://:***@host/x': database must be a number", err, 1, true)
    assert.is_nil(err:find("s3cret", 1, true))
    code, _, err = h.run_jobrt({ "--redis", "unix:///x?password=s3cret&db=q", "stats" })
    assert.equal(2, code)
    assert.is_nil(err:find("s3cret", 1, true))
  end)

  it("mask_url hides every password form, and redis.describe never shows one", function()
    assert.equal("redis://app:***@h:1/2", redis.mask_url("redis://app:pw@h:1/2"))
    assert.equal("redis://***@h", redis.mask_url("redis://pw@h"))
    assert.equal("redis://h:1", redis.mask_url("redis://h:1"))
    assert.equal("unix:///s?user=a&password=***&db=1", redis.mask_url("unix:///s?user=a&password=pw&db=1"))
    assert.equal("redis+sentinel://a:***@s1/m?sentinel_password=***", redis.mask_url("redis+sentinel://a:x@s1/m?sentinel_password=y"))
    assert.equal("h:1", redis.describe("redis://app:pw@h:1/2"))
    assert.equal("unix:///s", redis.describe("unix:///s?password=pw"))
    assert.equal("primary 'm' via sentinels s1:26379,s2:1", redis.describe("redis+sentinel://a:pw@s1,s2:1/m"))
  end)
end)

describe("connecting as an ACL user", function()
  local s, admin
  setup(function()
    s = h.start_redis()
    admin = h.redis(s.url)
    assert(admin:call("ACL", "SETUSER", "app", "on", ">s3cret", "~*", "&*", "+@all"))
    assert(admin:call("ACL", "SETUSER", "we:ird", "on", ">p@ss/w%rd", "~*", "+@all"))
    assert(admin:call("ACL", "SETUSER", "open", "on", "nopass", "~*", "+@all"))
  end)
  teardown(function()
    admin:close()
    s:stop()
  end)

  local function whoami(url)
    local r, err, code = redis.connect(url)
    if not r then return nil, err, code end
    local who = r:call("ACL", "WHOAMI")
    local info = r:info()
    r:close()
    return who, info
  end

  it("redis://USER:PASSWORD@ logs in as that user (AUTH user password)", function()
    local who, info = whoami(s.url:gsub("//", "//app:s3cret@"))
    assert.equal("app", who)
    assert.equal("app", info.user)
    for k, v in pairs(info) do
      assert.is_nil(tostring(v):find("s3cret", 1, true), "info." .. k .. " shows the password")
    end
  end)

  it("percent-encoded users and passwords are decoded", function()
    assert.equal("we:ird", (whoami(s.url:gsub("//", "//we%%3Aird:p%%40ss%%2Fw%%25rd@"))))
  end)

  it("an ACL user without a password (nopass) is USER:@", function()
    assert.equal("open", (whoami(s.url:gsub("//", "//open:@"))))
  end)

  it("a wrong password is EAUTH with Redis' reason and the fix, never the password", function()
    local r, err, code = redis.connect(s.url:gsub("//", "//app:wrong-s3cret@"))
    assert.is_nil(r)
    assert.equal("EAUTH", code)
    assert.equal(("EAUTH: redis at 127.0.0.1:%d refused the connection setup: WRONGPASS invalid username-password pair or user is disabled. (check the user and password of the address: redis://USER:PASSWORD@host:port, or redis://:PASSWORD@... without an ACL user)"):format(s.port), err)
  end)

  it("a user the server does not allow to PING is EAUTH naming the permission", function()
    assert(admin:call("ACL", "SETUSER", "noping", "on", ">pw", "~*", "-@all", "+get"))
    local r, err, code = redis.connect(s.url:gsub("//", "//noping:pw@"))
    assert.is_nil(r)
    assert.equal("EAUTH", code)
    assert.matches("refused the connection setup: NOPERM .* %(the ACL user needs %+ping%)$", err)
  end)

  it("a password given to a unix socket as ?password= or USER:PW@", function()
    local dir = h.tmpdir()
    local sock = dir .. "/redis.sock"
    local u = h.start_redis{ args = { "--unixsocket", sock, "--unixsocketperm", "700", "--requirepass", "s3cret" } }
    local r = assert(redis.connect("unix://" .. sock .. "?password=s3cret&db=1"))
    assert.equal("PONG", r:call("PING"))
    assert.equal(1, r:info().db)
    r:close()
    r = assert(redis.connect("unix://:s3cret@" .. sock))
    assert.equal("PONG", r:call("PING"))
    r:close()
    local c, err, code = redis.connect("unix://" .. sock)
    assert.is_nil(c)
    assert.equal("EAUTH", code)
    assert.matches("NOAUTH Authentication required. (it wants a password: ", err, 1, true)
    u:stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
