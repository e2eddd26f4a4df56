-- tests/run.lua: the suite, run inside the jobrt host (`make test`).
-- Starts a private redis-server, runs every tests/**/*_spec.lua with busted in
-- this coroutine (specs call Redis straight-line), stops the server, and ends
-- with the line "N passed, N failed".
--   ./jobrt run tests/run.lua [busted options] [spec files or dirs]
local h = require 'tests.helpers'

-- JOBRT_TEST_CLUSTER=1 (make test-cluster): the suite's Redis is a cluster of 3 primaries and
-- 3 replicas (tests/cluster.lua), named by the plain address of one node
local server
if os.getenv("JOBRT_TEST_CLUSTER") == "1" then
  server = require('tests.cluster').start{ primaries = 3, replicas = 1 }
  h.cluster = server
else
  server = h.start_redis()
end
h.url = server.url
h.setenv("JOBRT_TEST_REDIS", server.url)
h.setenv("JOBRT_REDIS", server.url)
h.setenv("JOBRT_CHECK_HANDLES", "1")

-- Stopped from outside (Ctrl-C, a CI timeout): take every server and process down with us.
local jobrt = require 'jobrt'
local function on_stop(name)
  io.stderr:write("\ntests: ", name, ": stopping the test servers and processes\n")
  h.kill_leftovers()
  for _, s in ipairs(server.servers or { server }) do os.execute("rm -rf '" .. s.dir .. "'") end
  jobrt.exit(1)
end
local stop_handlers = { jobrt.on_signal("SIGTERM", on_stop), jobrt.on_signal("SIGINT", on_stop) }

local user = {}
for i = 1, #arg do user[#user + 1] = arg[i] end
local roots = {}
local opts = {}
for _, a in ipairs(user) do
  if a:sub(1, 1) == "-" then opts[#opts + 1] = a else roots[#roots + 1] = a end
end
if #roots == 0 then roots = { "tests" } end

-- JOBRT_TEST_PATTERN picks other files (make test-browser: _browser)
_G.arg = { "--output=tests/output.lua", "--pattern=" .. (os.getenv("JOBRT_TEST_PATTERN") or "_spec"),
           "--sort-files", "--lpath=./?.lua" }
for _, o in ipairs(opts) do _G.arg[#_G.arg + 1] = o end
for _, r in ipairs(roots) do _G.arg[#_G.arg + 1] = r end

-- busted ends with os.exit when a spec failed: turn that into an error here, so the server is
-- stopped and the summary line printed whatever happened
local real_exit = os.exit
os.exit = function(code) error({ busted_exit = code }, 0) end
local ok, err = pcall(require('busted.runner'), { standalone = false })
os.exit = real_exit
if not ok and type(err) == "table" and err.busted_exit then ok, err = true, nil end
for _, sh in ipairs(stop_handlers) do sh:close() end
server:stop()
h.cleanup_certs()
local left = h.kill_leftovers()
if left > 0 then io.stderr:write(("tests: killed %d process(es) that failed specs left running\n"):format(left)) end

local s = _G.JOBRT_TEST_SUMMARY or { passed = 0, failed = 1, skipped = 0 }
if not ok and err ~= nil then
  io.stderr:write("busted stopped: ", tostring(err), "\n")
  s.failed = s.failed + 1
end
io.stdout:write(("%d passed, %d failed%s\n"):format(s.passed, s.failed,
  s.skipped > 0 and (", %d skipped"):format(s.skipped) or ""))
io.stdout:flush()
-- a failed spec may have left coroutines running (an in-process worker, say): end them all
local code = s.failed > 0 and 1 or 0
require('jobrt').exit(code)
return code
