-- tests/chaos/ledger.lua: the chaos ledger (what the handlers wrote) and every check `make chaos`
-- makes at the end. The checks are plain functions of data the driver (tests/chaos/run.lua)
-- gathered: the ledger, what the producers had acknowledged, the faults injected, the job
-- records and keys left in the queue Redis, and the worker processes.
--
--   ledger.SCRIPT, ledger.KEYS   the fencing script (run on the ledger server) and its KEYS
--   ledger.load(r) -> sha        SCRIPT LOAD on the ledger server (r: a jobrt.redis connection)
--   ledger.new() -> L            an empty ledger; L:tail(r) reads the records written since the
--                                last call (returns how many), L:add(line) adds one
--   L.done_ok[qid]               true once a run of job qid ("<queue>\t<id>") ended ok
--   L:analyse(input) -> report   every check (see below); report.violations lists what failed
--   ledger.check_keys(listing, live_ids, retention) -> { {key=, ok=, why=}... }
--   ledger.format(report) -> text;  ledger.summary(report) -> table for the CHAOS-RESULT line
--
-- The fence. A record is one run's write: start, progress or end (tests/chaos/jobs/chaos.lua).
-- The script (below) does what a store that checks fencing tokens does: it keeps the highest
-- token that has started on each resource and refuses a write whose token is smaller. The token
-- is job.fence (it grows with every lease of the queue, so a later holder of a job or of a
-- jobHash always has a larger one) and the resources are the job and its LBQUEUE jobHash; with a
-- worker that gives no job.fence, the token is job.attempt and only the job is fenced. Each
-- write is appended to the ledger list with the ledger server's clock (TIME: the clock of the
-- whole soak, since every process runs on this machine) and its verdict.
--
-- The checks (each a violation unless said otherwise):
--   lost          an acknowledged job that neither ended ok in the ledger (ok and flaky jobs)
--                 nor ended failed in Redis (doom and slow jobs)
--   failed unexpectedly   an ok or flaky job that Redis recorded as failed
--   duplicates    a job whose handler ran to the end (end ok) more than once: allowed only when
--                 a fault hit the earlier run's worker process (its pid, or its supervisor) or
--                 Redis between the earlier run's start and the later run's start (faults count
--                 until `lease` seconds after they ended: a lease lost then runs out that late)
--   same attempt  two runs of one job with the same attempt: the fencing token did not grow
--   overlaps      two runs of one job, or of one LBQUEUE jobHash, where the later one started
--                 while the earlier one still wrote to the ledger:
--                 * the earlier run is the one whose result Redis stored (the only run of its job
--                   that ended ok, and the record says successful): it held its lease, and so the
--                   job or jobHash, until it ended, and yet the later run was handed out: the
--                   queue broke "identical jobs never run at once" (faults excuse nothing here);
--                 * the earlier run had a write ACCEPTED after the later one started: fencing
--                   failed;
--                 * otherwise all its writes after that were refused by the fence: the documented
--                   limit (a handler frozen past its lease runs until its next yield), allowed when
--                   a fault explains it (as for duplicates) and it made at most one write after the
--                   later run started (one more means it went on past a yield after its lease was
--                   lost).
--   crosstalk     a handler's job.redis call answered with a reply meant for another handler
--                 (the handler checks the shape of every reply; tests/chaos/jobs/chaos.lua)
--   early starts  a run of a job with a due time (DELQUEUE, delayed QUEUE) whose handler started
--                 (its own clock, read before its first yield) before that time (1 ms leeway for
--                 the millisecond rounding of due times)
--   keys          check_keys' verdicts: after the drain only live workers' keys, finished records,
--                 finished parents' children hashes (flows) and per-minute metrics within their
--                 retention (no flow links, outbox entries or waiting parents), the queue types, per-queue
--                 counters (stats, seq, metrics), failed sets whose every entry has its record, and
--                 the handlers' own chaos:* keys may be left (lua-server-scripts/README.md, Keys)
--   stuck, process trouble   found by the driver (tests/chaos/run.lua): a worker child alive but
--                 taking no probe job, a supervisor that exited by itself, orphans that lived on,
--                 a worker that did not stop on SIGTERM, queues that did not drain
local cjson = require 'cjson'

local fmt, concat, sort = string.format, table.concat, table.sort

local _M = {}

_M.KEYS = { 'chaos:ledger', 'chaos:top' }

-- KEYS[1] the ledger list, KEYS[2] hash: resource -> the highest token that has started on it.
-- ARGV[1] ev (start|progress|end), [2] queue, [3] id, [4] attempt, [5] fencing token (job.fence,
-- '' when the worker gives none), [6] the LBQUEUE jobHash ('' for other queues), [7] the record
-- (JSON). The token is job.fence when given, else job.attempt. Resources: the job
-- ("j\n<queue>\n<id>"), and, with job.fence, its LBQUEUE jobHash ("h\n<queue>\n<hash>");
-- attempts of different jobs do not compare, so without job.fence only the job is fenced.
-- A write is accepted when its token is at least the highest started on each of its resources;
-- a start raises them. Appends "<server time>\t<1 accepted | 0 refused>\t<record>"; returns 1|0.
_M.SCRIPT = [[
local att = tonumber(ARGV[4])
if not att then return redis.error_reply('chaos ledger: attempt must be a number, got ' .. tostring(ARGV[4])) end
local token = att
local res = { 'j\n' .. ARGV[2] .. '\n' .. ARGV[3] }
if ARGV[5] ~= '' then
  token = tonumber(ARGV[5])
  if not token then return redis.error_reply('chaos ledger: fence must be a number, got ' .. ARGV[5]) end
  if ARGV[6] ~= '' then res[2] = 'h\n' .. ARGV[2] .. '\n' .. ARGV[6] end
end
local acc = true
for i = 1, #res do
  if token < tonumber(redis.call('HGET', KEYS[2], res[i]) or '0') then acc = false end
end
if ARGV[1] == 'start' and acc then
  for i = 1, #res do redis.call('HSET', KEYS[2], res[i], token) end
end
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[1], t[1] .. '.' .. string.format('%06d', tonumber(t[2])) .. '\t' .. (acc and '1' or '0') .. '\t' .. ARGV[7])
return acc and 1 or 0
]]

function _M.load(r)
  local sha, err = r:call('SCRIPT', 'LOAD', _M.SCRIPT)
  if not sha then error('chaos: cannot load the ledger script: ' .. tostring(err)) end
  return sha
end

local function qid(q, id) return q .. '\t' .. tostring(id) end
_M.qid = qid

-- ---- reading the ledger ---------------------------------------------------------------

local Ledger = {}
Ledger.__index = Ledger

function _M.new()
  return setmetatable({ n = 0, runs = {}, order = {}, by_job = {}, done_ok = {}, bad = {} }, Ledger)
end

function Ledger:add(line)
  local t, acc, json = line:match('^([%d.]+)\t([01])\t(.*)$')
  local ok, rec = pcall(cjson.decode, json or '')
  if not t or not ok or type(rec) ~= 'table' then
    self.bad[#self.bad + 1] = line
    return
  end
  self.n = self.n + 1
  rec.t, rec.acc, rec.seq = tonumber(t), acc == '1', self.n
  rec.id = tostring(rec.id)
  local run = self.runs[rec.rid]
  if not run then
    run = { rid = rec.rid, q = rec.q, id = rec.id, att = rec.att, hash = rec.hash, fn = rec.fn,
            pid = rec.pid, k = rec.k, due = tonumber(rec.due), writes = {} }
    self.runs[rec.rid] = run
    self.order[#self.order + 1] = run
    local key = qid(rec.q, rec.id)
    local l = self.by_job[key] or {}
    self.by_job[key] = l
    l[#l + 1] = run
  end
  local w = run.writes
  w[#w + 1] = rec
  if rec.ev == 'start' then
    run.start, run.start_seq, run.tl = rec.t, rec.seq, tonumber(rec.tl)
  elseif rec.ev == 'end' then
    run.ended, run.end_ok, run.end_acc = rec.t, rec.ok == true, rec.acc
    if rec.ok == true then self.done_ok[qid(rec.q, rec.id)] = true end
  end
  run.last, run.last_seq = rec.t, rec.seq
end

-- Reads the records appended since the last call; returns how many.
function Ledger:tail(r)
  local got = 0
  while true do
    local lines, err = r:call('LRANGE', _M.KEYS[1], self.n + #self.bad, self.n + #self.bad + 4999)
    if not lines then error('chaos: cannot read the ledger: ' .. tostring(err)) end
    for i = 1, #lines do self:add(lines[i]) end
    got = got + #lines
    if #lines < 5000 then return got end
  end
end

-- ---- the checks ------------------------------------------------------------------------

-- parent, parent_fails: parents of flows (tests/chaos/flows.lua): a parent_fails has a child that
-- fails without ignoreFailure, so it must end failed (without running)
local EXPECT = { ok = 'ok', flaky = 'ok', doom = 'failed', slow = 'failed', parent = 'ok', parent_fails = 'failed' }
_M.EXPECT = EXPECT

local function short(run)
  return fmt('%s/%s attempt %s pid %s', run.q, run.id, tostring(run.att), tostring(run.pid))
end

-- The first fault that can explain trouble of a run on process `pid` between times a and b:
-- it hit that process (or Redis) and its effect [t0, t1 + margin] meets [a, b].
local function explain(faults, pid, a, b, margin)
  for _, f in ipairs(faults) do
    if (f.redis or (f.pids and f.pids[pid])) and f.t0 <= b and (f.t1 or f.t0) + margin >= a then
      return f
    end
  end
end

local function fault_text(f, t_base)
  return fmt('%s at +%.1fs (%s)', f.kind, f.t0 - t_base, f.desc or '')
end

-- For a lost job: the Redis restart that followed its enqueue within 2 s, if any (with
-- appendfsync everysec, Redis may answer a write before it reached the AOF file when a
-- background fsync is slow; a kill -9 then drops it).
local function redis_hint(faults, t)
  if not t then return '' end
  for _, f in ipairs(faults) do
    if f.kind == 'redis-restart' and f.t0 >= t and f.t0 - t < 2 then
      return fmt('; Redis was killed %.2fs after the enqueue was acknowledged', f.t0 - t)
    end
  end
  return ''
end

local function push(list, v, cap)
  list.n = (list.n or 0) + 1
  if #list < (cap or 20) then list[#list + 1] = v end
end

-- input: {
--   jobs = { [qid] = { q=, id=, fn=, acks=, t= } },  acknowledged enqueues, merged per job
--                                                   (t: when the first one was acknowledged)
--   outcomes = { [qid] = { state=, result=, reason= } | { missing = true } },  read at the end
--   faults = { { kind=, t0=, t1=, pids = {[pid]=true}, redis = bool, desc= }... },
--   lb_queues = { [queue] = true },  lease = seconds,  t_base = start time (for +Ns),
--   enqueue_calls = n, refused = n, by_queue = { [queue] = jobs },
--   keys = result of check_keys, stuck = { text... }, process_trouble = { text... },
--   crosstalk = { text... } (job.redis replies that belonged to another handler),
--   skipped_faults = n, fault_kinds = { kind... } (each must have been injected) }
-- Returns the report table.
function Ledger:analyse(input)
  local faults, margin, t0 = input.faults or {}, input.lease or 2, input.t_base or 0
  local rep = {
    ledger_records = self.n, ledger_unreadable = #self.bad, runs = #self.order,
    completed = 0, failed_intended = 0, failed_by_kind = {},
    lost = {}, failed_unexpectedly = {}, record_mismatch = {},
    duplicates = { explained = {}, unexplained = {} }, same_attempt = {},
    overlaps = { held = {}, accepted = {}, fenced_explained = {}, fenced_unexplained = {}, kept_running = {} },
    early = {}, unacked_runs = 0, fenced_writes = 0, violations = {},
  }
  for _, run in ipairs(self.order) do
    run.stored = nil
    for _, w in ipairs(run.writes) do if not w.acc then rep.fenced_writes = rep.fenced_writes + 1 end end
  end

  -- outcomes, lost, duplicates, same attempt, per job
  local njobs = 0
  for key, job in pairs(input.jobs) do
    njobs = njobs + 1
    local runs = self.by_job[key] or {}
    local want = EXPECT[job.fn] or 'ok'
    local out = (input.outcomes or {})[key] or { missing = true }
    local ended_ok = {}
    for _, run in ipairs(runs) do if run.end_ok then ended_ok[#ended_ok + 1] = run end end
    local what = fmt('%s/%s (%s)', job.q, job.id, job.fn)
    if want == 'ok' then
      if #ended_ok > 0 then
        rep.completed = rep.completed + 1
        if out.result == 'failed' then
          push(rep.failed_unexpectedly, fmt('%s ran to the end but Redis recorded it failed: %s', what, tostring(out.reason)))
        elseif out.missing or out.state ~= 'finished' then
          push(rep.record_mismatch, fmt('%s ran to the end but its record is %s', what,
            out.missing and 'gone' or ('in state ' .. tostring(out.state))))
        end
      elseif out.result == 'failed' then
        push(rep.failed_unexpectedly, fmt('%s failed: %s', what, tostring(out.reason)))
      else
        push(rep.lost, fmt('%s, acknowledged at +%.2fs: %d run(s) in the ledger, none ended; its record is %s%s', what,
          (job.t or t0) - t0, #runs, out.missing and 'gone' or ('in state ' .. tostring(out.state)),
          redis_hint(faults, job.t)), 50)
      end
    else
      if out.result == 'failed' then
        rep.failed_intended = rep.failed_intended + 1
        rep.failed_by_kind[job.fn] = (rep.failed_by_kind[job.fn] or 0) + 1
      else
        push(rep.lost, fmt('%s, acknowledged at +%.2fs, should have ended failed: %d run(s) in the ledger; its record is %s%s',
          what, (job.t or t0) - t0, #runs,
          out.missing and 'gone' or fmt('in state %s, result %s', tostring(out.state), tostring(out.result)),
          redis_hint(faults, job.t)), 50)
      end
    end
    -- the run whose result Redis stored, when that is certain
    if #ended_ok == 1 and out.result == 'successful' then ended_ok[1].stored = true end
    sort(ended_ok, function(a, b) return a.start_seq < b.start_seq end)
    for i = 2, #ended_ok do
      local a, b = ended_ok[i - 1], ended_ok[i]
      local f = explain(faults, a.pid, a.start, b.start, margin)
      local text = fmt('%s ran to the end twice: %s from +%.2fs, again as %s from +%.2fs', what,
        short(a), a.start - t0, short(b), b.start - t0)
      if f then
        push(rep.duplicates.explained, text .. '; explained by ' .. fault_text(f, t0))
      else
        push(rep.duplicates.unexplained, text .. '; no fault hit pid ' .. tostring(a.pid) .. ' or Redis meanwhile')
      end
    end
    local seen = {}
    for _, run in ipairs(runs) do
      local prev = seen[run.att]
      if prev then
        push(rep.same_attempt, fmt('%s: attempt %s started twice (pid %s at +%.2fs, pid %s at +%.2fs): the fencing token did not grow',
          what, tostring(run.att), tostring(prev.pid), (prev.start or 0) - t0, tostring(run.pid), (run.start or 0) - t0))
      else
        seen[run.att] = run
      end
    end
  end
  rep.jobs = njobs
  for _, run in ipairs(self.order) do
    if not input.jobs[qid(run.q, run.id)] then rep.unacked_runs = rep.unacked_runs + 1 end
  end

  -- overlaps: runs of one job (any queue), and of one jobHash of an LBQUEUE
  local groups = {}
  for key, runs in pairs(self.by_job) do groups['job\t' .. key] = runs end
  for _, run in ipairs(self.order) do
    if run.hash and input.lb_queues and input.lb_queues[run.q] then
      local g = 'hash\t' .. run.q .. '\t' .. run.hash
      groups[g] = groups[g] or {}
      local l = groups[g]
      l[#l + 1] = run
    end
  end
  local seen_pair = {}
  local gnames = {}
  for g in pairs(groups) do gnames[#gnames + 1] = g end
  sort(gnames)
  for _, g in ipairs(gnames) do
    local runs = {}
    for _, r in ipairs(groups[g]) do if r.start then runs[#runs + 1] = r end end
    sort(runs, function(a, b) return a.start_seq < b.start_seq end)
    for i = 1, #runs do
      local a = runs[i]
      for j = i + 1, #runs do
        local b = runs[j]
        if b.start_seq > a.last_seq then break end
        local pair = a.rid .. '|' .. b.rid
        if not seen_pair[pair] then
          seen_pair[pair] = true
          local acc, refused = 0, 0
          for _, w in ipairs(a.writes) do
            if w.seq > b.start_seq then
              if w.acc then acc = acc + 1 else refused = refused + 1 end
            end
          end
          local same_job = a.q == b.q and a.id == b.id
          local text = fmt('%s %s: %s (from +%.2fs) still wrote after %s started at +%.2fs',
            same_job and 'job' or 'jobHash', same_job and (a.q .. '/' .. a.id) or (a.q .. '/' .. tostring(a.hash)),
            short(a), a.start - t0, short(b), b.start - t0)
          if a.stored then
            push(rep.overlaps.held, fmt('%s: it held its lease until its result was stored, yet the later run was handed out meanwhile', text))
          elseif acc > 0 then
            push(rep.overlaps.accepted, fmt('%s: %d of its writes were ACCEPTED%s', text, acc,
              refused > 0 and fmt(' and %d refused', refused) or ''))
          else
            local f = explain(faults, a.pid, a.start, b.start, margin)
            if refused > 1 then
              push(rep.overlaps.kept_running, fmt('%s: %d writes, all refused by the fence, so it went on past a yield after its lease was lost%s',
                text, refused, f and ('; fault: ' .. fault_text(f, t0)) or ''))
            elseif f then
              push(rep.overlaps.fenced_explained, fmt('%s: its write was refused by the fence; fault: %s', text, fault_text(f, t0)))
            else
              push(rep.overlaps.fenced_unexplained, fmt('%s: its write was refused by the fence, but no fault hit pid %s or Redis meanwhile',
                text, tostring(a.pid)))
            end
          end
        end
      end
    end
  end

  -- early starts
  for _, run in ipairs(self.order) do
    if run.due and run.tl and run.tl < run.due - 0.001 then
      push(rep.early, fmt('%s started at +%.3fs, %.1f ms before its due time', short(run), run.tl - t0,
        (run.due - run.tl) * 1000))
    end
  end

  -- violations
  local v = rep.violations
  local function need_zero(list, what)
    local n = list.n or #list
    if n > 0 then
      v[#v + 1] = fmt('%s: %d', what, n)
      for _, s in ipairs(list) do v[#v + 1] = '    ' .. s end
      if n > #list then v[#v + 1] = fmt('    ... and %d more', n - #list) end
    end
  end
  need_zero(rep.lost, 'LOST jobs (acknowledged, never completed nor failed)')
  need_zero(rep.failed_unexpectedly, 'jobs that should have succeeded but failed')
  need_zero(rep.record_mismatch, 'jobs whose record does not say what the ledger saw')
  need_zero(rep.duplicates.unexplained, 'duplicates no fault explains')
  need_zero(rep.same_attempt, 'attempts started twice')
  need_zero(rep.overlaps.held, 'jobs or jobHashes handed out while their holder still held its lease')
  need_zero(rep.overlaps.accepted, 'overlaps among accepted (fenced) writes')
  need_zero(rep.overlaps.kept_running, 'stale handlers that kept running after their lease was lost')
  need_zero(rep.overlaps.fenced_unexplained, 'overlaps (fenced) no fault explains')
  need_zero(rep.early, 'DELQUEUE/delayed jobs started before their due time')
  if #self.bad > 0 then v[#v + 1] = fmt('unreadable ledger records: %d (first: %s)', #self.bad, self.bad[1]) end
  if input.keys then
    local bad = {}
    for _, k in ipairs(input.keys) do if not k.ok then bad[#bad + 1] = k.key .. ': ' .. k.why end end
    rep.keys_bad = #bad
    need_zero(bad, 'keys left in the queue Redis beyond their retention')
  end
  need_zero(input.crosstalk or {}, "handlers' Redis calls answered with replies meant for another handler (job.redis shared)")
  need_zero(input.stuck or {}, 'stuck workers (alive, not serving)')
  need_zero(input.process_trouble or {}, 'workers or queues misbehaving')
  if njobs == 0 then v[#v + 1] = 'no job was enqueued: the soak proved nothing' end
  local missing = {}
  for _, kind in ipairs(input.fault_kinds or {}) do
    if not (input.faults_by_kind or {})[kind] then missing[#missing + 1] = kind end
  end
  if #missing > 0 then
    v[#v + 1] = 'fault kinds never injected (the soak proved less than it should; run it longer): ' .. concat(missing, ', ')
  end

  rep.input = input
  return rep
end

-- ---- keys left in the queue Redis ------------------------------------------------------

-- listing: { { key=, type=, ttl= (seconds, -1 none), state=, result= (job records),
--              members = {...} (the registry's ids), expires = { [id] = seconds from now }
--              (registry zset scores), missing = {...} (failed-set ids without a record) }... };
-- live: { [worker id] = true }; retention: { ok=, failed=, worker=, metrics= } in seconds.
-- The worker registry is either the zset jobrt:{workers} (id -> expiry) with a hash
-- jobrt:{workers}:<id> per worker (register.lua), or the older set jobrt:workers with hashes
-- jobrt:worker:<id>: a gone worker's entry may stay until it expires (and, in the zset, until
-- the next heartbeat of a live worker drops it), never longer.
-- Returns one verdict per key: { key=, ok = bool, why = text }.
function _M.check_keys(listing, live, retention)
  local out = {}
  local function verdict(k, ok, why) out[#out + 1] = { key = k.key, ok = ok, why = why } end
  for _, k in ipairs(listing) do
    local key = k.key
    local q, rest = key:match('^jobrt:{(.-)}:(.*)$')
    local reg_id = key:match('^jobrt:{workers}:(.+)$') or key:match('^jobrt:worker:(.+)$')
    if key == 'RESERVED:QCONFIG' then
      verdict(k, true, 'queue types')
    elseif key == 'jobrt:{workers}' then
      local stale = {}
      for _, id in ipairs(k.members or {}) do
        local left = (k.expires or {})[id]
        -- a gone worker: expiring within its retention, or expired since at most a few heartbeats
        if not live[id] and not (left and left <= retention.worker and left > -3 * retention.worker) then
          stale[#stale + 1] = fmt('%s (%s)', id, left and fmt('expiry %+.0fs', left) or 'no expiry')
        end
      end
      if #stale == 0 then verdict(k, true, 'live workers, and gone ones about to drop out')
      else
        verdict(k, false, fmt('%d id(s) of gone workers that stay listed: %s%s', #stale,
          concat(stale, ', ', 1, math.min(#stale, 4)), #stale > 4 and ', ...' or ''))
      end
    elseif key == 'jobrt:workers' then
      local dead = {}
      for _, id in ipairs(k.members or {}) do if not live[id] then dead[#dead + 1] = id end end
      if #dead == 0 then verdict(k, true, 'live workers')
      else
        verdict(k, false, fmt('%d id(s) of workers that are gone (it grows with every killed worker): %s%s',
          #dead, concat(dead, ', ', 1, math.min(#dead, 4)), #dead > 4 and ', ...' or ''))
      end
    elseif reg_id then
      local id = reg_id
      if live[id] then verdict(k, true, 'a live worker')
      elseif k.ttl and k.ttl > 0 and k.ttl <= retention.worker then
        verdict(k, true, fmt('a gone worker, expires in %ds', k.ttl))
      else
        verdict(k, false, fmt('a gone worker\'s registry entry (ttl %s)', tostring(k.ttl)))
      end
    elseif q and rest:match('^job:') then
      local keep = k.result == 'successful' and retention.ok or k.result == 'failed' and retention.failed
      if k.state ~= 'finished' then
        verdict(k, false, fmt('a job record in state %s after the drain', tostring(k.state)))
      elseif not keep then
        verdict(k, false, fmt('a finished record with result %s', tostring(k.result)))
      elseif not k.ttl or k.ttl <= 0 or k.ttl > keep then
        verdict(k, false, fmt('a %s record that never expires (ttl %s, retention %ds)', k.result, tostring(k.ttl), keep))
      else
        verdict(k, true, 'a finished record within its retention')
      end
    elseif q and (rest == 'stats' or rest == 'seq' or rest == 'metrics') then
      verdict(k, true, 'counters (bounded)')
    elseif q and rest:match('^metrics:%d+$') then
      if k.ttl and k.ttl > 0 and k.ttl <= retention.metrics then verdict(k, true, 'a minute of metrics within its retention')
      else verdict(k, false, fmt('a minute of metrics that outlives its retention (ttl %s, retention %ds)', tostring(k.ttl), retention.metrics)) end
    elseif q and rest == 'failed' then
      if k.missing and #k.missing > 0 then
        verdict(k, false, fmt('%d failed-set entries outlive their records: %s%s', #k.missing,
          concat(k.missing, ', ', 1, math.min(#k.missing, 4)), #k.missing > 4 and ', ...' or ''))
      else
        verdict(k, true, 'failed set (every entry has its record)')
      end
    elseif q and rest:match('^children:') then
      -- a parent's children hash (flows) lives as long as its record
      if k.ttl and k.ttl > 0 and k.ttl <= retention.failed then
        verdict(k, true, 'a finished parent\'s children hash within its retention')
      else
        verdict(k, false, fmt('a parent\'s children hash that never expires (ttl %s): its parent has not finished', tostring(k.ttl)))
      end
    elseif q and (rest == 'flow' or rest == 'flow:out' or rest == 'flow:waiting') then
      -- every flow has ended: no link, no parent waiting, no news left to carry over
      verdict(k, false, fmt('flow bookkeeping (%s) left after every flow ended: %s', tostring(k.type),
        k.sample or 'see the key'))
    elseif key:match('^chaos:') then
      verdict(k, true, 'the handlers\' own data')
    else
      verdict(k, false, fmt('%s left after the drain (ttl %s)', tostring(k.type), tostring(k.ttl)))
    end
  end
  sort(out, function(a, b) return a.key < b.key end)
  return out
end

-- ---- the report ------------------------------------------------------------------------

local function count(list) return list.n or #list end

function _M.format(rep)
  local i = rep.input
  local lines = {}
  local function add(...) lines[#lines + 1] = fmt(...) end
  local byq = {}
  for q, n in pairs(i.by_queue or {}) do byq[#byq + 1] = fmt('%s %d', q, n) end
  sort(byq)
  add('chaos ledger (seed %s, appendfsync %s, %g s of faults)', tostring(i.seed), tostring(i.fsync), i.seconds or 0)
  add('  enqueued           %d acknowledged enqueue calls -> %d jobs (%s); %d refused (Redis down or stalled)',
    i.enqueue_calls or 0, rep.jobs, concat(byq, ', '), i.refused or 0)
  add('  completed          %d', rep.completed)
  local fk = {}
  for k, n in pairs(rep.failed_by_kind) do fk[#fk + 1] = fmt('%s %d', k, n) end
  sort(fk)
  add('  failed as intended %d (%s)', rep.failed_intended, concat(fk, ', '))
  add('  failed unexpectedly %d', count(rep.failed_unexpectedly))
  add('  LOST               %d', count(rep.lost))
  add('  duplicates         %d explained by a fault, %d not', count(rep.duplicates.explained), count(rep.duplicates.unexplained))
  add('  same attempt twice %d', count(rep.same_attempt))
  add('  overlaps           %d handed out while held, %d among accepted writes, %d stale runs that kept running; fenced off: %d explained by a fault, %d not',
    count(rep.overlaps.held), count(rep.overlaps.accepted), count(rep.overlaps.kept_running), count(rep.overlaps.fenced_explained),
    count(rep.overlaps.fenced_unexplained))
  add('  early starts       %d', count(rep.early))
  add('  job.redis crosstalk %d', count(i.crosstalk or {}))
  add('  stuck workers      %d', count(i.stuck or {}))
  add('  keys left beyond retention %s', rep.keys_bad and tostring(rep.keys_bad) or 'not checked')
  add('  ledger             %d records, %d runs, %d writes refused by the fence, %d runs of unacknowledged enqueues',
    rep.ledger_records, rep.runs, rep.fenced_writes, rep.unacked_runs)
  local kinds = {}
  for k, n in pairs(i.faults_by_kind or {}) do kinds[#kinds + 1] = fmt('%s %d', k, n) end
  sort(kinds)
  add('  faults             %s%s', concat(kinds, ', '), (i.skipped_faults or 0) > 0 and fmt(' (%d skipped: target under another fault)', i.skipped_faults) or '')
  if count(rep.duplicates.explained) > 0 or count(rep.overlaps.fenced_explained) > 0 then
    add('explained by faults (allowed):')
    for _, s in ipairs(rep.duplicates.explained) do add('    %s', s) end
    for _, s in ipairs(rep.overlaps.fenced_explained) do add('    %s', s) end
    local more = count(rep.duplicates.explained) - #rep.duplicates.explained
      + count(rep.overlaps.fenced_explained) - #rep.overlaps.fenced_explained
    if more > 0 then add('    ... and %d more', more) end
  end
  if #rep.violations > 0 then
    add('VIOLATIONS:')
    for _, s in ipairs(rep.violations) do add('  %s', s) end
  end
  return concat(lines, '\n')
end

-- The counts, for the CHAOS-RESULT line the spec reads.
function _M.summary(rep)
  local i = rep.input
  return {
    seed = i.seed, fsync = i.fsync, seconds = i.seconds,
    enqueue_calls = i.enqueue_calls, jobs = rep.jobs, refused = i.refused,
    completed = rep.completed, failed_intended = rep.failed_intended,
    failed_unexpectedly = count(rep.failed_unexpectedly), lost = count(rep.lost),
    record_mismatch = count(rep.record_mismatch),
    duplicates_explained = count(rep.duplicates.explained), duplicates_unexplained = count(rep.duplicates.unexplained),
    same_attempt = count(rep.same_attempt),
    overlaps_held = count(rep.overlaps.held), overlaps_accepted = count(rep.overlaps.accepted), overlaps_kept_running = count(rep.overlaps.kept_running),
    overlaps_fenced_explained = count(rep.overlaps.fenced_explained),
    overlaps_fenced_unexplained = count(rep.overlaps.fenced_unexplained),
    early_starts = count(rep.early), crosstalk = count(i.crosstalk or {}), stuck = count(i.stuck or {}), keys_bad = rep.keys_bad or -1,
    process_trouble = count(i.process_trouble or {}),
    faults = i.faults_by_kind, violations = #rep.violations,
  }
end

return _M
