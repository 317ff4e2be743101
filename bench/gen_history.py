#!/usr/bin/env python3
"""Writes a database with 30 days of history for 1,000 hosts, for the API latency benchmark.

  python bench/gen_history.py DB [--hosts 1000] [--days 30] [--active 0.25] [--seed 1] [--now EPOCH]

Everything goes through the real writer (storage.writer.RollupStore) and housekeeping
(storage.retention.maintain), so the file has the shape a long-running capture leaves with the
default retention: the last 48 hours in minute rows (a random `--active` share of the hosts
talking in each minute), everything older in hour rows only (the writer routes rows older than
the minute tier's watermark straight to hours; every host has traffic in 90% of the hours), day
rows built from the hours, and the last 15 minutes of per-second interface points.

Traffic: hosts 10.0.x.y with Zipf-like weights (a few busy hosts, a long tail) and a day/night
cycle; 2 interfaces; 120 process names (three instances each); 200 flows per hour in the hour
tier and 10 per minute in the minute tier; attribution covering ~90% of the bytes; a few kernel
drops. Deterministic for a given seed and --now. Writes DB.json next to the file with the
parameters and `now`, which bench/api.py uses as its clock.
"""
import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from records import FlowDelta, Rollup          # noqa: E402
from records import ProcessKey               # noqa: E402
from settings import Settings                        # noqa: E402
from storage import retention, tiers                 # noqa: E402
from storage.db import connect, shown                # noqa: E402
from storage.postgres import is_url                  # noqa: E402
from storage.store import RollupStore               # noqa: E402

IFACES = ("eth0", "wlan0")
SERVICES = ((6, 443), (6, 443), (6, 443), (17, 443), (6, 80), (17, 53), (6, 22), (17, 123), (6, 8080), (6, 5432))
HOUR_ACTIVE = 0.9


class Model:
    def __init__(self, hosts, seed):
        self.rng = random.Random(seed)
        self.ips = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(hosts)]
        self.weight = [1.0 / (rank + 1) ** 0.8 for rank in range(hosts)]
        self.processes = [ProcessKey(1000 + i, 1_600_000_000.0 + i, f"app{i // 3:03d}", f"/usr/bin/app{i // 3:03d}",
                                     f"app{i // 3:03d} --serve", "svc") for i in range(360)]
        self.flow_seq = 0

    @staticmethod
    def diurnal(t):
        return 0.35 + 0.65 * (1 + math.sin((t % 86400) / 86400 * 2 * math.pi - math.pi / 2)) / 2

    def bucket(self, start, seconds, active, n_flows):
        """One Rollup of `seconds` of traffic at `start` for a random `active` share of the hosts."""
        rng, scale = self.rng, self.diurnal(start) * seconds
        hosts, total = {}, 0
        for ip, w in zip(self.ips, self.weight):
            if rng.random() >= active:
                continue
            tx = int(w * scale * rng.uniform(2000, 20000))
            rx = int(tx * rng.uniform(1.5, 6))
            hosts[ip] = [tx, rx, tx // 700 + 1, rx // 900 + 1]
            total += tx + rx
        out = sum(h[0] for h in hosts.values())
        share = (0.7, 0.3)
        interfaces = {name: [int(total * s / 800), int(total * s), int(total * s / 800), int(total * s), 0, 0, 0, 0,
                             int(out * s / 700), int(out * s)] for name, s in zip(IFACES, share)}
        processes = {}
        for key in rng.sample(self.processes, 40):
            tx = int(rng.uniform(1000, 200000) * seconds / 60)
            processes[key] = [tx, tx * 3, tx // 700 + 1, tx * 3 // 900 + 1]
        flows = []
        for _ in range(n_flows):
            self.flow_seq += 1
            proto, port = rng.choice(SERVICES)
            a, b = rng.choice(self.ips), f"203.0.{self.flow_seq % 200}.{self.flow_seq % 250 + 1}"
            first = start + rng.uniform(0, seconds * 0.5)
            ob = int(rng.paretovariate(1.2) * 2000)
            proc = rng.choice(self.processes)
            last = first + rng.uniform(0.1, seconds * 0.5)
            flows.append(FlowDelta(proto, a, 30000 + self.flow_seq % 30000, b, port, first, last,
                                   ob, ob // 700 + 1, ob * 4, ob * 4 // 1400 + 1,
                                   0x1B if proto == 6 else 0, IFACES[0], True, proc.pid, proc.name, None, None))
        attributed = int(total * 0.9)
        drops = {"eth0": rng.randrange(1, 50)} if rng.random() < 0.01 else {}
        attribution = {"attributed": [attributed, attributed // 800], "no_local_endpoint": [total - attributed, 1]}
        return Rollup(start, flows, hosts, interfaces, {}, processes, attribution), drops


def generate(path, hosts=1000, days=30, active=0.25, seed=1, now=None, say=print, agent=""):
    """`path` may be a PostgreSQL URL (bench/fleet_api.py): a new, empty database."""
    now = float(int(time.time()) if now is None else now)
    url = is_url(path)
    for suffix in () if url else ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    con = connect(path)
    store = RollupStore(con, agent)
    policy = tiers.RetentionPolicy.from_settings(Settings())
    retention.maintain(con, policy, now)        # sets the tiers' watermarks for `now`: old rows go to hours
    model = Model(hosts, seed)
    minute_start = policy.cutoff("host", "minute", now)       # older buckets are routed to the hour tier
    first_hour = int(now - days * 86400) // 3600 * 3600
    started = time.perf_counter()
    _write(store, model, range(first_hour, minute_start, 3600), 3600, HOUR_ACTIVE, 200, per_transaction=24)
    say(f"hour tier: {(minute_start - first_hour) // 3600} hours in {time.perf_counter() - started:.0f} s")
    # The last 5 minutes are written after housekeeping, as in a running capture: their hour (and
    # so their day) is pending, and queries read it from the minute rows.
    last = int(now // 60 * 60) + 60
    for part in (range(minute_start, last - 300, 60), range(last - 300, last, 60)):
        _write(store, model, part, 60, active, 10, per_transaction=60)
        if part.start == minute_start:
            while not retention.maintain(con, policy, now, budget=30.0):
                pass
    rng = model.rng
    store.add_seconds([(s, name, 900, int(rng.uniform(2e5, 2e6) * share), 300, int(rng.uniform(5e4, 5e5) * share))
                       for s in range(int(now) - 900, int(now)) for name, share in zip(IFACES, (0.7, 0.3))])
    say(f"minute tier: {(last - minute_start) // 60} minutes, {time.perf_counter() - started:.0f} s so far")
    retention.checkpoint(con, wait_ms=5000)
    size = con.execute("SELECT pg_database_size(current_database())").fetchone()[0] if url else os.path.getsize(path)
    con.close()
    meta = {"now": now, "hosts": hosts, "days": days, "active": active, "seed": seed, "flows": model.flow_seq,
            "bytes": size, "seconds": round(time.perf_counter() - started, 1)}
    if not url:
        with open(path + ".json", "w") as f:
            json.dump(meta, f, indent=1)
    say(f"{shown(path)}: {meta['bytes'] / 1e6:.0f} MB, {model.flow_seq} flows, in {meta['seconds']} s")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/gen_history.py", description=__doc__.splitlines()[0])
    p.add_argument("db")
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--active", type=float, default=0.25,
                   help="share of hosts talking in each minute of the minute tier")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--now", type=float, help="end of the history, epoch seconds (default: now)")
    args = p.parse_args(argv)
    generate(args.db, args.hosts, args.days, args.active, args.seed, args.now)
    return 0


def _write(store, model, buckets, size, active, flows, per_transaction):
    """The model's rollups for `buckets` (each `size` seconds) through the real writer, a few
    buckets per transaction."""
    batch = []
    for bucket in buckets:
        rollup, drops = model.bucket(bucket, size, active, flows)
        batch.append(rollup)
        if drops:
            store.add_drops(bucket, drops)
        if len(batch) == per_transaction:
            store.apply(batch)
            batch = []
    store.apply(batch)


if __name__ == "__main__":
    sys.exit(main())
