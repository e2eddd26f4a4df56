"""Oracles for tests/06-sched (run with Debian's /usr/bin/python3).

  oracle.py cron  < lines "EXPR<TAB>ZONE<TAB>START<TAB>COUNT"
      -> per line: COUNT next ticks of EXPR after Unix time START in ZONE (python3-croniter),
         then the tick before START, tab-separated Unix seconds; or "error: ..." when croniter
         refuses the expression
  oracle.py tz    < lines "ZONE<TAB>T"
      -> per line: the UTC offset in seconds at Unix time T (zoneinfo, which reads the same
         TZif files as jobrt.tz)
"""
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo


def cron():
    from croniter import croniter
    zones = {}
    out = []
    for line in sys.stdin:
        expr, zone, start, count = line.rstrip('\n').split('\t')
        z = zones.get(zone) or zones.setdefault(zone, ZoneInfo(zone))
        base = datetime.fromtimestamp(int(start), z)
        try:
            it = croniter(expr, base)
            ticks = [str(int(it.get_next(float))) for _ in range(int(count))]
            prev = str(int(croniter(expr, base).get_prev(float)))
            out.append('\t'.join(ticks + [prev]))
        except Exception as e:  # noqa: BLE001 - any refusal is an answer here
            out.append('error: ' + str(e).replace('\n', ' '))
    sys.stdout.write('\n'.join(out) + '\n')


def tz():
    zones = {}
    out = []
    for line in sys.stdin:
        zone, t = line.rstrip('\n').split('\t')
        z = zones.get(zone) or zones.setdefault(zone, ZoneInfo(zone))
        d = datetime.fromtimestamp(int(t), timezone.utc).astimezone(z)
        out.append(str(int(d.utcoffset().total_seconds())))
    sys.stdout.write('\n'.join(out) + '\n')


if __name__ == '__main__':
    {'cron': cron, 'tz': tz}[sys.argv[1]]()
