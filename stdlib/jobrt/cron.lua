-- jobrt.cron: cron expressions and their ticks (jobrt cron add, cron = 'EXPR' in job files).
--
--   local cron = require 'jobrt.cron'
--   local s, err = cron.parse(expr)     -- err: one line naming the field and the fix
--   s:next(t[, zone]) -> the first tick strictly after Unix time t (seconds; ticks are whole
--                        seconds), or nil when none comes within 400 years
--   s:latest(t[, zone[, after]]) -> the last tick at or before t (and after `after`), or nil
--   s.expr (as given), s.every (seconds, for @every), s.fixed (true: a fixed-time entry, below)
--   zone: from jobrt.tz.load (nil: UTC). @every ignores it.
--
-- Expressions: five fields, minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
-- jan-dec), day of week (0-7 or sun-sat; 0 and 7 are Sunday), each a list of `*`, `N`, `N-M`,
-- with an optional step `/S` (`*/15`, `8-18/2`, and `5/15` = `5-59/15`); names are case-blind.
-- When both day fields are restricted a day matches either; when one of them starts with `*`
-- both must match (cronie and Vixie cron: `0 0 */2 * 1` is odd days that are Mondays;
-- croniter reads it as odd days or Mondays). Macros: @yearly (@annually), @monthly, @weekly,
-- @daily (@midnight), @hourly, and @every DURATION (`30s`, `5m`, `1h30m`, `2d`; at least 1 s):
-- ticks at the multiples of DURATION since 1970-01-01 00:00 UTC, so every worker computes the
-- same ticks whatever its clock's start.
--
-- Daylight saving time, as cronie (cron(8), "Daylight Saving Time and other time changes"):
-- an entry whose minute and hour fields both name fixed values (neither starts with `*`) is a
-- fixed-time entry: a time it names that a clock change of up to 3 hours skips runs at the
-- moment of the change (02:30 on the night clocks jump from 02:00 to 03:00 runs at 03:00 new
-- time), and a time a change of up to 3 hours repeats runs once, the first time. Other entries
-- (`*/15 * * * *`, `0 * * * *`) run whenever the local clock shows a matching time: not in a
-- skipped hour, twice in a repeated one. Larger changes are corrections: local times simply
-- run whenever the clock shows them.
local tz = require 'jobrt.tz'

local type, tonumber, tostring, setmetatable, error, ipairs = type, tonumber, tostring, setmetatable, error, ipairs
local floor, ceil, max, fmt = math.floor, math.ceil, math.max, string.format
local days_from_civil, civil_from_days, weekday, days_in_month =
  tz.days_from_civil, tz.civil_from_days, tz.weekday, tz.days_in_month

local _M = {}
local S = {}
S.__index = S

local MACROS = {
  ['@yearly'] = '0 0 1 1 *', ['@annually'] = '0 0 1 1 *', ['@monthly'] = '0 0 1 * *',
  ['@weekly'] = '0 0 * * 0', ['@daily'] = '0 0 * * *', ['@midnight'] = '0 0 * * *',
  ['@hourly'] = '0 * * * *',
}
local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9,
                 oct = 10, nov = 11, dec = 12 }
local DAYS = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 }
-- name, low, high, names
local FIELDS = {
  { 'minute', 0, 59 }, { 'hour', 0, 23 }, { 'day-of-month', 1, 31 }, { 'month', 1, 12, MONTHS },
  { 'day-of-week', 0, 7, DAYS },
}
local YEARS_400 = 146097 * 86400

-- Parses one field; returns a set { [v] = true } or nil, message.
local function parse_field(text, spec)
  local name, lo, hi, names = spec[1], spec[2], spec[3], spec[4]
  local set = {}
  local function bad(msg)
    return nil, fmt("%s field '%s': %s", name, text, msg)
  end
  local function value(v)
    local n = tonumber(v:match('^%d+$') or '')
    if not n and names then n = names[v:lower()] end
    if not n then
      return nil, fmt("'%s' is not a number%s", v, names and (name == 'month' and ' or a month name (jan-dec)' or
        ' or a day name (sun-sat)') or '')
    end
    if n < lo or n > hi then return nil, fmt('%d is out of range %d-%d', n, lo, hi) end
    return n
  end
  if text == '' then return bad('is empty') end
  for item in (text .. ','):gmatch('([^,]*),') do
    if item == '' then return bad('has an empty list item (two commas?)') end
    local range, step = item:match('^([^/]*)/(.*)$')
    range = range or item
    local a, b
    if range == '*' then
      a, b = lo, hi
    else
      local x, y = range:match('^([^-]+)-([^-]+)$')
      local err
      if x then
        a, err = value(x); if not a then return bad(err) end
        b, err = value(y); if not b then return bad(err) end
        if a > b then return bad(fmt('the range %s-%s runs backwards: write the smaller value first', x, y)) end
      else
        a, err = value(range); if not a then return bad(err) end
        b = step and hi or a               -- N/S: from N to the end of the range (cronie)
      end
    end
    local s = 1
    if step then
      s = tonumber(step:match('^%d+$') or '')
      if not s or s < 1 then return bad(fmt("step '%s' must be a whole number of at least 1", step)) end
    end
    for v = a, b, s do set[name == 'day-of-week' and v % 7 or v] = true end
  end
  return set
end

-- "1h30m" -> seconds, or nil, message
local function parse_duration(d)
  local total, pos = 0, 1
  local UNITS = { d = 86400, h = 3600, m = 60, s = 1 }
  if d == '' then return nil, 'needs a duration such as 30s, 5m, 1h30m or 2d' end
  while pos <= #d do
    local n, u, p = d:match('^(%d+)([dhms])()', pos)
    if not n then
      return nil, fmt("'%s' is not a duration: write whole numbers with units d, h, m, s, e.g. 30s, 5m, 1h30m", d)
    end
    total = total + tonumber(n) * UNITS[u]
    pos = p
  end
  if total < 1 then return nil, fmt("'%s' is shorter than 1 second", d) end
  if total > 3650 * 86400 then return nil, fmt("'%s' is longer than 10 years", d) end
  return total
end

-- the first value >= i in set (0..maxv), per i: a table i -> next value (nil: none)
local function next_table(set, maxv)
  local t, nxt = {}, nil
  for i = maxv, 0, -1 do
    if set[i] then nxt = i end
    t[i] = nxt
  end
  return t
end

function _M.parse(expr)
  if type(expr) ~= 'string' then return nil, 'a cron expression must be a string, got ' .. type(expr) end
  local e = expr:gsub('^%s+', ''):gsub('%s+$', '')
  local function fail(msg) return nil, fmt("cron expression '%s': %s", expr, msg) end
  local self = setmetatable({ expr = expr }, S)
  local every = e:match('^@every%s+(.*)$') or (e == '@every' and '')
  if every then
    local secs, err = parse_duration(every)
    if not secs then return fail('@every ' .. err) end
    self.every = secs
    return self
  end
  if e:sub(1, 1) == '@' then
    local m = MACROS[e:lower()]
    if not m then return fail('unknown macro: use @yearly, @monthly, @weekly, @daily, @hourly or @every DURATION') end
    e = m
  end
  local parts = {}
  for p in e:gmatch('%S+') do parts[#parts + 1] = p end
  if #parts ~= 5 then
    return fail(fmt('needs 5 fields (minute hour day-of-month month day-of-week), got %d', #parts))
  end
  local sets = {}
  for i, spec in ipairs(FIELDS) do
    local set, err = parse_field(parts[i], spec)
    if not set then return fail(err) end
    sets[i] = set
  end
  self.minutes, self.hours, self.doms, self.months, self.dows = sets[1], sets[2], sets[3], sets[4], sets[5]
  self.min_next, self.hour_next = next_table(sets[1], 59), next_table(sets[2], 23)
  self.dom_star = parts[3]:sub(1, 1) == '*'
  self.dow_star = parts[5]:sub(1, 1) == '*'
  self.fixed = parts[1]:sub(1, 1) ~= '*' and parts[2]:sub(1, 1) ~= '*'
  -- a schedule that can never fire (e.g. February 30) is refused here, not searched for ever
  if self.dom_star or self.dow_star then
    local ok = false
    for m = 1, 12 do
      if self.months[m] then
        for d = 1, (m == 2 and 29 or days_in_month(2001, m)) do
          if self.doms[d] then ok = true end
        end
      end
    end
    if not ok then return fail('no month named has any of the days named: it would never run') end
  end
  return self
end

-- Whether day `days` (y-m-d) matches the day fields (cronie's rule for the two day fields).
local function day_ok(self, y, m, d, days)
  if d > days_in_month(y, m) then return false end
  local dom, dow = self.doms[d] == true, self.dows[weekday(days)] == true
  if self.dom_star or self.dow_star then return dom and dow end
  return dom or dow
end

-- The first matching wall time (seconds, a local clock read as UTC) at or after W and before
-- `limit`, or nil.
local function next_wall(self, W, limit)
  W = ceil(W / 60) * 60
  while W < limit do
    local days = floor(W / 86400)
    local y, m, d = civil_from_days(days)
    if not self.months[m] then
      m = m + 1
      if m > 12 then m, y = 1, y + 1 end
      W = days_from_civil(y, m, 1) * 86400
    elseif not day_ok(self, y, m, d, days) then
      W = (days + 1) * 86400
    else
      local sod = W - days * 86400
      local h, mi = floor(sod / 3600), floor(sod % 3600 / 60)
      local nh = self.hour_next[h]
      if nh == nil then
        W = (days + 1) * 86400
      elseif nh > h then
        W = days * 86400 + nh * 3600
      else
        local nm = self.min_next[mi]
        if nm == nil then
          W = days * 86400 + (h + 1) * 3600
        else
          local w = days * 86400 + h * 3600 + nm * 60
          if w < limit then return w end
          return nil
        end
      end
    end
  end
  return nil
end

local UTC = { period = function() return nil, nil, 0 end, offset = function() return 0 end }
local THREE_HOURS = 3 * 3600

function S:next(t, zone)
  if type(t) ~= 'number' then error('cron: next(t): t must be Unix seconds, got ' .. type(t), 2) end
  t = floor(t)
  if self.every then return (floor(t / self.every) + 1) * self.every end
  zone = zone or UTC
  local u = t + 1
  local horizon = t + YEARS_400
  while u < horizon do
    local ps, pe, o = zone:period(u)
    local lo = u + o
    if self.fixed and ps then
      local op = zone:offset(ps - 1)
      local jump = o - op
      if jump > 0 and jump <= THREE_HOURS and u == ps then
        -- the local times this jump skips: a fixed-time tick among them runs at the jump
        if next_wall(self, ps + op, ps + o) then return ps end
      elseif jump < 0 and jump >= -THREE_HOURS then
        -- the local times this jump repeats ran before it: not again
        lo = max(lo, ps + op)
      end
    end
    local W = next_wall(self, lo, pe and (pe + o) or (horizon + o))
    if W then return W - o end
    if not pe then return nil end
    u = pe
  end
  return nil
end

function S:latest(t, zone, after)
  if type(t) ~= 'number' then error('cron: latest(t): t must be Unix seconds, got ' .. type(t), 2) end
  t = floor(t)
  after = after and floor(after) or t - YEARS_400
  if self.every then
    local k = floor(t / self.every) * self.every
    return k > after and k or nil
  end
  local w = 60
  while true do
    local from = max(t - w, after)
    local x = self:next(from, zone)
    if x and x <= t then
      while true do
        local n = self:next(x, zone)
        if not n or n > t then return x end
        x = n
      end
    end
    if from <= after then return nil end
    w = w * 2
  end
end

S.__tostring = function(self) return 'cron ' .. tostring(self.expr) end

return _M
