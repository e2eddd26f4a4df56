-- tools/make_run.lua: what `make run` does. Makes sure a Redis answers (starting a private
-- redis-server in ./.jobrt/ when none does), then serves jobs/ until Ctrl-C. The example job
-- files declare their queue types (_type), which the worker stores on a clean Redis.
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
io.stderr:write([[
make run: serving jobs/ — in another terminal try:
  ./jobrt enqueue ECHO echo '{"hello":"world"}' --wait
  ./jobrt enqueue MAIL welcome '{"user":42}' --in 5 --id welcome-42
  ./jobrt enqueue INDEX user '{"user":7}' --hash user-7
  ./jobrt stats
  ./jobrt repl
]])
return require('jobrt.worker_cli').main({ arg[1] or "jobs/", "--redis", url }, "work")
