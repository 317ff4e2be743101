"""Many agents, one PostgreSQL database (issue 14, docs/FLEET.md): AGENTS processes write at
once, each flushing FLOWS flow updates every PERIOD seconds for SECONDS seconds, through the
same RollupStore the collectors use (storage/store.py, agent=agent-NN). Reports the commit
times (each flush is one transaction) and checks that no count was lost or counted twice: the
flows' bytes and the host minutes of every agent equal what it sent.

The server is a throwaway one, started the way the tests start theirs (tests/postgres_server.py:
Debian's initdb and pg_ctl as the postgres user, 127.0.0.1, a free port, fsync off). Needs root.

    sudo .venv/bin/python bench/fleet.py [--agents 20] [--flows 5000] [--period 2] [--seconds 120]
"""
import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from records import FlowDelta, Rollup  # noqa: E402

BYTES = 100                     # each flow sends this much per flush, in one frame


def agent(index, url, flows, period, seconds, start, out):
    """One agent: its flows (new in the first flush, known after), a flush every `period`."""
    from storage.db import connect
    from storage.store import RollupStore
    name = f"agent-{index:02d}"
    store = RollupStore(connect(url), name)
    host = f"10.{index}.0.1"
    first = start
    keys = [(f"10.{index}.{1 + k // 250}.{k % 250 + 1}", 30000 + k % 30000) for k in range(flows)]
    times, late, rounds = [], 0, int(seconds / period)
    for r in range(rounds):
        due = start + r * period
        now = time.time()
        if now < due:
            time.sleep(due - now)
        elif now > due + period:
            late += 1               # the previous flush took longer than a period
        now = time.time()
        deltas = [FlowDelta(6, host, port, peer, 443, first, now, BYTES, 1, 0, 0, 0x18, "eth0", False)
                  for peer, port in keys]
        rollup = Rollup(int(now // 60 * 60), deltas, {host: [BYTES * flows, 0, flows, 0]},
                        {"eth0": [flows, BYTES * flows, flows, BYTES * flows, 0, 0, 0, 0, flows, BYTES * flows]}, {})
        began, cpu = time.perf_counter(), time.process_time()
        store.apply([rollup])
        times.append((time.perf_counter() - began, time.process_time() - cpu))
    store.con.close()
    out.put((name, rounds, late, times, time.time() - start))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--flows", type=int, default=5000)
    p.add_argument("--period", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=120.0)
    args = p.parse_args(argv)
    from postgres_server import throwaway_database
    with throwaway_database("bench/fleet.py") as url:
        from storage.db import connect
        connect(url).close()                          # the schema, before the agents race to it
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        start = time.time() + 5                       # every agent started and connected by then
        procs = [ctx.Process(target=agent, args=(i, url, args.flows, args.period, args.seconds, start, out))
                 for i in range(args.agents)]
        for proc in procs:
            proc.start()
        # every agent makes all its flushes, late ones back to back: on a machine too small for
        # the fleet the run takes longer than --seconds, and says by how much
        results = [out.get(timeout=args.seconds * 30 + 120) for _ in procs]
        for proc in procs:
            proc.join()
        return check(url, results, args)


def check(url, results, args):
    import psycopg
    times = sorted(t for _, _, _, ts, _ in results for t, _ in ts)
    cpu = statistics.median(c for _, _, _, ts, _ in results for _, c in ts)
    took = max(r[4] for r in results)
    late = sum(r[2] for r in results)
    with psycopg.connect(url) as con:
        flows = dict((a, (int(b), int(n))) for a, b, n in con.execute(
            "SELECT agent, sum(orig_bytes), sum(orig_packets) FROM flows GROUP BY agent"))
        hosts = dict((a, int(b)) for a, b in con.execute("SELECT agent, sum(tx_bytes) FROM host_minutes GROUP BY agent"))
        records = con.execute("SELECT count(*) FROM flows").fetchone()[0]
    lost = []
    for name, rounds, _, _, _ in results:
        want = rounds * args.flows
        if flows.get(name) != (want * BYTES, want) or hosts.get(name) != want * BYTES:
            lost.append((name, flows.get(name), hosts.get(name), want))

    def q(p):
        return times[min(len(times) - 1, int(p * len(times)))] * 1000
    print(f"{args.agents} agents x {args.flows} flow updates every {args.period:g} s for {args.seconds:g} s: "
          f"{len(times)} flushes, {records} flow records")
    print(f"commit ms: p50 {statistics.median(times) * 1000:.1f}, p95 {q(0.95):.1f}, p99 {q(0.99):.1f}, "
          f"max {times[-1] * 1000:.1f}; flushes started late (previous one over a period): {late}")
    print(f"an agent's own CPU per flush (median): {cpu * 1000:.0f} ms; the last agent finished after {took:.0f} s "
          f"({took / args.seconds:.2f} x the {args.seconds:g} s asked)")
    print("counts: every agent's flows and host minutes equal what it sent" if not lost else f"LOST OR DOUBLED: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
