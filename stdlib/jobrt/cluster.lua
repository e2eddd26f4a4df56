-- jobrt.cluster: Redis Cluster for jobrt.redis: a router with the API of one connection.
--
--   local r, err, code = cluster.connect(t[, seed_conn])   -- used by jobrt.redis.connect
--       t: the parsed address with cluster_nodes = { {host=, port=}, ... } (the seeds) and the
--          options of every node connection (user, password, tls*, timeout, connect_timeout);
--       seed_conn: an open core connection to a node (a plain URL found to be a cluster node:
--          jobrt.redis asks INFO cluster), adopted when that node is a primary
--   r:call(cmd, ...), r:call_timeout(seconds, cmd, ...)   as a connection's (jobrt.redis)
--   r:subscribe(channel, fn), r:unsubscribe(channel), r:close(), r:info()
--   r:nodes() -> { {addr=, slots=n, state=}... } the primaries, r:refresh() -> true | nil, err
--   r:each_primary(cmd, ...) -> { {addr=, value=} | {addr=, err=, code=}... } one call per primary
--   cluster.keyslot(key) -> 0..16383 (CRC16-XMODEM of the key or of its {hash tag}, mod 16384)
--   cluster.is_router(v) -> boolean
--
-- The model is the Redis Cluster client spec (redis.io "Redis cluster specification", "Client
-- and server roles"): the client keeps the slot map, sends each command to the primary of its
-- key's slot and follows the cluster's answers:
--   * the map comes from CLUSTER SHARDS (Redis 7; CLUSTER SLOTS on 6.x), asked of a node we
--     know (the primaries, then the seeds); it is asked again on every MOVED, when a node is
--     lost, and every REFRESH_EVERY seconds. One core connection (jobrt.core.redis) per
--     primary, opened when first needed; node connections reconnect by themselves.
--   * MOVED slot host:port: the slot is remapped at once and the call sent there; ASK: ASKING
--     and the call are written back to back on the importing node's connection, once;
--     TRYAGAIN (a multi-key call while its slot migrates), CLUSTERDOWN, LOADING, READONLY
--     (answers that mean the call did not run): tried again with backoff (10 ms doubling to
--     0.5 s) until the call's deadline (its timeout, else WAIT seconds). At most
--     MAX_REDIRECTS redirections per call.
--   * a call is sent only on a connection that is up (conn:_up()), so a lost connection
--     afterwards means the command may have run: such a call is never resent by the router
--     (read-only commands excepted: resending them changes nothing). It fails with the
--     connection's error (ECONN, ETIMEDOUT); the caller decides (jobrt's worker relies on
--     leases and attempts, lua-server-scripts/README.md "Leases"). A call that could not be
--     sent (its primary is down and no replica has taken over yet) waits and is tried again,
--     following the map, until its deadline.
--   * keys: the first key decides; every key of a call must map to the same slot, else the call
--     is refused before anything is sent (nil, "CROSSSLOT ...", "EREDIS", "CROSSSLOT", with the
--     slots and the fix). Where the keys are comes from a table of common commands, then from
--     COMMAND INFO (asked once per command name per process), COMMAND GETKEYS for commands
--     whose keys move (SORT, ZUNION...). EVAL/EVALSHA/FCALL: the numkeys keys.
--   * keyless commands (PING, TIME, INFO, ...) go to one primary; FLUSHALL, FLUSHDB and
--     SCRIPT LOAD|FLUSH go to every primary; DBSIZE adds them up; KEYS collects them; SCAN
--     goes to the primary of the {hash tag} of its MATCH pattern (and is refused without
--     one: every node scans only its own keys); PUBLISH goes to the primary of the channel's
--     slot (classic pub/sub is broadcast to every node by the cluster).
--   * scripts: SCRIPT LOAD goes to every primary and the router keeps each text by its sha,
--     so a NOSCRIPT from one node (a new primary after a failover, a restarted node) is
--     answered by loading the script there and sending the EVALSHA again (it did not run).
--   * MULTI ... EXEC: the transaction keeps to the node of its first key (MULTI is sent with
--     the first command); every key in it must share that slot (Redis' own rule).
--   * subscribe: on the connection of the primary of the channel's slot. When that node stops
--     being a primary (a failover), the subscription moves to the new primary and fn(channel,
--     nil) runs, as after a reconnect (messages meanwhile may have been missed).
-- Errors: as a connection's, plus ECONN when a slot's primary stayed unreachable until the
-- deadline, EINVAL for a call that cannot be routed (SCAN without a tag, SELECT of a db other
-- than 0), ECONNREFUSED when no seed answers.
local jobrt = require 'jobrt'
local core = require 'jobrt.core.redis'
local bit = require 'bit'

local band, bxor, lshift, rshift = bit.band, bit.bxor, bit.lshift, bit.rshift
local type, tostring, tonumber, pairs, ipairs, select, setmetatable, getmetatable, pcall, error =
      type, tostring, tonumber, pairs, ipairs, select, setmetatable, getmetatable, pcall, error
local unpack = unpack or table.unpack
local byte, find, sub, upper, lower, fmt = string.byte, string.find, string.sub, string.upper, string.lower, string.format
local concat, sort, min, floor = table.concat, table.sort, math.min, math.floor
local spawn, sleep, monotime = jobrt.spawn, jobrt.sleep, jobrt.monotime

local _M = {}
local R = {}
R.__index = R

local NSLOTS = 16384
local MAX_REDIRECTS = 5        -- MOVED/ASK followed per call
local WAIT = 40                -- seconds a call without a timeout may wait for its slot's primary:
                               -- about twice what a failover takes with Redis' default
                               -- cluster-node-timeout of 15 s (22 s measured: the failure is
                               -- agreed on by gossip, then the replica's election)
local REFRESH_EVERY = 10       -- seconds between map refreshes when nothing asks for one
local REFRESH_GAP = 0.1        -- seconds between refreshes that MOVED or a lost node asked for
local ASK_TIMEOUT = 2          -- seconds for a node to answer CLUSTER SHARDS
_M.MAX_REDIRECTS, _M.WAIT, _M.REFRESH_EVERY = MAX_REDIRECTS, WAIT, REFRESH_EVERY

-- ---- slots ---------------------------------------------------------------------------

local CRC = {}
for i = 0, 255 do
  local c = lshift(i, 8)
  for _ = 1, 8 do
    if band(c, 0x8000) ~= 0 then c = bxor(lshift(c, 1), 0x1021) else c = lshift(c, 1) end
  end
  CRC[i] = band(c, 0xffff)
end

-- CRC16-XMODEM of s:sub(i, j) (the cluster's hash: redis.io cluster spec, "Key distribution").
local function crc16(s, i, j)
  local c = 0
  for k = i, j do
    c = band(bxor(lshift(c, 8), CRC[bxor(rshift(c, 8), byte(s, k))]), 0xffff)
  end
  return c
end

local slot_cache, slot_cached = {}, 0
local SLOT_CACHE_MAX = 8192

-- The slot of key: the hash of the part between the first "{" and the next "}" when that part
-- is not empty (the hash tag), else of the whole key. Cached for the keys met last.
function _M.keyslot(key)
  local s = slot_cache[key]
  if s then return s end
  if type(key) ~= 'string' then key = tostring(key) end
  local n = #key
  local i, j = 1, n
  local o = find(key, '{', 1, true)
  if o then
    local c = find(key, '}', o + 1, true)
    if c and c > o + 1 then i, j = o + 1, c - 1 end
  end
  s = crc16(key, i, j) % NSLOTS
  if slot_cached >= SLOT_CACHE_MAX then slot_cache, slot_cached = {}, 0 end
  slot_cache[key] = s
  slot_cached = slot_cached + 1
  return s
end
local keyslot = _M.keyslot

-- ---- where the keys of a command are ----------------------------------------------------

-- Specs: kind = 'range' (keys at argument first, then every step up to last; negative last
-- counts from the end; positions as in COMMAND INFO: the command name is 0), 'eval' (numkeys
-- at 2, keys after it), 'movable' (COMMAND GETKEYS), 'container' (the subcommand decides),
-- 'keyless', or one of the special kinds handled in R:_special. readonly: safe to resend.
local function range(first, last, step, ro) return { kind = 'range', first = first, last = last, step = step, readonly = ro } end
local KEYLESS = { kind = 'keyless' }
local KEYLESS_RO = { kind = 'keyless', readonly = true }

local BUILTIN = {}
for c in ([[GET HGET HGETALL HMGET HEXISTS HLEN HKEYS HVALS HSTRLEN HRANDFIELD LRANGE LLEN LINDEX LPOS
  SCARD SMEMBERS SISMEMBER SMISMEMBER SRANDMEMBER ZRANGE ZRANGEBYSCORE ZREVRANGE ZREVRANGEBYSCORE
  ZRANGEBYLEX ZCARD ZSCORE ZMSCORE ZRANK ZREVRANK ZCOUNT ZLEXCOUNT ZRANDMEMBER TTL PTTL EXPIRETIME
  PEXPIRETIME TYPE STRLEN GETRANGE SUBSTR GETBIT BITCOUNT BITPOS XLEN XRANGE XREVRANGE DUMP
  HSCAN SSCAN ZSCAN GEOPOS GEODIST GEOHASH]]):gmatch('%S+') do
  BUILTIN[c] = range(1, 1, 1, true)
end
for c in ([[SET SETNX SETEX PSETEX GETSET GETDEL GETEX INCR INCRBY INCRBYFLOAT DECR DECRBY APPEND
  SETRANGE SETBIT HSET HSETNX HDEL HINCRBY HINCRBYFLOAT HMSET LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP
  LREM LTRIM LSET LINSERT SADD SREM SPOP ZADD ZREM ZINCRBY ZPOPMIN ZPOPMAX ZREMRANGEBYSCORE
  ZREMRANGEBYRANK ZREMRANGEBYLEX EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST XADD XDEL XTRIM XACK
  XCLAIM XAUTOCLAIM XSETID PFADD GEOADD RESTORE]]):gmatch('%S+') do
  BUILTIN[c] = range(1, 1, 1, false)
end
BUILTIN.DEL = range(1, -1, 1); BUILTIN.UNLINK = range(1, -1, 1)
BUILTIN.EXISTS = range(1, -1, 1, true); BUILTIN.MGET = range(1, -1, 1, true)
BUILTIN.TOUCH = range(1, -1, 1, true); BUILTIN.SINTER = range(1, -1, 1, true)
BUILTIN.SUNION = range(1, -1, 1, true); BUILTIN.SDIFF = range(1, -1, 1, true)
BUILTIN.PFCOUNT = range(1, -1, 1, true)
BUILTIN.MSET = range(1, -1, 2); BUILTIN.MSETNX = range(1, -1, 2)
BUILTIN.BLPOP = range(1, -2, 1); BUILTIN.BRPOP = range(1, -2, 1)
BUILTIN.BZPOPMIN = range(1, -2, 1); BUILTIN.BZPOPMAX = range(1, -2, 1)
BUILTIN.RPOPLPUSH = range(1, 2, 1); BUILTIN.LMOVE = range(1, 2, 1); BUILTIN.BLMOVE = range(1, 2, 1)
BUILTIN.BRPOPLPUSH = range(1, 2, 1); BUILTIN.SMOVE = range(1, 2, 1); BUILTIN.RENAME = range(1, 2, 1)
BUILTIN.RENAMENX = range(1, 2, 1); BUILTIN.COPY = range(1, 2, 1)
BUILTIN.SINTERSTORE = range(1, -1, 1); BUILTIN.SUNIONSTORE = range(1, -1, 1)
BUILTIN.SDIFFSTORE = range(1, -1, 1); BUILTIN.PFMERGE = range(1, -1, 1)
BUILTIN.SPUBLISH = range(1, 1, 1)
for _, c in ipairs({ 'EVAL', 'EVALSHA', 'FCALL' }) do BUILTIN[c] = { kind = 'eval' } end
for _, c in ipairs({ 'EVAL_RO', 'EVALSHA_RO', 'FCALL_RO' }) do BUILTIN[c] = { kind = 'eval', readonly = true } end
for c in ('PING ECHO TIME INFO ROLE LASTSAVE'):gmatch('%S+') do BUILTIN[c] = KEYLESS_RO end
for c in ('CLIENT CONFIG COMMAND SLOWLOG LATENCY ACL WAIT MEMORY DEBUG CLUSTER'):gmatch('%S+') do
  BUILTIN[c] = KEYLESS
end
BUILTIN['MEMORY'] = { kind = 'container' }
BUILTIN['OBJECT'] = { kind = 'container' }
BUILTIN['XINFO'] = { kind = 'container' }
BUILTIN['XGROUP'] = { kind = 'container' }
-- special kinds (R:_special)
for c, k in pairs({ FLUSHALL = 'all', FLUSHDB = 'all', DBSIZE = 'sum', KEYS = 'keys', SCAN = 'scan',
                    SCRIPT = 'script', FUNCTION = 'function', PUBLISH = 'publish', SELECT = 'select',
                    MULTI = 'multi', EXEC = 'exec', DISCARD = 'discard', WATCH = 'watch',
                    UNWATCH = 'unwatch', ASKING = 'refuse', READONLY = 'refuse', READWRITE = 'refuse',
                    MIGRATE = 'refuse' }) do
  BUILTIN[c] = { kind = k }
end
local WATCH_KEYS = range(1, -1, 1)

local info_cache = {}          -- upper-case name (or "name|sub") -> spec from COMMAND INFO
local spec_cache, spec_cached = {}, 0   -- the name as called -> spec

-- A spec from one entry of a COMMAND INFO reply.
local function spec_from_info(e)
  if type(e) ~= 'table' or type(e[4]) ~= 'number' then return nil end
  local flags = {}
  if type(e[3]) == 'table' then for _, f in ipairs(e[3]) do flags[f] = true end end
  local ro = flags.readonly or nil
  if flags.movablekeys then return { kind = 'movable', readonly = ro } end
  if e[4] == 0 then
    if type(e[10]) == 'table' and #e[10] > 0 then return { kind = 'container', readonly = ro } end
    return { kind = 'keyless', readonly = ro }
  end
  return range(e[4], e[5], e[6] ~= 0 and e[6] or 1, ro)
end

-- The spec of command name u (upper case), asking the cluster (COMMAND INFO) when not known.
-- Without an answer (an ACL user without +command) the first argument is taken as the key.
function R:_command_info(u)
  local s = info_cache[u]
  if s then return s end
  local v = self:_call_keyless(nil, 'COMMAND', 'INFO', u)
  s = type(v) == 'table' and spec_from_info(v[1])
  if not s then
    if type(v) == 'table' then s = KEYLESS else s = range(1, 1, 1) end
    if type(v) ~= 'table' then return s end       -- not cached: ask again next time
  end
  info_cache[u] = s
  return s
end

-- The spec of command cmd (any case; may ask the cluster).
function R:_spec(cmd)
  local s = spec_cache[cmd]
  if s then return s end
  if type(cmd) ~= 'string' then return KEYLESS end     -- the connection raises for it
  local u = upper(cmd)
  s = BUILTIN[u] or self:_command_info(u)
  if spec_cached >= 1024 then spec_cache, spec_cached = {}, 0 end
  spec_cache[cmd] = s
  spec_cached = spec_cached + 1
  return s
end

-- The message for keys in different slots.
local function crossslot(cmd, k1, s1, k2, s2)
  local function show(k) k = tostring(k); return #k > 40 and (k:sub(1, 40) .. '...') or k end
  return nil, fmt("CROSSSLOT Keys in request don't hash to the same slot: %s's keys '%s' (slot %d) "
    .. "and '%s' (slot %d) are in different slots of the cluster, and one command runs on one "
    .. "node; give the keys a common hash tag so they share a slot, e.g. '{user42}:a' and "
    .. "'{user42}:b' (only the part inside {} is hashed)", tostring(cmd), show(k1), s1, show(k2), s2),
    'EREDIS', 'CROSSSLOT'
end

-- The message for a key of another slot inside a transaction (MULTI ... EXEC, WATCH).
local function crossslot_tx(cmd, key, slot, tx_slot)
  return nil, fmt("CROSSSLOT Keys in request don't hash to the same slot: %s's key '%s' is in slot "
    .. "%d, but this transaction's keys are in slot %d; in a cluster a transaction (WATCH, MULTI "
    .. "... EXEC) runs on one node and all its keys must share a slot: give them a common hash "
    .. "tag, e.g. '{user42}:a' and '{user42}:b'", tostring(cmd), tostring(key), slot, tx_slot),
    'EREDIS', 'CROSSSLOT'
end

-- The slot of keys at positions i, i+step, ..., j of the arguments (1 = the first after the
-- command name); -1 when there is none; nil, crossslot error when they differ.
local function slot_of_range(cmd, i, j, step, ...)
  local k1 = (select(i, ...))
  if k1 == nil then return -1 end
  local s1 = keyslot(k1)
  for p = i + step, j, step do
    local k = (select(p, ...))
    if k == nil then break end
    local s = keyslot(k)
    if s ~= s1 then return crossslot(cmd, k1, s1, k, s) end
  end
  return s1
end

-- The first key of a call (for messages), or nil.
function R:_first_key(spec, ...)
  if spec.kind == 'eval' then return (select(3, ...)) end
  if spec.kind == 'range' then return (select(spec.first, ...)) end
  return nil
end

-- The slot a call goes to: 0..16383, -1 (no key: any primary), or nil and an error.
function R:_slot(spec, cmd, ...)
  local kind = spec.kind
  if kind == 'eval' then
    local nk = tonumber((select(2, ...))) or 0
    if nk < 1 then return -1 end
    return slot_of_range(cmd, 3, 2 + nk, 1, ...)
  elseif kind == 'range' then
    local n = select('#', ...)
    local last = spec.last
    if last < 0 then last = n + 1 + last end
    return slot_of_range(cmd, spec.first, last, spec.step, ...)
  elseif kind == 'keyless' then
    return -1
  elseif kind == 'container' then
    local subc = (select(1, ...))
    if type(subc) ~= 'string' then return -1 end
    local name = upper(cmd) .. '|' .. lower(subc)
    local s = info_cache[name]
    if not s then
      local v = self:_call_keyless(nil, 'COMMAND', 'INFO', name)
      s = type(v) == 'table' and spec_from_info(v[1]) or KEYLESS
      if type(v) == 'table' then info_cache[name] = s end
    end
    if s.kind == 'container' then return -1 end
    return self:_slot(s, cmd, ...)
  elseif kind == 'movable' then
    local v, err, code, word = self:_call_keyless(nil, 'COMMAND', 'GETKEYS', cmd, ...)
    if type(v) ~= 'table' then
      if code == 'EREDIS' and word == 'ERR' and tostring(err):find('no key arguments') then return -1 end
      return -1                                   -- the node will answer the call's own error
    end
    local k1 = v[1]
    if k1 == nil then return -1 end
    local s1 = keyslot(k1)
    for p = 2, #v do
      local s = keyslot(v[p])
      if s ~= s1 then return crossslot(cmd, k1, s1, v[p], s) end
    end
    return s1
  end
  return -1
end

-- ---- nodes ------------------------------------------------------------------------------

local function addr_of(host, port)
  if find(host, ':', 1, true) then return fmt('[%s]:%d', host, port) end
  return fmt('%s:%d', host, port)
end

-- The node record of host:port (made when new; its connection opens when first used).
function R:_node(host, port)
  local a = addr_of(host, port)
  local n = self.known[a]
  if not n then
    n = { addr = a, host = host, port = port }
    self.known[a] = n
  end
  return n
end

-- Options of a connection to node n.
function R:_node_opts(n, timeout)
  local o = {}
  for k, v in pairs(self.opts) do o[k] = v end
  o.host, o.port, o.label = n.host, n.port, 'cluster node'
  if timeout then o.connect_timeout, o.timeout = timeout, timeout end
  return o
end

local FATAL = { EAUTH = true, ETLS = true, EINVAL = true, ECLOSED = true }

-- An up connection to node n: conn, or nil, message, code (connects when there is none yet;
-- yields). A connection that exists but is down answers nil at once: it reconnects by itself.
function R:_conn(n)
  local c = n.conn
  if c then
    if c:_up() then return c end
    return nil, fmt('ECONN: cannot reach %s (%s)', n.addr, tostring(c:info().error or 'reconnecting')), 'ECONN'
  end
  if self.closed then return nil, 'ECLOSED: the cluster connection is closed', 'ECLOSED' end
  if n.connecting then
    n.connecting:wait(self.opts.connect_timeout or 10)
    return self:_conn_existing(n)
  end
  n.connecting = jobrt.cond()
  local conn, err, code = core.new(self:_node_opts(n))
  if conn then
    local ok
    ok, err, code = conn:_connect()
    if not ok then
      conn:close()
      conn = nil
    end
  end
  local cond = n.connecting
  n.connecting = nil
  if conn and (self.closed or n.retired) then
    conn:close()
    conn, err, code = nil, 'ECLOSED: the cluster connection is closed', 'ECLOSED'
  end
  if conn then
    n.conn = conn
  else
    n.failed_at = monotime()
  end
  cond:broadcast()
  return conn, err, code
end

function R:_conn_existing(n)
  if n.conn and n.conn:_up() then return n.conn end
  return nil, fmt('ECONN: cannot connect to %s', n.addr), 'ECONN'
end

-- The primary that serves slot s, or nil.
function R:_owner(s)
  return self.slots[s]
end

-- A primary for a keyless call: the first whose connection is up, else the first that can be
-- connected. Returns conn, node or nil, message, code.
function R:_any()
  local d = self.default
  if d and d.conn and d.conn:_up() and not d.retired then return d.conn, d end
  for _, n in ipairs(self.primaries) do
    if n.conn and n.conn:_up() then
      self.default = n
      return n.conn, n
    end
  end
  local err, code
  for _, n in ipairs(self.primaries) do
    if not n.conn then
      local c
      c, err, code = self:_conn(n)
      if c then
        self.default = n
        return c, n
      end
      if FATAL[code] then return nil, err, code end
    end
  end
  return nil, err or 'ECONN: no primary of the cluster answers', code or 'ECONN'
end

-- ---- the slot map -----------------------------------------------------------------------

-- Shards from a CLUSTER SHARDS reply: { { ranges = {a, b, ...}, primary = {host=, port=, id=},
-- health = }... } (only shards that serve slots).
local function flat(t)
  local o = {}
  if type(t) ~= 'table' then return o end
  for i = 1, #t - 1, 2 do o[t[i]] = t[i + 1] end
  return o
end

function R:_parse_shards(v, asked)
  local out = {}
  for _, sh in ipairs(v) do
    local s = flat(sh)
    local ranges = s.slots
    if type(ranges) == 'table' and #ranges >= 2 then
      local best
      for _, nd in ipairs(type(s.nodes) == 'table' and s.nodes or {}) do
        local f = flat(nd)
        if f.role == 'master' and (best == nil or (best.health ~= 'online' and f.health == 'online')) then
          best = f
        end
      end
      if best then
        local host = best.endpoint
        if host == nil or host == '?' or host == core.null then host = best.ip end
        if host == '' then host = asked.host end
        local port = self.opts.tls and (best['tls-port'] or best.port) or (best.port or best['tls-port'])
        if type(host) == 'string' and tonumber(port) then
          out[#out + 1] = { ranges = ranges, host = host, port = tonumber(port), id = best.id, health = best.health }
        end
      end
    end
  end
  return out
end

-- Shards from a CLUSTER SLOTS reply (Redis 6).
function R:_parse_slots(v, asked)
  local out = {}
  for _, e in ipairs(v) do
    if type(e) == 'table' and type(e[3]) == 'table' then
      local host, port = e[3][1], tonumber(e[3][2])
      if host == '' or host == core.null then host = asked.host end
      if type(host) == 'string' and port then
        out[#out + 1] = { ranges = { e[1], e[2] }, host = host, port = port, id = e[3][3] }
      end
    end
  end
  return out
end

-- Asks connection c (to node `asked`) for the map: shards, or nil, message, code.
function R:_ask_map(c, asked)
  if not self.old_redis then
    local v, err, code, word = c:call_timeout(ASK_TIMEOUT, 'CLUSTER', 'SHARDS')
    if type(v) == 'table' then return self:_parse_shards(v, asked) end
    if code ~= 'EREDIS' or not tostring(err):lower():find('unknown subcommand') then return nil, err, code, word end
    self.old_redis = true
  end
  local v, err, code, word = c:call_timeout(ASK_TIMEOUT, 'CLUSTER', 'SLOTS')
  if type(v) == 'table' then return self:_parse_slots(v, asked) end
  return nil, err, code, word
end

-- Installs a map: the slot table, the primaries, and retires nodes that are not primaries
-- any more (their subscriptions move; their connections close once idle).
function R:_apply(shards)
  local slots, primaries, seen = {}, {}, {}
  for _, sh in ipairs(shards) do
    local n = self:_node(sh.host, sh.port)
    n.id, n.health = sh.id, sh.health
    if not seen[n] then
      seen[n] = true
      primaries[#primaries + 1] = n
      n.nslots = 0
      if n.retired then
        n.retired = nil
        if n.conn and n.conn:info().state == 'closed' then n.conn = nil end
      end
    end
    local r = sh.ranges
    for i = 1, #r - 1, 2 do
      local a, b = tonumber(r[i]), tonumber(r[i + 1])
      if a and b then
        for s = a, min(b, NSLOTS - 1) do slots[s] = n end
        n.nslots = n.nslots + (b - a + 1)
      end
    end
  end
  sort(primaries, function(a, b) return a.addr < b.addr end)
  self.slots, self.primaries = slots, primaries
  if self.default and not seen[self.default] then self.default = nil end
  for _, n in pairs(self.known) do
    if not seen[n] then self:_retire(n) end
  end
  self:_close_retired()
  self:_check_subs()
end

-- Fetches and installs the map now (yields). Asks the primaries it knows (up connections
-- first), then the other nodes it has seen and the seeds, with connections of their own.
-- Returns true, or nil, message, code.
function R:_fetch()
  local errs, code = {}, nil
  local tried = {}
  local function try(c, n)
    local shards, err, ecode = self:_ask_map(c, n)
    if shards and #shards > 0 then
      self:_apply(shards)
      return true
    end
    if shards then
      err, ecode = fmt('%s serves no slots yet (cluster_state:fail?): create the cluster first, '
        .. 'e.g. redis-cli --cluster create HOST:PORT... --cluster-replicas 1', n.addr), 'ECONNREFUSED'
    elseif ecode == 'EREDIS' and tostring(err):find('cluster support disabled') then
      err, ecode = fmt('%s is not a cluster node (cluster_enabled:0): use redis://%s', n.addr, n.addr), 'EINVAL'
    end
    errs[#errs + 1] = fmt('%s: %s', n.addr, tostring(err))
    if code == nil or ecode == 'EINVAL' or ecode == 'EAUTH' or ecode == 'ETLS' then code = ecode end
    return false
  end
  for _, n in ipairs(self.primaries) do
    if n.conn and n.conn:_up() then
      tried[n.addr] = true
      if try(n.conn, n) then return true end
    end
  end
  local others = {}
  for _, s in ipairs(self.seeds) do others[#others + 1] = s end
  for _, n in pairs(self.known) do others[#others + 1] = n end
  for _, s in ipairs(others) do
    local a = addr_of(s.host, s.port)
    if not tried[a] and not self.closed then
      tried[a] = true
      local c, err, ecode = core.new(self:_node_opts(s, ASK_TIMEOUT))
      local ok = c ~= nil
      if c then ok, err, ecode = c:_connect() end
      if ok then
        local got = try(c, { addr = a, host = s.host, port = s.port })
        c:close()
        if got then return true end
      else
        if c then c:close() end
        errs[#errs + 1] = fmt('%s: %s', a, tostring(err))
        if code == nil or ecode == 'EAUTH' or ecode == 'ETLS' then code = ecode end
      end
    end
  end
  if self.closed then return nil, 'ECLOSED: the cluster connection is closed', 'ECLOSED' end
  code = (code == 'EINVAL' or code == 'EAUTH' or code == 'ETLS') and code or 'ECONNREFUSED'
  return nil, fmt('%s: cannot read the slot map of the cluster from any node (%s)', code, concat(errs, '; ')), code
end

-- Refreshes the map, once at a time: a caller that comes while a refresh runs waits for it.
-- Returns true, or nil, message, code.
function R:refresh()
  if self.refreshing then
    local ok, res, err, code = self.refreshing:wait(ASK_TIMEOUT * 4)
    if ok then return res, err, code end
    return nil, 'ETIMEDOUT: the slot map refresh did not end', 'ETIMEDOUT'
  end
  local cond = jobrt.cond()
  self.refreshing = cond
  local ok, res, err, code = pcall(self._fetch, self)
  if not ok then res, err, code = nil, 'EPROTO: reading the slot map failed: ' .. tostring(res), 'EPROTO' end
  self.refreshing = nil
  self.refreshed_at = monotime()
  cond:broadcast(res, err, code)
  return res, err, code
end

-- Asks for a refresh in the background (MOVED, a lost node), at most every REFRESH_GAP s.
function R:_kick()
  if self.closed or self.refreshing then return end
  if monotime() - (self.refreshed_at or 0) < REFRESH_GAP then
    if self.kick_pending then return end
    self.kick_pending = true
    spawn(function()
      sleep(REFRESH_GAP)
      self.kick_pending = false
      if not self.closed then self:refresh() end
    end)
    return
  end
  spawn(function() self:refresh() end)
end

-- Node n is not a primary any more: its subscriptions move, its connection closes once idle.
function R:_retire(n)
  if n.retired then return end
  n.retired = true
  self:_move_subs(n)
end

function R:_close_retired()
  for a, n in pairs(self.known) do
    if n.retired then
      local c = n.conn
      local busy = false
      if c then
        local ok, info = pcall(c.info, c)
        busy = ok and info.state ~= 'closed' and (info.inflight or 0) > 0
      end
      if not busy then
        if c then c:close() end
        n.conn = nil
        self.known[a] = nil
      end
    end
  end
end

-- ---- calls ------------------------------------------------------------------------------

-- Replies that mean the call did not run and may be sent again after a pause.
local RETRY = { TRYAGAIN = true, CLUSTERDOWN = true, LOADING = true, READONLY = true, MASTERDOWN = true }
-- Replies the router acts on.
local ACT = { MOVED = true, ASK = true, NOSCRIPT = true, TRYAGAIN = true, CLUSTERDOWN = true,
              LOADING = true, READONLY = true, MASTERDOWN = true }
-- Connection errors after which the command may have run.
local LOST = { ECONN = true, ETIMEDOUT = true, EPROTO = true, ECLOSED = true }

-- "MOVED 3999 127.0.0.1:6381" -> slot, host, port (host "" -> the node that answered).
local function parse_redirect(msg, from)
  local s, host, port = tostring(msg):match('^%u+ (%d+) (.*):(%d+)$')
  if not s then return nil end
  if host == '' then host = from and from.host end
  host = host:match('^%[(.*)%]$') or host
  return tonumber(s), host, tonumber(port)
end

local function asking(conn) conn:call('ASKING') end

-- Sends one call on conn (with a deadline when timeout).
local function send(conn, timeout, ...)
  if timeout then return conn:call_timeout(timeout, ...) end
  return conn:call(...)
end

-- The slow path of a call to slot: follows redirections, waits out failovers and migrations,
-- reloads scripts. v, err, code, word: the reply that brought it here (nil, nil, 'NOTSENT'
-- when the call was not sent yet). node: the node that answered it.
function R:_route(timeout, slot, spec, v, err, code, word, node, cmd, ...)
  local deadline = monotime() + (timeout or self.timeout or WAIT)
  local redirects, backoff, reloaded = 0, 0.01, false
  local ask_node
  while true do
    local asked = ask_node
    ask_node = nil
    if v ~= nil then return v end
    if code == 'EREDIS' then
      if word == 'MOVED' or word == 'ASK' then
        redirects = redirects + 1
        local s, host, port = parse_redirect(err, node)
        if not s then return nil, err, code, word end
        if redirects > MAX_REDIRECTS then
          return nil, fmt('%s (gave up after %d redirections: slot %d keeps moving)', tostring(err),
            MAX_REDIRECTS, s), code, word
        end
        local target = self:_node(host, port)
        if word == 'MOVED' then
          target.retired = nil
          self.slots[s] = target
          self:_kick()
        else
          ask_node = target
        end
      elseif RETRY[word] then
        if monotime() + backoff > deadline then return nil, err, code, word end
        if word ~= 'TRYAGAIN' then self:_kick() end
        sleep(backoff)
        backoff = min(backoff * 2, 0.5)
      elseif word == 'NOSCRIPT' and spec.kind == 'eval' and not reloaded then
        reloaded = true
        local text = self.scripts[(select(1, ...))]
        if not text or not node or not node.conn then return nil, err, code, word end
        local sha, lerr, lcode = node.conn:call('SCRIPT', 'LOAD', text)
        if not sha then return nil, lerr, lcode end
        ask_node = asked
      else
        return nil, err, code, word
      end
    elseif code == 'NOTSENT' then
      if monotime() + backoff > deadline then
        return nil, fmt('ECONN: no primary of slot %d of the cluster answers (%s); a failover may '
          .. 'be under way: gave up after %gs', slot, tostring(err), floor((timeout or self.timeout or WAIT) * 10) / 10),
          'ECONN'
      end
      self:_kick()
      sleep(backoff)
      backoff = min(backoff * 2, 0.5)
    else
      return nil, err, code, word
    end
    if self.closed then return nil, 'ECLOSED: the cluster connection is closed', 'ECLOSED' end
    -- the next attempt
    node = ask_node or self.slots[slot]
    local conn
    if node == nil then
      self:refresh()
      v, err, code, word = nil, 'no node serves it in the slot map', 'NOTSENT'
    else
      local cerr, ccode
      conn, cerr, ccode = self:_conn(node)
      if not conn then
        if FATAL[ccode] then return nil, cerr, ccode end
        v, err, code, word = nil, cerr, 'NOTSENT'
      else
        if ask_node then spawn(asking, conn) end
        local left = timeout and deadline - monotime()
        if left and left <= 0 then left = 0.001 end
        v, err, code, word = send(conn, left, cmd, ...)
        if v == nil and LOST[code] then
          self:_kick()
          if not spec.readonly then return nil, err, code, word end
          v, err, code, word = nil, err, 'NOTSENT'
        end
      end
    end
  end
end

-- A call with no key: to one primary (tried again on another while none answers).
function R:_call_keyless(timeout, cmd, ...)
  local conn, node_or_err, code = self:_any()
  if not conn then
    if FATAL[code] then return nil, node_or_err, code end
    return self:_route_keyless(timeout, node_or_err, cmd, ...)
  end
  local v, err, c, w = send(conn, timeout, cmd, ...)
  if v == nil and LOST[c] then self:_kick() end
  return v, err, c, w
end

function R:_route_keyless(timeout, why, cmd, ...)
  local deadline = monotime() + (timeout or self.timeout or WAIT)
  local backoff = 0.01
  while monotime() + backoff <= deadline and not self.closed do
    self:_kick()
    sleep(backoff)
    backoff = min(backoff * 2, 0.5)
    local conn, err, code = self:_any()
    if conn then return send(conn, timeout, cmd, ...) end
    if FATAL[code] then return nil, err, code end
    why = err
  end
  return nil, fmt('ECONN: no primary of the cluster answers (%s)', tostring(why)), 'ECONN'
end

-- A call to every primary: the replies (by node), or nil, message, code of the first failure.
function R:_call_all(timeout, cmd, ...)
  if #self.primaries == 0 then self:refresh() end
  local wg = jobrt.waitgroup()
  local replies, first_err = {}, nil
  local args = { n = select('#', ...), ... }
  for _, n in ipairs(self.primaries) do
    wg:spawn(function()
      local conn, err, code = self:_conn(n)
      local v, w
      if conn then v, err, code, w = send(conn, timeout, cmd, unpack(args, 1, args.n)) end
      if v == nil then
        if not first_err then first_err = { nil, fmt('%s (from %s)', tostring(err), n.addr), code, w } end
      else
        replies[#replies + 1] = { node = n, value = v }
      end
    end)
  end
  wg:wait()
  return replies, first_err
end

-- The hash tag every key matching glob `pattern` has, or nil: the pattern must be literal (no
-- unescaped * ? [) from its start through the "}" that closes its first "{", and the tag not
-- empty. "jobrt:{Q}:*" -> "Q"; "*{Q}*" -> nil (a key "a{b}{Q}" matches it, in b's slot).
local function pattern_tag(pattern)
  if type(pattern) ~= 'string' then return nil end
  local tag, in_tag, i, n = {}, false, 1, #pattern
  while i <= n do
    local c = sub(pattern, i, i)
    if c == '\\' then
      i = i + 1
      c = sub(pattern, i, i)
      if c == '' then return nil end
      if in_tag then tag[#tag + 1] = c end
    elseif c == '*' or c == '?' or c == '[' then
      return nil
    elseif c == '{' and not in_tag then
      in_tag = true
    elseif c == '}' and in_tag then
      if #tag == 0 then return nil end
      return concat(tag)
    elseif in_tag then
      tag[#tag + 1] = c
    end
    i = i + 1
  end
  return nil
end
_M.pattern_tag = pattern_tag

-- Commands with their own routing (kind in BUILTIN).
function R:_special(timeout, kind, cmd, ...)
  if kind == 'all' then
    local replies, e = self:_call_all(timeout, cmd, ...)
    if e then return unpack(e, 1, 4) end
    return replies[1] and replies[1].value or 'OK'
  elseif kind == 'sum' then
    local replies, e = self:_call_all(timeout, cmd, ...)
    if e then return unpack(e, 1, 4) end
    local n = 0
    for _, r in ipairs(replies) do n = n + (tonumber(r.value) or 0) end
    return n
  elseif kind == 'keys' then
    local tag = pattern_tag((select(1, ...)))
    if tag then return self:_keyed(timeout, keyslot('{' .. tag .. '}'), BUILTIN.GET, cmd, ...) end
    local replies, e = self:_call_all(timeout, cmd, ...)
    if e then return unpack(e, 1, 4) end
    local out = {}
    for _, r in ipairs(replies) do for _, k in ipairs(r.value) do out[#out + 1] = k end end
    return out
  elseif kind == 'scan' then
    local n = select('#', ...)
    local pattern
    for i = 2, n - 1 do
      local a = (select(i, ...))
      if type(a) == 'string' and upper(a) == 'MATCH' then pattern = (select(i + 1, ...)) end
    end
    local tag = pattern_tag(pattern)
    if not tag then
      return nil, 'EINVAL: SCAN in a Redis Cluster needs MATCH with a pattern that starts with a '
        .. '{hash tag} (e.g. MATCH jobrt:{QUEUE}:*): each node scans only its own keys, and the tag '
        .. 'names the node', 'EINVAL'
    end
    return self:_keyed(timeout, keyslot('{' .. tag .. '}'), KEYLESS_RO, cmd, ...)
  elseif kind == 'script' or kind == 'function' then
    local subc = upper(tostring((select(1, ...))))
    if subc == 'LOAD' or subc == 'FLUSH' or (kind == 'function' and (subc == 'DELETE' or subc == 'RESTORE')) then
      local replies, e = self:_call_all(timeout, cmd, ...)
      if #replies == 0 then
        if e then return unpack(e, 1, 4) end
        return nil, 'ECONN: no primary of the cluster answers', 'ECONN'
      end
      local v = replies[1].value
      if kind == 'script' and subc == 'LOAD' then self.scripts[v] = (select(2, ...)) end
      return v
    end
    if kind == 'script' and subc == 'EXISTS' then
      local replies, e = self:_call_all(timeout, cmd, ...)
      if e then return unpack(e, 1, 4) end
      local out = {}
      for i = 1, select('#', ...) - 1 do
        local all = 1
        for _, r in ipairs(replies) do if r.value[i] ~= 1 then all = 0 end end
        out[i] = all
      end
      return out
    end
    return self:_call_keyless(timeout, cmd, ...)
  elseif kind == 'publish' then
    local ch = (select(1, ...))
    local n = type(ch) == 'string' and self.slots[keyslot(ch)]
    local conn = n and n.conn and n.conn:_up() and n.conn
    if conn then return send(conn, timeout, cmd, ...) end
    return self:_call_keyless(timeout, cmd, ...)
  elseif kind == 'select' then
    if tostring((select(1, ...))) == '0' then return 'OK' end
    return nil, 'EINVAL: a Redis Cluster has only database 0: SELECT is refused (name the '
      .. 'database in the address of a single server instead)', 'EINVAL'
  elseif kind == 'refuse' then
    return nil, fmt('EINVAL: %s is not sent through a cluster connection: the router follows the '
      .. 'cluster (MOVED, ASK) itself and talks to primaries only', upper(tostring(cmd))), 'EINVAL'
  else
    return self:_tx(timeout, kind, cmd, ...)
  end
end

-- ---- transactions -----------------------------------------------------------------------

-- MULTI, EXEC, DISCARD, WATCH, UNWATCH: the transaction keeps to one node (self.tx =
-- { node=, slot=, multi=, sent=, conn= }): MULTI is sent with the first command that names a
-- key, on the connection of that key's primary; the commands after it go to the same
-- connection, and must name keys of the same slot.
function R:_tx(timeout, kind, cmd, ...)
  local tx = self.tx
  if kind == 'multi' then
    if tx and tx.multi then return nil, 'ERR MULTI calls can not be nested', 'EREDIS', 'ERR' end
    tx = tx or {}
    tx.multi, tx.sent = true, false
    self.tx = tx
    return 'OK'
  elseif kind == 'watch' then
    if tx and tx.multi then return nil, 'ERR WATCH inside MULTI is not allowed', 'EREDIS', 'ERR' end
    local slot, err, code, word = self:_slot(WATCH_KEYS, cmd, ...)
    if not slot then return nil, err, code, word end
    if slot < 0 then return nil, "ERR wrong number of arguments for 'watch' command", 'EREDIS', 'ERR' end
    if tx and tx.slot and tx.slot ~= slot then return crossslot_tx(cmd, (select(1, ...)), slot, tx.slot) end
    local conn, cerr, ccode = tx and tx.conn
    if not conn then
      local n = self.slots[slot]
      if not n then self:refresh(); n = self.slots[slot] end
      if not n then return nil, fmt('ECONN: no node serves slot %d', slot), 'ECONN' end
      conn, cerr, ccode = self:_conn(n)
      if not conn then return nil, cerr, ccode end
    end
    local v, err2, code2, word2 = send(conn, timeout, cmd, ...)
    if v ~= nil then self.tx = { slot = slot, conn = conn } end
    return v, err2, code2, word2
  elseif kind == 'unwatch' then
    if tx and tx.multi then
      if tx.sent then return send(tx.conn, timeout, cmd, ...) end
      return 'OK'
    end
    self.tx = nil
    if tx and tx.conn then return send(tx.conn, timeout, cmd, ...) end
    return 'OK'
  elseif kind == 'exec' or kind == 'discard' then
    if not (tx and tx.multi) then
      return nil, fmt('ERR %s without MULTI', upper(tostring(cmd))), 'EREDIS', 'ERR'
    end
    self.tx = nil
    if tx.sent then return send(tx.conn, timeout, cmd, ...) end
    if kind == 'discard' then
      if tx.conn then send(tx.conn, timeout, 'UNWATCH') end
      return 'OK'
    end
    if tx.conn then                               -- watched keys, nothing queued
      spawn(function() tx.conn:call('MULTI') end)
      return send(tx.conn, timeout, cmd, ...)
    end
    return {}
  end
end

-- A command inside MULTI.
function R:_in_tx(timeout, slot, key, cmd, ...)
  local tx = self.tx
  if slot >= 0 and tx.slot and tx.slot ~= slot then return crossslot_tx(cmd, key, slot, tx.slot) end
  local conn = tx.conn
  if not conn then
    local err, code
    if slot >= 0 then
      local n = self.slots[slot]
      if not n then self:refresh(); n = self.slots[slot] end
      if not n then return nil, fmt('ECONN: no node serves slot %d', slot), 'ECONN' end
      conn, err, code = self:_conn(n)
    else
      conn, err, code = self:_any()
    end
    if not conn then return nil, err, code end
    tx.conn = conn
  end
  if slot >= 0 then tx.slot = slot end
  if not tx.sent then
    tx.sent = true
    spawn(function() conn:call('MULTI') end)
  end
  return send(conn, timeout, cmd, ...)
end

-- A call to the primary of slot (the fast path: one call when the map is right).
function R:_keyed(timeout, slot, spec, cmd, ...)
  local n = self.slots[slot]
  local conn = n and n.conn
  if n and not conn then conn = self:_conn(n) end        -- first call to that node: connect
  if conn and conn:_up() then
    local v, err, code, word
    if timeout then v, err, code, word = conn:call_timeout(timeout, cmd, ...)
    else v, err, code, word = conn:call(cmd, ...) end
    if v ~= nil then return v end
    if code == 'EREDIS' then
      if not ACT[word] then return nil, err, code, word end
    elseif LOST[code] then
      self:_kick()
      if not spec.readonly then return nil, err, code, word end
      code = 'NOTSENT'
    else
      return nil, err, code, word
    end
    return self:_route(timeout, slot, spec, nil, err, code, word, n, cmd, ...)
  end
  return self:_route(timeout, slot, spec, nil, 'not connected yet', 'NOTSENT', nil, n, cmd, ...)
end

-- Every call: finds the slot and sends it there.
function R:_call(timeout, cmd, ...)
  if self.closed then return nil, 'ECLOSED: the redis cluster connection is closed', 'ECLOSED' end
  local spec = spec_cache[cmd] or self:_spec(cmd)
  local kind = spec.kind
  local slot, err, code, word
  if kind == 'eval' or kind == 'range' then
    slot, err, code, word = self:_slot(spec, cmd, ...)
  elseif kind == 'keyless' or kind == 'container' or kind == 'movable' then
    slot, err, code, word = self:_slot(spec, cmd, ...)
  else
    if self.tx and self.tx.multi and kind ~= 'exec' and kind ~= 'discard' and kind ~= 'multi'
       and kind ~= 'watch' and kind ~= 'unwatch' then
      return self:_in_tx(timeout, -1, nil, cmd, ...)
    end
    return self:_special(timeout, kind, cmd, ...)
  end
  if not slot then return nil, err, code, word end
  if self.tx and self.tx.multi then return self:_in_tx(timeout, slot, self:_first_key(spec, ...), cmd, ...) end
  if slot < 0 then return self:_call_keyless(timeout, cmd, ...) end
  return self:_keyed(timeout, slot, spec, cmd, ...)
end

function R:call(cmd, ...)
  return self:_call(nil, cmd, ...)
end

function R:call_timeout(t, cmd, ...)
  if type(t) ~= 'number' or not (t > 0) then
    error("bad argument #1 to 'call_timeout' (timeout must be > 0 seconds)", 2)
  end
  return self:_call(t, cmd, ...)
end

-- ---- pub/sub ----------------------------------------------------------------------------

-- Subscribes sub on the primary of its channel's slot (yields). Returns true or nil, err, code.
function R:_place(sub)
  local slot = keyslot(sub.channel)
  local deadline = monotime() + (self.timeout or WAIT)
  local backoff = 0.01
  while true do
    if self.closed or self.subs[sub.channel] ~= sub then return true end
    local n = self.slots[slot]
    local conn, err, code
    if n then conn, err, code = self:_conn(n) end
    if not n then err, code = 'no node serves its slot', 'ECONN' end
    if not conn and n and n.conn and not n.retired then
      -- down: its connection resubscribes when it comes back, or the subscription moves
      -- when the map says another node serves the slot
      conn = n.conn
    end
    if conn then
      sub.node = n
      local ok, serr, scode = conn:subscribe(sub.channel, sub.deliver)
      if ok then return true end
      if FATAL[scode] or scode == 'EREDIS' then return nil, serr, scode end
      err, code = serr, scode
    elseif FATAL[code] then
      return nil, err, code
    end
    if monotime() + backoff > deadline then return nil, err, code end
    self:_kick()
    sleep(backoff)
    backoff = min(backoff * 2, 0.5)
  end
end

-- Moves the subscriptions of node n (not a primary any more) to the primaries of their slots.
function R:_move_subs(n)
  for ch, sub in pairs(self.subs) do
    if sub.node == n then
      sub.node = nil
      if n.conn then pcall(n.conn.unsubscribe, n.conn, ch) end
      spawn(function()
        local ok = self:_place(sub)
        if ok and self.subs[ch] == sub then sub.fn(ch, nil) end    -- messages may have been missed
      end)
    end
  end
end

-- Subscriptions on a node that does not serve their slot any more (a reshard) move too.
function R:_check_subs()
  for ch, sub in pairs(self.subs) do
    local n = self.slots[keyslot(ch)]
    if sub.node and n and sub.node ~= n and not sub.node.retired then
      local old = sub.node
      sub.node = nil
      if old.conn then pcall(old.conn.unsubscribe, old.conn, ch) end
      spawn(function()
        local ok = self:_place(sub)
        if ok and self.subs[ch] == sub then sub.fn(ch, nil) end
      end)
    end
  end
end

function R:subscribe(channel, fn)
  if type(channel) ~= 'string' then error("bad argument #1 to 'subscribe' (string expected, got " .. type(channel) .. ')', 2) end
  if type(fn) ~= 'function' then error("bad argument #2 to 'subscribe' (function expected, got " .. type(fn) .. ')', 2) end
  if self.closed then return nil, 'ECLOSED: the redis cluster connection is closed', 'ECLOSED' end
  local old = self.subs[channel]
  if old then
    old.fn = fn
    return true
  end
  local sub = { channel = channel, fn = fn }
  sub.deliver = function(ch, msg) if self.subs[ch] == sub then return sub.fn(ch, msg) end end
  self.subs[channel] = sub
  local ok, err, code = self:_place(sub)
  if not ok then
    if self.subs[channel] == sub then self.subs[channel] = nil end
    return nil, err, code
  end
  return true
end

function R:unsubscribe(channel)
  local sub = self.subs[channel]
  if not sub then return end
  self.subs[channel] = nil
  local n = sub.node
  if n and n.conn then n.conn:unsubscribe(channel) end
end

-- ---- the rest of the connection API -----------------------------------------------------

function R:close()
  if self.closed then return end
  self.closed = true
  if self.timer then self.timer:close(); self.timer = nil end
  for _, n in pairs(self.known) do
    if n.conn then n.conn:close() end
    n.conn = nil
  end
  self.subs = {}
end

-- Sends cmd to every primary: { {addr=, value=} | {addr=, err=, code=}... } in the order of
-- r:nodes() (for what each node answers for itself: INFO, CONFIG GET, DBSIZE...).
function R:each_primary(cmd, ...)
  if #self.primaries == 0 then self:refresh() end
  local out, wg = {}, jobrt.waitgroup()
  local args = { n = select('#', ...), ... }
  for i, n in ipairs(self.primaries) do
    out[i] = { addr = n.addr }
    wg:spawn(function()
      local conn, err, code = self:_conn(n)
      local v
      if conn then v, err, code = conn:call(cmd, unpack(args, 1, args.n)) end
      if v ~= nil then out[i].value = v else out[i].err, out[i].code = err, code end
    end)
  end
  wg:wait()
  return out
end

-- The primaries: { {addr=, id=, slots=n, state=}... } (state of their connection: up, down,
-- connecting, closed, or "idle" when none was opened yet).
function R:nodes()
  local out = {}
  for i, n in ipairs(self.primaries) do
    local state = 'idle'
    if n.conn then
      local ok, info = pcall(n.conn.info, n.conn)
      state = ok and info.state or 'closed'
    end
    out[i] = { addr = n.addr, id = n.id, slots = n.nslots, state = state }
  end
  return out
end

-- { addr=, state=, sub_state=, tls=, user=, db=0, label=, inflight=, cluster=true, nodes= }:
-- addr "H1:P1,H2:P2,H3:P3 (cluster)" (the primaries); state "up" when every slot is served and
-- every primary connection opened is up
function R:info()
  local addrs, inflight, up, down, err = {}, 0, 0, 0, nil
  for i, n in ipairs(self.primaries) do
    addrs[i] = n.addr
    if n.conn then
      local ok, info = pcall(n.conn.info, n.conn)
      if ok then
        inflight = inflight + (info.inflight or 0)
        if info.state == 'up' then up = up + 1 else down = down + 1; err = err or info.error end
      end
    end
  end
  local state = self.closed and 'closed' or (down > 0 and 'down' or 'up')
  local covered = 0
  for _, n in ipairs(self.primaries) do covered = covered + (n.nslots or 0) end
  if not self.closed and covered < NSLOTS then
    state = 'down'
    err = err or fmt('the cluster serves %d of %d slots', covered, NSLOTS)
  end
  return { addr = concat(addrs, ',') .. ' (cluster)', state = state, sub_state = state, tls = self.opts.tls == true,
           user = self.opts.user, db = 0, label = self.opts.label, inflight = inflight, cluster = true,
           nodes = self:nodes(), error = state ~= 'up' and err or nil }
end

-- Whether v is a cluster router.
function _M.is_router(v)
  return type(v) == 'table' and getmetatable(v) == R
end

-- ---- connecting -------------------------------------------------------------------------

local NODE_OPTS = { 'user', 'password', 'timeout', 'connect_timeout', 'tls', 'tls_ca', 'tls_cert',
                    'tls_key', 'tls_insecure', 'tls_server_name' }

-- Connects to the cluster whose seeds t.cluster_nodes lists (see the header). Returns the
-- router, or nil, message, code.
function _M.connect(t, seed_conn)
  if (t.db or 0) ~= 0 then
    if seed_conn then seed_conn:close() end
    return nil, fmt('EINVAL: a Redis Cluster has only database 0, but the address names database %d: '
      .. 'leave the /DB out of the address', t.db), 'EINVAL'
  end
  local opts = {}
  for _, k in ipairs(NODE_OPTS) do opts[k] = t[k] end
  local self = setmetatable({
    opts = opts, seeds = t.cluster_nodes or {}, slots = {}, known = {}, primaries = {},
    subs = {}, scripts = {}, timeout = t.timeout, closed = false,
  }, R)
  local ok, err, code
  if seed_conn then
    local s = self.seeds[1]
    local n = s and self:_node(s.host, s.port)
    local shards
    shards, err, code = self:_ask_map(seed_conn, n or { host = '127.0.0.1' })
    if shards and #shards > 0 then
      self:_apply(shards)
      ok = true
      -- the seed is kept as its node's connection when that node is a primary
      if n and not n.retired and n.nslots and n.nslots > 0 and not n.conn then
        n.conn = seed_conn
        seed_conn = nil
      end
    end
    if seed_conn then seed_conn:close() end
  end
  if not ok then ok, err, code = self:refresh() end
  if not ok then
    self:close()
    return nil, err, code
  end
  self.refreshed_at = monotime()
  -- the periodic refresh; a router nobody holds any more is collected and the timer ends
  local weak = setmetatable({ r = self }, { __mode = 'v' })
  local timer = jobrt.timer()
  self.timer = timer
  timer:start(REFRESH_EVERY, function()
    local r = weak.r
    if not r or r.closed then timer:close(); return end
    if monotime() - (r.refreshed_at or 0) >= REFRESH_EVERY * 0.5 then r:refresh() end
    r:_close_retired()
  end, REFRESH_EVERY)
  return self
end

return _M
