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
--- @include "time"
local FLOW_KEYS = { 'flow', 'flow:out', 'flow:waiting', 'children:' }
-- how long the writer of an outbox entry holds it before any worker of the queue may take it
local FLOW_FRESH_MS = 5000
-- the gen of a child's last news when its record is gone: nothing can follow it
local FLOW_LAST_GEN = '4503599627370496'

-- the queue name of these KEYS (check_keys has checked them)
local function flow_qname() return (KEYS[1]:match('^jobrt:{([^{}]*)}:job:$')) end

-- The links and parent flags of the jobs ids, in one HMGET: links[id] = link text, parents[id] = true.
-- A queue without a flow hash (no flow job in it now: most queues) answers from one EXISTS, not
-- from an HMGET of two fields per job (a tenth of what complete cost per job).
local function flow_lookup(ids)
  local links, parents = {}, {}
  if #ids == 0 or redis.call('EXISTS', KEYS[15]) == 0 then return links, parents end
  for first = 1, #ids, 1000 do            -- HMGET in pieces: unpack has a limit
    local last = math.min(first + 999, #ids)
    local fields = {}
    for i = first, last do
      fields[#fields + 1] = 'l:' .. ids[i]
      fields[#fields + 1] = 'p:' .. ids[i]
    end
    local got = redis.call('HMGET', KEYS[15], unpack(fields))
    for i = first, last do
      local k = 2 * (i - first)
      if got[k + 1] then links[ids[i]] = got[k + 1] end
      if got[k + 2] then parents[ids[i]] = true end
    end
  end
  return links, parents
end

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

-- What flow_ack compares before it removes an outbox entry: the gen of u: news (a child's
-- later news replaces its earlier ones), the flow id of c: and d: entries.
local function flow_stamp(key, text)
  if key:sub(1, 2) == 'u:' then return (text:match('^[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n([^\n]*)')) or '' end
  return (text:match('^([^\n]*)')) or ''
end
