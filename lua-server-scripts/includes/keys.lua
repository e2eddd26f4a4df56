-- The 14 standard KEYS of one queue, in order (README "Keys"): KEYS[1] is the prefix of the job
-- records, KEYS[13] and KEYS[14] are channel names. check_keys() -> queue name | nil, message.
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
-- a value quoted for an error message, at most 40 bytes of it
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. v .. "'"
end
-- "<script>: ARGV[i] <name> <msg>"
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
local function check_keys()
  if #KEYS ~= 14 then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix = KEYS[1]:match('^(jobrt:{.+}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  for i = 2, 14 do
    if KEYS[i] ~= prefix .. SUFFIX[i] then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(prefix .. SUFFIX[i]) .. ', got ' .. shown(KEYS[i])
    end
  end
  return prefix:match('^jobrt:{(.+)}:$')
end
