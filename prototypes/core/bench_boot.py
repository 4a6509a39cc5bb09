#!/usr/bin/env python3
"""Boot each (core, cpu) configuration N times, interleaved; print medians of the timeline marks."""
import json, statistics, subprocess, sys
N = int(sys.argv[1]) if len(sys.argv) > 1 else 3
CONFIGS = [("out/cold1", "max"), ("out/gzip", "max"), ("out/zstd", "max"), ("out/gzip", "qemu64"), ("out/cold1", "qemu64")]
if len(sys.argv) > 2:
    CONFIGS = [tuple(c.split(":")) for c in sys.argv[2:]]
runs = {c: [] for c in CONFIGS}
for i in range(N):
    for core, cpu in CONFIGS:
        r = subprocess.run([sys.executable, "boot.py", "--core", core, "--cpu", cpu, "--timeout", "400"],
                           capture_output=True, text=True)
        d = json.loads(r.stdout)
        ok = bool(d["result"])
        row = {"ok": ok, "total": d["total_s"], "marker_host": d["marks"].get("marker", {}).get("host_s")}
        for k in ("init", "modules", "libvirtd-socket"):
            row[k] = d["marks"].get(k, {}).get("guest_uptime_s")
        if ok:
            row.update({f"py_{k}": v for k, v in d["result"]["uptime"].items()})
        runs[(core, cpu)].append(row)
        print(core, cpu, json.dumps(row), flush=True)
print("== medians")
for c, rows in runs.items():
    keys = rows[0].keys()
    med = {k: round(statistics.median(r[k] for r in rows if isinstance(r.get(k), (int, float))), 2)
           for k in keys if k != "ok" and any(isinstance(r.get(k), (int, float)) for r in rows)}
    print(c, "ok=%d/%d" % (sum(r["ok"] for r in rows), len(rows)), json.dumps(med))
