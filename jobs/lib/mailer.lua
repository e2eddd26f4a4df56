-- jobs/lib/mailer.lua: a helper module, not a job file. Files in a lib/ folder are never served;
-- job files load them with require (jobs/lib/ is on package.path while jobs/ is served):
--   local mailer = require 'mailer'
--   mailer.send(job.redis, to, text) -> the line recorded
-- A real helper would talk to an SMTP service; this one records each mail in the Redis list
-- example:mail:outbox, so the examples can be checked.
local _M = {}

function _M.send(redis, to, text)
  local line = ("to %s: %s"):format(to, text)
  local ok, err = redis:call("RPUSH", "example:mail:outbox", line)
  if not ok then error("mailer.send: " .. tostring(err), 2) end
  return line
end

return _M
