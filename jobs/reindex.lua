-- jobs/reindex.lua: a load-balanced queue (type LBQUEUE). Enqueue one job per change with the
-- user as jobHash: changes that pile up while the queue is busy become one job whose priority
-- is the number of changes, and two reindexes of the same user never run at the same time.
--   jobrt enqueue INDEX user '{"user":42}' --hash user-42
local jobrt = require 'jobrt'

return {
  INDEX = {
    _type = "LBQUEUE",       -- stored in RESERVED:QCONFIG when the queue has no type yet

    user = {
      timeout = 30,
      retries = 2,
      handler = function(args, job)
        if type(args.user) ~= "number" then
          return nil, "args.user must be a user id (a number)"
        end
        -- Pretend to rebuild the search document; yields, so other jobs run meanwhile.
        jobrt.sleep(0.05)
        local key = "example:index:user:" .. args.user
        job.redis:call("HSET", key, "indexed-at", jobrt.now(), "by", job.worker)
        return { user = args.user, key = key }
      end,
    },
  },
}
