-- jobrt.sha1: SHA-1 (FIPS 180-4) of a string, as lowercase hex: the name Redis gives a script
-- (EVALSHA). Used at build time (tools/embed.lua names every server script) and, for scripts
-- read from a checkout, at run time.
--
--   local sha1 = require 'jobrt.sha1'
--   sha1.hex(text) -> 40 hex digits          -- e.g. sha1.hex('abc') == 'a9993e36...'
-- Raises when text is not a string. LuaJIT's bit library does the 32-bit arithmetic; about
-- 20 MB/s, a few hundred microseconds for a script.
local bit = require 'bit'

local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rol, tobit, tohex = bit.rol, bit.tobit, bit.tohex
local byte, char, rep, fmt = string.byte, string.char, string.rep, string.format
local type, error = type, error

local _M = {}

-- the message padded to a multiple of 64 bytes, its bit length at the end (big-endian)
local function padded(s)
  local n = #s
  local zeros = (55 - n) % 64
  local bits = n * 8
  local hi = math.floor(bits / 4294967296)
  local lo = bits % 4294967296
  local len = char(
    math.floor(hi / 16777216) % 256, math.floor(hi / 65536) % 256, math.floor(hi / 256) % 256, hi % 256,
    math.floor(lo / 16777216) % 256, math.floor(lo / 65536) % 256, math.floor(lo / 256) % 256, lo % 256)
  return s .. '\128' .. rep('\0', zeros) .. len
end

function _M.hex(s)
  if type(s) ~= 'string' then error('jobrt.sha1.hex: expected a string, got ' .. type(s), 2) end
  local m = padded(s)
  local h0, h1, h2, h3, h4 = tobit(0x67452301), tobit(0xEFCDAB89), tobit(0x98BADCFE), tobit(0x10325476),
                             tobit(0xC3D2E1F0)
  local w = {}
  for chunk = 1, #m, 64 do
    for i = 0, 15 do
      local a, b, c, d = byte(m, chunk + 4 * i, chunk + 4 * i + 3)
      w[i] = bor(bit.lshift(a, 24), bit.lshift(b, 16), bit.lshift(c, 8), d)
    end
    for i = 16, 79 do
      w[i] = rol(bxor(w[i - 3], w[i - 8], w[i - 14], w[i - 16]), 1)
    end
    local a, b, c, d, e = h0, h1, h2, h3, h4
    for i = 0, 79 do
      local f, k
      if i < 20 then
        f, k = bor(band(b, c), band(bnot(b), d)), 0x5A827999
      elseif i < 40 then
        f, k = bxor(b, c, d), 0x6ED9EBA1
      elseif i < 60 then
        f, k = bor(band(b, c), band(b, d), band(c, d)), 0x8F1BBCDC
      else
        f, k = bxor(b, c, d), 0xCA62C1D6
      end
      local t = tobit(rol(a, 5) + f + e + k + w[i])
      e, d, c, b, a = d, c, rol(b, 30), a, t
    end
    h0, h1, h2, h3, h4 = tobit(h0 + a), tobit(h1 + b), tobit(h2 + c), tobit(h3 + d), tobit(h4 + e)
  end
  return fmt('%s%s%s%s%s', tohex(h0), tohex(h1), tohex(h2), tohex(h3), tohex(h4))
end

return _M
