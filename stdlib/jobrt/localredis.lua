-- jobrt.localredis: the embedded default. When no Redis address was given and nothing answers
-- at redis://127.0.0.1:6379, `jobrt jobs/` (and `make run`) start a private redis-server with
-- its data under ./.jobrt/ and say so on stderr.
--   local url, started_or_err = localredis.ensure()
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local jobrt = require 'jobrt'

local _M = { DIR = ".jobrt", URL = redis.DEFAULT_URL }

-- Returns the default URL when something answers there (false: not started by us), or starts
-- redis-server in ./.jobrt and returns the URL and true; nil, message when that fails.
function _M.ensure()
  local r = redis.connect(_M.URL)
  if r then
    r:close()
    return _M.URL, false
  end
  os.execute("mkdir -p " .. _M.DIR)
  local dir = (os.getenv("PWD") or ".") .. "/" .. _M.DIR
  local p, err = proc.spawn{ file = "redis-server", capture = true, args = {
    "redis-server", "--port", "6379", "--bind", "127.0.0.1", "--dir", dir,
    "--appendonly", "yes", "--daemonize", "yes", "--pidfile", dir .. "/redis.pid",
    "--logfile", dir .. "/redis.log" } }
  if not p then
    return nil, "nothing answers at " .. _M.URL .. " and redis-server cannot be started (" .. tostring(err) ..
      "): install it (make deps) or give --redis URL"
  end
  p:wait()
  local deadline = jobrt.monotime() + 5
  while jobrt.monotime() < deadline do
    r = redis.connect(_M.URL)
    if r then
      r:close()
      io.stderr:write(("jobrt: nothing answered at %s, so a private redis-server was started there (data in ./%s/, log in ./%s/redis.log; stop it with: redis-cli shutdown)\n")
        :format(_M.URL, _M.DIR, _M.DIR))
      return _M.URL, true
    end
    jobrt.sleep(0.02)
  end
  return nil, "started redis-server in ./" .. _M.DIR .. " but it does not answer at " .. _M.URL ..
    ": see ./" .. _M.DIR .. "/redis.log"
end

return _M
