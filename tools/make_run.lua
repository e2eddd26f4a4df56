-- tools/make_run.lua: what `make run` does. Makes sure a Redis answers (starting a private
-- redis-server in ./.jobrt/ when none does), starts jobrt web (dashboard, API, /metrics) on
-- 127.0.0.1:7070, then serves jobs/ until Ctrl-C, with --watch: an edit of a job file (or of a
-- helper in jobs/lib/) is served as soon as it is saved (JOBRT_WATCH=0 leaves it out). The
-- example job files declare their queue types (_type), which the worker stores on a clean Redis.
local localredis = require 'jobrt.localredis'

local url = os.getenv("JOBRT_REDIS")
if not url then
  local err
  url, err = localredis.ensure()
  if not url then
    io.stderr:write("make run: ", err, "\n")
    return 1
  end
end
-- jobrt web beside the worker, in this process (JOBRT_WEB_LISTEN moves it; "off" leaves it out)
local listen = os.getenv("JOBRT_WEB_LISTEN") or "127.0.0.1:7070"
local web_server
if listen ~= "off" then
  local err
  web_server, err = require('jobrt.web').start{ listen = listen, redis = url, token = os.getenv("JOBRT_WEB_TOKEN") }
  if web_server then
    io.stderr:write(("make run: dashboard and API at %s (metrics at %smetrics)\n"):format(web_server:url(), web_server:url()))
  else
    io.stderr:write(("make run: no dashboard: %s (set JOBRT_WEB_LISTEN=127.0.0.1:PORT)\n"):format(tostring(err)))
  end
end
local watch = os.getenv("JOBRT_WATCH") ~= "0"
io.stderr:write(watch and "make run: serving jobs/ (edits are served as soon as they are saved) — in another terminal try:\n"
  or "make run: serving jobs/ — in another terminal try:\n")
io.stderr:write([[
  ./jobrt enqueue ECHO echo '{"hello":"world"}' --wait
  ./jobrt enqueue MAIL welcome '{"user":42}' --in 5 --id welcome-42
  ./jobrt enqueue INDEX user '{"user":7}' --hash user-7
  ./jobrt stats
  ./jobrt repl
]])
local argv = { arg[1] or "jobs/", "--redis", url }
if watch then argv[#argv + 1] = "--watch" end
local code = require('jobrt.worker_cli').main(argv, "work")
if web_server then web_server:stop() end
return code
