-- jobrt.redis: connect to Redis from a coroutine; calls yield until the reply.
--
--   local r, err, code = redis.connect(url | table | nil)   -- nil: $JOBRT_REDIS or DEFAULT_URL
--   local v, err, code, kind = r:call("GET", "k")
--       -- a reply (tables for arrays, redis.null for a nil bulk), or nil and:
--       --   a Redis error reply: message as Redis sent it, "EREDIS", its first word ("NOSCRIPT")
--       --   anything else: "CODE: message", CODE (ECONN, ETIMEDOUT, ECLOSED, EPROTO, ...)
--   r:call_timeout(0.5, "BLPOP", "k", 0)
--   r:subscribe(channel, function(channel, message) end)   -- message nil: resubscribed
--   r:unsubscribe(channel); r:close(); r:info()   -- info never shows the password
--
-- Addresses (DESIGN "Addresses"; the same forms as redis-cli -u and most clients):
--   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]      USER and PASSWORD percent-encoded; an ACL user
--   redis://PASSWORD@HOST...                          no colon: the whole user part is the password
--                                                     (as redis-cli -u reads it)
--   rediss://...                                      TLS: the server's certificate is checked
--                                                     against the system CAs (or tls_ca) and its name
--   unix:///PATH[?password=PW&user=USER&db=N]         also unix://[USER]:PW@/PATH[?db=N]
--   redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTERNAME[/DB]
--                                                     sentinels (port 26379 by default) are asked for
--                                                     the primary; USER:PASSWORD are the data nodes';
--                                                     ?sentinel_user=&sentinel_password= for the
--                                                     sentinels' own; rediss+sentinel:// for TLS
--   redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]
--                                                     Redis Cluster: the nodes listed are seeds (any
--                                                     node of the cluster will do); rediss+cluster://
--                                                     for TLS. A plain redis:// (rediss://) address
--                                                     of a cluster node works too: connect asks the
--                                                     node INFO cluster, and when cluster_enabled is
--                                                     1 it returns a cluster router (jobrt.cluster)
--                                                     with the API of a connection
-- Table form: { url=, host=, port=, path=, user=, password=, db=, timeout=, connect_timeout=,
--   tls=, tls_ca=, tls_cert=, tls_key=, tls_insecure=, tls_server_name=, sentinels=
--   {{host=,port=},...}, master_name=, sentinel_user=, sentinel_password=, cluster_nodes=
--   {{host=,port=},...}, cluster= }. cluster = false: one node even when it is a cluster node
--   (no INFO asked); cluster = true: the address must be a cluster node (else EINVAL).
-- TLS options default to $JOBRT_TLS_CA, $JOBRT_TLS_CERT, $JOBRT_TLS_KEY, $JOBRT_TLS_INSECURE
-- (set by the common options --tls-ca, --tls-cert, --tls-key, --tls-insecure).
--
-- Errors of this module (a malformed address, an unknown option) are nil, message, "EINVAL";
-- a message never shows a password (it is written ***).
local core = require 'jobrt.core.redis'

local tonumber, tostring, type, pairs, ipairs, floor = tonumber, tostring, type, pairs, ipairs, math.floor
local str_format, concat, char = string.format, table.concat, string.char
local getenv = os.getenv

local _M = { null = core.null, DEFAULT_URL = "redis://127.0.0.1:6379", codes = core.codes }

local options = setmetatable({}, { __mode = "k" })   -- connection -> the options it was made with

-- The options a connection was made with (a table for connect), so a second connection to the
-- same server can be made from the first.
function _M.options_of(conn) return options[conn] end

local URL_HELP = "expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], "
  .. "unix:///PATH[?password=PASSWORD&db=N], "
  .. "redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB] or "
  .. "redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]"
_M.URL_HELP = URL_HELP

-- url with every password in it written *** (for messages and logs). Works on malformed URLs
-- too: everything between "://" and the last "@" before the path counts as user information.
function _M.mask_url(url)
  if type(url) ~= "string" then return tostring(url) end
  local scheme, rest = url:match("^([^:/?#]*://)(.*)$")
  if not scheme then
    -- no scheme: a bare "user:pass@host" still hides its password
    scheme, rest = "", url
  end
  local auth_end
  -- the user information ends at the last "@" (passwords may contain "/" or "?" unencoded)
  for i = #rest, 1, -1 do
    if rest:sub(i, i) == "@" then auth_end = i; break end
  end
  local out = rest
  if auth_end then
    local auth, after = rest:sub(1, auth_end - 1), rest:sub(auth_end)
    local user = auth:match("^([^:]*):")
    out = (user and (user .. ":***") or "***") .. after
  end
  out = out:gsub("([%?&][%w_]*password=)[^&#]*", "%1***")
  return scheme .. out
end

local function bad(url, why)
  return nil, ("bad redis URL '%s': %s; %s"):format(_M.mask_url(url), why, URL_HELP), "EINVAL"
end

-- Percent-decodes s; nil when an escape is malformed.
local function unescape(s)
  if s == nil then return nil end
  if s:find("%%") then
    if s:find("%%[^%x]") or s:find("%%%x[^%x]") or s:find("%%%x?$") then return nil end
    s = s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end)
  end
  return s
end

-- Parses "a=b&c=d" into a table of decoded values; nil, why on a malformed part.
local function parse_query(q)
  local t = {}
  if q == nil or q == "" then return t end
  for part in q:gmatch("[^&]+") do
    local k, v = part:match("^([^=]+)=(.*)$")
    if not k then return nil, ("query part '%s' is not NAME=VALUE"):format(part:match("password") and "***" or part) end
    local dv = unescape(v)
    if not dv then return nil, ("bad percent-encoding in the query value of '%s'"):format(k) end
    t[k] = dv
  end
  return t
end

-- Splits "USER:PASSWORD" (redis-cli's reading: no colon means it is all password).
local function split_auth(auth)
  local user, pw = auth:match("^([^:]*):(.*)$")
  if not user then user, pw = "", auth end
  local du, dp = unescape(user), unescape(pw)
  if not du or not dp then return nil, nil, "bad percent-encoding in the user or password" end
  return du ~= "" and du or nil, dp ~= "" and dp or (du ~= "" and dp or nil)
end

-- "host[:port]" or "[v6]:port" -> host, port (default_port when absent); nil, why when bad.
local function parse_hostport(hp, default_port)
  local host, port = hp:match("^%[(.+)%]:?(%d*)$")
  if not host then
    if hp:find("^%[") then return nil, "unclosed [ in the host" end
    host, port = hp:match("^([^:]*):?(.*)$")
  end
  if host == nil or host == "" then return nil, "missing host" end
  if host:find("[%s/?#@]") then return nil, ("bad host '%s'"):format(host) end
  if port ~= "" then
    local p = tonumber(port)
    if not p or p < 1 or p > 65535 or p ~= floor(p) or not port:match("^%d+$") then
      return nil, "port must be 1-65535"
    end
    return host == "localhost" and "127.0.0.1" or host, p
  end
  return host == "localhost" and "127.0.0.1" or host, default_port
end

-- Parses a Redis URL (the forms above) into a table for connect: {host=, port=, user=,
-- password=, db=, tls=} or {path=, ...} or {sentinels={{host=,port=},...}, master_name=, ...}.
-- Returns nil, message, "EINVAL" when malformed; the message never shows the password.
function _M.parse_url(url)
  if type(url) ~= "string" then return nil, "redis URL must be a string", "EINVAL" end
  local scheme, rest = url:match("^([%w+]+)://(.*)$")
  if not scheme then return bad(url, "unknown scheme") end
  scheme = scheme:lower()
  if scheme == "unix" then
    local auth, path, query = rest:match("^(.*)@(/[^?]*)%??(.*)$")
    if not auth then path, query = rest:match("^(/[^?]*)%??(.*)$") end
    if not path then return bad(url, "a unix socket path must be absolute: unix:///path/to/socket") end
    local q, qerr = parse_query(query)
    if not q then return bad(url, qerr) end
    local t = { path = unescape(path), db = 0 }
    if not t.path then return bad(url, "bad percent-encoding in the path") end
    if auth then
      local user, pw, aerr = split_auth(auth)
      if aerr then return bad(url, aerr) end
      t.user, t.password = user, pw
    end
    for k, v in pairs(q) do
      if k == "db" then
        if not v:match("^%d+$") then return bad(url, "database must be a number") end
        t.db = tonumber(v)
      elseif k == "password" then t.password = v ~= "" and v or nil
      elseif k == "user" then t.user = v ~= "" and v or nil
      else return bad(url, ("unknown query parameter '%s' (known: password, user, db)"):format(k)) end
    end
    return t
  end
  local tls, sentinel, cluster
  if scheme == "redis" then tls, sentinel = false, false
  elseif scheme == "rediss" then tls, sentinel = true, false
  elseif scheme == "redis+sentinel" then tls, sentinel = false, true
  elseif scheme == "rediss+sentinel" then tls, sentinel = true, true
  elseif scheme == "redis+cluster" then tls, cluster = false, true
  elseif scheme == "rediss+cluster" then tls, cluster = true, true
  else return bad(url, "unknown scheme") end
  local t = { db = 0, tls = tls or nil }
  local body, query = rest:match("^([^?]*)%??(.*)$")
  -- the user information ends at the last "@" before the path (a password may hold "@" when
  -- it is percent-encoded; an unencoded one ends at the last "@")
  local auth, hostpart = body:match("^(.*)@([^@]*)$")
  if auth then
    local user, pw, aerr = split_auth(auth)
    if aerr then return bad(url, aerr) end
    t.user, t.password = user, pw
  else
    hostpart = body
  end
  local q, qerr = parse_query(query)
  if not q then return bad(url, qerr) end
  local hp, path = hostpart:match("^([^/]*)/?(.*)$")
  if sentinel then
    local name, db = path:match("^([^/]+)/?(.*)$")
    if not name then return bad(url, "missing the primary's name: redis+sentinel://HOST:PORT/MASTERNAME") end
    t.master_name = unescape(name)
    if not t.master_name then return bad(url, "bad percent-encoding in the primary's name") end
    path = db
    t.sentinels = {}
    for one in (hp .. ","):gmatch("([^,]*),") do
      local host, port = parse_hostport(one, 26379)
      if not host then return bad(url, port .. (one == "" and " (an empty entry in the sentinel list)" or "")) end
      t.sentinels[#t.sentinels + 1] = { host = host, port = port }
    end
    for k, v in pairs(q) do
      if k == "sentinel_password" then t.sentinel_password = v
      elseif k == "sentinel_user" then t.sentinel_user = v
      else return bad(url, ("unknown query parameter '%s' (known: sentinel_user, sentinel_password)"):format(k)) end
    end
  elseif cluster then
    t.cluster_nodes = {}
    for one in (hp .. ","):gmatch("([^,]*),") do
      local host, port = parse_hostport(one, 6379)
      if not host then return bad(url, port .. (one == "" and " (an empty entry in the node list)" or "")) end
      t.cluster_nodes[#t.cluster_nodes + 1] = { host = host, port = port }
    end
    if tls and hp:lower():match("^localhost") then t.tls_server_name = "localhost" end
    for k in pairs(q) do
      return bad(url, ("unknown query parameter '%s'"):format(k))
    end
  else
    local host, port = parse_hostport(hp, 6379)
    if not host then return bad(url, port) end
    t.host, t.port = host, port
    -- "localhost" is dialled as 127.0.0.1, but a certificate names it as "localhost"
    if tls and hp:lower():match("^localhost") then t.tls_server_name = "localhost" end
    for k in pairs(q) do
      return bad(url, ("unknown query parameter '%s'"):format(k))
    end
  end
  if path ~= "" then
    if not path:match("^%d+$") then return bad(url, "database must be a number") end
    t.db = tonumber(path)
  end
  return t
end

-- The address a command uses: `given` (its --redis), else JOBRT_REDIS. Returns the URL, nil
-- when neither is set (the default applies), or false and a message when it is malformed.
function _M.address(given)
  local url = given or getenv('JOBRT_REDIS')
  if url == nil then return nil end
  local ok, err = _M.parse_url(url)
  if not ok then return false, err .. (given and '' or ' (from JOBRT_REDIS)') end
  return url
end

-- How messages name the server of a URL or options table (never with a password).
function _M.describe(conf)
  if conf == nil then conf = getenv('JOBRT_REDIS') or _M.DEFAULT_URL end
  local t = conf
  if type(conf) == 'string' then
    t = _M.parse_url(conf)
    if not t then return _M.mask_url(conf) end
  end
  if type(t) ~= 'table' then return tostring(conf) end
  if t.url and not t.host and not t.path and not t.sentinels then return _M.describe(t.url) end
  if t.path then return 'unix://' .. t.path end
  if t.cluster_nodes then
    local hs = {}
    for i, s in ipairs(t.cluster_nodes) do
      local h = s.host or '127.0.0.1'
      if h:find(':') then h = '[' .. h .. ']' end
      hs[i] = str_format('%s:%s', h, s.port or 6379)
    end
    return 'cluster ' .. concat(hs, ',')
  end
  if t.sentinels then
    local hs = {}
    for i, s in ipairs(t.sentinels) do hs[i] = str_format('%s:%s', s.host, s.port or 26379) end
    return str_format("primary '%s' via sentinels %s", t.master_name or '?', concat(hs, ','))
  end
  local host = t.host or '127.0.0.1'
  if host:find(':') then host = '[' .. host .. ']' end
  return str_format('%s:%s', host, t.port or 6379)
end

-- ---- command-line options -------------------------------------------------------------

-- The TLS options every command takes (add them to an args.parse spec), their help text, and
-- the environment variables that carry them to jobrt.connect() and to --procs children.
_M.CLI_OPTIONS = { ['tls-ca'] = 'string', ['tls-cert'] = 'string', ['tls-key'] = 'string',
                   ['tls-insecure'] = 'flag' }
_M.CLI_HELP = [[
  --tls-ca FILE      CA certificate(s) (PEM file or directory) that sign the server's
                     certificate, for rediss:// (env JOBRT_TLS_CA; default: the system CAs)
  --tls-cert FILE    client certificate (PEM) for servers that want one (env JOBRT_TLS_CERT)
  --tls-key FILE     its private key (PEM, unencrypted) (env JOBRT_TLS_KEY)
  --tls-insecure     do not check the server's certificate (env JOBRT_TLS_INSECURE=1; warns)
]]
local ENV = { ['tls-ca'] = 'JOBRT_TLS_CA', ['tls-cert'] = 'JOBRT_TLS_CERT',
              ['tls-key'] = 'JOBRT_TLS_KEY', ['tls-insecure'] = 'JOBRT_TLS_INSECURE' }
_M.TLS_ENV = ENV

local setenv
do
  local ffi = require 'ffi'
  pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
  setenv = function(k, v) ffi.C.setenv(k, v, 1) end
end

-- Takes the TLS options out of parsed command-line options (a table keyed by option name) and
-- exports them as JOBRT_TLS_*, so every connection of this process and of its children uses
-- them. url (may be nil: the default) is the address they are for. Returns true, or nil and
-- a message naming the fix (a file that does not exist, TLS options for a plain address).
function _M.use_cli_tls(opts, url)
  local given = false
  for name in pairs(ENV) do if opts[name] ~= nil then given = true end end
  if not given then return true end
  for _, name in ipairs({ 'tls-ca', 'tls-cert', 'tls-key' }) do
    local f = opts[name]
    if f ~= nil then
      local fh, err = io.open(f, 'r')
      if not fh then return nil, ('--%s: cannot read %s'):format(name, tostring(err)) end
      fh:close()
    end
  end
  if (opts['tls-cert'] == nil) ~= (opts['tls-key'] == nil) then
    return nil, '--tls-cert and --tls-key go together (a client certificate and its key)'
  end
  local t = _M.parse_url(url or getenv('JOBRT_REDIS') or _M.DEFAULT_URL)
  if t and not t.tls then
    return nil, ('--tls-* options apply to TLS addresses, but %s is plain: use rediss://%s'):format(
      _M.describe(t), t.sentinels and '... (or rediss+sentinel://...)'
        or t.cluster_nodes and '... (or rediss+cluster://...)' or _M.describe(t))
  end
  for name, env in pairs(ENV) do
    if opts[name] ~= nil then setenv(env, opts[name] == true and '1' or tostring(opts[name])) end
  end
  return true
end

-- ---- connecting ------------------------------------------------------------------------

local OPTS = { host = "string", port = "number", path = "string", password = "string",
               user = "string", db = "number", timeout = "number", url = "string",
               connect_timeout = "number", tls = "boolean", tls_ca = "string",
               tls_cert = "string", tls_key = "string", tls_insecure = "boolean",
               tls_server_name = "string", sentinels = "table", master_name = "string",
               sentinel_user = "string", sentinel_password = "string", cluster_nodes = "table",
               cluster = "boolean" }
local KNOWN = { "host", "port", "path", "user", "password", "db", "timeout", "url",
                "connect_timeout", "tls", "tls_ca", "tls_cert", "tls_key", "tls_insecure",
                "tls_server_name", "sentinels", "master_name", "sentinel_user", "sentinel_password",
                "cluster_nodes", "cluster" }

local function truthy(v) return v == '1' or v == 'yes' or v == 'true' end

-- Fills the TLS options from the environment (when TLS is on) and checks them.
local function tls_defaults(t)
  if not t.tls then
    for _, k in ipairs({ 'tls_ca', 'tls_cert', 'tls_key', 'tls_insecure', 'tls_server_name' }) do
      if t[k] ~= nil then
        return nil, ("redis.connect: option '%s' is for TLS, but %s is plain: use rediss:// (or tls = true)")
          :format(k, _M.describe(t)), "EINVAL"
      end
    end
    return t
  end
  if t.path then
    return nil, "redis.connect: TLS over a unix socket is not supported (Redis serves TLS on TCP ports only)", "EINVAL"
  end
  if t.tls_ca == nil then t.tls_ca = getenv('JOBRT_TLS_CA') end
  if t.tls_cert == nil then t.tls_cert = getenv('JOBRT_TLS_CERT') end
  if t.tls_key == nil then t.tls_key = getenv('JOBRT_TLS_KEY') end
  if t.tls_insecure == nil then t.tls_insecure = truthy(getenv('JOBRT_TLS_INSECURE')) end
  return t
end

-- Checks a table of options; returns a fresh table, or nil, message, "EINVAL".
local function check_table(opts)
  local t = {}
  for k, v in pairs(opts) do
    local want = OPTS[k]
    if not want then
      return nil, ("redis.connect: unknown option '%s' (known: %s)"):format(tostring(k), concat(KNOWN, ", ")), "EINVAL"
    end
    if type(v) ~= want then
      return nil, ("redis.connect: option '%s' must be a %s, got %s"):format(k, want, type(v)), "EINVAL"
    end
    t[k] = v
  end
  if t.url then
    local u, uerr = _M.parse_url(t.url)
    if not u then return nil, uerr, "EINVAL" end
    for k, v in pairs(u) do if t[k] == nil then t[k] = v end end
  end
  if t.port and (t.port < 1 or t.port > 65535) then
    return nil, ("redis.connect: port must be 1-65535, got %s"):format(t.port), "EINVAL"
  end
  if t.cluster_nodes then
    if #t.cluster_nodes == 0 then return nil, "redis.connect: cluster_nodes must list at least one {host=, port=}", "EINVAL" end
    for i, n in ipairs(t.cluster_nodes) do
      if type(n) ~= "table" or type(n.host) ~= "string" or (n.port ~= nil and type(n.port) ~= "number") then
        return nil, ("redis.connect: cluster_nodes[%d] must be {host = string, port = number}"):format(i), "EINVAL"
      end
    end
    if t.cluster == false then return nil, "redis.connect: cluster_nodes and cluster = false contradict each other", "EINVAL" end
  end
  if t.sentinels then
    if #t.sentinels == 0 then return nil, "redis.connect: sentinels must list at least one {host=, port=}", "EINVAL" end
    if type(t.master_name) ~= "string" then
      return nil, "redis.connect: sentinels need master_name (the name the sentinels monitor)", "EINVAL"
    end
  end
  return t
end

-- Connects a core connection made from t; returns it or nil, message, code.
local function connect_core(t)
  local c, err, code = core.new(t)
  if not c then return nil, err, code end
  local ok, cerr, ccode = c:_connect()
  if not ok then return nil, cerr, ccode end
  return c
end

-- Connects to a cluster: through its seeds, or from conn (a node connection already open,
-- found to be a cluster node). Returns the router, or nil, message, code.
local function connect_cluster(t, conn)
  if not t.cluster_nodes then t.cluster_nodes = { { host = t.host or "127.0.0.1", port = t.port or 6379 } } end
  return require('jobrt.cluster').connect(t, conn)
end

-- Whether connection c (a single node's, just opened) is a node of a Redis Cluster: INFO
-- cluster says cluster_enabled:1. A server that refuses INFO (an ACL user without +info) or
-- does not answer it within DETECT_TIMEOUT seconds (something that only looks like Redis) is
-- taken as a single server: give such users redis+cluster:// addresses (or cluster = false).
local DETECT_TIMEOUT = 1
local function is_cluster_node(c)
  local info = c:call_timeout(DETECT_TIMEOUT, "INFO", "cluster")
  return type(info) == "string" and info:find("cluster_enabled:1", 1, true) ~= nil
end

-- connect(url | table | nil) -> connection, or nil, message, code. nil uses $JOBRT_REDIS or
-- redis://127.0.0.1:6379. Codes: EINVAL (malformed address or option), ECONNREFUSED (nothing
-- answers; also a name that does not resolve), ETIMEDOUT (no connection within
-- connect_timeout, default 10 s), ETLS (certificate, handshake, or TLS files), EAUTH (password,
-- ACL user or database refused), EROLE/ESENTINEL-like failures of Sentinel as ECONNREFUSED.
-- A cluster (redis+cluster://, cluster_nodes, or a plain address of a cluster node) gives a
-- router with the same methods (jobrt.cluster); is_connection() is true for both.
function _M.connect(opts)
  if opts == nil then opts = getenv("JOBRT_REDIS") or _M.DEFAULT_URL end
  local t, err, code
  if type(opts) == "string" then
    t, err, code = _M.parse_url(opts)
    if not t then return nil, err, code end
  elseif type(opts) == "table" then
    t, err, code = check_table(opts)
    if not t then return nil, err, code end
  else
    return nil, "redis.connect: expected a URL string or an options table, got " .. type(opts), "EINVAL"
  end
  t, err, code = tls_defaults(t)
  if not t then return nil, err, code end
  local c
  if t.sentinels then
    c, err, code = require('jobrt.sentinel').connect(t, connect_core)
  elseif t.cluster_nodes then
    c, err, code = connect_cluster(t)
  else
    c, err, code = connect_core(t)
    if c and t.cluster ~= false and not t.path then
      if is_cluster_node(c) then
        c, err, code = connect_cluster(t, c)
      elseif t.cluster == true then
        c:close()
        return nil, ("redis.connect: %s is not a cluster node (INFO cluster: cluster_enabled:0): "
          .. "leave out cluster = true"):format(_M.describe(t)), "EINVAL"
      end
    end
  end
  if not c then return nil, err, code end
  options[c] = t
  return c
end

-- Whether v is a connection made by connect (a single node's, or a cluster router).
function _M.is_connection(v)
  if type(v) == "userdata" then return true end
  return require('jobrt.cluster').is_router(v)
end

return _M
