-- bench/compare.lua: the same `make bench` sections run by two jobrt binaries, in alternating
-- rounds on this machine, to tell a change from noise.
--   ./jobrt run bench/compare.lua OTHER_JOBRT [ROUNDS] [SECTION...]     (default: 3 rounds, ping worker)
-- Each round runs `BIN run bench/run.lua SECTIONS` for the other binary, then for this one (each
-- worker bench serves with its own binary). For every figure it prints the median over the
-- rounds of each binary's value and of its ratio to the baseline measured in the same run
-- (redis-benchmark, PING round trips), and this binary's median over the other's.
local jobrt = require 'jobrt'
local proc = require 'jobrt.core.proc'

local other = arg[1]
if not other then
  io.stderr:write("usage: jobrt run bench/compare.lua OTHER_JOBRT [ROUNDS] [SECTION...]\n")
  return 2
end
local rounds = tonumber(arg[2]) or 3
local sections = {}
for i = 3, #arg do sections[#sections + 1] = arg[i] end
if #sections == 0 then sections = { "ping", "worker" } end
local this = proc.exepath()

local function run_one(bin)
  local args = { bin, "run", "bench/run.lua" }
  for _, s in ipairs(sections) do args[#args + 1] = s end
  local env = require('tests.helpers').environ({ JOBRT_BIN = bin })   -- BENCH_JOBS and all
  local p = assert(proc.spawn{ file = bin, args = args, env = env, capture = true })
  p:wait()
  local out = p:output()
  local rows = {}
  for line in out:gmatch("[^\n]+") do
    local what, value, ratio = line:match("^(.-)%s+([%d%.]+)%s+%S*%s*|.-|%s+ratio%s+([%d%.]+)$")
    if what then rows[what] = { value = tonumber(value), ratio = tonumber(ratio) } end
  end
  return rows
end

local function median(t)
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

local results = { [other] = {}, [this] = {} }
local order = {}
for round = 1, rounds do
  for _, bin in ipairs({ other, this }) do
    io.stderr:write(("round %d: %s\n"):format(round, bin))
    for what, row in pairs(run_one(bin)) do
      local r = results[bin][what]
      if not r then
        r = { value = {}, ratio = {} }
        results[bin][what] = r
        if bin == this or not results[this][what] then order[#order + 1] = what end
      end
      r.value[#r.value + 1] = row.value
      r.ratio[#r.ratio + 1] = row.ratio
    end
  end
end

local seen = {}
io.stdout:write(("%-48s %12s %12s | %8s %8s | %s\n"):format("figure (median of " .. rounds .. " rounds)",
  "other", "this", "other/b", "this/b", "this/other"))
for _, what in ipairs(order) do
  if not seen[what] then
    seen[what] = true
    local a, b = results[other][what], results[this][what]
    local av, bv = a and median(a.value), b and median(b.value)
    local ar, br = a and median(a.ratio), b and median(b.ratio)
    local function f(v) return v and ((v < 10 and "%.3f" or "%.1f"):format(v)) or "-" end
    io.stdout:write(("%-48s %12s %12s | %8s %8s | %s\n"):format(what:sub(1, 48), f(av), f(bv), f(ar), f(br),
      (av and bv and av > 0) and ("%.2f"):format(bv / av) or "-"))
  end
end
return 0
