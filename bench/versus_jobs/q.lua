-- The jobs of `make bench`'s side-by-side comparison (bench/versus.lua), the same as the peers'
-- (bench/peers/run.js): noop does nothing, stamp returns when it started, late how late it
-- started (ms after args.due, Unix ms).
local jobrt = require 'jobrt'
return {
  Q = {
    _type = "QUEUE",
    noop = function() end,
    stamp = function() return jobrt.now() * 1000 end,
    late = function(args) return jobrt.now() * 1000 - args.due end,
  },
}
