#!/usr/bin/env python3
"""What naming costs `run.py import`: names on (the default) against NETTALLY_NAMES=false on the
same file, and where the time goes. Issue 9's target: names on runs at no less than 0.9x the
speed of names off on the benchmark's 1M-packet capture.

  python bench/names.py [-n PACKETS] [--repeat R] [--wait-quiet SECONDS] [--dir DIR]
                        [--profile N] [--top K] [--json FILE]

1. The capture of bench/offline.py (bench/gen_capture.py, reused while its parameters match).
2. `python run.py import FILE --db fresh.db`, names on and names off *alternately* (on, off, on,
   off, ...), so a busy moment of a shared machine falls on both; wall time from this process
   (bench/offline.py's run_timed). The ratio is names-on speed over names-off speed (best off
   time / best on time), from the best run of each and from the medians.
3. Each import is checked against the generator (bench/offline.py's check_import); names off
   must have no flow named from its payload (`run.py export flows`: app_source dpi, server_name).
   The generator's payloads are zeros: names on reads each flow's first payloads (8, or 64 on
   DNS/mDNS/DHCP/NBNS ports), finds nothing and gives up, which is the reading's full cost per flow.
4. Start-up and exit with each (a 10-packet file, best of 5): the rule tables' load.
5. --profile N: the importing process under cProfile (`python -m cProfile run.py import`) on an
   N-packet file of the same generator, names on and off. Printed: the functions only naming
   runs (capture/peek.py and the extractors it calls, names/), their share of the names-on
   profile, and the functions whose own time grew most. cProfile's overhead is per call, so it
   overstates many small calls (the extractors) against one long loop (FlowTable.ingest): read the
   shares as an order, the wall-time ratio of step 2 as the figure.
"""
import argparse
import csv
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gen_capture  # noqa: E402  (needs ROOT on sys.path)
from bench.offline import check_import, run_timed, wait_quiet  # noqa: E402

MODES = {"on": {}, "off": {"NETTALLY_NAMES": "false"}}
TARGET = 0.9
# what runs only when names are on: the payload readers and the collector's naming step
NAMING_FILES = ("capture/peek.py", "capture/signatures.py", "capture/tls.py", "capture/quic.py", "capture/dns.py",
                "capture/http.py", "capture/dhcp.py", "names/")
NAMING_FUNCS = (("capture/flows.py", "_peek"), ("capture/flows.py", "_end_peek"), ("capture/flows.py", "_learn"))
# where naming enters the import, and the steps around it that do more with names on (cumulative time)
ENTRY_POINTS = (("capture/flows.py", "ingest"), ("capture/flows.py", "_peek"), ("capture/flows.py", "_end_peek"),
                ("capture/flows.py", "drain"), ("names/label.py", "label"), ("collector/import_writer.py", "submit"),
                ("alerts/service.py", "evaluate_import"), ("storage/tiers.py", "build_pending"))


def _env(mode):
    """This process's environment without any NETTALLY_* of the caller, plus the mode's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETTALLY_")}
    env.update(MODES[mode])
    return env


def _fresh(db):
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if p.exists():
            p.unlink()


def import_cmd(capture, db):
    return [sys.executable, str(ROOT / "run.py"), "import", str(capture), "--db", str(db)]


def labelled_flows(db):
    """(flow rows, rows with an app, rows whose app was read from the payload or that have a
    server name) of `run.py export flows`."""
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "export", "flows", "--db", str(db)],
                         capture_output=True, text=True, check=True, env=_env("on"), cwd=ROOT).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    return (len(rows), sum(1 for r in rows if r["app"]),
            sum(1 for r in rows if r["app_source"] == "dpi" or r["server_name"]))


def compare(capture, stats, workdir, repeat, quiet):
    """Alternate names on / off; returns {mode: [runs]} or None on a failed or wrong import."""
    runs = {"on": [], "off": []}
    for i in range(repeat):
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            if quiet:
                wait_quiet(quiet)
            db = workdir / f"names-{mode}.db"
            _fresh(db)
            run = run_timed(import_cmd(capture, db), workdir / f"names-{mode}.out", env=_env(mode))
            if run["status"] != 0:
                print(f"  names {mode}: exit {run['status']} (see {workdir / f'names-{mode}.out'})", file=sys.stderr)
                return None
            runs[mode].append(run)
            print(f"  names {mode:>3}: {run['wall']:.2f} s wall, {run['cpu']:.2f} s CPU, {run['maxrss_mb']:.0f} MB"
                  + (f", others {run['others']:.0%}" if run["others"] is not None else ""), flush=True)
            if i == 0:
                wrong = check_import(db, stats)
                rows, apps, read = labelled_flows(db)
                if mode == "off" and read:
                    wrong.append(f"names off: {read} of {rows} flow rows were named from their payload")
                if wrong:
                    print(f"names {mode}: import WRONG:\n  " + "\n  ".join(wrong), file=sys.stderr)
                    return None
                print(f"  names {mode}: totals match the generator; of {rows:,} flow rows {apps:,} have an app, "
                      f"{read:,} read from the payload (the capture's payloads are zeros: mostly port guesses)")
    return runs


def startup(workdir):
    tiny = workdir / "tiny.pcap"
    gen_capture.generate(str(tiny), packets=10, flows=2, seconds=1.0)
    best = {}
    for mode in MODES:
        walls = []
        for _ in range(5):
            db = workdir / "tiny.db"
            _fresh(db)
            walls.append(run_timed(import_cmd(tiny, db), env=_env(mode))["wall"])
        _fresh(workdir / "tiny.db")
        best[mode] = min(walls)
    return best


def _where(key):
    path, line, func = key
    try:
        path = str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        pass
    return path, func


def _is_naming(key):
    path, func = _where(key)
    return path.startswith(NAMING_FILES) or (path, func) in NAMING_FUNCS


def profile(packets, workdir, top):
    """cProfile of the importing process, names on and off; printed lines and a summary dict."""
    capture = workdir / f"offline-{packets}.pcap"
    if gen_capture.cached(str(capture), packets) is None:
        gen_capture.generate(str(capture), packets)
    own, cum = {}, {}
    totals = {}
    for mode in MODES:
        db, out = workdir / f"profile-{mode}.db", workdir / f"profile-{mode}.prof"
        _fresh(db)
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), *import_cmd(capture, db)[1:]],
                       check=True, env=_env(mode), cwd=ROOT, stdout=subprocess.DEVNULL)
        stats = pstats.Stats(str(out)).stats
        own[mode] = {k: v[2] for k, v in stats.items()}          # tottime: the function's own time
        cum[mode] = {_where(k): v[3] for k, v in stats.items()}  # cumtime: with what it calls
        totals[mode] = sum(own[mode].values())
    on, off = own["on"], own["off"]
    naming = sorted(((t, k) for k, t in on.items() if _is_naming(k)), reverse=True)
    naming_total = sum(t for t, _ in naming)
    lines = [f"cProfile of the importing process, {packets:,} packets: names on {totals['on']:.2f} s, "
             f"off {totals['off']:.2f} s (profiled time; the reader and writer processes are not in it)",
             "entry points, cumulative s:      on      off   on-off  share of on"]
    for where in ENTRY_POINTS:
        c_on, c_off = cum["on"].get(where, 0.0), cum["off"].get(where, 0.0)
        lines.append(f"  {':'.join(where):<36} {c_on:6.3f}  {c_off:6.3f}  {c_on - c_off:+6.3f}  "
                     f"{c_on / totals['on']:6.1%}")
    lines += [f"functions only naming runs: {naming_total:.2f} s = {naming_total / totals['on']:.1%} of names on",
             "  own s   share of on   function"]
    lines += [f"  {t:6.3f}  {t / totals['on']:6.1%}       {':'.join(_where(k))}" for t, k in naming[:top]]
    grew = sorted(((on.get(k, 0) - off.get(k, 0), k) for k in on if not _is_naming(k)), reverse=True)
    lines.append("other functions whose own time grew most with names on (s, on - off):")
    lines += [f"  {d:+6.3f}  {':'.join(_where(k))} (on {on[k]:.3f}, off {off.get(k, 0):.3f})"
              for d, k in grew[:top] if d > 0.001]
    summary = {"packets": packets, "profiled_on_s": totals["on"], "profiled_off_s": totals["off"],
               "entry_points": {":".join(w): [cum["on"].get(w, 0.0), cum["off"].get(w, 0.0)] for w in ENTRY_POINTS},
               "naming_s": naming_total,
               "naming": [{"function": ":".join(_where(k)), "own_s": t, "share_of_on": t / totals["on"]}
                          for t, k in naming[:top]]}
    return lines, summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/names.py", description="run.py import, names on against names off.")
    p.add_argument("-n", "--packets", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3, help="runs per mode (default 3)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="before each run, wait up to this long for the machine to be idle (shared machines)")
    p.add_argument("--dir", help="where the captures and databases go (default: /tmp/nettally-bench, reused)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also profile an N-packet import (e.g. 200000)")
    p.add_argument("--top", type=int, default=15, help="functions listed per profile table")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)

    capture, stats, _ = gen_capture.bench_capture(args.dir, args.packets)
    workdir = capture.parent
    print(f"capture: {capture}: {stats['frames']:,} frames, {stats['flows']:,} flows; {os.cpu_count()} CPUs")
    runs = compare(capture, stats, workdir, args.repeat, args.wait_quiet)
    if runs is None:
        return 1
    best = {m: min(r["wall"] for r in runs[m]) for m in MODES}
    median = {m: statistics.median(r["wall"] for r in runs[m]) for m in MODES}
    ratio, ratio_median = best["off"] / best["on"], median["off"] / median["on"]
    start = startup(workdir)
    print()
    print("| names | best wall s | median wall s | packets/s (best) | CPU s (best run) | peak RSS MB | start-up ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in MODES:
        b = min(runs[m], key=lambda r: r["wall"])
        print(f"| {m} | {best[m]:.2f} | {median[m]:.2f} | {args.packets / best[m]:,.0f} | {b['cpu']:.2f} "
              f"| {max(r['maxrss_mb'] for r in runs[m]):.0f} | {start[m] * 1000:.0f} |")
    print(f"\nnames on / names off speed: {ratio:.2f} (best), {ratio_median:.2f} (median); target {TARGET}: "
          f"{'met' if ratio >= TARGET else 'missed'}")
    disturbed = max(r["others"] or 0 for m in MODES for r in runs[m])
    if disturbed > 0.2:
        print(f"note: other processes used up to {disturbed:.0%} of the machine during these runs")
    result = {"packets": args.packets, "runs": runs, "best": best, "median": median, "ratio": ratio,
              "ratio_median": ratio_median, "startup_s": start}
    if args.profile:
        lines, result["profile"] = profile(args.profile, workdir, args.top)
        print()
        print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
