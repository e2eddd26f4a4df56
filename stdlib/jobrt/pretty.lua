-- jobrt.pretty: Lua values as readable text, for the REPL and the inspect commands.
--
--   pretty.format(v[, opts]) -> string
--   opts: depth (nesting shown, default 4), items (entries shown per table, default 100),
--         width (a table fits on one line up to this many characters, default 72),
--         indent (default "  ")
-- Tables print with sorted keys (array part first), nested tables indented, a table seen
-- again on the way down as <cycle>, deeper ones as {...}, strings quoted, the JSON null as null.
local json = require 'jobrt.json'

local type, tostring, pairs, ipairs, rawget, getmetatable, pcall = type, tostring, pairs, ipairs, rawget, getmetatable, pcall
local str_format, concat, sort, rep = string.format, table.concat, table.sort, string.rep
local NULL = json.null

local _M = {}

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat
            return then true until while]]):gmatch('%S+') do KEYWORDS[w] = true end

local function quote(s)
  return (str_format('%q', s):gsub('\\\n', '\\n'))
end

local function scalar(v)
  local t = type(v)
  if t == 'string' then return quote(v) end
  if v == NULL then return 'null' end
  if t == 'number' then
    -- as JSON writes it: integers exact, other numbers in the shortest form that reads back
    return json.encode(v) or tostring(v)        -- nan, inf and -inf as Lua prints them
  end
  if t == 'table' then
    local m = getmetatable(v)
    if m and rawget(m, '__tostring') then
      local ok, s = pcall(tostring, v)
      if ok then return s end
    end
  end
  return tostring(v)
end

local function key_text(k)
  if type(k) == 'string' and k:match('^[%a_][%w_]*$') and not KEYWORDS[k] then return k end
  return '[' .. scalar(k) .. ']'
end

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    if ta == 'number' then return true end
    if tb == 'number' then return false end
    return ta < tb
  end
  if ta == 'number' or ta == 'string' then return a < b end
  return tostring(a) < tostring(b)
end

local function fmt(v, o, level, seen)
  if type(v) ~= 'table' then return scalar(v) end
  local m = getmetatable(v)
  if m and rawget(m, '__tostring') then return scalar(v) end
  if seen[v] then return '<cycle>' end
  if level > o.depth then return next(v) == nil and '{}' or '{...}' end
  seen[v] = true
  local parts, n = {}, 0
  local count = 0
  local len = #v
  for i = 1, len do
    count = count + 1
    if count > o.items then break end
    n = n + 1
    parts[n] = fmt(v[i], o, level + 1, seen)
  end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == 'number' and k >= 1 and k <= len and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  sort(keys, key_less)
  for _, k in ipairs(keys) do
    count = count + 1
    if count > o.items then break end
    n = n + 1
    parts[n] = key_text(k) .. ' = ' .. fmt(v[k], o, level + 1, seen)
  end
  local total = len + #keys
  if total > o.items then
    n = n + 1
    parts[n] = str_format('... (%d more)', total - o.items)
  end
  seen[v] = nil
  if n == 0 then return '{}' end
  local one = '{ ' .. concat(parts, ', ') .. ' }'
  if #one <= o.width and not one:find('\n', 1, true) then return one end
  local pad = rep(o.indent, level)
  return '{\n' .. pad .. concat(parts, ',\n' .. pad) .. '\n' .. rep(o.indent, level - 1) .. '}'
end

function _M.format(v, opts)
  opts = opts or {}
  local o = { depth = opts.depth or 4, items = opts.items or 100, width = opts.width or 72,
              indent = opts.indent or '  ' }
  return fmt(v, o, 1, {})
end

return _M
