-- bench/scripts.lua: the `scripts` section of `make bench`. Runs bench/scripts_bench.lua (Redis
-- memory per waiting job, Redis commands per job) and measures, in the same run, the memory of
-- the smallest seed-004 layout (a 3-field hash per job plus its id in a list) as the baseline.
local h = require 'tests.helpers'

local M = {}

local function baseline_bytes_per_job(url, n)
  local r = h.redis(url)
  r:call("FLUSHALL")
  r:call("MEMORY", "PURGE")
  local before = tonumber(r:call("INFO", "memory"):match("used_memory:(%d+)"))
  local jobrt = require 'jobrt'
  local wg = jobrt.waitgroup()
  for c = 1, 16 do
    wg:spawn(function()
      for i = c, n, 16 do
        r:call("HSET", "doshit:task:" .. i, "function", "noop", "state", "pending", "args", "{}")
        r:call("LPUSH", "doshit:default:pending", i)
      end
    end)
  end
  wg:wait()
  r:call("MEMORY", "PURGE")
  local after = tonumber(r:call("INFO", "memory"):match("used_memory:(%d+)"))
  r:call("FLUSHALL")
  r:close()
  return (after - before) / n
end

function M.run(server, report)
  local n = tonumber(os.getenv("BENCH_JOBS")) or 100000
  local r = h.redis(server.url)
  r:call("FLUSHALL")
  r:close()
  local code, out, err = h.run_jobrt({ "run", "bench/scripts_bench.lua", server.url, tostring(n) }, { timeout = 600 })
  if code ~= 0 then error("bench/scripts_bench.lua failed: " .. err .. out) end
  local mem = tonumber(out:match("memory per waiting job: (%d+) bytes"))
  local cmds = tonumber(out:match("commands per job, enqueue %+ reserve %+ complete %(batches of %d+%): ([%d%.]+)"))
  report("Redis memory per waiting QUEUE job (bytes)", mem, "seed-004 minimal hash + list",
    baseline_bytes_per_job(server.url, n), "B")
  report("Redis commands per job (enqueue+reserve+complete)", cmds, "BullMQ (reference, not run)", 32)
end

return M
