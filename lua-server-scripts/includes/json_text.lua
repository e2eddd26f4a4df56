-- JSON text (job args and results) is UTF-8 (RFC 8259) and has a size limit.
-- json_text_error(i, name, v, limit) -> nil when v (ARGV[i], called name) is valid UTF-8 of at
-- most `limit` bytes, else the error message (with the byte offset, counted from 0, of the first
-- invalid byte).
--- @include "keys"
-- Cost in Redis' Lua: about 17 ns per byte of ASCII, 60-100 ns per byte of other text (one
-- string.find, then a gsub per kind of multi-byte character).
local function json_text_error(i, name, v, limit)
  if #v > limit then
    return argerr(i, name, 'is ' .. #v .. ' bytes, more than the limit of ' .. limit .. ' bytes')
  end
  if not string.find(v, '[\128-\255]') then return nil end
  -- every valid multi-byte character becomes one ASCII byte; no byte >= 0x80 may be left
  local t = string.gsub(v, '[\194-\223][\128-\191]', '_')
  if string.find(t, '[\224-\239]') then
    t = string.gsub(t, '[\225-\236\238\239][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\224[\160-\191][\128-\191]', '_')
    t = string.gsub(t, '\237[\128-\159][\128-\191]', '_')
  end
  if string.find(t, '[\240-\244]') then
    t = string.gsub(t, '[\241-\243][\128-\191][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\240[\144-\191][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\244[\128-\143][\128-\191][\128-\191]', '_')
  end
  if not string.find(t, '[\128-\255]') then return nil end
  -- invalid: find the first bad byte, one character at a time
  local p, n = 1, #v
  while true do
    p = string.find(v, '[\128-\255]', p)
    local c = string.byte(v, p)
    local k, lo, hi = 0, 128, 191
    if c >= 194 and c <= 223 then k = 1
    elseif c == 224 then k, lo = 2, 160
    elseif c == 237 then k, hi = 2, 159
    elseif c >= 225 and c <= 239 then k = 2
    elseif c == 240 then k, lo = 3, 144
    elseif c >= 241 and c <= 243 then k = 3
    elseif c == 244 then k, hi = 3, 143 end
    local ok = k > 0 and p + k <= n
    if ok then
      local c1 = string.byte(v, p + 1)
      ok = c1 >= lo and c1 <= hi
      for j = p + 2, p + k do
        local cj = string.byte(v, j)
        if ok and (cj < 128 or cj > 191) then ok = false end
      end
    end
    if not ok then
      return argerr(i, name, 'must be UTF-8 (RFC 8259): byte offset ' .. (p - 1) .. ' is ' ..
        string.format('0x%02x', c) .. ' (send binary data as base64)')
    end
    p = p + k + 1
  end
end
