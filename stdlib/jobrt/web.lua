-- jobrt.web: `jobrt web`, the HTTP face of jobrt (DESIGN "HTTP"): REST API under /api/, the
-- dashboard at /, Prometheus text at /metrics. One process, on the same loop as everything else;
-- it talks to Redis only through the client (jobrt.client) and the queue operations (jobrt.ops).
--
--   web.main(argv, cmd) -> exit status       the command line (usage: jobrt web --help)
--   local s, err = web.start{ listen = "127.0.0.1:7070", token = nil, redis = url,
--                             max_body = bytes, timeout = seconds, token_source = "--token" }
--       -- redis nil: JOBRT_REDIS, else this directory's private Redis (./.jobrt/redis.sock)
--       -- when it exists, else 127.0.0.1:6379 (jobrt.localredis.default_url, as every command);
--       -- token_source: how a bad token is named in the error (--token or JOBRT_WEB_TOKEN)
--       -- s.host, s.port (the port chosen when listen ends in :0), s:stop()
--       -- err: a usage problem (code 2: a non-loopback address without a token, a malformed
--       -- address) or a listen failure (code 1: the port is taken)
--
-- Security (issue 15): loopback by default; another address needs a token (--token or
-- JOBRT_WEB_TOKEN), then every API call and /metrics needs "Authorization: Bearer TOKEN" or the
-- dashboard's session cookie (HttpOnly, SameSite=Strict), got once from POST /api/login.
-- Mutating requests with an Origin header must come from this server's own origin (CSRF).
-- Without a token the Host header must name a loopback address, so a web page whose name
-- resolves to 127.0.0.1 (DNS rebinding) cannot read the API. Sizes: header block 16 KiB, body
-- --max-body (1 MiB); clients must send a request within --timeout seconds (10).
local jobrt = require 'jobrt'
local http = require 'jobrt.core.http'
local args = require 'jobrt.args'
local redis = require 'jobrt.redis'
local client = require 'jobrt.client'
local ops = require 'jobrt.ops'
local json = require 'jobrt.json'
local localredis = require 'jobrt.localredis'

local type, pairs, ipairs, tostring, tonumber, xpcall, pcall, setmetatable, getmetatable =
  type, pairs, ipairs, tostring, tonumber, xpcall, pcall, setmetatable, getmetatable
local str_format, concat, sort, floor, byte, char = string.format, table.concat, table.sort, math.floor,
  string.byte, string.char
local traceback, unpack = debug.traceback, unpack

local _M = {}

local NULL = json.null

-- ---- JSON out: sorted keys, arrays marked with ARRAY even when empty --------------------

_M.ARRAY = json.ARRAY
_M.array = json.array

local SORTED = { sort = true }

-- a copy of v that jobrt.json can always write: text that is not UTF-8 (a record written by
-- another tool) with U+FFFD for the bad bytes, NaN and infinities as null, other Lua values as
-- their tostring
local function displayable(v, depth)
  local t = type(v)
  if t == 'string' then return json.sanitize(v) end
  if t == 'number' then return (v ~= v or v == math.huge or v == -math.huge) and NULL or v end
  if v == nil or v == NULL or t == 'boolean' then return v end
  if t ~= 'table' or depth > 100 then return tostring(v) end
  local out = {}
  for k, x in pairs(v) do out[displayable(k, depth + 1)] = displayable(x, depth + 1) end
  if json.is_array(v) then json.array(out) end
  return out
end

-- JSON text of v for a reply (jobrt.json, keys sorted). The dashboard shows values with
-- textContent, never as HTML, so '<' needs no escaping here.
local function encode(v)
  local text = json.encode(v, SORTED)
  if text then return text end
  local t2, err = json.encode(displayable(v, 0), SORTED)
  if not t2 then error('web: cannot write a reply as JSON: ' .. tostring(err), 0) end
  return t2
end
_M.encode = encode

-- ---- requests and responses -----------------------------------------------------------

local SECURITY_HEADERS = {
  ['X-Content-Type-Options'] = 'nosniff',
  ['Referrer-Policy'] = 'no-referrer',
  ['X-Frame-Options'] = 'DENY',
  ['Cache-Control'] = 'no-store',
}

local function headers(extra)
  local h = {}
  for k, v in pairs(SECURITY_HEADERS) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

-- An HTTP error carried by error(): status and message.
local HttpError = {}
HttpError.__index = HttpError
HttpError.__tostring = function(e) return e.status .. ' ' .. e.message end

-- Raises an HTTP error: the handler stops, the client gets {"error": message} with status.
function _M.fail(status, message, extra)
  error(setmetatable({ status = status, message = message, extra = extra }, HttpError), 0)
end
local fail = _M.fail

local function unhex(h) return char(tonumber(h, 16)) end

-- Percent-decoding (and '+' as space in a query).
local function decode_uri(s, plus)
  if plus then s = s:gsub('+', ' ') end
  return (s:gsub('%%(%x%x)', unhex))
end

local function parse_query(q)
  local t = {}
  if not q or q == '' then return t end
  for pair in q:gmatch('[^&]+') do
    local k, v = pair:match('^([^=]*)=?(.*)$')
    t[decode_uri(k, true)] = decode_uri(v, true)
  end
  return t
end

-- The request body as JSON (nil when empty); 400 when it is not JSON.
function _M.body_json(req, required)
  local b = req.body
  if b == nil or b:find('^%s*$') then
    if required then fail(400, 'the request needs a JSON body') end
    return nil
  end
  local v, err = json.decode(b, { name = 'the body' })
  if v == nil then fail(400, err) end
  return v
end

-- A query parameter as seconds (>= 0, <= max); nil when absent; 400 when malformed.
function _M.query_seconds(req, name, max)
  local v = req.query[name]
  if v == nil or v == '' then return nil end
  local n = tonumber(v)
  if not n or n ~= n or n < 0 or n > max then
    fail(400, str_format("query parameter '%s' must be seconds from 0 to %g, got '%s'", name, max, v))
  end
  return n
end

-- ---- security ----------------------------------------------------------------------------

local function is_loopback(host)
  return host == 'localhost' or host:find('^127%.%d+%.%d+%.%d+$') ~= nil or host == '::1'
end
_M.is_loopback = is_loopback

-- Compares two strings in time that does not depend on where they differ.
local function same(a, b)
  if type(a) ~= 'string' or type(b) ~= 'string' or #a ~= #b then return false end
  local bit = require 'bit'
  local d = 0
  for i = 1, #a do d = bit.bor(d, bit.bxor(byte(a, i), byte(b, i))) end
  return d == 0
end

local function cookie(req, name)
  local c = req.headers.cookie
  if not c then return nil end
  for k, v in c:gmatch('([^=;%s]+)=([^;]*)') do
    if k == name then return v end
  end
end

local SESSION_COOKIE = 'jobrt_session'
local SESSION_TTL = 12 * 3600

local function hex(s) return (s:gsub('.', function(c) return str_format('%02x', byte(c)) end)) end

-- The Host header's name part ("127.0.0.1", "localhost", "::1").
local function host_name(h)
  if not h then return nil end
  return h:match('^%[([^%]]+)%]') or h:match('^([^:]+)')
end

-- ---- the server -----------------------------------------------------------------------------

local Server = {}
Server.__index = Server

-- Sends the response; body: a string (sent as is, with ctype) or a value (sent as JSON).
function Server:reply(req, status, body, extra, ctype)
  local h = headers(extra)
  local text
  if status == 204 then
    text = ''
  elseif type(body) == 'string' then
    text = body
    h['Content-Type'] = ctype or 'text/plain; charset=utf-8'
  else
    text = encode(body) .. '\n'
    h['Content-Type'] = 'application/json'
  end
  if req.method == 'OPTIONS' then h['Allow'] = req.allow end
  return http.respond(req.handle, status, h, text)
end

-- Is the request allowed in? Raises 401/403 otherwise.
function Server:check_access(req, needs_auth)
  local hdr = req.headers
  if not self.token then
    local name = host_name(hdr.host)
    if name and not is_loopback(name) then
      fail(403, str_format("Host '%s' is not a loopback name: without --token, jobrt web answers only requests for 127.0.0.1, localhost or [::1]", hdr.host))
    end
  end
  local mutating = req.method ~= 'GET' and req.method ~= 'HEAD' and req.method ~= 'OPTIONS'
  if mutating and hdr.origin then
    local want = hdr.host and ('http://' .. hdr.host)
    if hdr.origin ~= want and hdr.origin ~= ('https://' .. tostring(hdr.host)) then
      fail(403, str_format("Origin '%s' is not this server's (%s): cross-site requests are refused", hdr.origin, tostring(want)))
    end
  end
  if not needs_auth or not self.token then return end
  local auth = hdr.authorization
  if auth then
    local t = auth:match('^[Bb]earer%s+(%S+)%s*$')
    if t and same(t, self.token) then return end
    fail(401, 'wrong token in the Authorization header (want: Authorization: Bearer TOKEN)',
      { ['WWW-Authenticate'] = 'Bearer realm="jobrt"' })
  end
  local sid = cookie(req, SESSION_COOKIE)
  local s = sid and self.sessions[sid]
  if s and s > jobrt.now() then return end
  fail(401, 'this server needs a token: send Authorization: Bearer TOKEN (the dashboard asks for it)',
    { ['WWW-Authenticate'] = 'Bearer realm="jobrt"' })
end

-- POST /api/login {"token": T}: sets the session cookie. POST /api/logout: clears it.
function Server:login(req)
  local b = _M.body_json(req, true)
  if not self.token then return self:reply(req, 200, { ok = true, auth = false }) end
  if type(b) ~= 'table' or not same(b.token, self.token) then
    jobrt.sleep(0.2)                        -- a guesser gets five tries a second per connection
    fail(401, 'wrong token')
  end
  local now = jobrt.now()
  for k, exp in pairs(self.sessions) do if exp < now then self.sessions[k] = nil end end
  local sid = hex(jobrt.random_bytes(24))
  self.sessions[sid] = now + SESSION_TTL
  return self:reply(req, 200, { ok = true, auth = true }, {
    ['Set-Cookie'] = str_format('%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d', SESSION_COOKIE, sid, SESSION_TTL) })
end

function Server:logout(req)
  local sid = cookie(req, SESSION_COOKIE)
  if sid then self.sessions[sid] = nil end
  return self:reply(req, 200, { ok = true }, {
    ['Set-Cookie'] = SESSION_COOKIE .. '=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0' })
end

-- ---- static files --------------------------------------------------------------------------

local TYPES = { html = 'text/html; charset=utf-8', js = 'text/javascript; charset=utf-8',
                css = 'text/css; charset=utf-8', svg = 'image/svg+xml', png = 'image/png',
                txt = 'text/plain; charset=utf-8' }
local CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " ..
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

local assets
local function asset(name)
  if assets == nil then
    local ok, a = pcall(require, 'jobrt.assets')
    assets = ok and a or {}
  end
  return assets['jobrt/web/static/' .. name]
end
_M.asset = asset

function Server:static(req, name)
  local data = asset(name)
  if not data then fail(404, 'no such file: /static/' .. name) end
  local ext = name:match('%.(%w+)$') or 'txt'
  return self:reply(req, 200, data, { ['Content-Security-Policy'] = CSP, ['Cache-Control'] = 'no-cache' },
    TYPES[ext] or 'application/octet-stream')
end

-- ---- routing -------------------------------------------------------------------------------

-- Routes: { method, pattern (segments; ':name' captures one decoded segment), handler, auth }.
-- Handlers are function(server, req, captures...) from this module and jobrt.web.api / pull /
-- metrics; they answer with server:reply or raise with web.fail.
local routes = {}
local function route(method, pattern, fn, auth)
  local segs = {}
  for s in pattern:gmatch('[^/]+') do segs[#segs + 1] = s end
  routes[#routes + 1] = { method = method, segs = segs, fn = fn, auth = auth ~= false }
end
_M.route = route

local function match(r, parts)
  if #r.segs ~= #parts then return nil end
  local caps = {}
  for i, s in ipairs(r.segs) do
    if s:sub(1, 1) == ':' then
      caps[#caps + 1] = parts[i]
    elseif s ~= parts[i] then
      return nil
    end
  end
  return caps
end

route('GET', '/', function(s, req) return s:static(req, 'index.html') end, false)
route('GET', '/static/:file', function(s, req, f) return s:static(req, f) end, false)
route('GET', '/healthz', function(s, req) return s:reply(req, 200, { ok = true }) end, false)
route('POST', '/api/login', function(s, req) return s:login(req) end, false)
route('POST', '/api/logout', function(s, req) return s:logout(req) end, false)
-- GET /api/session: {"token_required", "signed_in"}, so the dashboard asks for the token
-- without first failing a call (a 401 would show as an error in the browser's console).
route('GET', '/api/session', function(s, req)
  s:check_access(req, false)
  local signed = not s.token or pcall(s.check_access, s, req, true)
  return s:reply(req, 200, { token_required = s.token ~= nil, signed_in = signed })
end, false)

function Server:dispatch(req)
  local target = req.target
  local path, query = target:match('^([^?#]*)%??([^#]*)')
  req.query = parse_query(query)
  local parts = {}
  for seg in (path or ''):gmatch('[^/]+') do parts[#parts + 1] = decode_uri(seg) end
  local method = req.method == 'HEAD' and 'GET' or req.method
  local allowed = {}
  for _, r in ipairs(routes) do
    local caps = match(r, parts)
    if caps then
      if r.method == method then
        self:check_access(req, r.auth)
        return r.fn(self, req, unpack(caps))
      end
      allowed[#allowed + 1] = r.method
    end
  end
  if #allowed > 0 then
    sort(allowed)
    req.allow = concat(allowed, ', ')
    if req.method == 'OPTIONS' then return self:reply(req, 204, nil) end
    fail(405, str_format('%s is not allowed on %s (allowed: %s)', req.method, path, req.allow),
      { Allow = req.allow })
  end
  fail(404, 'no such path: ' .. tostring(path) .. ' (the API is under /api/, see the README)')
end

-- Every request runs here, in its own coroutine.
function Server:handle(req)
  local t0 = jobrt.monotime()
  local ok, err = xpcall(self.dispatch, function(e)
    if getmetatable(e) == HttpError then return e end
    return traceback(tostring(e), 2)
  end, self, req)
  if ok then return end
  if getmetatable(err) == HttpError then
    self:reply(req, err.status, { error = err.message }, err.extra)
  else
    jobrt.log('error', 'jobrt web: %s %s failed: %s', req.method, req.target:sub(1, 200), tostring(err))
    self:reply(req, 500, { error = 'internal error: ' .. tostring(err):match('^[^\n]*') })
  end
  if jobrt.log_level and jobrt.monotime() - t0 > 5 then
    jobrt.log('debug', '%s %s took %.1fs', req.method, req.target, jobrt.monotime() - t0)
  end
end

-- The client (for the API); raises 503 while Redis cannot be reached.
function Server:client()
  if self.q then return self.q end
  fail(503, 'Redis at ' .. self.redis_where .. ' is not reachable yet' ..
    (self.redis_err and (': ' .. self.redis_err) or '') .. ' (jobrt web keeps trying)')
end

-- Connects the client and the connection of the pull-style workers; retries with backoff.
-- `once`: one attempt only (start makes one before it answers, so the first requests find
-- Redis when it is up). Returns true when connected.
function Server:connect_loop(once)
  local backoff = 0.1
  while not self.stopped do
    -- no --redis and no JOBRT_REDIS: where every other command goes (jobrt.localredis), looked
    -- up on every attempt, so a private Redis started later is found
    local url, q, err = self.redis_url, nil, nil
    if url == nil and os.getenv('JOBRT_REDIS') == nil then url, err = localredis.default_url() end
    self.redis_where = (url or err == nil) and client.describe(url) or (localredis.DIR .. '/ (the private Redis of this directory)')
    if url or err == nil then q, err = client.open(url) end
    local r2, err2, o
    if q then
      r2, err2 = redis.connect(url)
      if r2 then
        o, err2 = ops.new(r2)
        if not o then r2:close() end
      end
      if not o then
        q:close()
        q, err = nil, err2
      end
    end
    if q then
      if self.stopped then
        q:close()
        r2:close()
        return
      end
      self.q, self.r2, self.ops = q, r2, o
      self.redis_err = nil
      jobrt.log('info', 'jobrt web: connected to Redis at %s', self.redis_where)
      return true
    end
    if not self.redis_err then
      jobrt.log('warn', 'jobrt web: cannot reach Redis at %s: %s (retrying)', self.redis_where, tostring(err))
    end
    self.redis_err = tostring(err)
    if once then return false end
    jobrt.sleep(backoff)
    backoff = math.min(backoff * 2, 5)
  end
end

-- Parses "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT". Returns host, port or nil, message.
function _M.parse_listen(s)
  if type(s) ~= 'string' or s == '' then return nil, 'empty address' end
  local host, port = s:match('^%[([^%]]+)%]:(%d+)$')
  if not host then host, port = s:match('^([^:]*):(%d+)$') end
  if not host and s:match('^%d+$') then host, port = '', s end
  if not host then return nil, str_format("'%s' is not HOST:PORT (e.g. 127.0.0.1:7070, 0.0.0.0:7070 or [::1]:7070)", s) end
  if host == '' then host = '127.0.0.1' end
  if host == 'localhost' then host = '127.0.0.1' end
  if not host:find('^%d+%.%d+%.%d+%.%d+$') and not host:find(':') then
    return nil, str_format("'%s' is not an IP address: give one, e.g. 127.0.0.1:7070 or 0.0.0.0:7070", host)
  end
  port = tonumber(port)
  if port > 65535 then return nil, str_format("'%s': the port must be 0-65535", s) end
  return host, port
end

-- Starts serving. Returns the server, or nil, message, exit code (2 usage, 1 other).
function _M.start(o)
  o = o or {}
  local host, port = _M.parse_listen(o.listen or '127.0.0.1:7070')
  if not host then return nil, '--listen: ' .. port, 2 end
  local token = o.token
  if token == '' then token = nil end
  if token and (#token < 8 or token:find('[%s%c]')) then
    return nil, str_format('%s must be at least 8 characters without spaces or control characters, got %d characters (e.g. openssl rand -hex 16)',
      o.token_source or '--token', #token), 2
  end
  if not is_loopback(host) and not token then
    return nil, str_format('listening on %s would expose the API to the network without a password: give --token TOKEN (or set JOBRT_WEB_TOKEN), or listen on 127.0.0.1', host), 2
  end
  local self = setmetatable({ token = token, sessions = {}, redis_url = o.redis,
                              stopped = false, pull = {}, started = jobrt.now() }, Server)
  local srv, err = http.listen{ host = host, port = port, max_body = o.max_body or 1048576,
                                timeout = o.timeout or 10, max_header = 16384,
                                handler = function(req) return self:handle(req) end }
  if not srv then return nil, err, 1 end
  self.srv = srv
  self.host, self.port = srv:address()
  if not self:connect_loop(true) then
    self.connecting = jobrt.spawn(function() self:connect_loop() end)
  end
  return self
end

-- Stops listening, ends long polls and closes the Redis connections.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self.srv:close()
  require('jobrt.web.pull').stop(self)
  if self.q then self.q:close() end
  if self.r2 then self.r2:close() end
end

function Server:url()
  local h = self.host:find(':') and ('[' .. self.host .. ']') or self.host
  return str_format('http://%s:%d/', h, self.port)
end

-- The API, the pull-style workers and /metrics add their routes.
require('jobrt.web.api').install(_M)
require('jobrt.web.pull').install(_M)
require('jobrt.web.metrics').install(_M)

-- ---- the command -----------------------------------------------------------------------------

local USAGE = [[
usage: jobrt web [--listen HOST:PORT] [--token TOKEN] [OPTIONS]

Serves the REST API (under /api/), the dashboard (/) and Prometheus metrics (/metrics) over
HTTP until SIGINT or SIGTERM.

Options:
  --listen HOST:PORT   where to listen (default 127.0.0.1:7070; port 0: any free port)
  --token TOKEN        required when HOST is not a loopback address: every API call and
                       /metrics then needs "Authorization: Bearer TOKEN", and the dashboard asks
                       for it once. Prefer the environment variable JOBRT_WEB_TOKEN (an argument
                       is visible to other users in ps)
  --max-body BYTES     largest request body accepted (default 1048576)
  --timeout SECONDS    a client must send its request within this time (default 10)
  --redis URL          redis://[:password@]host:port[/db] or unix:///path (env JOBRT_REDIS)
  --log-level LEVEL    debug, info, warn or error
  --log-format FORMAT  text or json (env JOBRT_LOG_FORMAT)
]]

local SPEC = { listen = 'string', token = 'string', redis = 'string', ['log-level'] = 'string',
               ['log-format'] = 'string', ['max-body'] = 'count', timeout = 'count' }

function _M.main(argv, cmd)
  cmd = cmd or 'web'
  local o, pos = args.parse(argv, SPEC, 'jobrt ' .. cmd)
  if not o then
    io.stderr:write(pos, '\n')
    return 2
  end
  if o.help then
    io.stdout:write(USAGE)
    return 0
  end
  if pos[1] then
    io.stderr:write(str_format("jobrt %s: unexpected argument '%s' (see jobrt %s --help)\n", cmd, pos[1], cmd))
    return 2
  end
  local lok, lerr = args.apply_logging(o, 'jobrt ' .. cmd)
  if not lok then
    io.stderr:write(lerr, '\n')
    return 2
  end
  local url, perr = redis.address(o.redis)
  if url == false then
    io.stderr:write('jobrt ', cmd, ': ', perr, '\n')
    return 2
  end
  local token, source = o.token, '--token'
  if token == nil then token, source = os.getenv('JOBRT_WEB_TOKEN'), 'JOBRT_WEB_TOKEN' end
  local s, err, code = _M.start{ listen = o.listen, token = token, token_source = source,
                                 redis = url, max_body = o['max-body'], timeout = o.timeout }
  if not s then
    io.stderr:write('jobrt ', cmd, ': ', tostring(err), '\n')
    return code or 1
  end
  io.stderr:write(str_format('jobrt web: serving %s (API %sapi/, metrics %smetrics)%s\n', s:url(), s:url(), s:url(),
    s.token and ', token required' or ''))
  io.stderr:flush()
  local stop = jobrt.cond()
  local handlers = {}
  for _, sig in ipairs({ 'SIGINT', 'SIGTERM' }) do
    handlers[#handlers + 1] = jobrt.on_signal(sig, function(name) stop:broadcast(name) end)
  end
  local _, name = stop:wait()
  for _, h in ipairs(handlers) do h:close() end
  jobrt.log('info', 'jobrt web: %s: stopping', tostring(name))
  s:stop()
  return 0
end

return _M
