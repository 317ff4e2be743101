#!/usr/bin/env python3
"""Database size per day: one simulated day of traffic through the real writer and housekeeping,
measured per table with SQLite's dbstat, then the steady-state size under the retention policy.

  python bench/dbsize.py [--hosts 1000] [--flows 100000] [--db PATH] [--seed N]

The day: `--flows` flows start at uniformly random times; 60 % last under a minute, 30 % 1-10
minutes, 9 % 10-60 minutes, 1 % 1-6 hours. A fifth of the `--hosts` addresses are local
(10.0.0.0/16), the rest remote; every flow joins a local and a remote address; half the flows
belong to one of 50 local processes (attribution). Each active minute of a flow is one delta,
as the collector writes them (one transaction per minute here; the collector writes one per
flush, which changes the time taken, not the size).
"""
import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from records import FlowDelta, Rollup          # noqa: E402
from records import ProcessKey                # noqa: E402
from settings import Settings                         # noqa: E402
from storage import tiers                             # noqa: E402
from storage.db import connect                        # noqa: E402
from storage.retention import maintain  # noqa: E402
from storage.tiers import RetentionPolicy
from storage.store import RollupStore                # noqa: E402

DAY0 = 1_700_006_400          # a UTC midnight
GROUPS = ("minute tier", "hour tier", "day tier", "flow records", "1-second points", "other")


def simulate(hosts, flows, seed):
    """{minute: Rollup} for one day."""
    rng = random.Random(seed)
    local = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(hosts // 5)]
    remote = [f"198.{18 + i // 65000}.{i // 250 % 250}.{i % 250 + 1}" for i in range(hosts - len(local))]
    procs = [ProcessKey(1000 + i, DAY0 - 3600.0, f"proc{i}") for i in range(50)]
    minutes = {}
    for _ in range(flows):
        x = rng.random()
        length = 1 if x < 0.6 else rng.randint(2, 10) if x < 0.9 else rng.randint(11, 60) if x < 0.99 \
            else rng.randint(61, 360)
        start = DAY0 + rng.random() * (86400 - 60 * min(length, 1439))
        a, b = rng.choice(local), rng.choice(remote)
        proto, ap, bp = rng.choice((6, 6, 17)), rng.randint(32768, 60999), rng.choice((443, 80, 53, 22, 993))
        proc = rng.choice(procs) if rng.random() < 0.5 else None
        for k in range(length):
            minute = int(start // 60 * 60) + 60 * k
            if minute >= DAY0 + 86400:
                break
            up, down = rng.randint(60, 20_000), rng.randint(60, 200_000)
            last = k == length - 1
            delta = FlowDelta(proto, a, ap, b, bp, start, start + 60 * k + 30, up, up // 700 + 1, down,
                              down // 1400 + 1, 0x18 if proto == 6 else 0, "eth0", last,
                              proc.pid if proc else None, proc.name if proc else None)
            r = minutes.get(minute)
            if r is None:
                r = minutes[minute] = Rollup(minute, [], {}, {"eth0": [0] * 10}, {}, {}, {})
            r.flows.append(delta)
            for host, tx, rx in ((a, delta.orig_bytes, delta.resp_bytes), (b, delta.resp_bytes, delta.orig_bytes)):
                h = r.hosts.setdefault(host, [0, 0, 0, 0])
                h[0] += tx
                h[1] += rx
                h[2] += 1
                h[3] += 1
            frames = delta.orig_packets + delta.resp_packets
            i = r.interfaces["eth0"]
            i[0] += frames
            i[1] += up + down
            i[2] += frames
            i[3] += up + down
            reason = "attributed" if proc else "no_local_endpoint"
            att = r.attribution.setdefault(reason, [0, 0])
            att[0] += up + down
            att[1] += frames
            if proc:
                p = r.processes.setdefault(proc, [0, 0, 0, 0])
                p[0] += up
                p[1] += down
    return minutes


def group_of(name, tbl_name):
    table = tbl_name or name
    if table == "iface_seconds":
        return "1-second points"
    if table == "flows":
        return "flow records"
    for family in tiers.FAMILIES.values():
        for tier, t in zip(tiers.TIERS, family.tables):
            if t == table:
                return f"{tier} tier"
    return "other"


def sizes(con):
    """{(group, is_flow): bytes} from dbstat: every table and index page."""
    owner = {name: tbl for name, tbl in con.execute("SELECT name, tbl_name FROM sqlite_master")}
    out = {}
    for name, size in con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
        table = owner.get(name, name)
        key = (group_of(name, table), table.startswith("flow"))
        out[key] = out.get(key, 0) + size
    return out


def mb(n):
    return f"{n / 1e6:,.1f} MB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--flows", type=int, default=100_000)
    p.add_argument("--db", help="database file to write (default: a temporary file)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    workdir = None
    if args.db:
        db = args.db
    else:
        workdir = tempfile.TemporaryDirectory()
        db = os.path.join(workdir.name, "day.db")
    t0 = time.perf_counter()
    minutes = simulate(args.hosts, args.flows, args.seed)
    t1 = time.perf_counter()
    con = connect(db)
    store = RollupStore(con)
    for minute in sorted(minutes):
        store.apply([minutes[minute]])
    store.add_seconds([(DAY0 + 86400 - 900 + s, "eth0", 1, 1000, 0, 0) for s in range(900)])
    t2 = time.perf_counter()
    policy = RetentionPolicy.from_settings(Settings())
    while not maintain(con, policy, DAY0 + 86400, budget=5.0):
        pass
    t3 = time.perf_counter()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    t4 = time.perf_counter()
    con.execute("PRAGMA integrity_check").fetchall()
    t5 = time.perf_counter()
    measured = sizes(con)
    rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("flows", "flow_minutes", "flow_hours", "flow_days", "host_minutes", "host_hours", "host_days",
                      "process_minutes", "iface_minutes")}
    file_size = os.path.getsize(db)
    con.close()
    keep = {"minute tier": (policy.minute, policy.minute), "hour tier": (policy.hour, policy.keep("flow", "hour")),
            "day tier": (policy.day, policy.keep("flow", "day")), "flow records": (0, policy.flows),
            "1-second points": None, "other": None}
    print(f"one day: {args.hosts} hosts, {args.flows} flows; rows: "
          + ", ".join(f"{t} {n:,}" for t, n in rows.items()))
    print(f"file after one day: {mb(file_size)} (simulate {t1 - t0:.1f} s, write {t2 - t1:.1f} s, "
          f"housekeeping {t3 - t2:.1f} s, integrity_check {t5 - t4:.2f} s)")
    print()
    print("| part | per day | kept (default) | steady state |")
    print("|---|---:|---:|---:|")
    total = 0
    for group in GROUPS:
        per_day = sum(v for (g, _), v in measured.items() if g == group)
        if keep[group] is None:
            steady = per_day
            kept = "fixed"
        else:
            steady = sum(v * keep[group][is_flow] / 86400 for (g, is_flow), v in measured.items() if g == group)
            kept = ", ".join(sorted({f"{k / 86400:g} d" for k in keep[group] if k}))
        total += steady
        print(f"| {group} | {mb(per_day)} | {kept} | {mb(steady)} |")
    print(f"| **total** | {mb(sum(measured.values()))} | | **{mb(total)}** |")
    if workdir:
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
