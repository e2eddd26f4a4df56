-- jobrt.tz: time zones from the system's tz database (the TZif files of Debian's tzdata,
-- RFC 8536), and civil-calendar arithmetic; what jobrt.cron needs to find local times.
--
--   local tz = require 'jobrt.tz'
--   local z, err = tz.load(name)   -- 'UTC', 'Europe/Berlin', ... read from $TZDIR or
--                                  -- /usr/share/zoneinfo; cached per process. err names the zone
--                                  -- and the fix (an unknown name, a file that is not TZif)
--   z.name
--   z:offset(t) -> seconds east of UTC at Unix time t (seconds), isdst (boolean), abbreviation
--   z:period(t) -> start, stop, offset: the span [start, stop) of Unix times around t during
--                  which the offset stays the same (start nil: since ever, stop nil: for ever)
--   tz.days_from_civil(y, m, d) -> days since 1970-01-01 (proleptic Gregorian; any year)
--   tz.civil_from_days(days) -> y, m, d
--   tz.civil(t) -> y, m, d, H, M, S, wday (0 = Sunday): t seconds read as a UTC clock
--   tz.weekday(days) -> 0 (Sunday) .. 6
--
-- Why parse TZif files rather than switch TZ and call localtime_r: TZ is process-wide state
-- (os.date, log lines and every other local-time call would see each switch, and tzset reads
-- the file again on each one); a parsed zone is a plain value that several zones can share a
-- process with. The files are the ones libc reads: version 2+ files give 64-bit transition
-- times, and after the last transition the footer's POSIX TZ rule (e.g. "CET-1CEST,M3.5.0,
-- M10.5.0/3") gives the transitions of any later year. tests/06-sched/tz_spec.lua checks
-- offsets and periods against Python's zoneinfo (which reads the same files) as an oracle.
local io, type, tonumber, tostring, setmetatable, error = io, type, tonumber, tostring, setmetatable, error
local floor, byte, fmt, sort = math.floor, string.byte, string.format, table.sort

local _M = {}
local Zone = {}
Zone.__index = Zone

-- ---- civil calendar (Howard Hinnant's algorithms; integer arithmetic on doubles) ----

function _M.days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

function _M.civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

function _M.weekday(days) return (days + 4) % 7 end      -- 1970-01-01 was a Thursday

function _M.civil(t)
  local days = floor(t / 86400)
  local s = t - days * 86400
  local y, m, d = _M.civil_from_days(days)
  return y, m, d, floor(s / 3600), floor(s % 3600 / 60), s % 60, _M.weekday(days)
end

local function is_leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end
local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
local function days_in_month(y, m) return (m == 2 and is_leap(y)) and 29 or MDAYS[m] end
_M.days_in_month = days_in_month

-- ---- POSIX TZ rules (the TZif footer) ---------------------------------------

-- Parses "[+-]hh[:mm[:ss]]" at position i; returns seconds, next position (nil when none).
local function posix_time(s, i)
  local sign, h, rest = s:match('^([+-]?)(%d+)()', i)
  if not h then return nil end
  local v, pos = tonumber(h) * 3600, rest
  local mm, p2 = s:match('^:(%d+)()', pos)
  if mm then
    v, pos = v + tonumber(mm) * 60, p2
    local ss, p3 = s:match('^:(%d+)()', pos)
    if ss then v, pos = v + tonumber(ss), p3 end
  end
  return sign == '-' and -v or v, pos
end

local function posix_name(s, i)
  local q, p = s:match('^<([^>]*)>()', i)
  if q then return q, p end
  return s:match('^(%a%a%a+)()', i)
end

-- A rule date: { kind = 'J'|'n'|'M', ... , time = seconds after local midnight }
local function posix_date(s, i)
  local r, pos
  local n, p = s:match('^J(%d+)()', i)
  if n then r, pos = { kind = 'J', n = tonumber(n) }, p
  else
    local m, w, d, p2 = s:match('^M(%d+)%.(%d+)%.(%d+)()', i)
    if m then r, pos = { kind = 'M', m = tonumber(m), w = tonumber(w), d = tonumber(d) }, p2
    else
      n, p = s:match('^(%d+)()', i)
      if not n then return nil end
      r, pos = { kind = 'n', n = tonumber(n) }, p
    end
  end
  r.time = 7200
  if s:sub(pos, pos) == '/' then
    local t, p3 = posix_time(s, pos + 1)
    if not t then return nil end
    r.time, pos = t, p3
  end
  return r, pos
end

-- "CET-1CEST,M3.5.0,M10.5.0/3" -> { std = utoff, dst = utoff|nil, start = date, stop = date }
-- (utoff: seconds east of UTC; POSIX offsets count west), or nil.
local function parse_posix(s)
  local std, pos = posix_name(s, 1)
  if not std then return nil end
  local off
  off, pos = posix_time(s, pos)
  if not off then return nil end
  local r = { std = 0 - off, std_name = std }
  if pos > #s then return r end
  local dst
  dst, pos = posix_name(s, pos)
  if not dst then return nil end
  r.dst_name = dst
  r.dst = r.std + 3600
  local doff, p2 = posix_time(s, pos)
  if doff then r.dst, pos = 0 - doff, p2 end
  if s:sub(pos, pos) ~= ',' then
    -- no rule given: POSIX's default (the US rule)
    r.start = { kind = 'M', m = 3, w = 2, d = 0, time = 7200 }
    r.stop = { kind = 'M', m = 11, w = 1, d = 0, time = 7200 }
    return pos > #s and r or nil
  end
  r.start, pos = posix_date(s, pos + 1)
  if not r.start or s:sub(pos, pos) ~= ',' then return nil end
  r.stop, pos = posix_date(s, pos + 1)
  if not r.stop or pos <= #s then return nil end
  return r
end

-- the day (days since the epoch) a rule date falls on in year y
local function rule_day(y, date)
  if date.kind == 'J' then            -- 1..365, February 29 never counted
    local doy = date.n - 1
    if is_leap(y) and date.n >= 60 then doy = doy + 1 end
    return _M.days_from_civil(y, 1, 1) + doy
  elseif date.kind == 'n' then        -- 0..365, February 29 counted
    return _M.days_from_civil(y, 1, 1) + date.n
  end
  local first = _M.days_from_civil(y, date.m, 1)
  local day = first + (date.d - _M.weekday(first)) % 7 + (date.w - 1) * 7
  local last = first + days_in_month(y, date.m) - 1
  while day > last do day = day - 7 end   -- week 5: the last such weekday
  return day
end

-- The rule's transitions in years y0..y1, sorted: { {t = Unix s, off = utoff from then on}... }
local function rule_transitions(rule, y0, y1)
  local out = {}
  for y = y0, y1 do
    out[#out + 1] = { t = rule_day(y, rule.start) * 86400 + rule.start.time - rule.std, off = rule.dst, dst = true }
    out[#out + 1] = { t = rule_day(y, rule.stop) * 86400 + rule.stop.time - rule.dst, off = rule.std, dst = false }
  end
  sort(out, function(a, b) return a.t < b.t end)
  return out
end

-- ---- TZif files -----------------------------------------------------------

local function u32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function s32(s, i)
  local v = u32(s, i)
  return v >= 2147483648 and v - 4294967296 or v
end
local function s64(s, i)
  local hi = s32(s, i)
  return hi * 4294967296 + u32(s, i + 4)
end

-- Parses TZif data. Returns { times = {...}, types = { {off=, dst=, abbr=}... } (1-based),
-- idx = { type index per transition }, rule = posix rule | nil } or nil, message.
local function parse_tzif(data)
  if #data < 44 or data:sub(1, 4) ~= 'TZif' then return nil, 'not a TZif file' end
  local version = data:sub(5, 5)
  local function counts(at)
    return u32(data, at + 20), u32(data, at + 24), u32(data, at + 28), u32(data, at + 32),
      u32(data, at + 36), u32(data, at + 40)
  end
  local isut, isstd, leap, timecnt, typecnt, charcnt = counts(1)
  local at, tsize = 45, 4
  if version >= '2' then
    -- skip the 32-bit block; the 64-bit one follows with its own header
    at = at + timecnt * 4 + timecnt + typecnt * 6 + charcnt + leap * 8 + isstd + isut
    if #data < at + 43 or data:sub(at, at + 3) ~= 'TZif' then return nil, 'truncated TZif file' end
    isut, isstd, leap, timecnt, typecnt, charcnt = counts(at)
    at, tsize = at + 44, 8
  end
  local need = timecnt * tsize + timecnt + typecnt * 6 + charcnt + leap * (tsize + 4) + isstd + isut
  if #data < at + need - 1 or typecnt == 0 then return nil, 'truncated TZif file' end
  local z = { times = {}, idx = {}, types = {} }
  for i = 1, timecnt do
    z.times[i] = tsize == 8 and s64(data, at + (i - 1) * 8) or s32(data, at + (i - 1) * 4)
  end
  at = at + timecnt * tsize
  for i = 1, timecnt do z.idx[i] = byte(data, at + i - 1) + 1 end
  at = at + timecnt
  local chars_at = at + typecnt * 6
  for i = 1, typecnt do
    local p = at + (i - 1) * 6
    local ai = byte(data, p + 5)
    local abbr = data:match('^[^%z]*', chars_at + ai)
    z.types[i] = { off = s32(data, p), dst = byte(data, p + 4) == 1, abbr = abbr }
  end
  for i = 1, timecnt do
    if not z.types[z.idx[i]] then return nil, 'TZif transition names a missing type' end
  end
  at = chars_at + charcnt + leap * (tsize + 4) + isstd + isut
  if tsize == 8 then
    local footer = data:match('^\n([^\n]*)\n', at)
    if footer and footer ~= '' then
      z.rule = parse_posix(footer)
      if not z.rule then return nil, 'cannot read its TZ rule ' .. fmt('%q', footer) end
      z.footer = footer
    end
  end
  return z
end
_M.parse_tzif = parse_tzif
_M.parse_posix = parse_posix

local cache = {}

local function dir()
  local d = os.getenv('TZDIR')
  if d and d ~= '' then return d end
  return '/usr/share/zoneinfo'
end

function _M.load(name)
  if type(name) ~= 'string' then error('jobrt.tz.load: name must be a string, got ' .. type(name), 2) end
  local z = cache[name]
  if z then return z end
  if #name == 0 or #name > 100 or not name:match('^[%w_+-]+$') and not name:match('^[%w_+-]+/[%w_+/-]+$')
      or name:find('//', 1, true) or name:find('/$') then
    return nil, fmt("time zone %s is not a tz database name: use one such as UTC, Europe/Berlin or America/New_York",
      fmt('%q', name:sub(1, 100)))
  end
  local path = dir() .. '/' .. name
  local f = io.open(path, 'rb')
  if not f then
    return nil, fmt("unknown time zone '%s': no file %s (use a tz database name such as Europe/Berlin or UTC; they come with Debian's tzdata package)",
      name, path)
  end
  local data = f:read('*a')
  f:close()
  local parsed, err = parse_tzif(data or '')
  if not parsed then return nil, fmt("time zone '%s': %s is %s", name, path, err) end
  parsed.name = name
  z = setmetatable(parsed, Zone)
  cache[name] = z
  return z
end

-- the period around t from the footer rule (t at or after the last transition, or none)
local function rule_period(self, t)
  local rule = self.rule
  local last = self.times[#self.times]
  if not rule.dst then return last, nil, rule.std, false, rule.std_name end
  local y = _M.civil(t)
  local tr = rule_transitions(rule, y - 1, y + 1)
  local start, stop, off, dst = nil, nil, nil, nil
  for i = 1, #tr do
    if tr[i].t <= t then start, off, dst = tr[i].t, tr[i].off, tr[i].dst
    elseif not stop then stop = tr[i].t end
  end
  if not off then off, dst = tr[#tr].off, tr[#tr].dst end      -- cannot happen: y - 1 covers t
  if last and (not start or start < last) then start = last end
  return start, stop, off, dst, dst and rule.dst_name or rule.std_name
end

-- start, stop, offset, isdst, abbreviation of the period around t
local function find(self, t)
  local times = self.times
  local n = #times
  if n == 0 or t >= times[n] then
    if self.rule then return rule_period(self, t) end
    local ty = self.types[n > 0 and self.idx[n] or 1]
    return n > 0 and times[n] or nil, nil, ty.off, ty.dst, ty.abbr
  end
  if t < times[1] then
    local ty = self.types[1]
    return nil, times[1], ty.off, ty.dst, ty.abbr
  end
  local lo, hi = 1, n                  -- times[lo] <= t < times[hi]
  while hi - lo > 1 do
    local mid = floor((lo + hi) / 2)
    if times[mid] <= t then lo = mid else hi = mid end
  end
  local ty = self.types[self.idx[lo]]
  return times[lo], times[hi], ty.off, ty.dst, ty.abbr
end

function Zone:offset(t)
  local _, _, off, dst, abbr = find(self, t)
  return off, dst, abbr
end

function Zone:period(t)
  local start, stop, off = find(self, t)
  return start, stop, off
end

Zone.__tostring = function(self) return 'time zone ' .. tostring(self.name) end

return _M
