-- tests/valgrind.lua: `make valgrind`. A full worker run under valgrind --leak-check=full:
-- jobs that succeed, fail, time out and enqueue, Redis calls from handlers, then SIGTERM.
-- Fails when valgrind reports errors or definitely lost memory.
local jobrt = require 'jobrt'
local ops_mod = require 'jobrt.ops'
local proc = require 'jobrt.core.proc'
local h = require 'tests.helpers'

local server = h.start_redis()
local dir = h.tmpdir()
local f = assert(io.open(dir .. "/v.lua", "w"))
f:write([[
local jobrt = require 'jobrt'
return { V = {
  ok = function(args, job) job.redis:call("INCR", "v:ok"); return { n = args.n } end,
  fail = function(args) error("failing on purpose " .. args.n) end,
  slow = { timeout = 0.05, handler = function() jobrt.sleep(1) end },
  enq = function(args, job) return job:enqueue("V", "ok", { n = -1 }) end,
} }
]])
f:close()

local r = h.redis(server.url)
local o = assert(ops_mod.new(r))
assert(o:set_queue_type("V", "QUEUE"))
local log = dir .. "/valgrind.log"
local p = assert(proc.spawn{ file = "valgrind", args = { "valgrind", "--leak-check=full",
  "--errors-for-leak-kinds=definite", "--error-exitcode=9", "--log-file=" .. log,
  h.jobrt_bin, "work", dir, "--redis", server.url, "--log-level", "warn" } })
h.wait_for(function() return r:call("ZCARD", "jobrt:{workers}") > 0 end, 60, "the worker under valgrind")
for i = 1, 100 do
  local fn = ({ "ok", "fail", "slow", "enq" })[i % 4 + 1]
  assert(o:enqueue("V", fn, '{"n":' .. i .. '}', {}))
end
h.wait_for(function()
  local st = o:stats("V")
  return st.pending == 0 and st.executing == 0
end, 120, "the jobs under valgrind")
p:kill("SIGTERM")
local code = p:wait()
local lf = io.open(log)
local text = lf and lf:read("*a") or ""
if lf then lf:close() end
r:close()
server:stop()
os.execute("rm -rf '" .. dir .. "'")
local lost = text:match("definitely lost: ([%d,]+) bytes") or "0"
local errors = text:match("ERROR SUMMARY: (%d+) errors") or "?"
io.stdout:write(("valgrind: exit %d, %s errors, definitely lost %s bytes\n"):format(code, errors, lost))
if code ~= 0 or errors ~= "0" or lost ~= "0" then
  io.stdout:write(text, "\n")
  return 1
end
return 0
