-- jobrt.pool: a keep-alive pool of Redis connections, one lent to each running job (job.redis).
--
-- One pipelined connection shared by every handler lets one handler's state leak into another
-- (a MULTI swallows another handler's GET, a SELECT moves everyone to another db, a BLPOP
-- stalls everyone). So each job borrows a connection of its own for its duration and gives it
-- back when it ends; a connection that comes back in a state another job would notice (inside
-- MULTI or WATCH, another db, a reply still pending, connection-level settings changed) is
-- closed, never pooled. The model is lua-resty-redis' set_keepalive.
--
--   local pool = require 'jobrt.pool'
--   local p = pool.new(conf[, opts])
--       conf: what jobrt.redis.connect takes (URL string or options table)
--       opts.max_idle: idle connections kept (default 16); opts.idle_timeout: seconds an idle
--       connection is kept (default 60)
--   local c, err, code = p:acquire()   -- yields; a connection lent for one job (below)
--   p:release(c)                       -- gives it back: pooled when clean, else closed; later
--                                      -- calls through c raise
--   p:close()                          -- closes the idle ones; acquire fails afterwards
--   p:stats() -> { idle=, lent=, opened=, closed_dirty= }
--
-- A lent connection c:
--   c:call(cmd, ...) -> value           raises on any error: a Redis error reply or a lost
--       connection fails the job that made the call (retries apply), so a handler cannot
--       silently lose a write. The message is "job.redis CMD: <error>". A call made while the
--       connection is down (Redis restarting, failing over) is not sent: it waits for the
--       connection to come back, up to 60 s (or its own timeout), and is sent then; the worker
--       stops the handler meanwhile if the job's lease runs out. Inside MULTI or WATCH (state
--       that died with the connection) it raises at once.
--   c:try(cmd, ...) -> value | nil, err[, code]   the same without raising, for handlers that
--       handle errors themselves (lua-resty-redis' form)
--   c:call_timeout(seconds, cmd, ...), c:try_timeout(seconds, cmd, ...)   with a deadline
-- Subscribe-family commands are refused by the connection itself (use jobrt.redis.connect for
-- pub/sub).
local redis = require 'jobrt.redis'
local jobrt = require 'jobrt'

local type, select, tostring, setmetatable, error = type, select, tostring, setmetatable, error
local upper, fmt = string.upper, string.format
local remove = table.remove

local _M = {}
local Pool = {}
Pool.__index = Pool
local Lent = {}
Lent.__index = Lent

-- Commands after which a connection is not handed to another job: they change connection
-- state that a later job would see (CLIENT subcommands other than the read-only ones, too).
local DIRTY = { HELLO = true, AUTH = true, RESET = true, READONLY = true, READWRITE = true,
                MONITOR = true, SUBSCRIBE = true, PSUBSCRIBE = true, SSUBSCRIBE = true,
                UNSUBSCRIBE = true, PUNSUBSCRIBE = true, SUNSUBSCRIBE = true, QUIT = true,
                ASKING = true }
local CLIENT_CLEAN = { ID = true, GETNAME = true, INFO = true, LIST = true }

function _M.new(conf, opts)
  opts = opts or {}
  local self = setmetatable({
    conf = conf, idle = {}, max_idle = opts.max_idle or 16, idle_timeout = opts.idle_timeout or 60,
    lent = 0, opened = 0, closed_dirty = 0, closed = false,
  }, Pool)
  if type(conf) == 'table' then
    local t = conf.db and conf or redis.parse_url(conf.url or '') or conf
    self.db = tonumber(t.db) or 0
  elseif type(conf) == 'string' then
    local t = redis.parse_url(conf)
    self.db = t and tonumber(t.db) or 0
  else
    self.db = 0
  end
  return self
end

-- Lends a connection: an idle one (most recently used first), else a new one.
function Pool:acquire()
  if self.closed then return nil, 'the connection pool is closed (the worker is stopping)', 'ECLOSED' end
  local now = jobrt.monotime()
  while #self.idle > 0 do
    local e = remove(self.idle)
    if now - e.since < self.idle_timeout then
      self.lent = self.lent + 1
      return setmetatable({ conn = e.conn, pool = self, pending = 0, db = self.db }, Lent)
    end
    e.conn:close()
  end
  local conn, err, code = redis.connect(self.conf)
  if not conn then return nil, err, code end
  self.opened = self.opened + 1
  self.lent = self.lent + 1
  return setmetatable({ conn = conn, pool = self, pending = 0, db = self.db }, Lent)
end

-- The connection's state would differ for the next job.
local function dirty(c)
  return c.dirty or c.in_multi or c.watching or c.pending > 0 or c.db ~= c.pool.db
end

function Pool:release(c)
  if c.ended then return end
  c.ended = true
  self.lent = self.lent - 1
  local conn = c.conn
  c.conn = nil
  if self.closed or dirty(c) or #self.idle >= self.max_idle then
    if dirty(c) then self.closed_dirty = self.closed_dirty + 1 end
    conn:close()
    return
  end
  self.idle[#self.idle + 1] = { conn = conn, since = jobrt.monotime() }
  -- connections idle for longer than idle_timeout are closed at the next acquire or release
  local now = jobrt.monotime()
  while #self.idle > 0 and now - self.idle[1].since >= self.idle_timeout do
    remove(self.idle, 1).conn:close()
  end
end

function Pool:close()
  self.closed = true
  for i = 1, #self.idle do self.idle[i].conn:close() end
  self.idle = {}
end

function Pool:stats()
  return { idle = #self.idle, lent = self.lent, opened = self.opened, closed_dirty = self.closed_dirty }
end

-- Tracks what a command does to the connection's state; runs before the call.
local function track(c, cmd, ...)
  if type(cmd) ~= 'string' then return end
  local u = upper(cmd)
  if u == 'MULTI' then c.in_multi = true
  elseif u == 'EXEC' or u == 'DISCARD' then c.in_multi, c.watching = false, false
  elseif u == 'WATCH' then c.watching = true
  elseif u == 'UNWATCH' then c.watching = false
  elseif u == 'SELECT' then c.db = tonumber((...)) or -1
  elseif u == 'CLIENT' then
    local sub = select('#', ...) > 0 and upper(tostring((...))) or ''
    if not CLIENT_CLEAN[sub] then c.dirty = true end
  elseif DIRTY[u] then c.dirty = true
  end
end

-- How long a call waits for a lost connection to come back before it fails (seconds), and how
-- often it looks (the connection itself reconnects with backoff: 50 ms doubling to 5 s).
local RECONNECT_WAIT, RECONNECT_POLL = 60, 0.05
local monotime = jobrt.monotime
-- the connection refused the call without sending it (it was down): safe to send again
local function not_sent(err) return type(err) == 'string' and err:find('^ECONN: not connected to redis') ~= nil end

local function invoke(c, timeout, cmd, ...)
  if c.ended then
    error(fmt('job.redis %s: the job this connection was lent to has ended', tostring(cmd)), 3)
  end
  track(c, cmd, ...)
  c.pending = c.pending + 1
  local v, err, code
  if timeout then v, err, code = c.conn:call_timeout(timeout, cmd, ...) else v, err, code = c.conn:call(cmd, ...) end
  if v == nil and code == 'ECONN' and not_sent(err) and not (c.in_multi or c.watching or c.dirty) then
    -- Redis is away and the command was never sent: wait for the connection to come back (it
    -- reconnects by itself) rather than fail the job over an outage shorter than its lease.
    -- If the worker loses the job's lease meanwhile, it stops this handler where it waits.
    -- Inside MULTI or WATCH the server-side state died with the connection: that raises.
    local deadline = monotime() + (timeout or RECONNECT_WAIT)
    repeat
      jobrt.sleep(RECONNECT_POLL)
      if c.ended then break end
      if timeout then v, err, code = c.conn:call_timeout(timeout, cmd, ...) else v, err, code = c.conn:call(cmd, ...) end
    until not (v == nil and code == 'ECONN' and not_sent(err)) or monotime() >= deadline
  end
  c.pending = c.pending - 1
  if v == nil and err ~= nil then
    -- a reply that never came (lost connection, deadline) leaves the connection unusable
    if code == 'ECONN' or code == 'ETIMEDOUT' or code == 'ECLOSED' or code == 'EPROTO' then
      c.dirty = true
    end
    -- a failed MULTI/EXEC leaves the transaction state unknown
    if c.in_multi and type(cmd) == 'string' and (upper(cmd) == 'EXEC' or upper(cmd) == 'MULTI') then c.dirty = true end
  end
  return v, err, code
end

function Lent:try(cmd, ...) return invoke(self, nil, cmd, ...) end
function Lent:try_timeout(t, cmd, ...) return invoke(self, t, cmd, ...) end

function Lent:call(cmd, ...)
  local v, err = invoke(self, nil, cmd, ...)
  if v == nil and err ~= nil then error(fmt('job.redis %s: %s', tostring(cmd), tostring(err)), 2) end
  return v
end

function Lent:call_timeout(t, cmd, ...)
  local v, err = invoke(self, t, cmd, ...)
  if v == nil and err ~= nil then error(fmt('job.redis %s: %s', tostring(cmd), tostring(err)), 2) end
  return v
end

return _M
