"""The dashboard over PostgreSQL with a fleet (issue 14, docs/FLEET.md): AGENTS agents x DAYS days
x HOSTS hosts in one database, and the p95 of the overview's, the hosts page's and the history
page's API calls, for the whole fleet and for one agent (`agent=`).

The history: bench/gen_history.py writes agent-00's days through the real writer and
housekeeping (minute rows for the last 48 hours, hour and day rows before), into a throwaway
server started the way the tests start theirs (tests/postgres_server.py; needs root). The other
agents are copies of agent-00 made by SQL, each under its own name, with its flow and process
ids moved out of the way: the same addresses seen by every agent, as a fleet in one network
would (the unfiltered views then add twenty rows per address). Writing every agent through the
writer would take twenty times as long and measure the same shape.

Latency: bench/api.py's client and server (waitress, the real app, its clock at the end of the
history), N requests per endpoint after a warm-up.

    sudo .venv/bin/python bench/fleet_api.py [--agents 20] [--days 7] [--hosts 500] [--requests 50]
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

GOAL_MS = 200.0
PAGES = {
    "overview": ("/api/current_usage", "/api/hosts?sort=bytes&limit=10", "/api/processes?sort=bytes&limit=10&group=name",
                 "/api/apps?by=class", "/api/alerts?state=open&since=0&limit=20", "/api/health?by=host&limit=5"),
    "hosts": ("/api/hosts", "/api/hosts?since=7d"),
    "history": ("/api/historical?range=1h", "/api/historical?range=24h", "/api/historical?range=7d",
                "/api/historical?range=7d&by=host"),
}
ID_STEP = 1_000_000_000          # agent k's copies of agent-00's flow and process ids: id + k * ID_STEP


def copy_agent(con, index):
    """agent-00's rows again as agent-NN: every table with an agent column, and the rows keyed by
    a flow or a process (their ids moved by index * ID_STEP)."""
    name, shift = f"agent-{index:02d}", index * ID_STEP
    tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = 'public' ORDER BY table_name")]
    for table in tables:
        cols = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                                          "ORDER BY ordinal_position", (table,))]
        keyed = {"flow_id", "process_id"} & set(cols)
        if "agent" not in cols and not keyed:
            continue                  # shared by every agent: names, alerts, the ledger, tier marks
        if table in ("flows", "processes") or keyed:
            moved = {"agent": "%(name)s", "id": "id + %(shift)s", "flow_id": "flow_id + %(shift)s",
                     "process_id": "process_id + %(shift)s"}
        else:
            moved = {"agent": "%(name)s"}
        chosen = ", ".join(moved.get(c, c) for c in cols)
        where = " WHERE agent = 'agent-00'" if "agent" in cols else f" WHERE {min(keyed)} < {ID_STEP}"
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {chosen} FROM {table}{where}",
                    {"name": name, "shift": shift})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--hosts", type=int, default=500)
    p.add_argument("--requests", type=int, default=50)
    args = p.parse_args(argv)
    import psycopg
    from postgres_server import throwaway_database
    from bench.api import measure_latency
    from bench.gen_history import generate
    with throwaway_database("bench/fleet_api.py") as url:
        meta = generate(url, hosts=args.hosts, days=args.days, agent="agent-00")
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as con:
            for k in range(1, args.agents):
                with con.transaction():
                    copy_agent(con, k)
            con.execute("ANALYZE")
            size = con.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("flows", "host_minutes", "host_hours", "host_days", "flow_minutes")}
        print(f"{args.agents - 1} copies in {time.perf_counter() - started:.0f} s; database {size / 1e6:.0f} MB; "
              + ", ".join(f"{t} {n:,}" for t, n in rows.items()))
        endpoints = [u for urls in PAGES.values() for u in urls]
        endpoints += [u + ("&" if "?" in u else "?") + "agent=agent-01" for u in endpoints]
        results = {r["endpoint"]: r for r in measure_latency(url, meta, args.requests, endpoints)}
        print(f"\n{args.agents} agents x {args.days} days x {args.hosts} hosts; {args.requests} requests per endpoint\n")
        print("| page | endpoint | p50 ms fleet | p95 ms fleet | p50 ms one agent | p95 ms one agent |\n|---|---|---|---|---|---|")
        missed = []
        for page, urls in PAGES.items():
            for u in urls:
                fleet, one = results[u], results[u + ("&" if "?" in u else "?") + "agent=agent-01"]
                print(f"| {page} | `{u}` | {fleet['p50_ms']} | {fleet['p95_ms']} | {one['p50_ms']} | {one['p95_ms']} |")
                missed += [f"{r['endpoint']} ({r['p95_ms']} ms)" for r in (fleet, one) if r["p95_ms"] >= GOAL_MS]
        print("\ngoal p95 < 200 ms for the overview, hosts and history: "
              + (f"MISSED by {', '.join(missed)}" if missed else "met"))
        return 0          # a missed goal is a figure to report, not a failure


if __name__ == "__main__":
    sys.exit(main())
