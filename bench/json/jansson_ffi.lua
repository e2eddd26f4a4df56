-- bench/json/jansson_ffi.lua: the "libjansson through LuaJIT's FFI" candidate for jobrt.json,
-- measured by bench/json.lua. Decoding: json_loadb, then a walk of jansson's tree through FFI
-- calls. Encoding: a jansson tree built through FFI calls, then json_dumpb (reals with 17
-- digits: jansson has no shortest-round-trip mode). Not used by jobrt itself.
local ffi = require 'ffi'

ffi.cdef [[
typedef enum { JSON_OBJECT, JSON_ARRAY, JSON_STRING, JSON_INTEGER, JSON_REAL, JSON_TRUE, JSON_FALSE,
               JSON_NULL } json_type;
typedef struct json_t { json_type type; volatile size_t refcount; } json_t;
typedef struct json_error_t { int line; int column; int position; char source[80]; char text[160]; } json_error_t;
json_t *json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error);
void json_delete(json_t *json);
size_t json_array_size(const json_t *array);
json_t *json_array_get(const json_t *array, size_t index);
size_t json_object_size(const json_t *object);
void *json_object_iter(json_t *object);
void *json_object_iter_next(json_t *object, void *iter);
const char *json_object_iter_key(void *iter);
size_t json_object_iter_key_len(void *iter);
json_t *json_object_iter_value(void *iter);
const char *json_string_value(const json_t *string);
size_t json_string_length(const json_t *string);
double json_real_value(const json_t *real);
long long json_integer_value(const json_t *integer);
json_t *json_object(void);
json_t *json_array(void);
json_t *json_stringn(const char *value, size_t len);
json_t *json_integer(long long value);
json_t *json_real(double value);
json_t *json_true(void);
json_t *json_false(void);
json_t *json_null(void);
int json_object_setn_new(json_t *object, const char *key, size_t key_len, json_t *value);
int json_array_append_new(json_t *array, json_t *value);
size_t json_dumpb(const json_t *json, char *buffer, size_t size, size_t flags);
]]

local J = ffi.load('jansson')
local NULL = require('jobrt.core.json').null
local ARRAY = { __jsontype = 'array' }
local floor, type, next = math.floor, type, next
local ffi_string = ffi.string

local _M = { array_mt = ARRAY }

local FLAGS = 0x4 + 0x8 + 0x10 + 0x1   -- DECODE_ANY, INT_AS_REAL, ALLOW_NUL, REJECT_DUPLICATES
local err = ffi.new('json_error_t')

local function walk(j)
  local t = j.type
  if t == 0 then
    local o = {}
    local it = J.json_object_iter(j)
    while it ~= nil do
      o[ffi_string(J.json_object_iter_key(it), J.json_object_iter_key_len(it))] = walk(J.json_object_iter_value(it))
      it = J.json_object_iter_next(j, it)
    end
    return o
  elseif t == 1 then
    local a = setmetatable({}, ARRAY)
    for i = 0, tonumber(J.json_array_size(j)) - 1 do a[i + 1] = walk(J.json_array_get(j, i)) end
    return a
  elseif t == 2 then return ffi_string(J.json_string_value(j), J.json_string_length(j))
  elseif t == 3 then return tonumber(J.json_integer_value(j))
  elseif t == 4 then return J.json_real_value(j)
  elseif t == 5 then return true
  elseif t == 6 then return false
  end
  return NULL
end

function _M.decode(s)
  local root = J.json_loadb(s, #s, FLAGS, err)
  if root == nil then return nil, ffi_string(err.text) end
  local v = walk(root)
  J.json_delete(root)   -- refcount 1: the tree is ours alone
  return v
end

local build
build = function(v)
  local t = type(v)
  if t == 'table' then
    local n = #v
    if n > 0 or getmetatable(v) == ARRAY then
      local a = J.json_array()
      for i = 1, n do J.json_array_append_new(a, build(v[i])) end
      return a
    end
    local o = J.json_object()
    for k, x in next, v do J.json_object_setn_new(o, k, #k, build(x)) end
    return o
  elseif t == 'string' then return J.json_stringn(v, #v)
  elseif t == 'number' then
    if v == floor(v) and v > -9.2e18 and v < 9.2e18 then return J.json_integer(v) end
    return J.json_real(v)
  elseif t == 'boolean' then return v and J.json_true() or J.json_false()
  end
  return J.json_null()
end

local out = ffi.new('char[?]', 4 * 1024 * 1024)
local out_size = 4 * 1024 * 1024

function _M.encode(v)
  local root = build(v)
  local n = J.json_dumpb(root, out, out_size, 0x20)   -- JSON_COMPACT
  J.json_delete(root)
  if n > out_size then return nil, 'output too large for the bench buffer' end
  return ffi_string(out, n)
end

return _M
