-- jobrt.args: the command-line option parser every jobrt command uses.
--
--   local opts, pos = args.parse(argv, spec, "jobrt enqueue")
--   spec = { redis = "string", concurrency = "count", wait = "flag", priority = "number" }
-- Types: flag (no value), string, number, count (integer >= 1), seconds (number >= 0).
-- "--name value" and "--name=value" both work; "--" ends options; "-" is a positional.
-- An option with a value may be given once (a second is a usage error); a flag any number of times.
-- Returns nil, message on a usage error (the message names the option and the fix).
--
--   args.LOGGING = { ["log-level"] = "string", ["log-format"] = "string" }  (every command takes them)
--   args.apply_logging(opts, cmd) -> true | nil, message
-- applies --log-level and --log-format (text | json); --log-format is also exported as
-- JOBRT_LOG_FORMAT, so the processes a command starts (the --procs children) log alike.
local tonumber, floor = tonumber, math.floor

local _M = {}

local function convert(kind, name, v, cmd)
  if kind == "string" then return v end
  local n = tonumber(v)
  if kind == "number" then
    if not n then return nil, ("%s: --%s wants a number, got '%s'"):format(cmd, name, v) end
    return n
  elseif kind == "count" then
    if not n or n < 1 or n ~= floor(n) then
      return nil, ("%s: --%s wants a whole number >= 1, got '%s'"):format(cmd, name, v)
    end
    return n
  elseif kind == "seconds" then
    if not n or n < 0 then
      return nil, ("%s: --%s wants seconds (a number >= 0), got '%s'"):format(cmd, name, v)
    end
    return n
  end
  error("args: unknown option kind " .. tostring(kind))
end

function _M.parse(argv, spec, cmd)
  local opts, pos = {}, {}
  local i, n = 1, #argv
  while i <= n do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, n do pos[#pos + 1] = argv[j] end
      break
    elseif a == "-h" or a == "--help" then
      opts.help = true
    elseif a:sub(1, 2) == "--" then
      local name, val = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local kind = spec[name]
      if not kind then
        return nil, ("%s: unknown option --%s (see %s --help)"):format(cmd, name, cmd)
      end
      if kind == "flag" then
        if val then return nil, ("%s: --%s takes no value"):format(cmd, name) end
        opts[name] = true
      else
        if not val then
          i = i + 1
          val = argv[i]
          if val == nil then return nil, ("%s: --%s needs a value"):format(cmd, name) end
        end
        local v, err = convert(kind, name, val, cmd)
        if v == nil then return nil, err end
        -- one value each: a second one would silently replace the first (a repeated flag
        -- says the same thing twice, so it is accepted)
        if opts[name] ~= nil then
          local a, b = tostring(opts[name]), val
          if name == "redis" then                 -- never print a password
            local redis = require 'jobrt.redis'
            a, b = redis.mask_url(a), redis.mask_url(b)
          end
          return nil, ("%s: --%s is given twice (%s and %s): give it once"):format(cmd, name, a, b)
        end
        opts[name] = v
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

_M.LOGGING = { ["log-level"] = "string", ["log-format"] = "string" }

function _M.apply_logging(opts, cmd)
  local jobrt = require 'jobrt'
  if opts["log-level"] then
    local ok, err = jobrt.set_log_level(opts["log-level"])
    if not ok then return nil, ("%s: --log-level: %s"):format(cmd, err) end
  end
  if opts["log-format"] then
    local ok, err = jobrt.set_log_format(opts["log-format"])
    if not ok then return nil, ("%s: --log-format: %s"):format(cmd, err) end
    local ffi = require 'ffi'
    pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
    ffi.C.setenv("JOBRT_LOG_FORMAT", opts["log-format"], 1)
  end
  return true
end

return _M
