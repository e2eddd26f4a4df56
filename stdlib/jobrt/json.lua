-- jobrt.json: the one JSON module of jobrt (job arguments, results, the command line's output).
--
--   local json = require 'jobrt.json'
--   json.encode(value[, opts])  -> text | nil, message, code
--       opts.max_bytes  refuse text longer than this (checked as it grows: nothing over the
--                       limit is ever built whole); default: no limit
--       opts.sort       object keys in byte order, so equal values give equal text
--       opts.indent     a string (e.g. "  "): one member per line, keys sorted (for people)
--       opts.name       what the value is called in messages (default "value"), e.g. "args"
--                       gives "args.user.tags[2]: a function cannot be written as JSON: ..."
--   json.decode(text[, opts])   -> value | nil, message, code      (opts.max_bytes, opts.name:
--                                  "args" gives "args is not valid JSON (byte offset 3: ...)";
--                                  default "JSON text")
--   json.check(text[, opts])    -> true | nil, message, code       (what decode would say)
--   json.pretty(value)          -> indented text with sorted keys | nil, message, code
--   json.array([t])             -> t marked as an array, so that an empty one is [] (not {})
--   json.is_array(t)            -> whether t carries that mark (decoded arrays do)
--   json.utf8(s)                -> true | nil, byte offset (from 0) of the first invalid byte
--   json.sanitize(s)            -> s when valid UTF-8, else a copy with each invalid byte
--                                  replaced by U+FFFD (for text from anywhere, e.g. errors)
--   json.member(text, key)      -> the text of member `key` of the JSON object `text`, exactly
--                                  as written there (nil when absent); text must be valid JSON
--   json.null                   the JSON null: the same value as jobrt.null, redis.null and
--                               cjson.null
--   json.MAX_PAYLOAD            16 MiB: the default size limit of job arguments and results
--   json.MAX_DEPTH              1000: deepest nesting of arrays and objects, both ways
--   json.CEILING                512 MiB: the largest size limit that may be configured
--   json.check_limit(v, what)   -> v | nil, message: v is a valid size limit (1..CEILING bytes)
--
-- Codes (the third value, luv's convention): EJSON (not JSON; the message gives the byte offset,
-- counted from 0), EUTF8 (not UTF-8, RFC 8259 requires it; byte offset given), ETOOBIG (over
-- max_bytes), EDEPTH (nested deeper than MAX_DEPTH), EVALUE (a Lua value JSON cannot hold),
-- ENOMEM. Only a wrong argument type raises.
--
-- What becomes what (runtime/json.c does the work):
--   numbers      integral values below 2^63 are written as integers, exactly (1796046695261234
--                stays 1796046695261234); others in the shortest form that reads back as the
--                same double (0.1 is 0.1); NaN and infinities are refused (EVALUE). Decoded
--                numbers are doubles: integers are exact up to 2^53, beyond that they round,
--                as in JavaScript.
--   strings      must be valid UTF-8 both ways (EUTF8; send binary data as base64). Only '"',
--                '\' and control characters are escaped: '/' and non-ASCII text stay as they
--                are. \u escapes of lone surrogates are refused. "\u0000" decodes to a NUL byte.
--   tables       keys 1..n with no holes are an array; string keys an object; an empty table
--                is an object ({}) unless marked with json.array ([]). Decoded arrays carry the
--                mark, so [] comes back as []. Refused (EVALUE), with the path to the value:
--                tables that mix 1..n with string keys, sparse arrays (fill holes with
--                json.null), keys of other types, cycles, functions, coroutines, userdata.
--   null         json.null (decoding null never gives nil, so arrays keep their length).
--   objects      a repeated key in decoded text: the last one wins (as in JavaScript, Python
--                and Redis' cjson). Encoded key order is the table's unless sort or indent.
--   nil          encodes as null (a handler returning nothing has the result null).
local core = require 'jobrt.core.json'

local type, setmetatable, error, tostring = type, setmetatable, error, tostring
local find, sub, byte = string.find, string.sub, string.byte
local c_encode, c_decode, c_check = core.encode, core.decode, core.check

local _M = {
  null = core.null,
  MAX_PAYLOAD = 16 * 1024 * 1024,
  MAX_DEPTH = core.MAX_DEPTH,
  ARRAY = core.array_mt,          -- the array mark (a metatable without methods)
  is_array = core.is_array,
  utf8 = core.utf8,
  sanitize = core.sanitize,
  CEILING = 512 * 1024 * 1024,    -- the largest limit that may be configured (Redis' own
                                  -- default limit on one value, proto-max-bulk-len)
}

local ARRAY = core.array_mt

function _M.check_limit(v, what)
  if type(v) ~= 'number' or v ~= v or v < 1 or v > _M.CEILING or v ~= math.floor(v) then
    return nil, ('%s must be a whole number of bytes from 1 to %d (512 MiB), got %s'):format(
      what, _M.CEILING, tostring(v))
  end
  return v
end

function _M.array(t)
  if t == nil then t = {} end
  if type(t) ~= 'table' then error('json.array: expected a table, got ' .. type(t), 2) end
  return setmetatable(t, ARRAY)
end

local function check_opts(fname, opts)
  if opts ~= nil and type(opts) ~= 'table' then
    error('json.' .. fname .. ': opts must be a table, got ' .. type(opts), 3)
  end
end

function _M.encode(v, opts)
  if opts == nil then return c_encode(v) end
  check_opts('encode', opts)
  return c_encode(v, opts.max_bytes, opts.sort, opts.indent, opts.name)
end

-- The decoder says what the text is ("not valid JSON (byte offset 3: ...)"); this puts the
-- text's name in front: "args is not valid JSON (...)".
local function named(name, v, msg, code)
  if v == nil then return nil, name .. ' is ' .. tostring(msg), code end
  return v
end

function _M.decode(text, opts)
  if type(text) ~= 'string' then error('json.decode: expected a string, got ' .. type(text), 2) end
  if opts == nil then return named('JSON text', c_decode(text)) end
  check_opts('decode', opts)
  return named(opts.name or 'JSON text', c_decode(text, opts.max_bytes))
end

function _M.check(text, opts)
  if type(text) ~= 'string' then error('json.check: expected a string, got ' .. type(text), 2) end
  if opts == nil then return named('JSON text', c_check(text)) end
  check_opts('check', opts)
  return named(opts.name or 'JSON text', c_check(text, opts.max_bytes))
end

function _M.pretty(v)
  return c_encode(v, nil, true, '  ')
end

-- ---- member: a member's text as written ------------------------------------------
-- A small scanner over text that decode has accepted: it only needs to find where values end.

local function skip_space(text, i)
  return find(text, '[^ \t\r\n]', i) or #text + 1
end

-- index just past the string token starting at i (on its quote)
local function skip_string(text, i)
  local j = i + 1
  while true do
    local q = find(text, '["\\]', j)
    if not q then return nil end
    if byte(text, q) == 34 then return q + 1 end
    j = q + 2
  end
end

-- index just past the value starting at i
local function skip_value(text, i)
  local c = byte(text, i)
  if c == 34 then return skip_string(text, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local k = find(text, '["{}%[%]]', j)
      if not k then return nil end
      local ck = byte(text, k)
      if ck == 34 then
        j = skip_string(text, k)
        if not j then return nil end
      else
        depth = depth + ((ck == 123 or ck == 91) and 1 or -1)
        j = k + 1
        if depth == 0 then return j end
      end
    end
  end
  return (find(text, '[,}%] \t\r\n]', i)) or #text + 1
end

function _M.member(text, key)
  if type(text) ~= 'string' or type(key) ~= 'string' then
    error('json.member: expected (text, key) strings', 2)
  end
  local i = skip_space(text, 1)
  if byte(text, i) ~= 123 then return nil end
  i = skip_space(text, i + 1)
  if byte(text, i) == 125 then return nil end
  local found
  while i <= #text do
    local kend = skip_string(text, i)
    if not kend then return nil end
    local k = c_decode(sub(text, i, kend - 1))
    i = skip_space(text, kend)            -- on ':'
    local vstart = skip_space(text, i + 1)
    local vend = skip_value(text, vstart)
    if not vend then return nil end
    if k == key then found = sub(text, vstart, vend - 1) end   -- the last one wins, as in decode
    i = skip_space(text, vend)
    if byte(text, i) ~= 44 then break end
    i = skip_space(text, i + 1)
  end
  return found
end

return _M
