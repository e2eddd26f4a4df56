-- bench/json/lua_codec.lua: the pure-Lua candidate for jobrt.json, measured by bench/json.lua.
-- It follows the same rules as the shipped module (runtime/json.c): exact numbers (integers
-- below 2^63 as integers, others in the shortest of %.15g/%.16g/%.17g that reads back), arrays
-- marked by a metatable, '/' unescaped, UTF-8 checked both ways, depth limited to 1000. It was
-- written to be as fast as plain LuaJIT allows, so the comparison is fair; it is not used by
-- jobrt itself.
local byte, char, find, sub, format, gsub = string.byte, string.char, string.find, string.sub, string.format, string.gsub
local concat, sort = table.concat, table.sort
local type, pairs, next, tonumber, floor, huge, setmetatable, getmetatable, error, select =
      type, pairs, next, tonumber, math.floor, math.huge, setmetatable, getmetatable, error, select

local _M = {}
local ARRAY = { __jsontype = 'array' }
_M.array_mt = ARRAY
local NULL = require('jobrt.core.json').null

-- UTF-8 check of s: nil when valid, else the 0-based offset of the first bad byte
local function utf8_bad(s, from)
  local i = find(s, '[\128-\255]', from or 1)
  local n = #s
  while i do
    local c = byte(s, i)
    local k, lo, hi = 0, 0x80, 0xBF
    if c >= 0xC2 and c <= 0xDF then k = 1
    elseif c == 0xE0 then k, lo = 2, 0xA0
    elseif c == 0xED then k, hi = 2, 0x9F
    elseif c >= 0xE1 and c <= 0xEF then k = 2
    elseif c == 0xF0 then k, lo = 3, 0x90
    elseif c >= 0xF1 and c <= 0xF3 then k = 3
    elseif c == 0xF4 then k, hi = 3, 0x8F
    else return i - 1 end
    if i + k > n then return i - 1 end
    local c1 = byte(s, i + 1)
    if c1 < lo or c1 > hi then return i - 1 end
    for j = i + 2, i + k do
      local cj = byte(s, j)
      if cj < 0x80 or cj > 0xBF then return i - 1 end
    end
    i = find(s, '[\128-\255]', i + k + 1)
  end
  return nil
end
_M.utf8_bad = utf8_bad

-- ---- encoder ------------------------------------------------------------------

local ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n',
              ['\r'] = '\\r', ['\t'] = '\\t' }
for i = 0, 31 do
  local c = char(i)
  if not ESC[c] then ESC[c] = format('\\u%04x', i) end
end

local function enc_string(s)
  if find(s, '[%c"\\\128-\255]') then
    if utf8_bad(s) then error('string is not valid UTF-8', 0) end
    s = gsub(s, '[%c"\\]', ESC)
  end
  return '"' .. s .. '"'
end

local function enc_number(v)
  if v ~= v or v == huge or v == -huge then error('cannot encode ' .. tostring(v), 0) end
  if v == floor(v) and v < 9.2e18 and v > -9.2e18 then return format('%d', v) end
  local s = format('%.15g', v)
  if tonumber(s) ~= v then
    s = format('%.16g', v)
    if tonumber(s) ~= v then s = format('%.17g', v) end
  end
  return s
end

local enc_value

local function enc_table(t, buf, n, depth, open)
  if open[t] then error('cycle', 0) end
  if depth > 1000 then error('too deep', 0) end
  local len = #t
  local marked = getmetatable(t) == ARRAY
  open[t] = true
  if len > 0 then
    local count = 0
    for k in next, t do
      count = count + 1
      if type(k) ~= 'number' or k < 1 or k > len or k ~= floor(k) then error('mixed or sparse table', 0) end
    end
    if count ~= len then error('sparse array', 0) end
    buf[n + 1] = '['
    n = n + 1
    for i = 1, len do
      if i > 1 then n = n + 1; buf[n] = ',' end
      n = enc_value(t[i], buf, n, depth + 1, open)
    end
    n = n + 1
    buf[n] = ']'
  elseif marked then
    if next(t) ~= nil then error('array with keys', 0) end
    n = n + 1
    buf[n] = '[]'
  else
    n = n + 1
    buf[n] = '{'
    local first = true
    for k, v in next, t do
      if type(k) ~= 'string' then error('mixed or sparse table', 0) end
      if not first then n = n + 1; buf[n] = ',' end
      first = false
      n = n + 1
      buf[n] = enc_string(k)
      n = n + 1
      buf[n] = ':'
      n = enc_value(v, buf, n, depth + 1, open)
    end
    n = n + 1
    buf[n] = '}'
  end
  open[t] = nil
  return n
end

enc_value = function(v, buf, n, depth, open)
  local t = type(v)
  if t == 'string' then n = n + 1; buf[n] = enc_string(v)
  elseif t == 'number' then n = n + 1; buf[n] = enc_number(v)
  elseif t == 'table' then n = enc_table(v, buf, n, depth, open)
  elseif t == 'boolean' then n = n + 1; buf[n] = v and 'true' or 'false'
  elseif v == nil or v == NULL then n = n + 1; buf[n] = 'null'
  else error('cannot encode a ' .. t, 0) end
  return n
end

function _M.encode(v)
  local buf = {}
  local ok, n = pcall(enc_value, v, buf, 0, 1, {})
  if not ok then return nil, n end
  return concat(buf, '', 1, n)
end

-- ---- decoder ------------------------------------------------------------------

local UNESC = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64) end
  return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local text, pos
local dec_value

local function fail(what) error(format('not valid JSON at byte offset %d: %s', pos - 1, what), 0) end

local function skip()
  pos = find(text, '[^ \t\r\n]', pos) or #text + 1
end

local function dec_string()
  local start = pos + 1
  local parts, np = nil, 0
  local i = start
  while true do
    local j = find(text, '["\\%c]', i)
    if not j then pos = #text + 1; fail('unterminated string') end
    local c = byte(text, j)
    if c == 34 then
      local piece = sub(text, i, j - 1)
      pos = j + 1
      if not parts then return piece end
      np = np + 1
      parts[np] = piece
      return concat(parts, '', 1, np)
    elseif c == 92 then
      parts = parts or {}
      np = np + 1
      parts[np] = sub(text, i, j - 1)
      local e = sub(text, j + 1, j + 1)
      if e == 'u' then
        local hex = sub(text, j + 2, j + 5)
        local cp = hex:find('^%x%x%x%x$') and tonumber(hex, 16)
        if not cp then pos = j; fail('bad \\u escape') end
        local nexti = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = sub(text, j + 6, j + 11):match('^\\u(%x%x%x%x)$')
          lo = lo and tonumber(lo, 16)
          if not lo or lo < 0xDC00 or lo > 0xDFFF then pos = j; fail('lone surrogate') end
          cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
          nexti = j + 12
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          pos = j; fail('lone surrogate')
        end
        np = np + 1
        parts[np] = utf8_char(cp)
        i = nexti
      else
        local u = UNESC[e]
        if not u then pos = j; fail('bad escape') end
        np = np + 1
        parts[np] = u
        i = j + 2
      end
    else
      pos = j
      fail('control character in string')
    end
  end
end

local function dec_number()
  local s, e = find(text, '^-?%d+%.?%d*[eE]?[-+]?%d*', pos)
  if not s then fail('unexpected character') end
  local str = sub(text, s, e)
  if not find(str, '^-?0$') and not find(str, '^-?[1-9]%d*$') and
     not find(str, '^-?%d+%.%d+$') and not find(str, '^-?%d+%.?%d*[eE][-+]?%d+$') then fail('bad number') end
  if find(str, '^-?0%d') then fail('leading zero') end
  local v = tonumber(str)
  if not v or v == huge or v == -huge then fail('bad number') end
  pos = e + 1
  return v
end

dec_value = function(depth)
  skip()
  local c = byte(text, pos)
  if c == 123 then -- {
    if depth > 1000 then fail('too deep') end
    pos = pos + 1
    local t = {}
    skip()
    if byte(text, pos) == 125 then pos = pos + 1; return t end
    while true do
      skip()
      if byte(text, pos) ~= 34 then fail('expected a key') end
      local k = dec_string()
      if t[k] ~= nil then fail('duplicate key') end
      skip()
      if byte(text, pos) ~= 58 then fail("expected ':'") end
      pos = pos + 1
      t[k] = dec_value(depth + 1)
      skip()
      c = byte(text, pos)
      pos = pos + 1
      if c == 125 then return t end
      if c ~= 44 then pos = pos - 1; fail("expected ',' or '}'") end
    end
  elseif c == 91 then -- [
    if depth > 1000 then fail('too deep') end
    pos = pos + 1
    local t, n = setmetatable({}, ARRAY), 0
    skip()
    if byte(text, pos) == 93 then pos = pos + 1; return t end
    while true do
      n = n + 1
      t[n] = dec_value(depth + 1)
      skip()
      c = byte(text, pos)
      pos = pos + 1
      if c == 93 then return t end
      if c ~= 44 then pos = pos - 1; fail("expected ',' or ']'") end
    end
  elseif c == 34 then return dec_string()
  elseif c == 116 then if sub(text, pos, pos + 3) == 'true' then pos = pos + 4; return true end
  elseif c == 102 then if sub(text, pos, pos + 4) == 'false' then pos = pos + 5; return false end
  elseif c == 110 then if sub(text, pos, pos + 3) == 'null' then pos = pos + 4; return NULL end
  else return dec_number() end
  fail('unexpected character')
end

function _M.decode(s)
  local bad = utf8_bad(s)
  if bad then return nil, format('not valid UTF-8 at byte offset %d', bad) end
  text, pos = s, 1
  local ok, v = pcall(dec_value, 1)
  if ok then
    skip()
    if pos <= #s then ok, v = false, format('not valid JSON at byte offset %d: trailing text', pos - 1) end
  end
  text = nil
  if not ok then return nil, v end
  return v
end

return _M
