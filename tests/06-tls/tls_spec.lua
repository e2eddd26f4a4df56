-- rediss:// against Debian's redis-server with --tls-port and certificates the test makes with
-- openssl: a good connection, an untrusted certificate, a wrong host name, client certificates
-- (mutual TLS), a plain port mistaken for TLS and back, a TLS connection lost and restored, the
-- command-line options and their environment variables.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local h = require 'tests.helpers'

describe("rediss://", function()
  local s, c
  setup(function()
    c = h.certs()
    s = h.start_redis{ tls = "no", args = { "--bind", "127.0.0.1", "127.0.0.2" } }
  end)
  teardown(function() s:stop() end)

  it("connects, verifying the certificate and its name against the CA given", function()
    local r = assert(redis.connect{ url = s.tls_url, tls_ca = c.ca })
    assert.equal("PONG", r:call("PING"))
    assert.equal("OK", r:call("SET", "tls:k", ("x"):rep(200000)))
    assert.equal(200000, #r:call("GET", "tls:k"))
    local info = r:info()
    assert.is_true(info.tls)
    assert.equal("up", info.state)
    -- the server sees a TLS client: its plain port has no client of ours
    local plain = h.redis(s.url)
    local list = plain:call("CLIENT", "LIST")
    assert.equal(2, select(2, list:gsub("\n", "")))
    plain:close()
    r:close()
  end)

  it("checks the name 'localhost' when the address says localhost", function()
    local r = assert(redis.connect{ url = ("rediss://localhost:%d"):format(s.tls_port), tls_ca = c.ca })
    assert.equal("PONG", r:call("PING"))
    r:close()
  end)

  it("50 coroutines pipelining over one TLS connection each get their own replies", function()
    local r = assert(redis.connect{ url = s.tls_url, tls_ca = c.ca })
    local wg, wrong = jobrt.waitgroup(), 0
    for i = 1, 50 do
      wg:spawn(function()
        for j = 1, 40 do
          local v = r:call("ECHO", i .. ":" .. j)
          if v ~= i .. ":" .. j then wrong = wrong + 1 end
        end
      end)
    end
    assert.is_true(wg:wait(20))
    assert.equal(0, wrong)
    r:close()
  end)

  it("an untrusted certificate is ETLS naming the address and the fix", function()
    local r, err, code = redis.connect(s.tls_url)                  -- the system CAs
    assert.is_nil(r)
    assert.equal("ETLS", code)
    assert.equal(("ETLS: cannot connect to redis at 127.0.0.1:%d: TLS handshake failed: the server's certificate is not trusted (self-signed certificate in certificate chain): pass the CA that signed it with --tls-ca FILE (env JOBRT_TLS_CA, option tls_ca), or --tls-insecure to skip the check (not for production)")
      :format(s.tls_port), err)
    r, err, code = redis.connect{ url = s.tls_url, tls_ca = c.other_ca }  -- a CA that signed nothing here
    assert.is_nil(r)
    assert.equal("ETLS", code)
    assert.matches("TLS handshake failed: the server's certificate is not trusted (", err, 1, true)
  end)

  it("a certificate for another name is ETLS naming the name", function()
    -- the certificate lists localhost and 127.0.0.1, not 127.0.0.2
    local r, err, code = redis.connect{ url = ("rediss://127.0.0.2:%d"):format(s.tls_port), tls_ca = c.ca }
    assert.is_nil(r)
    assert.equal("ETLS", code)
    assert.equal(("ETLS: cannot connect to redis at 127.0.0.2:%d: TLS handshake failed: the server's certificate is not valid for the name '127.0.0.2' (IP address mismatch): connect with a name the certificate lists (or set tls_server_name), or give the server a certificate that lists this one")
      :format(s.tls_port), err)
    r, err, code = redis.connect{ url = s.tls_url, tls_ca = c.ca, tls_server_name = "db.example.com" }
    assert.is_nil(r)
    assert.equal("ETLS", code)
    assert.matches("not valid for the name 'db.example.com' (hostname mismatch)", err, 1, true)
  end)

  it("--tls-insecure skips the checks (and says what that costs)", function()
    local r = assert(redis.connect{ url = s.tls_url, tls_insecure = true })
    assert.equal("PONG", r:call("PING"))
    r:close()
    local code, out, err = h.run_jobrt({ "-e", "--redis", s.tls_url, "--tls-insecure",
      "local r = assert(require('jobrt.redis').connect()); print(r:call('PING'), r:info().tls)" })
    assert.equal(0, code, err)
    assert.equal("PONG\ttrue\n", out)
    assert.matches("TLS without certificate checks %(%-%-tls%-insecure%)", err)
  end)

  it("a plain address to the TLS port, and a TLS address to the plain port, say which to use", function()
    local r, err, code = redis.connect(("redis://127.0.0.1:%d"):format(s.tls_port))
    assert.is_nil(r)
    assert.equal("ECONNREFUSED", code)
    assert.matches("if that port speaks TLS, use rediss://", err, 1, true)
    r, err, code = redis.connect{ url = s.url:gsub("^redis:", "rediss:"), tls_ca = c.ca, connect_timeout = 1 }
    assert.is_nil(r)
    assert.truthy(code == "ETLS" or code == "ETIMEDOUT")
    assert.matches("is that port plain TCP? use redis:// for it", err, 1, true)
  end)

  it("TLS options on a plain address are refused; files that cannot be read are ETLS", function()
    local r, err, code = redis.connect{ url = s.url, tls_ca = c.ca }
    assert.is_nil(r)
    assert.equal("EINVAL", code)
    assert.matches("option 'tls_ca' is for TLS, but 127.0.0.1:%d+ is plain: use rediss://", err)
    r, err, code = redis.connect{ url = s.tls_url, tls_ca = "/nonexistent/ca.pem" }
    assert.is_nil(r)
    assert.equal("ETLS", code)
    assert.equal("ETLS: cannot read the CA file /nonexistent/ca.pem given with --tls-ca (tls_ca): No such file or directory", err)
    r, err, code = redis.connect{ url = s.tls_url, tls_ca = c.ca, tls_cert = c.client_cert }
    assert.is_nil(r)
    assert.equal("ETLS", code)
    assert.matches("needs both --tls-cert FILE and --tls-key FILE", err, 1, true)
  end)

  it("a TLS connection lost with its server comes back, subscriptions too", function()
    local t = h.start_redis{ tls = "no" }
    local r = assert(redis.connect{ url = t.tls_url, tls_ca = c.ca })
    local resubscribed, msgs = 0, {}
    assert(r:subscribe("tls:ch", function(_, m)
      if m then msgs[#msgs + 1] = m else resubscribed = resubscribed + 1 end
    end))
    local pending
    jobrt.spawn(function() pending = { r:call("BLPOP", "tls:q", 10) } end)
    local admin = h.redis(t.url)
    h.wait_blocked(admin)
    admin:close()
    t:kill()
    h.wait_for(function() return pending end, 5, "the pending call to fail")
    assert.equal("ECONN", pending[3])
    t:restart()
    h.wait_for(function() return r:call("PING") == "PONG" end, 10, "the TLS reconnect")
    h.wait_for(function() return resubscribed == 1 end, 10, "the resubscription")
    local pub = assert(redis.connect{ url = t.tls_url, tls_ca = c.ca })
    h.wait_for(function() return pub:call("PUBLISH", "tls:ch", "back") == 1 end, 5, "a subscriber")
    h.wait_for(function() return msgs[1] == "back" end, 5, "the message")
    assert.is_true(r:info().tls)
    pub:close()
    r:close()
    t:stop()
  end)
end)

describe("rediss:// with client certificates (mutual TLS)", function()
  local s, c
  setup(function()
    c = h.certs()
    s = h.start_redis{ tls = "yes" }
  end)
  teardown(function() s:stop() end)

  it("without a client certificate is ETLS saying the server wants one", function()
    local r, err, code = redis.connect{ url = s.tls_url, tls_ca = c.ca }
    assert.is_nil(r)
    assert.equal("ETLS", code)
    assert.matches("client certificate it trusts: pass --tls-cert FILE and --tls-key FILE", err, 1, true)
  end)

  it("with the client certificate and key connects", function()
    local r = assert(redis.connect{ url = s.tls_url, tls_ca = c.ca, tls_cert = c.client_cert, tls_key = c.client_key })
    assert.equal("PONG", r:call("PING"))
    r:close()
  end)

  it("the common options reach every command, jobrt.connect() in scripts and --procs children", function()
    h.flush()
    local dir = h.tmpdir()
    local f = assert(io.open(dir .. "/t.lua", "w"))
    f:write("return { TLSQ = { hello = function(args, job) job.redis:call('INCR', 'tls:done'); return args.n end } }\n")
    f:close()
    local opts = { "--redis", s.tls_url, "--tls-ca", c.ca, "--tls-cert", c.client_cert, "--tls-key", c.client_key }
    local code, out, err = h.run_jobrt({ "queue-type", "TLSQ", "QUEUE", unpack(opts) })
    assert.equal(0, code, err)
    code, out, err = h.run_jobrt({ "enqueue", "TLSQ", "hello", '{"n":7}', unpack(opts) })
    assert.equal(0, code, err)
    local id = out:match("^(%S+)\n$")
    assert.truthy(id, out)
    -- a supervisor and two children, all over mutual TLS
    local w = h.spawn_jobrt({ "work", dir, "--procs", "2", unpack(opts) })
    local plain = h.redis(s.url)
    h.wait_for(function() return plain:call("GET", "tls:done") == "1" end, 20, "the job to run over TLS")
    code, out, err = h.run_jobrt({ "job", "TLSQ", id, unpack(opts) })
    assert.equal(0, code, err)
    assert.matches('"result%-value": "?7"?', out)
    -- jobrt.connect() in a script picks the TLS options up from JOBRT_TLS_*
    code, out, err = h.run_jobrt({ "run", "--redis", s.tls_url, "--tls-ca", c.ca, "--tls-cert", c.client_cert,
      "--tls-key", c.client_key, h.root .. "/tests/06-tls/connect_script.lua" })
    assert.equal(0, code, err)
    assert.equal("PONG\ttrue\n", out)
    -- the same through the environment alone
    code, out, err = h.run_jobrt({ "run", h.root .. "/tests/06-tls/connect_script.lua" },
      { env = { JOBRT_REDIS = s.tls_url, JOBRT_TLS_CA = c.ca, JOBRT_TLS_CERT = c.client_cert, JOBRT_TLS_KEY = c.client_key } })
    assert.equal(0, code, err)
    assert.equal("PONG\ttrue\n", out)
    w:kill("SIGTERM")
    w:wait()
    plain:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("TLS options on a plain address are a usage error naming the fix", function()
    local code, _, err = h.run_jobrt({ "stats", "--redis", s.url, "--tls-ca", c.ca })
    assert.equal(2, code)
    assert.equal(("jobrt stats: --tls-* options apply to TLS addresses, but 127.0.0.1:%d is plain: use rediss://127.0.0.1:%d\n")
      :format(s.port, s.port), err)
    code, _, err = h.run_jobrt({ "stats", "--redis", s.tls_url, "--tls-ca", "/nonexistent.pem" })
    assert.equal(2, code)
    assert.equal("jobrt stats: --tls-ca: cannot read /nonexistent.pem: No such file or directory\n", err)
  end)
end)
