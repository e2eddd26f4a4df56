-- tests/fuzz/util.lua: what several fuzz targets share.
--   util.utf8_bad(s)         -> 0-based offset of the first byte of s that is not UTF-8, or nil:
--                               a plain byte-by-byte reading of RFC 3629 (table 3-7 of Unicode),
--                               independent of runtime/json.c's, to compare the two
--   util.deep_equal(a, b)    -> true | false, path of the first difference
--   util.reader(data)        -> r: r:byte() r:int(n) r:bytes(n) r:rest() r:done() (reads the
--                               fuzzer's bytes as choices; past the end everything is 0/"")
--   util.split(s, sep)       -> the parts of s between bytes equal to sep
local json = require 'jobrt.json'

local _M = {}
local byte, sub = string.byte, string.sub

function _M.utf8_bad(s)
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    local len, lo, hi
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len, lo, hi = 2, 0x80, 0xBF
    elseif c == 0xE0 then len, lo, hi = 3, 0xA0, 0xBF
    elseif (c >= 0xE1 and c <= 0xEC) or c == 0xEE or c == 0xEF then len, lo, hi = 3, 0x80, 0xBF
    elseif c == 0xED then len, lo, hi = 3, 0x80, 0x9F
    elseif c == 0xF0 then len, lo, hi = 4, 0x90, 0xBF
    elseif c >= 0xF1 and c <= 0xF3 then len, lo, hi = 4, 0x80, 0xBF
    elseif c == 0xF4 then len, lo, hi = 4, 0x80, 0x8F
    else return i - 1 end
    if len > 1 then
      if i + len - 1 > n then return i - 1 end
      local c1 = byte(s, i + 1)
      if c1 < lo or c1 > hi then return i - 1 end
      for j = i + 2, i + len - 1 do
        local cj = byte(s, j)
        if cj < 0x80 or cj > 0xBF then return i - 1 end
      end
    end
    i = i + len
  end
  return nil
end

function _M.deep_equal(a, b, path)
  path = path or '$'
  if type(a) ~= type(b) then return false, path .. ': ' .. type(a) .. ' vs ' .. type(b) end
  if type(a) ~= 'table' then
    if a == b then return true end
    return false, path .. ': ' .. tostring(a) .. ' vs ' .. tostring(b)
  end
  if json.is_array(a) ~= json.is_array(b) and (next(a) == nil or next(b) == nil) then
    return false, path .. ': array vs object'
  end
  for k, v in pairs(a) do
    local ok, where = _M.deep_equal(v, b[k], path .. '.' .. tostring(k))
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. '.' .. tostring(k) .. ': missing' end
  end
  return true
end

local R = {}
R.__index = R
function _M.reader(data) return setmetatable({ d = data, i = 1 }, R) end
function R:byte()
  local c = byte(self.d, self.i) or 0
  self.i = self.i + 1
  return c
end
function R:int(n) return self:byte() % n end
function R:bytes(n)
  local s = sub(self.d, self.i, self.i + n - 1)
  self.i = self.i + n
  return s
end
function R:rest()
  local s = sub(self.d, self.i)
  self.i = #self.d + 1
  return s
end
function R:done() return self.i > #self.d end

function _M.split(s, sep)
  local out, start = {}, 1
  while true do
    local j = string.find(s, sep, start, true)
    if not j then
      out[#out + 1] = sub(s, start)
      return out
    end
    out[#out + 1] = sub(s, start, j - 1)
    start = j + 1
  end
end

return _M
