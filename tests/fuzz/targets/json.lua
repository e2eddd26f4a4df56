-- Fuzz target json: jobrt.json on any bytes, as job arguments arrive (RFC 8259 text, UTF-8,
-- size limit), and on Lua values built from the bytes, as handlers return them.
-- Invariants: nothing raises; decode and check agree; decode accepts only UTF-8 (compared with
-- an independent reading of RFC 3629); what decodes encodes, and decodes back equal; sorted
-- encoding is a fixed point; max_bytes is exact; member finds each member as decode saw it;
-- sanitize always gives UTF-8.
local json = require 'jobrt.json'
local util = require 'tests.fuzz.util'

local CODES = { EJSON = true, EUTF8 = true, ETOOBIG = true, EDEPTH = true, EVALUE = true }

local function check_fail(what, v, err, code)
  assert(v == nil, what .. ': a value with an error')
  assert(type(err) == 'string' and err ~= '', what .. ': no message')
  assert(CODES[code], what .. ': unknown code ' .. tostring(code))
end

-- a Lua value from the reader's bytes: what a handler might return
local function build(r, depth)
  local k = r:int(depth > 4 and 7 or 10)
  if k == 0 then return nil end
  if k == 1 then return json.null end
  if k == 2 then return r:byte() % 2 == 1 end
  if k == 3 then return (r:byte() - 128) * 2 ^ (r:int(140) - 70) end
  if k == 4 then return r:bytes(r:int(8)) end
  if k == 5 then return r:int(3) == 0 and 0 / 0 or (r:int(2) == 0 and 1 / 0 or 2 ^ 53 + r:byte()) end
  if k == 6 then return ({ print, coroutine.create(print), io.stdout })[r:int(3) + 1] end
  local t = {}
  local n = r:int(6)
  for i = 1, n do
    local kk = r:int(5)
    local key = kk == 0 and r:bytes(r:int(4)) or kk == 1 and (r:int(8) + 1) or kk == 2 and i
                or kk == 3 and (r:int(3) - 1) + 0.5 or i
    local v = build(r, depth + 1)
    if v ~= nil then t[key] = v end
  end
  if k == 8 then json.array(t) end
  if k == 9 and r:int(4) == 0 then t.self = t end
  return t
end

return function(data)
  -- text
  local v, err, code = json.decode(data)
  local ok, cerr, ccode = json.check(data)
  assert((v ~= nil) == (ok == true), 'decode and check disagree')
  local bad = util.utf8_bad(data)
  local u, off = json.utf8(data)
  assert((u == true) == (bad == nil), 'utf8 and the reference disagree')
  if bad then assert(off == bad, ('utf8 says %s, the reference %d'):format(tostring(off), bad)) end
  local clean = json.sanitize(data)
  assert(util.utf8_bad(clean) == nil, 'sanitize left invalid UTF-8')
  if not bad then assert(clean == data, 'sanitize changed valid text') end
  if v == nil then
    check_fail('decode', v, err, code)
    assert(cerr == err and ccode == code, 'check says otherwise: ' .. tostring(cerr))
    if code == 'EUTF8' then assert(bad ~= nil, 'EUTF8 for valid UTF-8: ' .. err) end
  else
    assert(bad == nil, 'decoded text that is not UTF-8')
    if #data > 0 then
      local t, e2, c2 = json.decode(data, { max_bytes = #data - 1 })
      assert(t == nil and c2 == 'ETOOBIG', 'max_bytes not kept: ' .. tostring(e2))
    end
    local text, eerr = json.encode(v)
    assert(text, 'what decoded does not encode: ' .. tostring(eerr))
    local back = json.decode(text)
    assert(back ~= nil, 'our own output does not decode: ' .. text)
    local same, where = util.deep_equal(v, back)
    assert(same, 'the round trip changed the value at ' .. tostring(where))
    local s1 = assert(json.encode(v, { sort = true }))
    local s2 = assert(json.encode(json.decode(s1), { sort = true }))
    assert(s1 == s2, 'sorted encoding is no fixed point')
    assert(#s1 == #text, 'sorted and unsorted text differ in length')
    local limited = json.encode(v, { max_bytes = #text })
    assert(limited == text, 'max_bytes = the exact length refused')
    if #text > 0 then
      local none, _, lc = json.encode(v, { max_bytes = #text - 1 })
      assert(none == nil and lc == 'ETOOBIG', 'encode ignored max_bytes')
    end
    assert(json.pretty(v), 'pretty failed')
    if type(v) == 'table' and not json.is_array(v) then
      for k, x in pairs(v) do
        local m = json.member(data, k)
        assert(m, 'member did not find ' .. k)
        local mv = json.decode(m)
        assert(mv ~= nil, 'member text does not decode: ' .. m)
        local eq, w = util.deep_equal(x, mv)
        assert(eq, 'member ' .. k .. ' differs at ' .. tostring(w))
      end
    end
  end
  -- values
  local r = util.reader(data)
  local val = build(r, 0)
  local text, eerr, ecode = json.encode(val, { sort = r:byte() % 2 == 0, max_bytes = r:int(4) == 0 and r:byte() or nil })
  if text == nil then
    check_fail('encode', text, eerr, ecode)
  else
    assert(util.utf8_bad(text) == nil, 'encode wrote invalid UTF-8')
    assert(json.decode(text) ~= nil, 'encode wrote text decode refuses: ' .. text)
  end
end
