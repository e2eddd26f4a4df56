-- jobrt.redis: connect to Redis from a coroutine; calls yield until the reply.
--
--   local r, err = redis.connect("redis://:pw@host:6379/0" | "unix:///path" | {host=, port=, ...})
--   local v, err = r:call("GET", "k")       -- err: the Redis error, or "ECONN: ...", "ETIMEDOUT: ..."
--   r:call_timeout(0.5, "BLPOP", "k", 0)
--   r:subscribe(channel, function(channel, message) end)   -- message nil: resubscribed
--   r:unsubscribe(channel); r:close(); r:info()
-- A nil bulk reply is redis.null (the same value as cjson.null).
local core = require 'jobrt.core.redis'

local tonumber, type, floor = tonumber, type, math.floor

local _M = { null = core.null, DEFAULT_URL = "redis://127.0.0.1:6379" }

local options = setmetatable({}, { __mode = "k" })   -- connection -> the options it was made with

-- The options a connection was made with (a table for connect), so a second connection to the
-- same server can be made from the first.
function _M.options_of(conn) return options[conn] end

local URL_HELP = "expected redis://[:password@]host[:port][/db] or unix://[:password@]/path/to/socket[?db=N]"

local function bad(url, why)
  return nil, ("bad redis URL '%s': %s; %s"):format(url, why, URL_HELP)
end

-- The address a command uses: `given` (its --redis), else JOBRT_REDIS. Returns the URL, nil
-- when neither is set (the default applies), or false and a message when it is malformed.
function _M.address(given)
  local url = given or os.getenv('JOBRT_REDIS')
  if url == nil then return nil end
  local ok, err = _M.parse_url(url)
  if not ok then return false, err .. (given and '' or ' (from JOBRT_REDIS)') end
  return url
end

-- Parses a Redis URL into {host=, port=, password=, db=} or {path=, db=}.
function _M.parse_url(url)
  if type(url) ~= "string" then return nil, "redis URL must be a string" end
  local upw, path, query = url:match("^unix://:([^@]*)@(/[^?]*)%??(.*)$")
  if not upw then path, query = url:match("^unix://(/[^?]*)%??(.*)$") end
  if path then
    local t = { path = path, db = 0, password = upw ~= "" and upw or nil }
    if query ~= "" then
      local db = query:match("^db=(%d+)$")
      if not db then return bad(url, "the only query is db=N") end
      t.db = tonumber(db)
    end
    return t
  end
  local rest = url:match("^redis://(.*)$")
  if not rest then return bad(url, "unknown scheme") end
  local t = { db = 0, port = 6379 }
  local auth, hostpart = rest:match("^(.*)@([^@]*)$")
  if auth then
    t.password = auth:match("^[^:]*:(.*)$") or auth
    if t.password == "" then t.password = nil end
  else
    hostpart = rest
  end
  local hp, db = hostpart:match("^([^/]*)/?(.*)$")
  if db ~= "" then
    if not db:match("^%d+$") then return bad(url, "database must be a number") end
    t.db = tonumber(db)
  end
  local host, port = hp:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = hp:match("^([^:]*):?(.*)$") end
  if host == "" then return bad(url, "missing host") end
  t.host = host == "localhost" and "127.0.0.1" or host
  if port ~= "" then
    local p = tonumber(port)
    if not p or p < 1 or p > 65535 or p ~= floor(p) then return bad(url, "port must be 1-65535") end
    t.port = p
  end
  return t
end

local OPTS = { host = "string", port = "number", path = "string", password = "string",
               db = "number", timeout = "number", url = "string" }

-- connect(url | table | nil): nil uses $JOBRT_REDIS or redis://127.0.0.1:6379.
function _M.connect(opts)
  if opts == nil then opts = os.getenv("JOBRT_REDIS") or _M.DEFAULT_URL end
  local t, err
  if type(opts) == "string" then
    t, err = _M.parse_url(opts)
    if not t then return nil, err end
  elseif type(opts) == "table" then
    t = {}
    for k, v in pairs(opts) do
      local want = OPTS[k]
      if not want then
        return nil, ("redis.connect: unknown option '%s' (known: host, port, path, password, db, timeout, url)"):format(tostring(k))
      end
      if type(v) ~= want then
        return nil, ("redis.connect: option '%s' must be a %s, got %s"):format(k, want, type(v))
      end
      t[k] = v
    end
    if t.url then
      local u, uerr = _M.parse_url(t.url)
      if not u then return nil, uerr end
      for k, v in pairs(u) do if t[k] == nil then t[k] = v end end
    end
    if t.port and (t.port < 1 or t.port > 65535) then
      return nil, ("redis.connect: port must be 1-65535, got %s"):format(t.port)
    end
  else
    return nil, "redis.connect: expected a URL string or an options table, got " .. type(opts)
  end
  local c = core.new(t)
  local ok, cerr = c:_connect()
  if not ok then return nil, cerr end
  options[c] = t
  return c
end

return _M
