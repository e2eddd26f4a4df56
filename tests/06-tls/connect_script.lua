-- Run by tls_spec.lua: connects with no address (JOBRT_REDIS and JOBRT_TLS_* decide) and pings.
local redis = require 'jobrt.redis'
local r = assert(redis.connect())
print(r:call("PING"), r:info().tls)
r:close()
