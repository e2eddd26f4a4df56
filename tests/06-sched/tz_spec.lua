-- jobrt.tz against Python's zoneinfo (the same TZif files, another reader), and jobrt.cron
-- across daylight-saving changes the way cronie handles them (cron(8): fixed-time entries run a
-- skipped time at the change and a repeated time once; other entries follow the clock).
local tz = require 'jobrt.tz'
local cron = require 'jobrt.cron'
local ss = require 'tests.06-sched.support'

local ZONES = { 'UTC', 'Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe', 'Asia/Kolkata',
  'America/Sao_Paulo', 'Pacific/Apia', 'Europe/Dublin', 'Africa/Casablanca', 'America/St_Johns',
  'Pacific/Chatham', 'Etc/GMT+5', 'Asia/Tehran', 'America/Santiago', 'Antarctica/Troll' }

describe('jobrt.tz', function()
  it('gives the offsets zoneinfo gives, for 15 zones at random instants 1900-2200 and around every change', function()
    local rnd = ss.rng(7)
    local cases, lines = {}, {}
    local function add(zone, t)
      cases[#cases + 1] = { zone = zone, t = t }
      lines[#lines + 1] = zone .. '\t' .. t
    end
    for _, name in ipairs(ZONES) do
      local z = assert(tz.load(name))
      for _ = 1, 300 do add(name, rnd(0, 9467280000) - 2208988800) end          -- 1900..2200
      -- walk the periods 1960..2120: both sides of every change (file data and the TZ rule)
      local t = -315619200
      while t < 4733510400 do
        local _, stop = z:period(t)
        if not stop then break end
        add(name, stop - 1)
        add(name, stop)
        t = stop
      end
    end
    local want = ss.oracle('tz', lines)
    assert.equal(#cases, #want)
    local bad = {}
    for i, c in ipairs(cases) do
      local off = assert(tz.load(c.zone)):offset(c.t)
      if tostring(off) ~= want[i] and #bad < 10 then
        bad[#bad + 1] = ('%s at %d (%s): jobrt %s, zoneinfo %s'):format(c.zone, c.t, ss.utc(c.t), tostring(off), want[i])
      end
    end
    assert.same({}, bad)
    assert.is_true(#cases > 6000, #cases)
  end)

  it('gives periods that hold one offset and meet end to end', function()
    for _, name in ipairs(ZONES) do
      local z = assert(tz.load(name))
      local t = 0
      for _ = 1, 400 do
        local start, stop, off = z:period(t)
        assert.is_true(start == nil or start <= t, name)
        if not stop then break end
        assert.is_true(stop > t, name)
        assert.equal(off, (z:offset(stop - 1)), name .. ' before ' .. stop)
        assert.equal(stop, (z:period(stop)), name .. ' at ' .. stop)
        t = stop
      end
    end
  end)

  it('reads the POSIX TZ rules of the file footers', function()
    local r = assert(tz.parse_posix('CET-1CEST,M3.5.0,M10.5.0/3'))
    assert.same({ 3600, 7200, 'CET', 'CEST' }, { r.std, r.dst, r.std_name, r.dst_name })
    assert.same({ kind = 'M', m = 10, w = 5, d = 0, time = 10800 }, r.stop)
    r = assert(tz.parse_posix('<+0330>-3:30'))
    assert.same({ 12600, '+0330' }, { r.std, r.std_name })
    assert.is_nil(r.dst)
    r = assert(tz.parse_posix('<-03>3<-02>,M3.5.0/-2,M10.5.0/-1'))   -- America/Nuuk: negative times
    assert.same({ -10800, -7200, -7200, -3600 }, { r.std, r.dst, r.start.time, r.stop.time })
    r = assert(tz.parse_posix('EST5EDT,J60/2,300'))
    assert.same({ 'J', 60, 'n', 300 }, { r.start.kind, r.start.n, r.stop.kind, r.stop.n })
    assert.is_nil(tz.parse_posix('CET-1CEST,M3.5.0'))
    assert.is_nil(tz.parse_posix('1'))
  end)

  it('refuses unknown and malformed zone names with the fix', function()
    local z, err = tz.load('Europe/Atlantis')
    assert.is_nil(z)
    assert.equal("unknown time zone 'Europe/Atlantis': no file /usr/share/zoneinfo/Europe/Atlantis (use a tz database name such as Europe/Berlin or UTC; they come with Debian's tzdata package)", err)
    for _, n in ipairs({ '../../etc/passwd', '/etc/passwd', 'Europe//Berlin', 'Europe/', '' }) do
      z, err = tz.load(n)
      assert.is_nil(z)
      assert.equal(('time zone %q is not a tz database name: use one such as UTC, Europe/Berlin or America/New_York'):format(n), err)
    end
    z, err = tz.load('zone.tab')
    assert.is_nil(z)
    z, err = tz.load('iso3166.tab')
    assert.is_nil(z)
  end)

  it('does civil arithmetic across centuries', function()
    for _, d in ipairs({ { 1970, 1, 1, 0 }, { 2000, 3, 1, 11017 }, { 1900, 2, 28, -25509 }, { 2400, 2, 29, 157113 },
                         { 1600, 1, 1, -135140 } }) do
      assert.equal(d[4], tz.days_from_civil(d[1], d[2], d[3]))
      assert.same({ d[1], d[2], d[3] }, { tz.civil_from_days(d[4]) })
    end
  end)
end)

-- ticks as local times: "2024-03-31 03:00 +02"
local function ticks(expr, zone, from, n)
  local s = assert(cron.parse(expr))
  local z = assert(tz.load(zone))
  local out, t = {}, from
  for i = 1, n do
    t = s:next(t, z)
    local off = z:offset(t)
    out[i] = os.date('!%Y-%m-%d %H:%M', t + off) .. (' %+03d'):format(off / 3600) ..
      (off % 3600 ~= 0 and (':%02d'):format(off % 3600 / 60) or '')
  end
  return out
end

describe('jobrt.cron across daylight saving changes (as cronie)', function()
  -- Europe/Berlin 2024: 31 March 02:00 -> 03:00 (+01 -> +02); 27 October 03:00 -> 02:00
  local SPRING, FALL = 1711846800, 1729990800     -- the instants of the changes

  it('runs a fixed time the spring change skips at the change, and the day after as usual', function()
    assert.same({ '2024-03-31 03:00 +02', '2024-04-01 02:30 +02' }, ticks('30 2 * * *', 'Europe/Berlin', SPRING - 7200, 2))
    -- several skipped times of one entry: one run at the change
    assert.same({ '2024-03-31 01:15 +01', '2024-03-31 01:45 +01', '2024-03-31 03:00 +02', '2024-03-31 03:15 +02' },
      ticks('15,45 1-3 * * *', 'Europe/Berlin', SPRING - 3600, 4))
  end)

  it('runs a fixed time the autumn change repeats once, the first time', function()
    assert.same({ '2024-10-27 02:30 +02', '2024-10-28 02:30 +01' }, ticks('30 2 * * *', 'Europe/Berlin', FALL - 7200, 2))
    -- started during the repeated hour, after the first 02:30: not again that night
    assert.same({ '2024-10-28 02:30 +01' }, ticks('30 2 * * *', 'Europe/Berlin', FALL + 60, 1))
  end)

  it('runs other entries when the clock shows their time: none in the skipped hour, twice in the repeated one', function()
    assert.same({ '2024-03-31 01:30 +01', '2024-03-31 03:00 +02', '2024-03-31 03:30 +02' },
      ticks('*/30 * * * *', 'Europe/Berlin', SPRING - 1801, 3))
    assert.same({ '2024-10-27 02:00 +02', '2024-10-27 02:30 +02', '2024-10-27 02:00 +01', '2024-10-27 02:30 +01',
                  '2024-10-27 03:00 +01' }, ticks('*/30 * * * *', 'Europe/Berlin', FALL - 3601, 5))
    assert.same({ '2024-10-27 02:15 +02', '2024-10-27 02:15 +01' }, ticks('15 * * * *', 'Europe/Berlin', FALL - 3000, 2))
  end)

  it('handles the US changes and half-hour ones (Lord Howe Island: 02:00 -> 02:30)', function()
    -- America/New_York 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST
    assert.same({ '2024-03-10 03:00 -04', '2024-03-11 02:30 -04' }, ticks('30 2 * * *', 'America/New_York', 1710050400, 2))
    assert.same({ '2024-11-03 01:30 -04', '2024-11-04 01:30 -05' }, ticks('30 1 * * *', 'America/New_York', 1730610000, 2))
    -- Australia/Lord_Howe 2024-10-06 02:00 +10:30 -> 02:30 +11
    assert.same({ '2024-10-06 02:30 +11', '2024-10-07 02:15 +11' }, ticks('15 2 * * *', 'Australia/Lord_Howe', 1728138600, 2))
  end)

  it('takes a change of more than 3 hours as a correction: Samoa skipped 30 December 2011', function()
    -- Pacific/Apia: 2011-12-29 23:59:59 -10 was followed by 2011-12-31 00:00:00 +14
    assert.same({ '2011-12-29 12:00 -10', '2011-12-31 12:00 +14' }, ticks('0 12 * * *', 'Pacific/Apia', 1325239200 - 13 * 3600, 2))
  end)

  it('keeps @every on absolute time, whatever the zone', function()
    local s = assert(cron.parse('@every 1h'))
    local z = assert(tz.load('Europe/Berlin'))
    assert.equal(SPRING + 3600, s:next(SPRING, z))
    assert.equal(SPRING, s:next(SPRING - 1, z))
  end)
end)
