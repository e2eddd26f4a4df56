-- Fuzz target jobfile: job definitions (jobrt.worker.load_description, what `jobrt jobs/` does
-- with each file's return value, and worker_cli.load's handling of the file text).
-- Two kinds of input, chosen by the first byte:
--   * Lua source text, compiled as a job file is (a syntax error is a refusal), then run in an
--     empty environment (no os, io, require: the fuzzer must not run commands; no setmetatable)
--     with a budget of lines, and its return value checked;
--   * a table built directly from the bytes: queues, jobs and fields of every type, which
--     reaches load_description's checks faster than random source text does.
-- Invariants: nothing raises; load_description returns either a description whose every job
-- has a handler function (and numbers where timeout and retries are) or nil and one message
-- that names the file; loading into an existing description never loses what was there.
local worker = require 'jobrt.worker'
local util = require 'tests.fuzz.util'

local BUDGET = 20000      -- lines (or instructions) a job file may run here

-- Runs fn with a budget: under lua_fuzz its line hook counts (LuaJIT has a single hook, which
-- lua_fuzz uses for coverage); in jobrt itself (the regression spec) a count hook does.
local function with_budget(fn)
  if jobrt_fuzz_budget then
    jobrt_fuzz_budget(BUDGET)
    local ok, ret = pcall(fn)
    jobrt_fuzz_budget(0)
    return ok, ret
  end
  -- a count hook does not reach JIT-compiled code: the input's code runs interpreted
  if jit then jit.off(fn, true) end
  debug.sethook(function() error('instruction budget spent', 0) end, '', BUDGET)
  local ok, ret = pcall(fn)
  debug.sethook()
  return ok, ret
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function run_text(text)
  local chunk = loadstring(text, '=fuzz.lua')
  if not chunk then return nil, false end
  -- only fresh tables: a file must not change what the next input sees
  local rep, min = string.rep, math.min
  setfenv(chunk, { pairs = pairs, ipairs = ipairs, type = type, tostring = tostring, tonumber = tonumber,
                   string = { rep = function(s, n) return rep(s, min(tonumber(n) or 0, 100)) end, format = string.format },
                   math = copy(math), table = { insert = table.insert, concat = table.concat },
                   error = error, select = select, unpack = unpack })
  -- no setmetatable: a metamethod written by the input would run inside load_description,
  -- where a loop in it would hang the target (the generated tables below carry metatables)
  local ok, ret = with_budget(chunk)
  return ret, ok
end

local WORDS = { 'handler', 'timeout', 'retries', 'source', 'Q', 'job', '', 'x y', 'QUEUE', '\255' }

local function value(r, depth)
  local k = r:int(depth > 3 and 7 or 9)
  if k == 0 then return function() end end
  if k == 1 then return r:byte() - 100 end
  if k == 2 then return (r:byte() - 128) / 7 end
  if k == 3 then return WORDS[r:int(#WORDS) + 1] end
  if k == 4 then return r:byte() % 2 == 1 end
  if k == 5 then return 0 / 0 end
  if k == 6 then return coroutine.create(print) end
  local t = {}
  for _ = 1, r:int(5) do
    local key = r:int(4) == 0 and r:byte() or WORDS[r:int(#WORDS) + 1]
    t[key] = value(r, depth + 1)
  end
  if k == 8 and r:int(3) == 0 then setmetatable(t, { __index = function() return print end }) end
  return t
end

local function check(desc, err, into_before)
  if desc == nil then
    assert(type(err) == 'string' and err:find('fuzz.lua', 1, true), 'refusal that does not name the file: ' .. tostring(err))
    return
  end
  assert(type(desc) == 'table', 'load_description returned ' .. type(desc))
  for q, jobs in pairs(desc) do
    assert(type(q) == 'string' and q ~= '', 'queue name ' .. tostring(q))
    for name, spec in pairs(jobs) do
      assert(type(name) == 'string', 'job name ' .. tostring(name))
      assert(type(spec.handler) == 'function', q .. '.' .. name .. ' has no handler')
      assert(spec.timeout == nil or (type(spec.timeout) == 'number' and spec.timeout > 0), 'timeout')
      assert(spec.retries == nil or (type(spec.retries) == 'number' and spec.retries >= 0), 'retries')
    end
  end
  for q, jobs in pairs(into_before) do
    for name in pairs(jobs) do assert(desc[q] and desc[q][name], 'lost ' .. q .. '.' .. name) end
  end
end

return function(data)
  local r = util.reader(data)
  local ret
  if r:int(2) == 0 then
    local ok
    ret, ok = run_text(r:rest())
    if not ok then return end                     -- a syntax error or a raising file: refused
  else
    ret = value(r, 0)
  end
  local into = { KEEP = { kept = { handler = print, source = 'earlier.lua:1' } } }
  local before = { KEEP = { kept = true } }
  local ok, desc, err = pcall(worker.load_description, ret, 'fuzz.lua', into)
  assert(ok, 'load_description raised: ' .. tostring(desc))
  check(desc, err, desc and before or {})
  local ok2, d2, e2 = pcall(worker.load_description, ret, 'fuzz.lua')
  assert(ok2, 'load_description raised: ' .. tostring(d2))
  check(d2, e2, {})
end
