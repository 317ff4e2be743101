#!/usr/bin/env python3
"""Runs NetTally's benchmarks (`make bench`). Not tests: nothing here passes or fails on speed.

  python bench/run_all.py [--only NAME[,NAME...]] [--NAME-args "OPTIONS"]...

The benchmarks are listed here explicitly; each is bench/<name>.py with `main(argv) -> int`.
One whose module does not exist yet is skipped with a message. Options reach one benchmark
through --<name>-args, e.g.
  python bench/run_all.py --only offline --offline-args "--skip-tshark --repeat 1"
"""
import argparse
import importlib
import shlex
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCHMARKS = (
    ("offline", "capture-file import against argus, tcpdump and tshark"),
    ("live", "live capture on lo"),
    ("attribution", "socket -> process attribution"),
    ("api", "JSON API latency"),
    ("dbsize", "database size"),
    ("dpi_compare", "names and apps against nDPI (skipped without NFStream or captures)"),
    ("memory", "import memory under flow churn (SYN floods of 1M and 5M flows)"),
    ("forecast", "forecast backtest against seasonal-naive (issue 16)"),
    ("fleet", "20 agents writing one PostgreSQL database at once (issue 14; as root)"),
    ("fleet_api", "the dashboard's API over 20 agents x 7 days x 500 hosts in PostgreSQL (issue 14; as root)"),
)
NAMES = tuple(name for name, _ in BENCHMARKS)


def load(name):
    """The module bench.<name>, or None when it does not exist (a missing dependency of an
    existing benchmark is an error, not a skip)."""
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as e:
        if e.name in (f"bench.{name}", "bench"):
            return None
        raise


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/run_all.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(NAMES)}")
    for name, what in BENCHMARKS:
        p.add_argument(f"--{name}-args", default="", metavar="OPTIONS",
                       help=f"options for bench/{name}.py ({what}), one quoted string")
    args = p.parse_args(argv)
    chosen = NAMES
    if args.only:
        chosen = tuple(n.strip() for n in args.only.split(",") if n.strip())
        unknown = [n for n in chosen if n not in NAMES]
        if unknown:
            p.error(f"unknown benchmark {unknown[0]!r} (known: {', '.join(NAMES)})")

    outcome = []
    for name in chosen:
        module = load(name)
        if module is None:
            print(f"== {name}: skipped (bench/{name}.py does not exist yet)\n", flush=True)
            outcome.append((name, "skipped"))
            continue
        options = shlex.split(getattr(args, f"{name}_args"))
        print(f"== {name}: bench/{name}.py {' '.join(options)}", flush=True)
        start = time.perf_counter()
        try:
            status = module.main(options)
        except SystemExit as e:          # argparse inside a benchmark
            status = e.code if isinstance(e.code, int) else 2
        except Exception:                # one broken benchmark does not stop the others
            traceback.print_exc()
            status = "failed"
        took = time.perf_counter() - start
        result = "ok" if not status else status if status == "failed" else f"exit {status}"
        outcome.append((name, result))
        print(f"== {name}: {result} in {took:.0f} s\n", flush=True)
    print("summary: " + ", ".join(f"{name} {result}" for name, result in outcome))
    return 1 if any(result not in ("ok", "skipped") for _, result in outcome) else 0


if __name__ == "__main__":
    sys.exit(main())
