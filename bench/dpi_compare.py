#!/usr/bin/env python3
"""Names and apps against nDPI, flow by flow, on captures NetTally was not developed against.
Issue 9's bar: of the flows nDPI names in tls, http, dns and quic, at least 95% have the same
`server_name` and the matching `app`, and at least 90% within each of the four.

  python bench/dpi_compare.py [CAPTURE_OR_DIR ...] [--engine-python PY] [--jobs N]
                              [--show N] [--json FILE] [--work DIR]

The engine is nDPI through NFStream (`pip install nfstream` in a virtualenv of its own: it is
not one of the project's packages), run by that virtualenv's interpreter (`--engine-python`,
default $NFSTREAM_PYTHON, else /tmp/venv-nfs/bin/python). Without it, or without a capture,
this prints why and returns 0 (skipped).

Per capture (a directory is walked for *.pcap, *.pcapng, *.cap):
1. NetTally: `run.py import CAPTURE --db FRESH.db` (imports are exactly-once: one fresh database
   per capture), then `run.py export flows --format json`.
2. nDPI: NFStreamer(source=CAPTURE, decode_tunnels=False): tunnels are not opened, as NetTally
   counts a tunnelled packet for the tunnel's endpoints (DESIGN.md). Per flow: 5-tuple,
   first and last packet time, `application_name` ("MASTER.APP", e.g. "TLS.YouTube"),
   `application_is_guessed`, `requested_server_name`.
3. Flows are matched by 5-tuple, order-free (nDPI's src is the first packet's sender, like
   NetTally's orig, but either side may be missed at a capture's start); where NetTally has
   several records of one 5-tuple (a port reused), the one active at nDPI's first packet.
4. An nDPI flow is *named* when it has a `requested_server_name` and is *in a family* when its
   master protocol is TLS, HTTP (also HTTP_Proxy, HTTP_Connect), DNS or QUIC. A named flow of
   a family *matches* when NetTally's record has `app` equal to the family and the same
   `server_name`, compared case-insensitively (DNS and HTTP names are case-free, and NetTally
   keeps an SNI's case as sent) and without a trailing dot; an HTTP
   name also without a ":port" (nDPI may keep it, NetTally's server_name is the host alone).
   A byte NetTally shows escaped (`\\xNN`: not printable ASCII) is compared as "?", which is how
   nDPI writes such a byte; nothing else is rewritten.

Printed: the table (named, matched, share per family and overall), the first --show mismatches,
flows named by nDPI outside the four families (listed, not counted), and flows of the families
where nDPI has no name but NetTally's app differs (listed, not counted).
"""
import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("tls", "http", "dns", "quic")
FAMILY_OF_MASTER = {"TLS": "tls", "HTTP": "http", "HTTP_Proxy": "http", "HTTP_Connect": "http",
                    "DNS": "dns", "QUIC": "quic"}
BAR_OVERALL, BAR_FAMILY = 0.95, 0.90
SUFFIXES = (".pcap", ".pcapng", ".cap")
DEFAULT_ENGINE = "/tmp/venv-nfs/bin/python"
DEFAULT_CORPUS = "/tmp/corpora/ndpi-src/nDPI-4.2/tests/pcap"     # bench/README.md: how to get it
TIMEOUT = 600

# Run by the engine's interpreter: one capture per process (a fuzzed capture that crashes the
# engine costs that capture only).
ENGINE_SCRIPT = r"""
import json, sys
from nfstream import NFStreamer
from _lib_engine import ffi, lib
if sys.argv[1] == "--version":
    import nfstream
    print(f"NFStream {nfstream.__version__}, nDPI {ffi.string(lib.engine_lib_ndpi_version()).decode()}")
    sys.exit(0)
out = []
for f in NFStreamer(source=sys.argv[1], decode_tunnels=False, statistical_analysis=False, n_meters=1):
    out.append([f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.protocol, f.bidirectional_first_seen_ms,
                f.bidirectional_last_seen_ms, f.application_name, f.application_is_guessed,
                f.requested_server_name or ""])
json.dump(out, sys.stdout)
"""


class EngineFlow(NamedTuple):
    key: tuple
    first: float
    last: float
    application: str     # nDPI's "MASTER.APP"
    guessed: int
    name: str


class Ours(NamedTuple):
    first: float
    last: float
    app: str
    app_source: str
    server_name: str


class Result(NamedTuple):
    capture: str
    named: Counter       # family -> flows nDPI names
    matched: Counter     # family -> of those, same server_name and app
    mismatches: list
    other_named: list    # nDPI names outside the four families (not counted)
    app_only: list       # a family without a name, NetTally's app differs (not counted)
    error: str


# ---- flow keys and names ----------------------------------------------------------------------

def _endpoint(addr, port):
    a = ipaddress.ip_address(addr)
    return a.version, a, port


def flow_key(proto, a, pa, b, pb):
    """Order-free key: (proto, lower endpoint, higher endpoint), addresses in canonical text."""
    lo, hi = sorted([_endpoint(a, pa), _endpoint(b, pb)])
    return proto, str(lo[1]), lo[2], str(hi[1]), hi[2]


_ESCAPED = re.compile(r"\\x[0-9a-f]{2}")


def normal_name(family, text, ours=False):
    text = (text or "").strip()
    if ours:
        text = _ESCAPED.sub("?", text).replace("\\\\", "\\")
    if family == "http":
        if text.startswith("["):
            close = text.find("]")
            text = text[1:close] if close > 0 else text[1:]
        elif text.count(":") == 1:
            text = text.split(":")[0]
    return text.rstrip(".").lower()


def master(application):
    return application.split(".", 1)[0] if application else ""


# ---- the two sides --------------------------------------------------------------------------

def engine_version(engine_python):
    done = subprocess.run([engine_python, "-c", ENGINE_SCRIPT, "--version"], capture_output=True, text=True,
                          timeout=120)
    return done.stdout.strip() if done.returncode == 0 else None


def engine_flows(engine_python, capture):
    done = subprocess.run([engine_python, "-c", ENGINE_SCRIPT, str(capture)], capture_output=True, text=True,
                          timeout=TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"nDPI exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}")
    flows = []
    for src, sport, dst, dport, proto, first, last, app, guessed, name in json.loads(done.stdout or "[]"):
        if proto not in (6, 17):
            continue
        flows.append(EngineFlow(flow_key(proto, src, sport, dst, dport), first / 1000, last / 1000, app,
                                guessed, name))
    return flows


def _epoch(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def nettally_flows(capture, db):
    """{order-free key: [Ours]}, and a note when the import stopped early (exit 3)."""
    run_py = [sys.executable, str(ROOT / "run.py")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETTALLY_")}
    done = subprocess.run(run_py + ["import", str(capture), "--db", str(db)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"import exit {done.returncode}: {done.stderr.strip()[-200:]}")
    note = "import stopped at damage (exit 3)" if done.returncode == 3 else ""
    out = subprocess.run(run_py + ["export", "flows", "--db", str(db), "--format", "json"], capture_output=True,
                         text=True, timeout=TIMEOUT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"export exit {out.returncode}: {out.stderr.strip()[-200:]}")
    got = defaultdict(list)
    for r in json.loads(out.stdout or "[]"):
        if r["proto"] not in ("tcp", "udp"):
            continue
        key = flow_key(6 if r["proto"] == "tcp" else 17, r["orig_h"], int(r["orig_p"]), r["resp_h"],
                       int(r["resp_p"]))
        got[key].append(Ours(_epoch(r["first_seen"]), _epoch(r["last_seen"]), r["app"] or "",
                             r["app_source"] or "", r["server_name"] or ""))
    return got, note


def record_at(records, ts):
    """The record active at `ts`: the latest to start at or before it (1 ms slack: nDPI's times
    are whole milliseconds), else the first."""
    started = [r for r in records if r.first <= ts + 0.001]
    return max(started, key=lambda r: r.first) if started else min(records, key=lambda r: r.first)


# ---- the comparison -------------------------------------------------------------------------

def _flow(key):
    proto, a, pa, b, pb = key
    return f"{'tcp' if proto == 6 else 'udp'} {a}:{pa}-{b}:{pb}"


def compare(capture, engine, ours, note=""):
    named, matched = Counter(), Counter()
    mismatches, other_named, app_only = [], [], []
    for e in engine:
        family = FAMILY_OF_MASTER.get(master(e.application), "")
        records = ours.get(e.key)
        rec = record_at(records, e.first) if records else None
        where = f"{capture} {_flow(e.key)}"
        if not e.name:
            if family and rec and rec.app != family and not e.guessed:
                app_only.append(f"{where}: nDPI {e.application} (no name), NetTally app={rec.app or '-'}"
                                f"/{rec.app_source or '-'}")
            continue
        if not family:
            other_named.append((e.application, f"{where}: nDPI {e.application} {e.name!r}, NetTally "
                                               + (f"{rec.app or '-'} {rec.server_name!r}" if rec else "no such flow")))
            continue
        named[family] += 1
        want = normal_name(family, e.name)
        if rec is not None and rec.app == family and normal_name(family, rec.server_name, ours=True) == want:
            matched[family] += 1
        else:
            ours_text = (f"app={rec.app or '-'}/{rec.app_source or '-'} server_name={rec.server_name!r}"
                         if rec else "no such flow")
            mismatches.append(f"{family} {where}: nDPI {e.application} {e.name!r}"
                              f"{' (guessed)' if e.guessed else ''}, NetTally {ours_text}")
    return Result(capture, named, matched, mismatches, other_named, app_only, note)


def run_one(capture, engine_python, work):
    try:
        engine = engine_flows(engine_python, capture)
    except Exception as e:                       # the engine failed on this file: it names nothing here
        return Result(capture.name, Counter(), Counter(), [], [], [], f"nDPI failed: {e}")
    db = Path(work) / (capture.name + ".db")
    try:
        ours, note = nettally_flows(capture, db)
    except Exception as e:
        ours, note = {}, f"NetTally failed: {e}"
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    return compare(capture.name, engine, ours, note)


def captures_of(paths):
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix in SUFFIXES and q.is_file())
        elif p.is_file():
            found.append(p)
    return found


# ---- report -----------------------------------------------------------------------------------

def share(m, n):
    return m / n if n else 1.0


def report(results, show, version):
    named, matched = Counter(), Counter()
    for r in results:
        named.update(r.named)
        matched.update(r.matched)
    lines = [f"engine: {version}; {len(results)} captures, "
             f"{sum(1 for r in results if sum(r.named.values()))} with flows nDPI names in the four families",
             "",
             f"{'family':<8} {'nDPI names':>10} {'same name+app':>14} {'share':>7}  bar"]
    for fam in FAMILIES:
        ok = share(matched[fam], named[fam]) >= BAR_FAMILY
        lines.append(f"{fam:<8} {named[fam]:>10} {matched[fam]:>14} {share(matched[fam], named[fam]):>7.1%}  "
                     f"{'>= 90% ok' if ok else '< 90% SHORT'}")
    n_all, m_all = sum(named[f] for f in FAMILIES), sum(matched[f] for f in FAMILIES)
    ok = share(m_all, n_all) >= BAR_OVERALL
    lines.append(f"{'overall':<8} {n_all:>10} {m_all:>14} {share(m_all, n_all):>7.1%}  "
                 f"{'>= 95% ok' if ok else '< 95% SHORT'}")
    mismatches = [m for r in results for m in r.mismatches]
    lines += ["", f"mismatches: {len(mismatches)}" + (f" (first {show})" if len(mismatches) > show else "")]
    lines += [f"  {m}" for m in mismatches[:show]]
    other = Counter(app for r in results for app, _ in r.other_named)
    lines += ["", "named by nDPI outside the four families (not counted): "
              + (", ".join(f"{a} {n}" for a, n in other.most_common()) or "none")]
    lines += [f"  {text}" for r in results for _, text in r.other_named][:show]
    app_only = [m for r in results for m in r.app_only]
    lines += ["", f"a family without a name in nDPI, another app in NetTally (not counted): {len(app_only)}"]
    lines += [f"  {m}" for m in app_only[:show]]
    notes = [f"  {r.capture}: {r.error}" for r in results if r.error]
    if notes:
        lines += ["", "notes:"] + notes
    return lines, named, matched


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/dpi_compare.py", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="captures or directories of captures "
                                            f"(default: $NETTALLY_DPI_CORPUS, else {DEFAULT_CORPUS})")
    p.add_argument("--engine-python", default=os.environ.get("NFSTREAM_PYTHON", DEFAULT_ENGINE),
                   help="a Python with nfstream installed (default: $NFSTREAM_PYTHON or %(default)s)")
    p.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--show", type=int, default=40, help="mismatches printed (default %(default)s)")
    p.add_argument("--json", help="write the per-capture results here")
    p.add_argument("--work", help="folder for the temporary databases (default: a new temporary one)")
    args = p.parse_args(argv)
    paths = args.paths or [os.environ.get("NETTALLY_DPI_CORPUS") or DEFAULT_CORPUS]
    captures = captures_of(paths)
    if not captures:
        print("dpi_compare: skipped: no capture given (a folder such as nDPI's tests/pcap; see bench/README.md)")
        return 0
    if not (shutil.which(args.engine_python) or Path(args.engine_python).exists()):
        print(f"dpi_compare: skipped: no engine: {args.engine_python} does not exist "
              "(python3 -m venv /tmp/venv-nfs && /tmp/venv-nfs/bin/pip install nfstream)")
        return 0
    version = engine_version(args.engine_python)
    if version is None:
        print(f"dpi_compare: skipped: {args.engine_python} cannot import nfstream")
        return 0
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda c: run_one(c, args.engine_python, work), captures))
    lines, named, matched = report(results, args.show, version)
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps([r._asdict() for r in results], indent=1, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
