-- bench/run.lua: `make bench`. Starts a private redis-server and runs each
-- benchmark section; every figure is printed beside a baseline measured in
-- the same run, with the ratio (the machine is noisy: compare ratios).
--   ./jobrt run bench/run.lua [section...]    sections: ping scripts worker web logs cluster versus
-- (versus: jobrt, BullMQ and bee-queue side by side, bench/versus.lua; it prints last)
local h = require 'tests.helpers'

local SECTIONS = { "ping", "scripts", "worker", "web", "logs", "cluster", "versus" }
local wanted = {}
for i = 1, #arg do wanted[arg[i]] = true end

local server = h.start_redis()
h.url = server.url
h.setenv("JOBRT_TEST_REDIS", server.url)

local rows = {}
local function report(what, value, base_name, base, unit)
  rows[#rows + 1] = { what, value, base_name, base, unit }
  local ratio = (base and base > 0 and value) and ("%.2f"):format(value / base) or "-"
  local function num(v)
    if not v then return "-" end
    return (math.abs(v) < 10 and "%.3f" or "%.1f"):format(v)
  end
  io.stdout:write(("%-50s %12s %-6s | %-30s %12s | ratio %s\n"):format(
    what, num(value), unit or "", base_name or "", num(base), ratio))
  io.stdout:flush()
end

local failed = 0
for _, name in ipairs(SECTIONS) do
  if next(wanted) == nil or wanted[name] then
    local ok, mod = pcall(require, "bench." .. name)
    if ok then
      io.stdout:write(("== %s\n"):format(name))
      local rok, err = xpcall(mod.run, debug.traceback, server, report)
      if not rok then
        io.stderr:write(("bench %s failed: %s\n"):format(name, err))
        failed = failed + 1
      end
    elseif not tostring(mod):match("module 'bench%." .. name .. "' not found") then
      io.stderr:write(("bench %s cannot load: %s\n"):format(name, mod))
      failed = failed + 1
    end
  end
end
server:stop()
return failed > 0 and 1 or 0
