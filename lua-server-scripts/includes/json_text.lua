-- JSON text (job args and results) is UTF-8 (RFC 8259) and has a size limit.
-- json_text_error(i, name, v, limit) -> nil when v (ARGV[i], called name) is valid UTF-8 of at
-- most `limit` bytes, else the error message (with the byte offset, counted from 0, of the first
-- invalid byte).
--- @include "keys"
--- @include "utf8"
local function json_text_error(i, name, v, limit)
  if #v > limit then
    return argerr(i, name, 'is ' .. #v .. ' bytes, more than the limit of ' .. limit .. ' bytes')
  end
  local bad, c = utf8_bad(v)
  if bad then
    return argerr(i, name, 'must be UTF-8 (RFC 8259): byte offset ' .. bad .. ' is ' ..
      string.format('0x%02x', c) .. ' (send binary data as base64)')
  end
  return nil
end
