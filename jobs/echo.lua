-- jobs/echo.lua: a plain FIFO queue (type QUEUE). Handy to try things out:
--   jobrt enqueue ECHO echo '{"hello":"world"}' --wait      -> {"hello":"world"}
--   jobrt enqueue ECHO sum '{"numbers":[1,2,3]}' --wait     -> {"sum":6}
return {
  ECHO = {
    _type = "QUEUE",         -- stored in RESERVED:QCONFIG when the queue has no type yet

    -- returns its arguments unchanged
    echo = function(args, job)
      return args
    end,

    -- adds up args.numbers; a bad argument fails the job with a clear reason
    sum = function(args, job)
      if type(args.numbers) ~= "table" then
        error("sum: args.numbers must be an array of numbers, e.g. {\"numbers\":[1,2,3]}", 0)
      end
      local total = 0
      for i, n in ipairs(args.numbers) do
        if type(n) ~= "number" then error(("sum: numbers[%d] is not a number"):format(i), 0) end
        total = total + n
      end
      return { sum = total }
    end,
  },
}
