-- Job definitions for `make bench` (bench/worker.lua).
local jobrt = require 'jobrt'
return {
  BENCH = {
    noop = function() end,
    stamp = function() return jobrt.now() end,
  },
  BENCHDEL = {
    late = function(args) return jobrt.now() - args.due end,
  },
}
