--[[ flow_ack.lua: remove flow outbox entries that were carried over (README "Flows").

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  then pairs (1..1000): key, stamp as flow_take returned them
An entry goes only when its stamp is still the same: news of a child that were replaced by
  later news of that child (a retry, then an outcome) meanwhile stay to be carried over.
Returns: the number of entries removed.
]]
-- Built by tools/scripts.lua from src/flow_ack.lua and includes/: edit those, then run make.
local SCRIPT = 'flow_ack'
-- ---- includes/args.lua (edit it there, then run make) ----
-- Argument checks. Each returns the value, or nil and a message naming the script and argument;
-- '' (or a missing ARGV) stands for an argument not given.
-- ---- includes/keys.lua (edit it there, then run make) ----
-- The 14 standard KEYS of one queue, in order (README "Keys"): KEYS[1] is the prefix of the job
-- records, KEYS[13] and KEYS[14] are channel names. check_keys([extra]) -> queue name | nil,
-- message; extra: the suffixes of the keys (or channels) a script takes after the 14, e.g.
-- { 'progress' } for jobrt:{Q}:progress.
-- ---- includes/show.lua (edit it there, then run make) ----
-- a value quoted for an error message, at most 40 bytes of it, control characters as \<code>
-- (an error reply cannot carry a newline)
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. (v:gsub('%c', function(c) return '\\' .. c:byte() end)) .. "'"
end
-- ---- end of includes/show.lua ----
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
-- "<script>: ARGV[i] <name> <msg>"
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
-- The queue name is 1-128 bytes of A-Z a-z 0-9 _ . : - (README "Names"): no '{' or '}', so no
-- queue's key can be another queue's, and the Cluster hash tag is exactly the queue name.
local function check_keys(extra)
  local more = extra and #extra or 0
  if #KEYS ~= 14 + more then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue' ..
      (more > 0 and (' and ' .. more .. ' more (jobrt:{QUEUE}:' .. table.concat(extra, ', jobrt:{QUEUE}:') .. ')') or '') ..
      ' (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix, qname = KEYS[1]:match('^(jobrt:{([^{}]*)}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  if qname == '' or #qname > 128 or qname:find('[^%w_.:%-]') then
    return nil, SCRIPT .. ': the queue name must be 1-128 characters of A-Z a-z 0-9 _ . : -, got ' .. shown(qname)
  end
  for i = 2, 14 + more do
    local want = prefix .. (SUFFIX[i] or extra[i - 14])
    if KEYS[i] ~= want then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(want) .. ', got ' .. shown(KEYS[i])
    end
  end
  return qname
end
-- ---- end of includes/keys.lua ----
-- ARGV[1]: the queue type, as the caller read it from RESERVED:QCONFIG
local function queue_type()
  local v = ARGV[1]
  if v == nil or v == '' then return nil, argerr(1, 'type', 'is missing (read it from RESERVED:QCONFIG)') end
  if v ~= 'QUEUE' and v ~= 'LBQUEUE' and v ~= 'DELQUEUE' then
    return nil, argerr(1, 'type', 'must be QUEUE, LBQUEUE or DELQUEUE, got ' .. shown(v))
  end
  return v
end
-- ---- end of includes/args.lua ----
-- ---- includes/flows.lua (edit it there, then run make) ----
-- Flows (README "Flows"): a parent job runs after its children, which may live in other
-- queues, so in other Cluster slots. No script touches two queues' keys: what one queue must
-- tell another waits in the first queue's outbox until a client or worker has carried it over
-- (flow_take, flow_deliver on the other queue, flow_ack), and flow_deliver is idempotent.
-- The flow keys of queue Q follow the 14 standard KEYS in the scripts that take them:
--   KEYS[15] jobrt:{Q}:flow          hash: l:<id> the link of a child of Q that has not finished
--                                    ("<flow id>\n<parent queue>\n<parent id>"); p:<id> '1' for
--                                    a parent of Q whose children hash still lives as long as
--                                    its record; the outbox texts u:<id> (news of child <id> for
--                                    its parent), c:<queue>|<id> (a child to create) and
--                                    d:<queue>|<id> (a pending child to delete)
--   KEYS[16] jobrt:{Q}:flow:out      zset: the outbox entries (those field names) by the Unix ms
--                                    until which their writer, or the client that took them,
--                                    holds them; afterwards any worker of Q carries them over
--   KEYS[17] jobrt:{Q}:flow:waiting  zset: parents of Q waiting for their children, by the Unix
--                                    ms they began waiting
--   KEYS[18] jobrt:{Q}:children:     prefix of hash jobrt:{Q}:children:<id> of parent <id>: one
--                                    field "<queue>|<id>" per child, value
--                                    "<gen>\n<state>\n<ignore 0|1>\n<index>\n<value>"
-- ---- includes/time.lua (edit it there, then run make) ----
-- ---- end of includes/time.lua ----
local FLOW_KEYS = { 'flow', 'flow:out', 'flow:waiting', 'children:' }
-- how long the writer of an outbox entry holds it before any worker of the queue may take it
local FLOW_FRESH_MS = 5000
-- the gen of a child's last news when its record is gone: nothing can follow it
local FLOW_LAST_GEN = '4503599627370496'








-- What flow_ack compares before it removes an outbox entry: the gen of u: news (a child's
-- later news replaces its earlier ones), the flow id of c: and d: entries.
local function flow_stamp(key, text)
  if key:sub(1, 2) == 'u:' then return (text:match('^[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n([^\n]*)')) or '' end
  return (text:match('^([^\n]*)')) or ''
end
-- ---- end of includes/flows.lua ----

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end
local n = #ARGV - 1
if n <= 0 then return redis.error_reply(argerr(2, 'key', 'is missing (give key, stamp pairs)')) end
if n % 2 ~= 0 then return redis.error_reply(SCRIPT .. ': ARGV after [1] must come in pairs (key, stamp), got ' .. n .. ' values') end
if n > 2000 then return redis.error_reply(SCRIPT .. ': at most 1000 entries per call, got ' .. (n / 2)) end
for i = 2, #ARGV, 2 do
  if ARGV[i] == '' then return redis.error_reply(argerr(i, 'key', 'is missing')) end
end
local removed = 0
for i = 2, #ARGV, 2 do
  local key = ARGV[i]
  local text = redis.call('HGET', KEYS[15], key)
  if text and flow_stamp(key, text) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[15], key)
    redis.call('ZREM', KEYS[16], key)
    removed = removed + 1
  elseif not text then
    redis.call('ZREM', KEYS[16], key)
  end
end
return removed
