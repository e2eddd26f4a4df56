"""Parses Prometheus text (stdin) with prometheus_client's parser (Debian python3-prometheus-client)
and checks what the parser lets through: every sample belongs to a family with HELP and TYPE,
names follow the naming rules, histogram buckets are cumulative and end with +Inf equal to
_count. Prints {family: {"type", "samples": [[name, labels, value]...]}} as JSON; exits 1 with
the reason on stderr when the text is not valid."""
import json
import math
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a newline")
    seen_help, seen_type = set(), set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            seen_help.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            name = line.split(" ")[2]
            if name in seen_type:
                raise ValueError(f"TYPE given twice for {name}")
            seen_type.add(name)
    out = {}
    for fam in text_string_to_metric_families(text):
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", fam.name):
            raise ValueError(f"bad metric name {fam.name}")
        raw = fam.name + ("_total" if fam.type == "counter" else "")
        if raw not in seen_help or raw not in seen_type:
            raise ValueError(f"{raw} has no HELP or TYPE line")
        if fam.type == "unknown":
            raise ValueError(f"{fam.name} has no type")
        samples = []
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith("_total"):
                raise ValueError(f"counter sample {s.name} must end in _total")
            samples.append([s.name, s.labels, None if math.isnan(s.value) else s.value])
        if fam.type == "histogram":
            by_series = {}
            for name, labels, value in samples:
                key = json.dumps({k: v for k, v in labels.items() if k != "le"}, sort_keys=True)
                by_series.setdefault(key, {"buckets": [], "count": None})
                if name.endswith("_bucket"):
                    by_series[key]["buckets"].append((float(labels["le"]), value))
                elif name.endswith("_count"):
                    by_series[key]["count"] = value
            for key, ser in by_series.items():
                b = ser["buckets"]
                if not b or b[-1][0] != math.inf:
                    raise ValueError(f"{fam.name} {key}: the last bucket must be +Inf")
                if any(b[i][1] > b[i + 1][1] or b[i][0] >= b[i + 1][0] for i in range(len(b) - 1)):
                    raise ValueError(f"{fam.name} {key}: buckets are not cumulative and ordered")
                if b[-1][1] != ser["count"]:
                    raise ValueError(f"{fam.name} {key}: +Inf bucket {b[-1][1]} != _count {ser['count']}")
        out[fam.name] = {"type": fam.type, "samples": samples}
except Exception as e:  # the parser raises ValueError and friends on malformed text
    print(f"invalid exposition: {e}", file=sys.stderr)
    sys.exit(1)
print(json.dumps(out))
