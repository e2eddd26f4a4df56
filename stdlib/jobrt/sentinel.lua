-- jobrt.sentinel: Redis Sentinel for jobrt.redis (redis+sentinel:// addresses): which node is
-- the primary, and following it through failovers.
--
--   local conn, err, code = sentinel.connect(t, connect_core)   -- used by jobrt.redis.connect
--   local host, port, err, code = sentinel.resolve(t)
--   sentinel.unwatch(conn)   -- conn no longer moves on +switch-master (READONLY still moves it)
-- t: the parsed address ({sentinels = {{host=, port=}, ...}, master_name=, sentinel_user=,
-- sentinel_password=, tls=, tls_*=, user=, password=, db=, ...}).
--
-- It follows Redis' guidelines for Sentinel clients (redis.io "Sentinel client spec"):
--   1. ask the sentinels in turn SENTINEL GET-MASTER-ADDR-BY-NAME; the first that answers with
--      an address wins and moves to the front of the list;
--   2. connect there and check that ROLE answers master (a sentinel's answer may be stale
--      during a failover): the C connection does it (want_master) on every (re)connect;
--   3. on every reconnect do it again: the connection's resolver hook calls resolve() and
--      answers through conn:_target(); a READONLY reply makes the connection reconnect;
--   4. listen to +switch-master on a sentinel (one listener per sentinel set and primary name
--      in the process) and make every connection to the old primary reconnect at once.
-- Errors: ECONNREFUSED when no sentinel answers, EINVAL when they do not know the name, and
-- the connection's own codes (EAUTH, ETLS, ...) when the primary refuses us.
local jobrt = require 'jobrt'
local core = require 'jobrt.core.redis'

local ipairs, pairs, tonumber, tostring, type, pcall = ipairs, pairs, tonumber, tostring, type, pcall
local str_format, concat, insert, remove = string.format, table.concat, table.insert, table.remove
local min = math.min

local _M = {}

local ASK_TIMEOUT = 2     -- seconds for one sentinel to connect and answer

local function addr(s)
  local h = s.host:find(':') and ('[' .. s.host .. ']') or s.host
  return str_format('%s:%d', h, s.port)
end

-- Options for a connection to sentinel s: the sentinels' own credentials, the TLS settings of
-- the address.
local function sentinel_opts(t, s)
  return { host = s.host, port = s.port, user = t.sentinel_user, password = t.sentinel_password,
           tls = t.tls, tls_ca = t.tls_ca, tls_cert = t.tls_cert, tls_key = t.tls_key,
           tls_insecure = t.tls_insecure, connect_timeout = ASK_TIMEOUT, timeout = ASK_TIMEOUT }
end

-- Asks sentinel s for the primary's address: host, port, or nil, message, code.
local function ask(t, s)
  local c, err, code = core.new(sentinel_opts(t, s))
  if not c then return nil, err, code end
  local ok, cerr, ccode = c:_connect()
  if not ok then
    c:close()
    return nil, cerr, ccode
  end
  local a, aerr, acode = c:call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', t.master_name)
  c:close()
  if a == nil then return nil, aerr, acode end
  if type(a) ~= 'table' or type(a[1]) ~= 'string' or not tonumber(a[2]) then
    return nil, str_format("it knows no primary named '%s' (check the name in the address: "
      .. "redis+sentinel://HOST:PORT/MASTERNAME)", t.master_name), 'EINVAL'
  end
  return a[1], tonumber(a[2])
end

-- A sentinel's failure, shorter: without its code and the address we name already.
local function short(err, code)
  err = tostring(err)
  if code and err:sub(1, #code + 2) == code .. ': ' then err = err:sub(#code + 3) end
  return (err:gsub('^cannot connect to redis at %S+: ', ''))
end

-- The primary's address according to the first sentinel that knows it: host, port, or nil,
-- "CODE: message", code (ECONNREFUSED when none answered, EINVAL when none knows the name).
function _M.resolve(t)
  local errs, code = {}, nil
  for i, s in ipairs(t.sentinels) do
    local host, port, ecode = ask(t, s)
    if host then
      if i > 1 then insert(t.sentinels, 1, remove(t.sentinels, i)) end
      return host, port
    end
    errs[#errs + 1] = str_format('sentinel %s: %s', addr(s), short(port, ecode))
    if ecode == 'EINVAL' or code == nil then code = ecode end
  end
  if code ~= 'EINVAL' and code ~= 'EAUTH' and code ~= 'ETLS' then code = 'ECONNREFUSED' end
  return nil, str_format("%s: cannot find the primary '%s': %s", code, t.master_name, concat(errs, '; ')), code
end

-- The resolver hook of connections to t's primary: asks the sentinels on every reconnect.
local function resolver(t)
  return function(conn)
    local ok, err = pcall(function()
      local host, port_or_err, code = _M.resolve(t)
      if host then conn:_target(host, port_or_err) else conn:_target(nil, port_or_err, code) end
    end)
    if not ok then conn:_target(nil, 'sentinel lookup failed: ' .. tostring(err), 'EPROTO') end
  end
end

-- ---- +switch-master ---------------------------------------------------------------------

local watchers = {}       -- key (sentinels and name) -> watcher

local function key_of(t)
  local parts = {}
  for i, s in ipairs(t.sentinels) do parts[i] = addr(s) end
  table.sort(parts)
  return concat(parts, ',') .. '/' .. t.master_name
end

-- Every connection the watcher serves that is not closed, as a list.
local function live(w)
  local list = {}
  for c in pairs(w.conns) do
    local ok, info = pcall(c.info, c)
    if ok and info.state ~= 'closed' then list[#list + 1] = c end
  end
  return list
end

local function stop_watcher(w)
  watchers[w.key] = nil
  if w.timer then w.timer:close() end
  if w.conn then w.conn:close() end
  w.conn, w.timer = nil, nil
end

-- A sentinel announced a failover: "<name> <old ip> <old port> <new ip> <new port>".
local function on_switch(w, msg)
  if msg == nil then return end          -- resubscribed: READONLY covers what was missed
  local name, _, _, host, port = msg:match('^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if name ~= w.name then return end
  local new = addr({ host = host, port = tonumber(port) or 0 })
  for _, c in ipairs(live(w)) do
    if c:info().addr ~= new then
      c:_reset(str_format("the sentinels announced a new primary for '%s': %s", name, new))
    end
  end
end

-- Runs the watcher: a connection to one of the sentinels (the next one on every reconnect),
-- subscribed to +switch-master; it closes when no connection it serves is left.
local function run_watcher(w, t)
  local n = 0
  local function next_sentinel(conn)
    n = n % #t.sentinels + 1
    local s = t.sentinels[n]
    conn:_target(s.host, s.port)
  end
  for i, s in ipairs(t.sentinels) do
    local o = sentinel_opts(t, s)
    o.timeout = nil
    o.resolver = next_sentinel
    local c = core.new(o)
    if c and c:_connect() then
      n = i
      w.conn = c
      break
    end
    if c then c:close() end
    if watchers[w.key] ~= w then return end
  end
  if watchers[w.key] ~= w then
    if w.conn then w.conn:close() end
    return
  end
  if not w.conn then
    jobrt.log('warn', "no sentinel of '%s' answers: failovers are noticed through READONLY only",
      w.name)
    watchers[w.key] = nil
    return
  end
  local ok, err = w.conn:subscribe('+switch-master', function(_, msg) on_switch(w, msg) end)
  if not ok then
    jobrt.log('warn', "cannot listen to the sentinels of '%s' (%s): failovers are noticed through READONLY only",
      w.name, tostring(err))
  end
  w.timer = jobrt.timer()
  w.timer:start(5, function()
    if #live(w) == 0 then stop_watcher(w) end
  end, 5)
end

-- Makes sure a watcher for t serves connection c.
local function watch(t, c)
  local key = key_of(t)
  local w = watchers[key]
  if not w then
    w = { key = key, name = t.master_name, conns = setmetatable({}, { __mode = 'k' }) }
    watchers[key] = w
    jobrt.spawn(run_watcher, w, t)
  end
  w.conns[c] = true
end

-- Stops moving conn when the sentinels announce a new primary; it still follows READONLY
-- replies and asks the sentinels on every reconnect. Returns true when it was watched.
function _M.unwatch(conn)
  for _, w in pairs(watchers) do
    if w.conns[conn] then
      w.conns[conn] = nil
      return true
    end
  end
  return false
end

-- ---- connecting ---------------------------------------------------------------------------

-- Connects to t's primary: asks the sentinels, connects (ROLE must say master), and retries
-- with backoff while a failover may be under way (the primary refuses us or is a replica),
-- until t.connect_timeout (default 10 s). connect_core(options) makes and connects a core
-- connection (jobrt.redis). Returns the connection, or nil, message, code.
function _M.connect(t, connect_core)
  local deadline = jobrt.monotime() + (t.connect_timeout or 10)
  local backoff = 0.05
  while true do
    local host, port, code = _M.resolve(t)
    local err = not host and port or nil
    if host then
      local o = {}
      for k, v in pairs(t) do o[k] = v end
      o.sentinels, o.sentinel_user, o.sentinel_password, o.master_name = nil, nil, nil, nil
      o.host, o.port, o.want_master, o.label, o.resolver = host, port, true, t.master_name, resolver(t)
      local c, cerr, ccode = connect_core(o)
      if c then
        watch(t, c)
        return c
      end
      err, code = cerr, ccode
      if code == 'EAUTH' or code == 'ETLS' or code == 'EINVAL' then return nil, err, code end
    elseif code ~= 'ETIMEDOUT' then
      return nil, err, code           -- no sentinel answers, or none knows the name
    end
    if jobrt.monotime() >= deadline then return nil, err, code end
    jobrt.sleep(backoff)
    backoff = min(backoff * 2, 0.5)
  end
end

return _M
