-- jobs/mail.lua: a delayed queue (type DELQUEUE). Schedule a mail for later, by id, and take
-- it back if it is no longer wanted:
--   jobrt enqueue MAIL welcome '{"user":42}' --in 3600 --id welcome-42
--   jobrt delete MAIL welcome-42
-- The sending itself is in a helper module, jobs/lib/mailer.lua.
local jobrt = require 'jobrt'
local mailer = require 'mailer'

return {
  MAIL = {
    _type = "DELQUEUE",      -- stored in RESERVED:QCONFIG when the queue has no type yet

    welcome = function(args, job)
      if not args.user then error("welcome: args.user is missing", 0) end
      local line = mailer.send(job.redis, "user " .. tostring(args.user),
        ("welcome! (job %s, attempt %d)"):format(job.id, job.attempt))
      jobrt.log("info", "MAIL: %s", line)
      return { sent = true, at = jobrt.now() }
    end,
  },
}
