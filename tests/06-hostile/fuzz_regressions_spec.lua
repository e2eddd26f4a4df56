-- What `make fuzz` found stays fixed: every input in tests/fuzz/regressions/TARGET/ (each one
-- crashed a target once) and every seed of tests/fuzz/corpus/TARGET/ runs through the same
-- target code (tests/fuzz/targets/TARGET.lua) here, in jobrt itself, without libFuzzer. The resp
-- target is C (tests/fuzz/resp_fuzz.c); its inputs are replayed by `make fuzz`.
local proc = require 'jobrt.core.proc'
local worker = require 'jobrt.worker'

local LUA_TARGETS = { 'json', 'url', 'args', 'jobfile', 'scripts' }

local function files(dir)
  local out = {}
  local entries = proc.scandir(dir)
  if not entries then return out end
  table.sort(entries, function(a, b) return a.name < b.name end)
  for _, e in ipairs(entries) do
    if e.type == 'file' then out[#out + 1] = dir .. '/' .. e.name end
  end
  return out
end

local function read(path)
  local f = assert(io.open(path, 'rb'))
  local d = f:read('*a')
  f:close()
  return d
end

describe('fuzz findings', function()
  for _, t in ipairs(LUA_TARGETS) do
    it(('target %s: its regressions and seeds pass'):format(t), function()
      local target = dofile('tests/fuzz/targets/' .. t .. '.lua')
      local n = 0
      for _, dir in ipairs({ 'tests/fuzz/regressions/' .. t, 'tests/fuzz/corpus/' .. t }) do
        for _, path in ipairs(files(dir)) do
          local ok, err = pcall(target, read(path))
          assert(ok, path .. ': ' .. tostring(err))
          n = n + 1
        end
      end
      assert.is_true(n > 0)
    end)
  end

  describe('readable forms of what was found', function()
    local f = function() end
    it('jobfile: a job table whose metatable supplies fields is read through it, and checked', function()
      local d = assert(worker.load_description({ Q = { a = setmetatable({ handler = f }, { __index = { timeout = 30 } }) } }, 'x.lua'))
      assert.equal(30, d.Q.a.timeout)
      local _, err = worker.load_description({ Q = { a = setmetatable({ handler = f }, { __index = function() return print end }) } }, 'x.lua')
      assert.equal('x.lua: Q.a.timeout must be a number, got function', err)
      _, err = worker.load_description({ Q = { a = { handler = f, timeout = 0 / 0 } } }, 'x.lua')
      assert.equal('x.lua: Q.a.timeout must be seconds > 0 (at most 3.2e7), got nan', err)
      _, err = worker.load_description({ Q = { a = { handler = f, retries = 1e9 } } }, 'x.lua')
      assert.equal('x.lua: Q.a.retries must be a whole number from 0 to 1000, got 1000000000', err)
    end)
  end)
end)
