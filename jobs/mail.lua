-- jobs/mail.lua: a delayed queue (type DELQUEUE). Schedule a mail for later, by id, and take
-- it back if it is no longer wanted:
--   jobrt enqueue MAIL welcome '{"user":42}' --in 3600 --id welcome-42
--   jobrt delete MAIL welcome-42
local jobrt = require 'jobrt'

return {
  MAIL = {
    welcome = function(args, job)
      if not args.user then error("welcome: args.user is missing", 0) end
      -- A real handler would talk to an SMTP service here. This one records the mail.
      local line = ("to user %s: welcome! (job %s, attempt %d)"):format(args.user, job.id, job.attempt)
      job.redis:call("RPUSH", "example:mail:outbox", line)
      jobrt.log("info", "MAIL: %s", line)
      return { sent = true, at = jobrt.now() }
    end,
  },
}
