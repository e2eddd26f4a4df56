--[[ enqueue_bulk.lua: add many jobs to one queue in one call, each as enqueue.lua would.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = not given):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] width  9: each job is a group of 9 arguments, as ARGV[2..10] of enqueue.lua:
               [4+9k] function  [5+9k] args (JSON text)  [6+9k] id  [7+9k] jobHash
               [8+9k] priority  [9+9k] timestamp  [10+9k] delay  [11+9k] retries  [12+9k] timeout
             2: each job is a group of 2, function and args (JSON text), without options
  [3] max_payload  the largest args, in bytes (1..536870912); '' = 16777216 (16 MiB); args
             must be valid UTF-8 (RFC 8259)
  then 1..1000 groups
Every job is checked before anything is written: one bad argument (or a client id of a job
  deleted while running that is still stopping) fails the call and enqueues nothing; the error
  names the ARGV index, as enqueue.lua's do.
Returns: a flat array id1, existed1, id2, existed2, ... in the order of the jobs (existed as
  enqueue.lua's). Jobs later in the call see the earlier ones: two jobs with the same client id
  make one job (the second answers existed 1), LBQUEUE jobs of one jobHash merge.
Order: the jobs get consecutive microseconds as their pending-created (and order), from the
  call's TIME, so they keep their order among themselves (a call takes longer than a
  microsecond per job, so the next call's TIME is later than all of them).
Generated ids are taken with one INCRBY for every job without a client id; a job that makes no
  new job (merged, already waiting) leaves its id unused.
Publishes: at most one wake-up, as enqueue.lua would for the earliest of the jobs.
Cost: a QUEUE job without options is one HSET; the call adds TIME, INCRBY, one LPUSH and at
  most one PUBLISH. Width 2 is the cheap form for such jobs: fewer arguments to parse, and
  their checks and writes made in one loop (README "Cost").
]]
local SCRIPT = 'enqueue_bulk'
--- @include "enqueue_job"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end
local width = ARGV[2]
if width ~= '2' and width ~= '9' then
  return redis.error_reply(argerr(2, 'width', "must be '2' (function, args) or '9' (function, args, id, jobHash, priority, timestamp, delay, retries, timeout), got " .. shown(width)))
end
width = tonumber(width)
local max_payload
max_payload, err = opt_num(3, 'max_payload', 1, 536870912, true, 16777216); if err then return redis.error_reply(err) end
local n = #ARGV - 3
if n <= 0 then return redis.error_reply(argerr(4, 'function', 'is missing (give at least one job)')) end
if n % width ~= 0 then
  return redis.error_reply(SCRIPT .. ': ARGV after [3] must come in groups of ' .. width .. ', got ' .. n .. ' values')
end
n = n / width
if n > 1000 then return redis.error_reply(SCRIPT .. ': at most 1000 jobs per call, got ' .. n) end

if width == 2 and qtype == 'QUEUE' then
  -- Plain QUEUE jobs: the checks of enqueue_args, made for all jobs at once where they can be
  -- (one search for bad characters over every name), then one HSET per job, one LPUSH.
  local names = {}
  for i = 1, n do
    local b = 2 + 2 * i
    local fn, args = ARGV[b], ARGV[b + 1]
    if fn == '' or #fn > 256 or args == '' or (args ~= '{}' and args ~= '[]' and
        (json_text_error(b + 1, 'args', args, max_payload) or not pcall(cjson.decode, args))) then
      local _
      _, err = enqueue_args(b, qtype, true, max_payload)
      return redis.error_reply(err)
    end
    names[i] = fn
  end
  if table.concat(names, ' '):find('[%c{}]') then
    for i = 1, n do
      local _
      _, err = name_arg(2 + 2 * i, 'function', 256, true)
      if err then return redis.error_reply(err) end
    end
  end
  local t = redis.call('TIME')
  local sec, us = t[1], tonumber(t[2])
  local now_ms = t[1] .. ('00' .. math.floor(us / 1000)):sub(-3)
  local first = redis.call('INCRBY', KEYS[12], n) - n
  local prefix, ids, out = KEYS[1], {}, {}
  for i = 1, n do
    -- consecutive microseconds (see Order); string.format is the cheapest number to text in
    -- Redis' Lua (tostring and digit tables cost more)
    local u = us + i - 1
    if u >= 1000000 then
      sec, us, u = tostring(tonumber(sec) + 1), us - 1000000, u - 1000000
    end
    local id = string.format('%d', first + i)
    redis.call('HSET', prefix .. id, 'function', ARGV[2 + 2 * i], 'args', ARGV[3 + 2 * i], 'state', 'pending',
      'pending-created', string.format('%s.%06d', sec, u))
    ids[i] = id
    out[2 * i - 1] = id
    out[2 * i] = 0
  end
  local was = 0
  for from = 1, n, 4000 do
    local last = math.min(from + 3999, n)
    local len = redis.call('LPUSH', KEYS[2], unpack(ids, from, last))
    if from == 1 then was = len - last end
  end
  if was == 0 then redis.call('PUBLISH', KEYS[13], now_ms) end
  return out
end

local jobs, generated = {}, 0
for i = 1, n do
  local b = 4 + width * (i - 1)
  local j
  if width == 2 then
    -- no options: as a group of 9 whose options are ''
    j, err = enqueue_args(b, qtype, true, max_payload); if err then return redis.error_reply(err) end
  else
    j, err = enqueue_args(b, qtype, false, max_payload); if err then return redis.error_reply(err) end
    err = enqueue_args_late(b, qtype, j); if err then return redis.error_reply(err) end
  end
  if j.id then
    -- a client id that is still stopping would fail the call half-way: refuse it before writing
    local st = redis.call('HMGET', KEYS[1] .. j.id, 'state', 'cancelled')
    if st[1] == 'executing' and st[2] then
      return redis.error_reply(SCRIPT .. ': ARGV[' .. (b + 2) .. '] job ' .. shown(j.id) ..
        ' was deleted while running and is still stopping; enqueue it again once it has stopped')
    end
  else
    generated = generated + 1
  end
  jobs[i] = j
end

-- all arguments are valid: from here on we write (includes/enqueue_job.lua)
local batch = enqueue_batch(qtype, qname, generated)
local out = {}
for i = 1, n do
  local id, existed = enqueue_job(batch, jobs[i])
  if not id then return redis.error_reply(existed) end     -- not reached: refused above
  out[2 * i - 1] = id
  out[2 * i] = existed
end
enqueue_flush(batch)
return out
