-- bench/json.lua: encode/decode speed of the JSON candidates for jobrt.json, on job arguments and
-- results of three sizes (small ~100 B, medium ~10 KB, large ~1 MB), and whether each one keeps
-- the rules jobrt needs (exact numbers, [] stays [], '/' unescaped, invalid UTF-8 refused).
--   ./jobrt run bench/json.lua [seconds per measurement, default 0.3]
-- Candidates: lua-cjson 2.1.0 (what jobrt used), dkjson 2.6 (pure Lua; with and without LPeg),
-- a pure-Lua codec written for this (bench/json/lua_codec.lua), libjansson through LuaJIT's FFI
-- (bench/json/jansson_ffi.lua), and jobrt.json as shipped (runtime/json.c), unsorted and with
-- sorted keys. The jansson candidate needs libjansson4 (not a dependency of jobrt).
local jobrt = require 'jobrt'
local budget = tonumber(arg and arg[1]) or 0.3

package.path = package.path .. ';./?.lua;/usr/share/lua/5.1/?.lua'
package.cpath = package.cpath .. ';/usr/lib/x86_64-linux-gnu/lua/5.1/?.so'

local core = require 'jobrt.core.json'
local cjson = require('cjson').new()
local function load_dkjson(lpeg)
  package.loaded.dkjson = nil
  local ok, dk = pcall(require, 'dkjson')
  if not ok then return nil end
  if lpeg then
    if not pcall(dk.use_lpeg) then return nil end
  end
  return dk
end
local dk_plain = load_dkjson(false)
local dk_lpeg = load_dkjson(true)
local luac = require 'bench.json.lua_codec'
local jffi_ok, jffi = pcall(require, 'bench.json.jansson_ffi')

local A = core.array_mt
local candidates = {
  { name = 'lua-cjson 2.1.0 (before)', enc = cjson.encode, dec = cjson.decode, arr = function(t) return t end },
  { name = 'dkjson 2.6, pure Lua', enc = dk_plain and function(v) return dk_plain.encode(v) end,
    dec = dk_plain and function(s) return dk_plain.decode(s) end, null = dk_plain and dk_plain.null,
    arr = function(t) return setmetatable(t, { __jsontype = 'array' }) end },
  { name = 'dkjson 2.6 + LPeg', enc = dk_lpeg and function(v) return dk_lpeg.encode(v) end,
    dec = dk_lpeg and function(s) return dk_lpeg.decode(s) end, null = dk_lpeg and dk_lpeg.null,
    arr = function(t) return setmetatable(t, { __jsontype = 'array' }) end },
  { name = 'own pure-Lua codec', enc = luac.encode, dec = luac.decode,
    arr = function(t) return setmetatable(t, luac.array_mt) end },
  { name = 'jansson via FFI', enc = jffi_ok and jffi.encode, dec = jffi_ok and jffi.decode,
    arr = function(t) return setmetatable(t, jffi_ok and jffi.array_mt or {}) end },
  { name = 'jobrt.json (runtime/json.c)', enc = function(v) return core.encode(v) end,
    dec = function(s) return core.decode(s) end, arr = function(t) return setmetatable(t, A) end },
  { name = 'jobrt.json, sorted keys', enc = function(v) return core.encode(v, nil, true) end,
    dec = nil, arr = function(t) return setmetatable(t, A) end },
}

-- ---- data: what jobs carry ------------------------------------------------------

local words = { 'alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'café',
                'Müller', '東京', 'naïve', 'ÅSA', 'path/to/file', 'quote"d', 'tab\there' }
local seed = 42
local function rnd(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end
local function item(i)
  return { sku = ('SKU-%06d'):format(i), name = words[rnd(#words)] .. ' ' .. words[rnd(#words)],
           qty = rnd(20), price = rnd(10000) / 100, ratio = rnd(1000) / 7,
           tags = { words[rnd(#words)], words[rnd(#words)] }, gift = rnd(2) == 1,
           note = rnd(5) == 1 and core.null or ('note ' .. i) }
end

local small = { to = 'ann@example.com', template = 'welcome', user = 1796046695261234,
                locale = 'en-GB', vars = { plan = 'trial', days = 14, discount = 0.15 } }
local medium = { order = 'ORD-2024-000123', customer = { id = 90071992547409, name = 'Zoë Ångström',
                 email = 'zoe@example.com' }, items = {}, total = 0 }
for i = 1, 45 do medium.items[i] = item(i) end
local large = { batch = 'nightly', items = {} }
for i = 1, 4500 do large.items[i] = item(i) end

local data = {
  { name = 'small', v = small },
  { name = 'medium', v = medium },
  { name = 'large', v = large },
}
for _, d in ipairs(data) do
  d.text = assert(core.encode(d.v))
end

-- ---- timing -------------------------------------------------------------------------

local function measure(fn, arg1)
  fn(arg1)                                       -- warm up (and the JIT)
  collectgarbage()
  local n, t0 = 0, jobrt.monotime()
  local t = t0
  repeat
    for _ = 1, 5 do fn(arg1) end
    n = n + 5
    t = jobrt.monotime()
  until t - t0 >= budget
  return (t - t0) / n * 1e6                      -- microseconds per call
end

-- a value whose tables are marked as arrays the candidate's way (for its encoder)
local function convert(v, c)
  if v == core.null and c.null then return c.null end       -- dkjson has a null of its own
  if type(v) ~= 'table' then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = convert(x, c) end
  if #v > 0 then c.arr(out) end
  return out
end

local function checks(c)
  local notes = {}
  local function try(f, ...) local ok, a, b = pcall(f, ...); if ok then return a, b end return nil, a end
  if c.enc then
    local t = try(c.enc, { n = 1796046695261234, f = 0.1 })
    notes[#notes + 1] = (t and t:find('1796046695261234', 1, true) and t:find('0.1', 1, true) and not t:find('0.10000')) and 'numbers exact' or 'NUMBERS CHANGED'
    local s = try(c.enc, { p = 'a/b' })
    notes[#notes + 1] = (s and not s:find('\\/', 1, true)) and "'/' kept" or "'/' ESCAPED"
    local bad = try(c.enc, { s = '\255\254' })
    notes[#notes + 1] = bad and 'ENCODES BAD UTF-8' or 'bad UTF-8 refused'
  end
  if c.dec and c.enc then
    local v = try(c.dec, '{"a":[]}')
    local back = v and try(c.enc, v)
    notes[#notes + 1] = back == '{"a":[]}' and '[] kept' or ('[] BECOMES ' .. tostring(back))
  end
  if c.dec then
    local v = try(c.dec, '{"s":"\255\254"}')
    notes[#notes + 1] = v and 'DECODES BAD UTF-8' or ''
  end
  return table.concat(notes, ', '):gsub(', $', '')
end

io.stdout:write(('JSON encode/decode, microseconds per call (lower is better); %gs per measurement\n'):format(budget))
io.stdout:write(('sizes: small %d B, medium %d B, large %d B (encoded by jobrt.json)\n\n'):format(
  #data[1].text, #data[2].text, #data[3].text))
local head = ('%-34s %10s %10s %10s %10s %10s %10s'):format('candidate', 'small enc', 'small dec',
  'med enc', 'med dec', 'large enc', 'large dec')
io.stdout:write(head, '\n')
local base = {}
for ci, c in ipairs(candidates) do
  local row = { ('%-34s'):format(c.name) }
  if not c.enc and not c.dec then
    row[#row + 1] = ' (not installed)'
  else
    for _, d in ipairs(data) do
      for _, op in ipairs({ 'enc', 'dec' }) do
        local f = c[op]
        local cell = '-'
        if f then
          local input = op == 'enc' and convert(d.v, c) or d.text
          local ok, res = pcall(f, input)
          if ok and res ~= nil then
            local us = measure(f, input)
            local key = d.name .. op
            if ci == 1 then base[key] = us end
            cell = us < 10 and ('%.2f'):format(us) or us < 1000 and ('%.1f'):format(us) or ('%.0f'):format(us)
            if base[key] and ci > 1 then cell = cell .. ('(%.1fx)'):format(us / base[key]) end
          else
            cell = 'fails'
          end
        end
        row[#row + 1] = ('%10s'):format(cell)
      end
    end
  end
  io.stdout:write(table.concat(row, ' '), '\n')
  io.stdout:write(('    %s\n'):format(checks(c)))
end
io.stdout:write('\n(Nx) = time relative to lua-cjson 2.1.0 in the same run.\n')
