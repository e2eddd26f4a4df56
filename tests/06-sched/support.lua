-- tests/06-sched/support.lua: what the scheduling specs share.
--
--   local ss = require 'tests.06-sched.support'
--   ss.python                     Debian's python3 (python3-croniter and zoneinfo live there)
--   ss.oracle(kind, lines) -> output lines: runs tests/06-sched/oracle.py KIND with the lines
--                              on stdin (see oracle.py); raises when it fails
--   ss.rng(seed) -> function(lo, hi): a small deterministic random generator (same cases on
--                   every run and machine; the seed is in the failure message)
--   ss.utc(t) -> "2024-03-31 01:00:00Z"
local proc = require 'jobrt.core.proc'
local h = require 'tests.helpers'

local ss = {}

do
  local f = io.open("/usr/bin/python3")
  ss.python = f and "/usr/bin/python3" or "python3"
  if f then f:close() end
end

function ss.oracle(kind, lines)
  local dir = h.tmpdir()
  local f = assert(io.open(dir .. "/in.txt", "wb"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  local p = assert(proc.spawn{ file = "/bin/sh", args = { "/bin/sh", "-c",
    ss.python .. " tests/06-sched/oracle.py " .. kind .. " < " .. dir .. "/in.txt" }, capture = true })
  local code = p:wait()
  local out, err = p:output()
  os.execute("rm -rf '" .. dir .. "'")
  if code ~= 0 then error("tests/06-sched/oracle.py " .. kind .. " failed (is python3-croniter installed? make deps): " .. err) end
  local res = {}
  for l in out:gmatch("([^\n]*)\n") do res[#res + 1] = l end
  return res
end

-- Park and Miller's minimal standard generator: deterministic across machines.
function ss.rng(seed)
  local state = seed % 2147483647
  if state <= 0 then state = state + 2147483646 end
  return function(lo, hi)
    state = (state * 16807) % 2147483647
    return lo + state % (hi - lo + 1)
  end
end

function ss.utc(t) return os.date("!%Y-%m-%d %H:%M:%SZ", t) end

return ss
