-- tools/make_run.lua: what `make run` does. Makes sure a Redis answers (starting a private
-- redis-server in ./.jobrt/ when none does), starts jobrt web (dashboard, API, /metrics) on
-- 127.0.0.1:7070, then serves jobs/ until Ctrl-C. The example job files declare their queue
-- types (_type), which the worker stores on a clean Redis.
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
io.stderr:write([[
make run: serving jobs/ — in another terminal try:
  ./jobrt enqueue ECHO echo '{"hello":"world"}' --wait
  ./jobrt enqueue MAIL welcome '{"user":42}' --in 5 --id welcome-42
  ./jobrt enqueue INDEX user '{"user":7}' --hash user-7
  ./jobrt stats
  ./jobrt repl
]])
local code = require('jobrt.worker_cli').main({ arg[1] or "jobs/", "--redis", url }, "work")
if web_server then web_server:stop() end
return code
