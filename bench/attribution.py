#!/usr/bin/env python3
"""Socket -> process attribution: what a socket-table refresh costs with 10,000 sockets open, and
how much of each class of traffic each attribution mode charges to the right process.

1. Refresh cost. Opens N sockets on loopback in this process (N/2 TCP connections to a local
   listener; bounded), then times, best and median of --repeat:
     psutil.net_connections("inet")            the portable call
     attribution.sockets.socket_table()        the psutil adapter (call + plain table)
     attribution.linux.LinuxSockets.snapshot() the Linux fast path: first read (every process's
                                               descriptors read once), steady (nothing new),
                                               +2 sockets and +200 sockets since the last read
     OwnerCache.refresh() on each source       what the collector pays per refresh (with pids
                                               resolved to processes)
2. Coverage per class (root, Linux, tcpdump; --no-coverage to skip): runs the traffic of
   tests/test_attribution_live.py (50 MB bulk, 200 short 10 KB connections, UDP request/response,
   IPv4 and IPv6; plus a connection paced over 2 s) on loopback in a fresh namespace under
   `run.py --no-web`, once per attribution
   mode (auto = kernel socket events + sock_diag, proc = sock_diag polling, psutil), and prints
   the share of each class's local bytes charged to the right pid.

    sudo .venv/bin/python bench/attribution.py [--sockets 10000] [--repeat 7] [--modes auto,proc,psutil]
"""
import argparse
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file's own name shadows the `attribution` package when bench/ is on the path (it is, for
# `python bench/...`): take bench/ off and put the project root and tests/ first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
for p in (ROOT / "tests", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
if getattr(sys.modules.get("attribution"), "__file__", "").startswith(str(ROOT / "bench")):
    del sys.modules["attribution"]


def open_sockets(n):
    """n sockets on loopback: n/2 connected TCP pairs (client + accepted end) and a listener."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 1000
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"need {want} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    held = [server]
    for _ in range(n // 2):
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        held += [client, accepted]
    return held


def timed(call, repeat, between=None):
    times = []
    for _ in range(repeat):
        if between:
            between()
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def refresh_costs(n, repeat):
    import psutil

    from attribution import linux, sockets
    from attribution.cache import OwnerCache

    held = open_sockets(n)
    listener = held[0].getsockname()
    extra = []

    def connect(k):
        def more():
            for _ in range(k):
                c = socket.create_connection(listener)
                a, _ = held[0].accept()
                extra.extend((c, a))
        return more

    rows = []
    try:
        count = len(psutil.net_connections("inet"))
        rows.append(("psutil.net_connections('inet')", *timed(lambda: psutil.net_connections("inet"), repeat)))
        rows.append(("sockets.socket_table() (psutil adapter)", *timed(sockets.socket_table, repeat)))
        first = []
        for _ in range(repeat):
            source = linux.LinuxSockets()
            t = time.perf_counter()
            source.snapshot()
            first.append(time.perf_counter() - t)
            source.close()
        rows.append(("linux snapshot, first read", min(first), statistics.median(first)))
        source = linux.LinuxSockets()
        source.snapshot()
        rows.append(("linux snapshot, steady", *timed(source.snapshot, repeat)))
        rows.append(("linux snapshot, +2 sockets", *timed(source.snapshot, repeat, connect(1))))
        rows.append(("linux snapshot, +200 sockets", *timed(source.snapshot, repeat, connect(100))))
        for label, table in (("psutil", sockets.socket_table), ("linux", source.snapshot)):
            cache = OwnerCache(table, sockets.process_key, sockets.start_time)
            cache.refresh()
            rows.append((f"OwnerCache.refresh() over {label}, steady", *timed(cache.refresh, repeat)))
        source.close()
    finally:
        for s in held + extra:
            s.close()
    print(f"\nRefresh cost with {count} inet sockets on this host ({n} opened here), {repeat} runs:")
    print(f"  {'what':46} {'best ms':>9} {'median ms':>10}")
    for what, best, median in rows:
        print(f"  {what:46} {best * 1000:9.1f} {median * 1000:10.1f}")
    return rows


def coverage(modes):
    import test_attribution_live as live
    import netns
    # the test's classes, and one connection that lives 2 s (polling has time to see it)
    classes = [("paced-v4", 0, "127.0.0.1", "serve-bulk", "run-paced")] + live.CLASSES_LO
    why = live._skip_reason()
    if why:
        print(f"\nCoverage per class: skipped ({why})")
        return {}
    results = {}
    for mode in modes:
        with tempfile.TemporaryDirectory() as tmp, netns.veth_namespaces("bat") as pair:
            db, _, ran = live.capture_and_run(pair, "lo", Path(tmp), classes, mode=mode)
            own = live.addresses_of(pair.ns[0])
            shares = live.class_shares(live.flows_of(db), ran, lambda name, s, c: {"server": s, "client": c}, own)
            results[mode] = shares
    print("\nShare of each class's local bytes charged to the right pid (loopback, both ends local):")
    names = [c[0] for c in classes]
    print(f"  {'mode':8} " + " ".join(f"{n:>9}" for n in names))
    print(f"  {'flows':8} " + " ".join(f"{next(iter(results.values()))[n][0]:>9}" for n in names))
    for mode, shares in results.items():
        print(f"  {mode:8} " + " ".join(f"{shares[n][2]:9.2%}" for n in names))
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/attribution.py", description=__doc__.splitlines()[0])
    p.add_argument("--sockets", type=int, default=10_000, help="sockets to open on loopback (default 10000)")
    p.add_argument("--repeat", type=int, default=7, help="runs per measurement (default 7)")
    p.add_argument("--modes", default="auto,proc,psutil", help="attribution modes for the coverage run")
    p.add_argument("--no-coverage", action="store_true", help="only the refresh cost")
    args = p.parse_args(argv)
    if not 2 <= args.sockets <= 100_000 or args.repeat < 1:
        p.error("--sockets between 2 and 100000, --repeat at least 1")
    print(f"bench/attribution.py on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}")
    refresh_costs(args.sockets, args.repeat)
    if not args.no_coverage:
        coverage([m.strip() for m in args.modes.split(",") if m.strip()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
