-- jobs/mail.lua: a delayed queue (type DELQUEUE). Schedule a mail for later, by id, and take
-- it back if it is no longer wanted:
--   jobrt enqueue MAIL welcome '{"user":42}' --in 3600 --id welcome-42
--   jobrt delete MAIL welcome-42
--   jobrt enqueue MAIL digest '{"users":[1,2,3]}' --wait
-- The sending itself is in a helper module, jobs/lib/mailer.lua. README.md shows this file:
-- tests/readme_spec.lua checks they are the same below this comment.
local jobrt = require 'jobrt'
local mailer = require 'mailer'          -- jobs/lib/mailer.lua: a helper module, never served

return {
  MAIL = {
    _type = "DELQUEUE",                  -- the queue's type, stored when Redis has none yet

    welcome = function(args, job)        -- each job runs in its own coroutine
      if not args.user then error("welcome: args.user is missing", 0) end
      local line = mailer.send(job.redis, "user " .. tostring(args.user),
        ("welcome! (job %s, attempt %d)"):format(job.id, job.attempt))
      jobrt.log("info", "MAIL: %s", line)
      return { sent = true, at = jobrt.now() }     -- the job's result (JSON)
    end,

    digest = {                           -- a job with options
      timeout = 30, retries = 3,
      handler = function(args, job)
        local users = args.users or {}
        for _, user in ipairs(users) do
          mailer.send(job.redis, "user " .. tostring(user), "your weekly digest")
          jobrt.sleep(0)                 -- yields: other jobs run meanwhile
        end
        return { sent = #users }
      end,
    },
  },
}
