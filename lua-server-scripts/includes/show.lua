-- a value quoted for an error message, at most 40 bytes of it, control characters as \<code>
-- (an error reply cannot carry a newline)
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. (v:gsub('%c', function(c) return '\\' .. c:byte() end)) .. "'"
end
