-- tests/fuzz/redis_mimic.lua: runs the server scripts (lua-server-scripts/*.lua) in-process the
-- way Redis runs them, for the scripts fuzz target: KEYS and ARGV, globals forbidden (reading an
-- unknown one or creating one raises, as in Redis), redis.call/pcall/error_reply/status_reply/
-- sha1hex, cjson, bit, and an in-memory store that implements the commands the scripts use
-- (strings, hashes, sorted sets, lists; TIME moves forward a millisecond per call).
-- Replies follow Redis' conversions: nil bulk -> false, integers -> numbers, errors raised as
-- { err = message } tables. A command the store does not know raises { err = "mimic: ..." },
-- which the target tells apart from a script's own mistake.
--
--   local mimic = require 'tests.fuzz.redis_mimic'
--   local store = mimic.store()            store:copy()  store:equal(other)  store.published
--   local ok, reply = mimic.run(store, name, source, keys, argv)
local _M = {}
local fmt, floor, huge = string.format, math.floor, math.huge
local cjson = require 'cjson'

-- ---- the store -------------------------------------------------------------------

local S = {}
S.__index = S

function _M.store()
  return setmetatable({ data = {}, published = {}, clock = 1700000000000 }, S)
end

local function copy(v)
  if type(v) ~= 'table' then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

function S:copy()
  return setmetatable({ data = copy(self.data), published = {}, clock = self.clock }, S)
end

local function equal(a, b)
  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end
  for k, v in pairs(a) do if not equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

function S:equal(other) return equal(self.data, other.data) end

local function fail(msg) error({ err = msg }, 0) end

local function str(v)
  if type(v) == 'number' then
    if v == floor(v) and v > -1e17 and v < 1e17 then return fmt('%d', v) end
    return fmt('%.17g', v)
  end
  return v
end

local function int_arg(v)
  local n = tonumber(v)
  if not n or n ~= floor(n) or not tostring(v):find('^%-?%d+$') then fail('ERR value is not an integer or out of range') end
  return n
end

local function float_arg(v)
  local s = tostring(v):lower()
  if s == 'inf' or s == '+inf' then return huge end
  if s == '-inf' then return -huge end
  local n = tonumber(s)
  if not n or n ~= n or s:find('^0x') then fail('ERR value is not a valid float') end
  return n
end

local function get(self, key, kind, create)
  local e = self.data[key]
  if e == nil then
    if not create then return nil end
    e = { kind = kind, v = {} }
    if kind == 'zset' then e.v = {} end
    self.data[key] = e
    return e
  end
  if e.kind ~= kind then fail('WRONGTYPE Operation against a key holding the wrong kind of value') end
  return e
end

local function drop_empty(self, key)
  local e = self.data[key]
  if e and e.kind ~= 'string' and next(e.v) == nil then self.data[key] = nil end
end

-- sorted set: e.v = { member = score }; ordered views are built on demand
local function zsorted(e)
  local out = {}
  for m, s in pairs(e.v) do out[#out + 1] = { m = m, s = s } end
  table.sort(out, function(a, b) if a.s ~= b.s then return a.s < b.s end return a.m < b.m end)
  return out
end

local function range_bounds(n, start, stop)
  start, stop = int_arg(start), int_arg(stop)
  if start < 0 then start = n + start end
  if stop < 0 then stop = n + stop end
  if start < 0 then start = 0 end
  if stop >= n then stop = n - 1 end
  return start + 1, stop + 1
end

local function score_bound(v)
  local s = tostring(v)
  if s:sub(1, 1) == '(' then return float_arg(s:sub(2)), true end
  return float_arg(s), false
end

local function in_range(s, min, minx, max, maxx)
  if minx then if s <= min then return false end elseif s < min then return false end
  if maxx then if s >= max then return false end elseif s > max then return false end
  return true
end

local function score_str(s)
  if s == huge then return 'inf' end
  if s == -huge then return '-inf' end
  return str(s)
end

local C = {}

function C.TIME(self)
  self.clock = self.clock + 1
  return { tostring(floor(self.clock / 1000)), tostring((self.clock % 1000) * 1000) }
end
function C.PUBLISH(self, ch, msg)
  self.published[#self.published + 1] = { ch, msg }
  return 0
end
function C.INCR(self, key)
  local e = get(self, key, 'string', true)
  local n = int_arg(e.v == nil and '0' or (type(e.v) == 'table' and '0' or e.v)) + 1
  e.v = str(n)
  return n
end
function C.DEL(self, ...)
  local n = 0
  for i = 1, select('#', ...) do
    local k = select(i, ...)
    if self.data[k] then self.data[k] = nil; n = n + 1 end
  end
  return n
end
function C.EXISTS(self, ...)
  local n = 0
  for i = 1, select('#', ...) do if self.data[select(i, ...)] then n = n + 1 end end
  return n
end
function C.EXPIRE(self, key, secs)
  int_arg(secs)
  local e = self.data[key]
  if not e then return 0 end
  e.ttl = secs
  return 1
end
function C.PEXPIRE(self, key, ms)
  int_arg(ms)
  local e = self.data[key]
  if not e then return 0 end
  e.ttl = ms / 1000
  return 1
end
function C.PERSIST(self, key)
  local e = self.data[key]
  if not e or not e.ttl then return 0 end
  e.ttl = nil
  return 1
end

function C.HGET(self, key, f)
  local e = get(self, key, 'hash')
  return e and e.v[f] or false
end
function C.HSET(self, key, ...)
  local n = select('#', ...)
  if n == 0 or n % 2 ~= 0 then fail("ERR wrong number of arguments for 'hset' command") end
  local e = get(self, key, 'hash', true)
  local added = 0
  for i = 1, n, 2 do
    local f, v = select(i, ...)
    if e.v[f] == nil then added = added + 1 end
    e.v[f] = str(v)
  end
  return added
end
-- HDEL, ZREM: removes the named fields (members) of a hash (zset); answers how many there were
local function remover(kind)
  return function(self, key, ...)
    local e = get(self, key, kind)
    if not e then return 0 end
    local n = 0
    for i = 1, select('#', ...) do
      local f = select(i, ...)
      if e.v[f] ~= nil then e.v[f] = nil; n = n + 1 end
    end
    drop_empty(self, key)
    return n
  end
end
C.HDEL = remover('hash')
function C.HMGET(self, key, ...)
  local e = get(self, key, 'hash')
  local out = {}
  for i = 1, select('#', ...) do out[i] = e and e.v[select(i, ...)] or false end
  return out
end
function C.HINCRBY(self, key, f, by)
  local e = get(self, key, 'hash', true)
  local n = int_arg(e.v[f] or '0') + int_arg(by)
  e.v[f] = str(n)
  return n
end
function C.HINCRBYFLOAT(self, key, f, by)
  local e = get(self, key, 'hash', true)
  local n = float_arg(e.v[f] or '0') + float_arg(by)
  e.v[f] = str(n)
  return e.v[f]
end
function C.HGETALL(self, key)
  local e = get(self, key, 'hash')
  local out = {}
  if e then
    local ks = {}
    for k in pairs(e.v) do ks[#ks + 1] = k end
    table.sort(ks)
    for _, k in ipairs(ks) do out[#out + 1] = k; out[#out + 1] = e.v[k] end
  end
  return out
end
function C.HLEN(self, key)
  local e = get(self, key, 'hash')
  local n = 0
  if e then for _ in pairs(e.v) do n = n + 1 end end
  return n
end
function C.HEXISTS(self, key, f)
  local e = get(self, key, 'hash')
  return (e and e.v[f] ~= nil) and 1 or 0
end

function C.ZADD(self, key, ...)
  local args = { ... }
  local xx, nx = false, false
  local i = 1
  while args[i] == 'XX' or args[i] == 'NX' do
    if args[i] == 'XX' then xx = true else nx = true end
    i = i + 1
  end
  local n = #args - i + 1
  if n == 0 or n % 2 ~= 0 then fail('ERR syntax error') end
  local pairs_ = {}
  for j = i, #args, 2 do pairs_[#pairs_ + 1] = { float_arg(args[j]), str(args[j + 1]) } end
  local e = get(self, key, 'zset', not xx)
  if not e then return 0 end
  local added = 0
  for _, p in ipairs(pairs_) do
    local exists = e.v[p[2]] ~= nil
    if (not xx or exists) and (not nx or not exists) then
      if not exists then added = added + 1 end
      e.v[p[2]] = p[1]
    end
  end
  drop_empty(self, key)
  return added
end
C.ZREM = remover('zset')
function C.ZCARD(self, key)
  local e = get(self, key, 'zset')
  local n = 0
  if e then for _ in pairs(e.v) do n = n + 1 end end
  return n
end
function C.ZSCORE(self, key, m)
  local e = get(self, key, 'zset')
  local s = e and e.v[m]
  return s and score_str(s) or false
end
function C.ZMSCORE(self, key, ...)
  local e = get(self, key, 'zset')
  local out = {}
  for i = 1, select('#', ...) do
    local s = e and e.v[select(i, ...)]
    out[i] = s and score_str(s) or false
  end
  return out
end
function C.ZINCRBY(self, key, by, m)
  local e = get(self, key, 'zset', true)
  e.v[m] = (e.v[m] or 0) + float_arg(by)
  return score_str(e.v[m])
end
local function zrange(self, key, start, stop, rev, ...)
  local e = get(self, key, 'zset')
  local withscores = (...) == 'WITHSCORES'
  if not e then return {} end
  local l = zsorted(e)
  if rev then
    local r = {}
    for i = #l, 1, -1 do r[#r + 1] = l[i] end
    l = r
  end
  local a, b = range_bounds(#l, start, stop)
  local out = {}
  for i = a, b do
    out[#out + 1] = l[i].m
    if withscores then out[#out + 1] = score_str(l[i].s) end
  end
  return out
end
function C.ZRANGE(self, key, start, stop, ...) return zrange(self, key, start, stop, false, ...) end
function C.ZREVRANGE(self, key, start, stop, ...) return zrange(self, key, start, stop, true, ...) end
local function zrangebyscore(self, key, min, max, rev, ...)
  local e = get(self, key, 'zset')
  local lo, lox = score_bound(min)
  local hi, hix = score_bound(max)
  local opts = { ... }
  local withscores, off, count = false, 0, -1
  local i = 1
  while opts[i] do
    if opts[i] == 'WITHSCORES' then withscores = true; i = i + 1
    elseif opts[i] == 'LIMIT' then off, count = int_arg(opts[i + 1]), int_arg(opts[i + 2]); i = i + 3
    else fail('ERR syntax error') end
  end
  local out = {}
  if not e then return out end
  local seen = 0
  local l = zsorted(e)
  if rev then
    local r = {}
    for i = #l, 1, -1 do r[#r + 1] = l[i] end
    l = r
  end
  for _, x in ipairs(l) do
    if in_range(x.s, lo, lox, hi, hix) then
      seen = seen + 1
      if seen > off and (count < 0 or #out / (withscores and 2 or 1) < count) then
        out[#out + 1] = x.m
        if withscores then out[#out + 1] = score_str(x.s) end
      end
    end
  end
  return out
end
function C.ZRANGEBYSCORE(self, key, min, max, ...) return zrangebyscore(self, key, min, max, false, ...) end
-- ZREVRANGEBYSCORE key max min: the bounds come highest first
function C.ZREVRANGEBYSCORE(self, key, max, min, ...) return zrangebyscore(self, key, min, max, true, ...) end

function C.ZREMRANGEBYSCORE(self, key, min, max)
  local e = get(self, key, 'zset')
  local lo, lox = score_bound(min)
  local hi, hix = score_bound(max)
  if not e then return 0 end
  local n = 0
  for m, s in pairs(e.v) do
    if in_range(s, lo, lox, hi, hix) then e.v[m] = nil; n = n + 1 end
  end
  drop_empty(self, key)
  return n
end
function C.ZCOUNT(self, key, min, max)
  local e = get(self, key, 'zset')
  local lo, lox = score_bound(min)
  local hi, hix = score_bound(max)
  local n = 0
  if e then for _, s in pairs(e.v) do if in_range(s, lo, lox, hi, hix) then n = n + 1 end end end
  return n
end
function C.ZPOPMIN(self, key, count)
  local e = get(self, key, 'zset')
  local n = count and int_arg(count) or 1
  local out = {}
  if not e then return out end
  local l = zsorted(e)
  for i = 1, math.min(n, #l) do
    out[#out + 1] = l[i].m
    out[#out + 1] = score_str(l[i].s)
    e.v[l[i].m] = nil
  end
  drop_empty(self, key)
  return out
end

function C.LPUSH(self, key, ...)
  local e = get(self, key, 'list', true)
  for i = 1, select('#', ...) do table.insert(e.v, 1, str((select(i, ...)))) end
  return #e.v
end
function C.RPUSH(self, key, ...)
  local e = get(self, key, 'list', true)
  for i = 1, select('#', ...) do e.v[#e.v + 1] = str((select(i, ...))) end
  return #e.v
end
function C.RPOP(self, key, count)
  local e = get(self, key, 'list')
  if count == nil then
    if not e then return false end
    local v = table.remove(e.v)
    drop_empty(self, key)
    return v
  end
  local n = int_arg(count)
  if n < 0 then fail('ERR value is out of range, must be positive') end
  if not e then return false end
  local out = {}
  for _ = 1, math.min(n, #e.v) do out[#out + 1] = table.remove(e.v) end
  drop_empty(self, key)
  return out
end
function C.LREM(self, key, count, value)
  local e = get(self, key, 'list')
  local n, removed = int_arg(count), 0
  if not e then return 0 end
  local i = 1
  while i <= #e.v do
    if e.v[i] == value and (n == 0 or removed < math.abs(n)) then
      table.remove(e.v, i)
      removed = removed + 1
    else
      i = i + 1
    end
  end
  drop_empty(self, key)
  return removed
end
function C.LLEN(self, key)
  local e = get(self, key, 'list')
  return e and #e.v or 0
end

function S:call(cmd, ...)
  if type(cmd) ~= 'string' then fail('ERR Lua redis lib command arguments must be strings or integers') end
  local args = { ... }
  for i = 1, select('#', ...) do
    local a = args[i]
    if type(a) == 'number' then args[i] = str(a)
    elseif type(a) ~= 'string' then fail('ERR Lua redis lib command arguments must be strings or integers') end
  end
  local f = C[cmd:upper()]
  if not f then fail('mimic: command ' .. cmd .. ' is not implemented here') end
  return f(self, unpack(args, 1, select('#', ...)))
end

-- ---- running a script ----------------------------------------------------------

-- What Redis does to a number a script hands to redis.call or returns: an integer reply
-- truncates; here the reply conversion only checks the types are ones Redis can send.
local function to_resp(v, depth)
  local t = type(v)
  if depth > 100 then error('reply nested too deep', 0) end
  if t == 'table' then
    if v.err ~= nil then return end
    if v.ok ~= nil then return end
    for i = 1, #v do to_resp(v[i], depth + 1) end
    return
  end
  if t == 'string' or t == 'number' or t == 'boolean' or t == 'nil' then return end
  error('a script returned a ' .. t .. ', which Redis cannot send', 0)
end

local SAFE = { 'assert', 'error', 'ipairs', 'next', 'pairs', 'pcall', 'rawequal', 'rawget', 'rawset',
               'select', 'tonumber', 'tostring', 'type', 'unpack', 'xpcall', 'setmetatable', 'getmetatable',
               'string', 'table', 'math', 'bit' }

local compiled = {}

-- Runs script `source` (named `name`) on store with keys and argv. Returns true, reply or
-- false, the error raised (a { err = } table from redis.call, or a Lua error message).
function _M.run(store, name, source, keys, argv)
  local chunk = compiled[source]
  if not chunk then
    chunk = assert(loadstring(source, '@' .. name .. '.lua'))
    compiled[source] = chunk
  end
  local redis_t = {
    call = function(...) return store:call(...) end,
    pcall = function(...)
      local ok, r = pcall(store.call, store, ...)
      if ok then return r end
      if type(r) == 'table' then return r end
      error(r, 0)
    end,
    error_reply = function(msg) return { err = msg } end,
    status_reply = function(msg) return { ok = msg } end,
    sha1hex = function(s)                      -- a stand-in: only equality matters to the scripts
      local h = 5381
      for i = 1, #s do h = (h * 33 + s:byte(i)) % 4294967296 end
      return fmt('%040x', h)
    end,
    log = function() end,
    LOG_WARNING = 3, LOG_NOTICE = 2,
  }
  -- Redis hands scripts strings only
  local k, a = {}, {}
  for i = 1, #keys do k[i] = tostring(str(keys[i])) end
  for i = 1, #argv do a[i] = tostring(str(argv[i])) end
  local env = { KEYS = k, ARGV = a, redis = redis_t, cjson = cjson }
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  setmetatable(env, {
    __index = function(_, k) error('Script attempted to access nonexistent global variable \'' .. tostring(k) .. '\'', 2) end,
    __newindex = function(_, k) error('Script attempted to create global variable \'' .. tostring(k) .. '\'', 2) end,
  })
  setfenv(chunk, env)
  local ok, reply = pcall(chunk)
  if ok then
    local ok2, err = pcall(to_resp, reply, 0)
    if not ok2 then return false, err end
  end
  return ok, reply
end

return _M
