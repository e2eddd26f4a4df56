--[[ flow_deliver.lua: apply outbox entries of flows to the queue they are for (README "Flows").

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV:
  [1] type        QUEUE | DELQUEUE (an LBQUEUE merges identical jobs, so it takes no flows)
  [2] ttl_failed  seconds a parent failed here because of a child is kept (0..315360000; 0:
                  removed at once); '' = 604800
  then one pair per entry (1..1000 pairs), as flow_take returned them from another queue's
  outbox (or, for the root of a new flow, as the client makes it):
  [3+2k] key   c:<Q>|<id>  create job <id> of Q
               u:<id>      news of child <id> (of the queue named in the text) for its parent in Q
               d:<Q>|<id>  delete job <id> of Q, a pending child of a deleted parent
  [4+2k] text  c: "<flow id>\n<parent queue>\n<parent id>\n<ignore 0|1>\n<index>\n<spec>"
                  (parent queue and id '' for the root of a flow); spec is JSON: { job, args
                  (JSON text), opts = { priority, timestamp, delay, retries, timeout } (numbers
                  as strings), children = [ { queue, id, job, args, opts, children, ignore } ] }
               u: "<flow id>\n<child queue>\n<parent queue = Q>\n<parent id>\n<gen>\n<outcome>\n<value>"
                  outcome ok (value: result JSON) | failed (value: reason) | deleted | retry
               d: "<flow id>\n<parent queue>\n<parent id>"
Every entry is checked before anything is written; a bad one is an error naming it.
c: a job with this id that belongs to the same flow and parent: existed, nothing is written (so
  a c: entry carried over twice makes one job). Another job with this id that is pending or
  executing: the root of a flow answers existed; a child answers conflict (the caller tells its
  parent that the child failed). A finished one is replaced. The record gets the usual fields
  and flow (the flow id); a child also parent-queue, parent-id, ignore-failure ('1') and its
  link l:<id>. A job without children is queued at once (QUEUE: wait list, ready set by
  priority, or due set when timestamp/delay put it later; DELQUEUE: due set at its time; no
  identity@timestamp merging: a job of a flow is its own job). A parent gets children,
  children-left, children-failed, flow-at (timestamp, ms) or flow-delay (seconds, counted from
  when its children are done), the children hash (every child pending), p:<id>, an entry in
  jobrt:{Q}:flow:waiting, and one c: outbox entry per child.
u: ignored when the parent is gone (no record, or another flow), the child is not one of its
  children, or the news is not newer (gen) than what it has: so news carried over twice count
  once. Otherwise the child's state in the children hash becomes successful (ok), failed,
  deleted or pending (retry), and children-left and children-failed follow (a failed child
  counts against the parent unless it has ignore 1). A waiting parent whose child just failed
  (not ignored) fails: state finished, result failed, error-reason "child <queue>/<id> failed:
  <reason>", failed-child, into the failed set (ttl_failed), counted in total-failed, and, when
  it is itself a child, its news go to its own parent. A waiting parent whose children are all
  done with none failing is queued (due: flow-at, or now + flow-delay, or now). A parent that
  failed because of a child (failed-child) whose failing children are all retried or done
  without failing goes back: waiting, or queued when none is left; its own parent hears
  'retry'.
d: ignored unless the job is pending and belongs to that flow and parent; then it leaves its
  structure and its record goes, as delete does (a parent takes its own pending children).
Publishes: the wake channel when jobs were queued (as enqueue), "flow:<ms>" when outbox
  entries were written; the record keys of parents failed here and jobs deleted here on
  jobrt:{Q}:results.
Returns: { statuses, written }: one status per entry, in order: 'created', 'existed',
  'conflict: <why>', 'applied', 'stale', 'gone', 'deleted', 'skipped'; written: outbox entries
  written here (carry them over from Q).
]]
-- Built by tools/scripts.lua from src/flow_deliver.lua and includes/: edit those, then run make.
local SCRIPT = 'flow_deliver'
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
-- optional decimal number within [lo, hi] ('' or absent -> dflt)
local function opt_num(i, name, lo, hi, whole, dflt)
  local v = ARGV[i]
  if v == nil or v == '' then return dflt end
  local n = (not v:find('[^%d%.eE+-]')) and tonumber(v) or nil
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    return nil, argerr(i, name, 'must be a number, got ' .. shown(v))
  end
  if whole and n ~= math.floor(n) then return nil, argerr(i, name, 'must be a whole number, got ' .. shown(v)) end
  if n < lo or n > hi then
    return nil, argerr(i, name, 'must be between ' .. lo .. ' and ' .. hi .. ', got ' .. shown(v))
  end
  return n
end
-- ---- end of includes/args.lua ----
-- ---- includes/time.lua (edit it there, then run make) ----
-- Server time, and the enqueue order of a job.
-- now() -> milliseconds (number), decimal seconds with microseconds (string), microseconds
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  -- string padding, not string.format: sprintf costs Redis' Lua more than the rest of this
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. ('00000' .. t[2]):sub(-6), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- The enqueue order of a job: its pending-created time ('1763841706.123456') as 16 digits of
-- microseconds, so that entries with equal scores sort first in, first out ('0000000000000000'
-- for a hand-written record without one).
local function order_of(created)
  local s, us = tostring(created):match('^(%d+)%.(%d%d%d%d%d%d)$')
  if not s then return '0000000000000000' end
  if #s <= 10 then return ('000000000' .. s):sub(-10) .. us end
  return string.format('%010d', tonumber(s)) .. us
end
-- ---- end of includes/time.lua ----
-- ---- includes/failed.lua (edit it there, then run make) ----
-- Jobs that ended for good. A finished record is kept for a number of seconds (0: removed at
-- once, BullMQ's removeOnComplete / removeOnFail). The failed set KEYS[6] scores each id with
-- the time its record expires (Unix ms), so entries whose record is gone are exactly those
-- below now: readers count and list only the others, writers drop them.
-- keep_failed(rec, jid, ttl, now_ms, fails): expire (or remove) a failed record; collects its
-- failed-set entry in fails.
local function keep_failed(rec, jid, ttl, now_ms, fails)
  if ttl == 0 then
    redis.call('DEL', rec)
    return
  end
  redis.call('EXPIRE', rec, ttl)
  fails[#fails + 1] = now_ms + ttl * 1000
  fails[#fails + 1] = jid
end
-- Writes the collected failed-set entries and drops those whose record has expired.
local function flush_failed(fails, now_ms)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms)
  if #fails > 0 then redis.call('ZADD', KEYS[6], unpack(fails)) end
end
-- ---- end of includes/failed.lua ----
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
local FLOW_KEYS = { 'flow', 'flow:out', 'flow:waiting', 'children:' }
-- how long the writer of an outbox entry holds it before any worker of the queue may take it
local FLOW_FRESH_MS = 5000
-- the gen of a child's last news when its record is gone: nothing can follow it
local FLOW_LAST_GEN = '4503599627370496'

-- the queue name of these KEYS (check_keys has checked them)
local function flow_qname() return (KEYS[1]:match('^jobrt:{([^{}]*)}:job:$')) end


-- Writes outbox entry `key` = `text`, held by its writer for FLOW_FRESH_MS.
local function flow_out(key, text, now_ms)
  redis.call('HSET', KEYS[15], key, text)
  redis.call('ZADD', KEYS[16], now_ms + FLOW_FRESH_MS, key)
end

-- Job jid of this queue, a child linked by `link`, tells its parent: outcome 'ok' (value: the
-- result JSON), 'failed' (value: the reason), 'deleted', or 'retry' (it waits to run again).
-- Its news are ordered by gen, the record's flow-gen after adding 1 (FLOW_LAST_GEN when its
-- record is gone). A final outcome ends the link; 'retry' keeps it.
local function flow_tell(jid, link, outcome, value, gone, now_ms)
  local gen = gone and FLOW_LAST_GEN or tostring(redis.call('HINCRBY', KEYS[1] .. jid, 'flow-gen', 1))
  local fid, parent = link:match('^([^\n]*)\n(.*)$')
  flow_out('u:' .. jid, fid .. '\n' .. flow_qname() .. '\n' .. parent .. '\n' .. gen .. '\n' .. outcome .. '\n' ..
    (value or ''), now_ms)
  if outcome ~= 'retry' then redis.call('HDEL', KEYS[15], 'l:' .. jid) end
end

-- Job jid finished for good (or went away: gone): tells its parent, when it has one (link),
-- and its children hash, when it is a parent, goes with its record (ttl seconds; 0 or gone: at
-- once). Returns the number of outbox entries written (0 or 1).
local function flow_ended(jid, link, parent, outcome, value, ttl, gone, now_ms)
  if parent then
    local k = KEYS[18] .. jid
    if gone or ttl == 0 then redis.call('DEL', k) else redis.call('EXPIRE', k, ttl) end
    redis.call('HDEL', KEYS[15], 'p:' .. jid)
  end
  if not link then return 0 end
  flow_tell(jid, link, outcome, value, gone, now_ms)
  return 1
end

-- Parent pid (flow fid) is deleted: every child of it still pending gets a d: entry (whoever
-- carries it over deletes that child, and its own pending children), and its children hash
-- and waiting entry go. Returns the number of outbox entries written.
local function flow_cascade(pid, fid, now_ms)
  local k = KEYS[18] .. pid
  local all = redis.call('HGETALL', k)
  local n = 0
  local text = (fid or '') .. '\n' .. flow_qname() .. '\n' .. pid
  for i = 1, #all, 2 do
    if all[i + 1]:match('^[^\n]*\n([^\n]*)') == 'pending' then
      flow_out('d:' .. all[i], text, now_ms)
      n = n + 1
    end
  end
  redis.call('DEL', k)
  redis.call('HDEL', KEYS[15], 'p:' .. pid)
  redis.call('ZREM', KEYS[17], pid)
  return n
end

-- n outbox entries were written: tell the workers of this queue ("flow:<ms>" on the wake
-- channel: the time from which any of them may carry the entries over if their writer has not).
local function flow_wake(n, now_ms)
  if n > 0 then redis.call('PUBLISH', KEYS[13], 'flow:' .. ms(now_ms + FLOW_FRESH_MS)) end
end

-- ---- end of includes/flows.lua ----

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
local qtype, ttl_failed
qtype, err = queue_type(); if err then return redis.error_reply(err) end
if qtype == 'LBQUEUE' then
  return redis.error_reply(argerr(1, 'type', 'must be QUEUE or DELQUEUE: an LBQUEUE merges identical jobs, so it takes no flows'))
end
ttl_failed, err = opt_num(2, 'ttl_failed', 0, 315360000, true, 604800); if err then return redis.error_reply(err) end
local n = #ARGV - 2
if n <= 0 then return redis.error_reply(argerr(3, 'key', 'is missing (give key, text pairs)')) end
if n % 2 ~= 0 then return redis.error_reply(SCRIPT .. ': ARGV after [2] must come in pairs (key, text), got ' .. n .. ' values') end
if n > 2000 then return redis.error_reply(SCRIPT .. ': at most 1000 entries per call, got ' .. (n / 2)) end

-- ---- checks (nothing is written before every entry passed) ------------------------------

local function bad_name(v, maxlen)
  if type(v) ~= 'string' or v == '' then return 'must be a non-empty string' end
  if #v > maxlen then return 'must be at most ' .. maxlen .. ' bytes, got ' .. #v end
  if v:find('[%c{}]') then return "must not contain control characters or '{' '}', got " .. shown(v) end
end
local function bad_queue(v)
  if type(v) ~= 'string' or v == '' or #v > 128 or v:find('[^%w_.:%-]') then
    return 'must be 1-128 characters of A-Z a-z 0-9 _ . : -, got ' .. shown(v)
  end
end
local function num_opt(o, k, lo, hi, whole)
  local v = o[k]
  if v == nil then return nil end
  local x = type(v) == 'string' and not v:find('[^%d%.eE+-]') and tonumber(v) or nil
  if not x or x ~= x or x < lo or x > hi or (whole and x ~= math.floor(x)) then
    return nil, 'opts.' .. k .. ' must be a number from ' .. lo .. ' to ' .. hi .. (whole and ' (whole)' or '') ..
      ' as a string, got ' .. shown(v)
  end
  return x
end
-- a node's spec: returns the checked node { job, args, o (numbers), children } or nil, message;
-- own: the node is of this queue (its options are checked against the queue's type; its
-- children are checked as specs too, since their c: entries are written from here)
local function check_spec(spec, own)
  if type(spec) ~= 'table' then return nil, 'spec must be a JSON object' end
  local e = bad_name(spec.job, 256)
  if e then return nil, 'spec job ' .. e end
  if type(spec.args) ~= 'string' or not pcall(cjson.decode, spec.args) then
    return nil, 'spec args must be JSON text (a string), got ' .. shown(spec.args)
  end
  local o = spec.opts
  if o ~= nil and type(o) ~= 'table' then return nil, 'spec opts must be an object' end
  o = o or {}
  for k in pairs(o) do
    if k ~= 'priority' and k ~= 'timestamp' and k ~= 'delay' and k ~= 'retries' and k ~= 'timeout' then
      return nil, 'spec opts has an unknown option ' .. shown(k) .. ' (known: priority, timestamp, delay, retries, timeout)'
    end
  end
  local node = { job = spec.job, args = spec.args, o = {} }
  local lims = { priority = { -1e15, 1e15 }, timestamp = { 0, 1e11 }, delay = { 0, 3.2e8 }, retries = { 0, 1000, true },
                 timeout = { 0.001, 3.2e7 } }
  for k, l in pairs(lims) do
    local x, m = num_opt(o, k, l[1], l[2], l[3])
    if m then return nil, 'spec ' .. m end
    node.o[k] = x
  end
  if node.o.timestamp and node.o.delay then return nil, 'spec opts.timestamp and opts.delay exclude each other' end
  if own and node.o.priority and qtype == 'DELQUEUE' then
    return nil, 'spec opts.priority applies to QUEUE only, this queue is DELQUEUE'
  end
  if spec.ignore ~= nil and spec.ignore ~= true and spec.ignore ~= false then return nil, 'spec ignore must be true or false' end
  local kids = spec.children or {}
  if not own then return node end
  if type(kids) ~= 'table' then return nil, 'spec children must be an array' end
  if #kids > 10000 then return nil, 'spec children must be at most 10000, got ' .. #kids end
  local seen = {}
  for i = 1, #kids do
    local c = kids[i]
    if type(c) ~= 'table' then return nil, 'spec children[' .. i .. '] must be an object' end
    e = bad_queue(c.queue)
    if e then return nil, 'spec children[' .. i .. '] queue ' .. e end
    e = bad_name(c.id, 256)
    if e then return nil, 'spec children[' .. i .. '] id ' .. e end
    local ref = c.queue .. '|' .. c.id
    if seen[ref] then return nil, 'spec children[' .. i .. '] is ' .. ref .. ' again: each child once' end
    seen[ref] = true
    local _, m = check_spec(c, false)
    if m then return nil, 'spec children[' .. i .. '] ' .. m:gsub('^spec ', '') end
  end
  node.children = kids
  return node
end

local FID = '^[%w_%-]+$'
local items = {}
for i = 3, #ARGV, 2 do
  local key, text = ARGV[i], ARGV[i + 1]
  local kind = key:sub(1, 2)
  local it = { kind = kind }
  local function bad(m) return redis.error_reply(argerr(i + 1, 'text', m)) end
  if kind == 'c:' or kind == 'd:' then
    local q, jid = key:match('^..([^|]*)|(.*)$')
    if q ~= qname then
      return redis.error_reply(argerr(i, 'key', 'must be ' .. kind .. qname .. '|<id> (an entry for this queue), got ' .. shown(key)))
    end
    local e = bad_name(jid, 256)
    if e then return redis.error_reply(argerr(i, 'key', 'id ' .. e)) end
    it.id = jid
  elseif kind == 'u:' then
    it.cid = key:sub(3)
    local e = bad_name(it.cid, 256)
    if e then return redis.error_reply(argerr(i, 'key', 'id ' .. e)) end
  else
    return redis.error_reply(argerr(i, 'key', "must start with 'c:', 'u:' or 'd:', got " .. shown(key)))
  end
  if type(text) ~= 'string' then return bad('is missing') end
  if kind == 'c:' then
    local fid, pq, pid, ign, idx, spec = text:match('^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
    if not fid or not fid:find(FID) or #fid > 64 then return bad('must be "<flow id>\\n<parent queue>\\n<parent id>\\n<ignore>\\n<index>\\n<spec>", got ' .. shown(text)) end
    if pq ~= '' and (bad_queue(pq) or bad_name(pid, 256)) then return bad('parent ' .. shown(pq .. '/' .. pid) .. ' is not a queue and id') end
    if ign ~= '0' and ign ~= '1' then return bad("ignore must be '0' or '1', got " .. shown(ign)) end
    if not idx:find('^%d+$') then return bad('index must be a whole number, got ' .. shown(idx)) end
    local ok, t = pcall(cjson.decode, spec)
    if not ok then return bad('spec must be JSON, got ' .. shown(spec)) end
    local node, m = check_spec(t, true)
    if not node then return bad(m) end
    it.fid, it.pq, it.pid, it.ign, it.idx, it.node = fid, pq, pid, ign, idx, node
  elseif kind == 'u:' then
    local fid, cq, pq, pid, gen, outcome, value = text:match('^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
    if not fid then return bad('must be "<flow id>\\n<child queue>\\n<parent queue>\\n<parent id>\\n<gen>\\n<outcome>\\n<value>", got ' .. shown(text)) end
    if pq ~= qname then return bad('is news for a parent in queue ' .. shown(pq) .. ', not in ' .. shown(qname)) end
    if bad_queue(cq) then return bad('child queue ' .. bad_queue(cq)) end
    if bad_name(pid, 256) then return bad('parent id ' .. bad_name(pid, 256)) end
    if not gen:find('^%d+$') then return bad('gen must be a whole number, got ' .. shown(gen)) end
    if outcome ~= 'ok' and outcome ~= 'failed' and outcome ~= 'deleted' and outcome ~= 'retry' then
      return bad("outcome must be 'ok', 'failed', 'deleted' or 'retry', got " .. shown(outcome))
    end
    it.fid, it.cq, it.pid, it.gen, it.outcome, it.value = fid, cq, pid, tonumber(gen), outcome, value
  else
    local fid, pq, pid = text:match('^([^\n]*)\n([^\n]*)\n([^\n]*)$')
    if not fid or bad_queue(pq) or bad_name(pid, 256) then
      return bad('must be "<flow id>\\n<parent queue>\\n<parent id>", got ' .. shown(text))
    end
    it.fid, it.pq, it.pid = fid, pq, pid
  end
  items[#items + 1] = it
end

-- ---- apply ---------------------------------------------------------------------------------

local now_ms, now_s, now_us = now()
local prefix = KEYS[1]
local written, wake_at = 0, nil
local fails, finished, nfailed = {}, {}, 0
local function wake(t) if t and (not wake_at or t < wake_at) then wake_at = t end end

-- queues job jid now, or at due_ms (QUEUE: the ready set by priority, else the wait list;
-- later: the due set; DELQUEUE: the due set at its time, no identity@timestamp entry)
local function place(jid, due_ms, prio, order)
  if qtype == 'DELQUEUE' or due_ms > now_ms then
    redis.call('HSET', prefix .. jid, 'due', string.format('%.3f', due_ms / 1000))
    redis.call('ZADD', KEYS[4], due_ms, order .. '|' .. jid)
    if redis.call('ZRANGE', KEYS[4], 0, 0)[1] == order .. '|' .. jid then wake(math.max(due_ms, now_ms)) end
  elseif prio and prio ~= 0 then
    redis.call('ZADD', KEYS[3], -prio, order .. '|' .. jid)
    if redis.call('ZCARD', KEYS[3]) == 1 then wake(now_ms) end
  elseif redis.call('LPUSH', KEYS[2], jid) == 1 then
    wake(now_ms)
  end
end

local function create(it)
  local jid, node = it.id, it.node
  local rec = prefix .. jid
  local st = redis.call('HMGET', rec, 'state', 'flow', 'parent-queue', 'parent-id', 'cancelled')
  if st[1] then
    if st[2] == it.fid and (st[3] or '') == it.pq and (st[4] or '') == it.pid then return 'existed' end
    if st[5] then
      return 'conflict: job ' .. jid .. ' of queue ' .. qname .. ' was deleted while running and is still stopping'
    end
    if st[1] ~= 'finished' then
      if it.pq == '' then return 'existed' end
      return 'conflict: job id ' .. jid .. ' is already ' .. st[1] .. ' in queue ' .. qname .. ' (not as this child of ' ..
        it.pq .. '/' .. it.pid .. '): give the child another id'
    end
    -- a finished job of that id is replaced (as enqueue does)
    redis.call('DEL', rec, KEYS[18] .. jid)
    redis.call('ZREM', KEYS[6], jid)
    redis.call('HDEL', KEYS[15], 'l:' .. jid, 'p:' .. jid)
  end
  local o, kids = node.o, node.children
  local f = { 'id', jid, 'queue', qname, 'function', node.job, 'args', node.args, 'state', 'pending',
              'pending-created', now_s, 'attempts', 0, 'flow', it.fid }
  local function add(k, v) f[#f + 1] = k; f[#f + 1] = v end
  if o.retries then add('retries', o.retries) end
  if o.timeout then add('timeout', tostring(o.timeout)) end
  if o.priority and o.priority ~= 0 then add('priority', tostring(o.priority)) end
  if it.pq ~= '' then
    add('parent-queue', it.pq)
    add('parent-id', it.pid)
    if it.ign == '1' then add('ignore-failure', '1') end
    redis.call('HSET', KEYS[15], 'l:' .. jid, it.fid .. '\n' .. it.pq .. '\n' .. it.pid)
  end
  local order = string.format('%016.0f', now_us)
  if #kids == 0 then
    redis.call('HSET', rec, unpack(f))
    local due_ms = now_ms
    if o.timestamp then due_ms = math.floor(o.timestamp * 1000 + 0.5)
    elseif o.delay then due_ms = now_ms + math.floor(o.delay * 1000 + 0.5) end
    place(jid, due_ms, o.priority, order)
    return 'created'
  end
  add('children', #kids)
  add('children-left', #kids)
  add('children-failed', 0)
  if o.timestamp then add('flow-at', string.format('%.0f', o.timestamp * 1000)) end
  if o.delay then add('flow-delay', tostring(o.delay)) end
  redis.call('HSET', rec, unpack(f))
  redis.call('ZADD', KEYS[17], now_ms, jid)
  redis.call('HSET', KEYS[15], 'p:' .. jid, '1')
  local ck = KEYS[18] .. jid
  local batch = {}
  for i = 1, #kids do
    local c = kids[i]
    local ign = c.ignore == true and '1' or '0'
    batch[#batch + 1] = c.queue .. '|' .. c.id
    batch[#batch + 1] = '0\npending\n' .. ign .. '\n' .. i .. '\n'
    if #batch >= 1000 then redis.call('HSET', ck, unpack(batch)); batch = {} end
    local cspec = { job = c.job, args = c.args, opts = c.opts, children = c.children }
    flow_out('c:' .. c.queue .. '|' .. c.id, it.fid .. '\n' .. qname .. '\n' .. jid .. '\n' .. ign .. '\n' .. i .. '\n' ..
      cjson.encode(cspec), now_ms)
    written = written + 1
  end
  if #batch > 0 then redis.call('HSET', ck, unpack(batch)) end
  return 'created'
end

-- parent pid (its record fields f, as read in up()) has all its children done: queue it
local function queue_parent(pid, f)
  redis.call('ZREM', KEYS[17], pid)
  local due_ms = now_ms
  if f[10] then due_ms = tonumber(f[10]) or now_ms
  elseif f[11] then due_ms = now_ms + math.floor((tonumber(f[11]) or 0) * 1000 + 0.5) end
  place(pid, due_ms, tonumber(f[9]), order_of(f[12]))
end

local function up(it)
  local pid = it.pid
  local rec = prefix .. pid
  local f = redis.call('HMGET', rec, 'flow', 'state', 'result', 'children-left', 'children-failed', 'failed-child',
    'parent-queue', 'parent-id', 'priority', 'flow-at', 'flow-delay', 'pending-created')
  if f[1] ~= it.fid then return 'gone' end
  local ck = KEYS[18] .. pid
  local ref = it.cq .. '|' .. it.cid
  local old = redis.call('HGET', ck, ref)
  if not old then return 'gone' end
  local ogen, ostate, ign, idx = old:match('^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n')
  if it.gen <= (tonumber(ogen) or 0) then return 'stale' end
  local nstate = ({ ok = 'successful', failed = 'failed', deleted = 'deleted', retry = 'pending' })[it.outcome]
  redis.call('HSET', ck, ref, it.gen .. '\n' .. nstate .. '\n' .. ign .. '\n' .. idx .. '\n' .. it.value)
  local function done(s) return s ~= 'pending' end
  local function blocks(s) return s == 'failed' and ign ~= '1' end
  local left = (tonumber(f[4]) or 0) + (done(ostate) and 1 or 0) - (done(nstate) and 1 or 0)
  local failing = (tonumber(f[5]) or 0) + (blocks(nstate) and 1 or 0) - (blocks(ostate) and 1 or 0)
  redis.call('HSET', rec, 'children-left', left, 'children-failed', failing)
  local link = f[7] and (f[1] .. '\n' .. f[7] .. '\n' .. (f[8] or ''))
  if redis.call('ZSCORE', KEYS[17], pid) then
    if blocks(nstate) and not blocks(ostate) then
      -- a child failed for good: so does the parent (and its own parent hears it)
      redis.call('ZREM', KEYS[17], pid)
      local reason = 'child ' .. it.cq .. '/' .. it.cid .. ' failed: ' .. (it.value:match('^([^\n]*)') or ''):sub(1, 1000)
      redis.call('HSET', rec, 'state', 'finished', 'result', 'failed', 'error-reason', reason, 'error-exception', '',
        'finished-created', now_s, 'failed-child', ref)
      keep_failed(rec, pid, ttl_failed, now_ms, fails)
      nfailed = nfailed + 1
      finished[#finished + 1] = rec
      written = written + flow_ended(pid, link, true, 'failed', reason, ttl_failed, ttl_failed == 0, now_ms)
    elseif left <= 0 and failing <= 0 then
      queue_parent(pid, f)
    end
  elseif f[2] == 'finished' and f[3] == 'failed' and f[6] and failing <= 0 then
    -- it failed because of a child that has since been retried: it goes on
    redis.call('ZREM', KEYS[6], pid)
    redis.call('HDEL', rec, 'result', 'error-reason', 'error-exception', 'finished-created', 'failed-child')
    redis.call('HSET', rec, 'state', 'pending')
    redis.call('PERSIST', rec)
    redis.call('PERSIST', ck)
    redis.call('HSET', KEYS[15], 'p:' .. pid, '1')
    if link then
      redis.call('HSET', KEYS[15], 'l:' .. pid, link)
      flow_tell(pid, link, 'retry', '', false, now_ms)
      written = written + 1
    end
    if left <= 0 then
      queue_parent(pid, f)
    else
      redis.call('ZADD', KEYS[17], now_ms, pid)
    end
  end
  return 'applied'
end

local function down(it)
  local jid = it.id
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'flow', 'parent-queue', 'parent-id', 'state', 'pending-created', 'children')
  if f[1] ~= it.fid or f[2] ~= it.pq or f[3] ~= it.pid then return 'gone' end
  if f[4] ~= 'pending' then return 'skipped' end     -- running or finished: it goes on, its news are dropped
  if redis.call('ZREM', KEYS[17], jid) == 0 then
    local member = order_of(f[5]) .. '|' .. jid
    if redis.call('ZREM', KEYS[4], member) + redis.call('ZREM', KEYS[3], member) == 0 then
      redis.call('LREM', KEYS[2], 1, jid)
    end
  end
  if f[6] then written = written + flow_cascade(jid, f[1], now_ms) end
  redis.call('DEL', rec)
  redis.call('HDEL', KEYS[15], 'l:' .. jid, 'p:' .. jid, 'u:' .. jid)
  redis.call('ZREM', KEYS[16], 'u:' .. jid)
  finished[#finished + 1] = rec
  return 'deleted'
end

local statuses = {}
for i, it in ipairs(items) do
  if it.kind == 'c:' then statuses[i] = create(it)
  elseif it.kind == 'u:' then statuses[i] = up(it)
  else statuses[i] = down(it) end
end
if nfailed > 0 then
  flush_failed(fails, now_ms)
  redis.call('HINCRBY', KEYS[11], 'total-failed', nfailed)
end
if #finished > 0 then redis.call('PUBLISH', KEYS[14], table.concat(finished, '\n')) end
if wake_at then redis.call('PUBLISH', KEYS[13], ms(wake_at)) end
flow_wake(written, now_ms)
return { statuses, written }
