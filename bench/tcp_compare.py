#!/usr/bin/env python3
"""TCP health against tshark, flow by flow (issue 13's accuracy figures).

  python bench/tcp_compare.py CAPTURE [CAPTURE ...] [--direct] [--show N] [--json FILE]
  python bench/tcp_compare.py --make DIR         (root) record captures of lossy traffic, then compare them

For each capture: `run.py import` into a fresh database, `run.py export flows --format csv`,
and tshark's analysis of the same file (`tcp.analysis.initial_rtt`, `.retransmission` (fast
and spurious included), `.out_of_order`, `.zero_window`, `tcp.flags.reset` per segment).
Flows are matched by their 5-tuple, order-free (a flow NetTally split at a timeout, or ports
tshark saw reused, are summed; the RTT is the first one measured). Only TCP directly in the
outermost IP header counts: NetTally does not open tunnels (DESIGN.md), and tshark does not
analyse IP fragments as segments of their own.

--make records, in a pair of network namespaces it creates (tests/netns.py), TCP transfers
through `tc netem` (delay, loss, reordering, duplication; a slow reader for zero windows) with
tcpdump on one side, one capture per setting, and compares those.

--direct feeds the decoder and capture/tcp_health.py straight from the file, without the flow
table and storage: the analyzer alone, to tell its differences from the pipeline's.

Prints, over all captures and per capture, the three figures of issue 13:
  rtt     share of flows with a tshark initial_rtt whose rtt_ms is within max(0.05 ms, 1%)
  retx    share of TCP flows with exactly tshark's retransmission count
  total   NetTally's total retransmissions / tshark's (target within 5%)
and the same exact-count share for out-of-order segments, zero windows and resets.
"""
import argparse
import csv
import io
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from records import ip_text  # noqa: E402  (needs ROOT on sys.path)

COUNTS = ("retransmits", "out_of_order", "zero_windows", "resets")
_FIELDS = ["frame.protocols", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
           "tcp.analysis.initial_rtt", "tcp.analysis.retransmission", "tcp.analysis.out_of_order",
           "tcp.analysis.zero_window", "tcp.flags.reset"]


def _key(a, ap, b, bp):
    return (a, ap, b, bp) if (a, ap) <= (b, bp) else (b, bp, a, ap)


def _new():
    return {"rtt_ms": None, **{c: 0 for c in COUNTS}}


def _outer_tcp(protocols):
    """True when TCP is the transport of the frame's outermost IP header."""
    seen_ip = False
    for name in protocols.split(":"):
        if seen_ip:
            if name.startswith("ipv6."):      # extension headers
                continue
            return name == "tcp"
        seen_ip = name in ("ip", "ipv6")
    return False


def tshark_flows(path):
    cmd = ["tshark", "-r", str(path), "-n", "-Y", "tcp", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in _FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    flows = defaultdict(_new)
    for line in out.splitlines():
        v = line.split("\t")
        if len(v) < len(_FIELDS) or not _outer_tcp(v[0]):
            continue
        src, dst = v[1] or v[2], v[4] or v[5]
        if not src or not dst or not v[3] or not v[6]:
            continue
        src, dst = ip_text(ipaddress.ip_address(src).packed), ip_text(ipaddress.ip_address(dst).packed)
        f = flows[_key(src, int(v[3]), dst, int(v[6]))]
        if v[7] and f["rtt_ms"] is None:
            f["rtt_ms"] = float(v[7]) * 1000.0
        f["retransmits"] += v[8] == "1"
        f["out_of_order"] += v[9] == "1"
        f["zero_windows"] += v[10] == "1"
        f["resets"] += v[11] in ("1", "True")
    return flows


def nettally_flows(path, workdir):
    """`run.py import` then `run.py export flows`: the TCP flows' health columns by 5-tuple."""
    db = Path(workdir) / "compare.db"
    if db.exists():
        db.unlink()
    env = dict(os.environ, NETTALLY_NAMES="false")
    run = [sys.executable, str(ROOT / "run.py")]
    imp = subprocess.run(run + ["import", str(path), "--db", str(db)], capture_output=True, text=True, env=env)
    if imp.returncode not in (0, 3):
        raise SystemExit(f"import of {path} failed ({imp.returncode}): {imp.stderr.strip()}")
    exp = subprocess.run(run + ["export", "flows", "--db", str(db), "--format", "csv"], capture_output=True,
                         text=True, env=env, check=True)
    flows = defaultdict(_new)
    rows = sorted(csv.DictReader(io.StringIO(exp.stdout)), key=lambda r: r["first_seen"])   # ISO 8601 UTC
    for row in rows:
        if row["proto"] != "tcp":
            continue
        f = flows[_key(row["orig_h"], int(row["orig_p"]), row["resp_h"], int(row["resp_p"]))]
        if row["rtt_ms"] and f["rtt_ms"] is None:
            f["rtt_ms"] = float(row["rtt_ms"])
        for c in COUNTS:
            f[c] += int(row[c] or 0)
    return flows


def direct_flows(path):
    """The decoder and the analyzer alone, straight from the file."""
    from capture import tcp_health
    from capture.capfile import CaptureFile
    from capture.decode import decode
    cap = CaptureFile(str(path))
    halves, flows = {}, {}
    for index, frames in cap.batches():
        linktype = cap.interfaces[index].linktype
        for ts, _n, data, _out in frames:
            pkt = decode(linktype, data)
            if not hasattr(pkt, "tcp") or pkt.proto != 6 or pkt.tcp is None:
                continue
            a, b = ip_text(pkt.src), ip_text(pkt.dst)
            h = halves.get((a, pkt.sport, b, pkt.dport))
            if h is None:
                first, second = tcp_health.pair()
                halves[(a, pkt.sport, b, pkt.dport)] = first
                halves[(b, pkt.dport, a, pkt.sport)] = second
                flows[_key(a, pkt.sport, b, pkt.dport)] = (first, second)
                h = first
            seq, ack, win, seglen = pkt.tcp
            tcp_health.see(h, ts, pkt.tcp_flags, seq, ack, win, seglen)
    cap.close()
    out = {}
    for key, (first, _) in flows.items():
        _, retx, ooo, zw, rst = tcp_health.take(*first)
        out[key] = {"rtt_ms": tcp_health.rtts(*first)[0], "retransmits": retx, "out_of_order": ooo,
                    "zero_windows": zw, "resets": rst}
    return out


NETEM = {    # capture name -> (impairment of frames from namespace 0 to 1, from 1 to 0): tests/tcp_link.py
    "delay40_loss2": ("loss=0.02,seed=1", "delay=0.04,loss=0.02,seed=2"),
    "reorder": ("delay=0.005,jitter=0.004,seed=3", "delay=0.01,reorder=0.25,seed=4"),
    "loss5_duplicate": ("delay=0.002,loss=0.05,duplicate=0.03,seed=5", "delay=0.002,loss=0.05,duplicate=0.03,seed=6"),
    "jitter_loss": ("delay=0.02,jitter=0.01,loss=0.01,seed=7", "delay=0.02,jitter=0.01,loss=0.01,seed=8"),
    "slow_reader": ("", "delay=0.005"),
}
_PEER = r"""
import socket, sys, time
role, host, conns, size, slow = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
if role == "server":
    srv = socket.socket(fam)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if slow:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind((host, 5001)); srv.listen(64); srv.settimeout(60)
    print("ready", flush=True)
    for _ in range(conns):
        c, _ = srv.accept(); c.settimeout(60)
        got = 0
        while got < size:
            b = c.recv(65536 if not slow else 512)
            if not b:
                break
            got += len(b)
            if slow:
                time.sleep(0.002)
        c.sendall(b"y" * (size // 4))
        c.close()
else:
    for _ in range(conns):
        c = socket.create_connection((host, 5001), timeout=60)
        c.sendall(b"x" * size)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
        c.close()
"""


def make_captures(outdir, connections=12, size=300_000, which=tuple(NETEM)):
    """Records one capture per NETEM setting in a fresh pair of namespaces (tcpdump in namespace
    0, the client's; the server in 1 reads slowly for `slow_reader`)."""
    from tests.tcp_link import emulated_link
    if os.geteuid() != 0:
        raise SystemExit("--make: needs root (network namespaces)")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    for name in which:
        ab, ba = NETEM[name]
        with emulated_link("tc", ab=ab, ba=ba) as link:
            path = outdir / f"{name}.pcap"
            dump = subprocess.Popen(link.cmd(0, ["tcpdump", "-i", link.ifname[0], "-U", "-w", str(path), "tcp"]),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dump.stderr.readline()                      # "listening on ...": capturing from here
            slow = "1" if name == "slow_reader" else "0"
            server = subprocess.Popen(link.cmd(1, [sys.executable, "-c", _PEER, "server", link.ipv4[1],
                                                   str(connections), str(size), slow]), stdout=subprocess.PIPE, text=True)
            server.stdout.readline()
            subprocess.run(link.cmd(0, [sys.executable, "-c", _PEER, "client", link.ipv4[1], str(connections),
                                        str(size), slow]), check=True, timeout=600)
            server.wait(timeout=120)
            dump.terminate()
            dump.wait(timeout=30)
        made.append(path)
        print(f"recorded {path}", file=sys.stderr)
    return made


def compare(ours, theirs):
    """The figures for one set of flows, and the flows that differ."""
    keys = set(theirs)
    rtt_flows = [k for k in keys if theirs[k]["rtt_ms"] is not None]
    rtt_ok = 0
    differ = []
    for k in sorted(keys):
        mine, ref = ours.get(k, _new()), theirs[k]
        bad = []
        if ref["rtt_ms"] is not None:
            if mine["rtt_ms"] is not None and abs(mine["rtt_ms"] - ref["rtt_ms"]) <= max(0.05, ref["rtt_ms"] * 0.01):
                rtt_ok += 1
            else:
                bad.append(f"rtt {mine['rtt_ms']} vs {ref['rtt_ms']:.3f}")
        for c in COUNTS:
            if mine[c] != ref[c]:
                bad.append(f"{c} {mine[c]} vs {ref[c]}")
        if bad:
            differ.append((k, bad))
    fig = {"tcp_flows": len(keys), "handshake_flows": len(rtt_flows), "rtt_within": rtt_ok,
           "tshark_retransmits": sum(theirs[k]["retransmits"] for k in keys),
           "nettally_retransmits": sum(ours.get(k, _new())["retransmits"] for k in keys),
           "only_nettally": len(set(ours) - keys)}
    for c in COUNTS:
        fig[c + "_exact"] = sum(ours.get(k, _new())[c] == theirs[k][c] for k in keys)
    return fig, differ


def _share(x, d):
    return f"{100.0 * x / d:6.2f}%" if d else "     -"


def _line(name, fig):
    n, h = fig["tcp_flows"], fig["handshake_flows"]
    total = (fig["nettally_retransmits"] / fig["tshark_retransmits"]) if fig["tshark_retransmits"] else None
    return (f"{name:40.40} flows {n:6d}  rtt {_share(fig['rtt_within'], h)} of {h:5d}  "
            f"retx exact {_share(fig['retransmits_exact'], n)}  total {fig['nettally_retransmits']}/"
            f"{fig['tshark_retransmits']}" + (f" ({total:.4f})" if total is not None else "")
            + f"  ooo {_share(fig['out_of_order_exact'], n)} zwin {_share(fig['zero_windows_exact'], n)}"
            f" rst {_share(fig['resets_exact'], n)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captures", nargs="*")
    ap.add_argument("--make", metavar="DIR", help="record lossy captures into DIR (root), then compare them too")
    ap.add_argument("--direct", action="store_true", help="the analyzer alone, without import and export")
    ap.add_argument("--show", type=int, default=0, help="list up to N differing flows per capture")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if args.make:
        args.captures += [str(p) for p in make_captures(args.make)]
    if not args.captures:
        ap.error("no capture to compare")
    total = None
    report = {}
    with tempfile.TemporaryDirectory(prefix="tcpcmp") as work:
        for path in args.captures:
            theirs = tshark_flows(path)
            ours = direct_flows(path) if args.direct else nettally_flows(path, work)
            fig, differ = compare(ours, theirs)
            report[str(path)] = fig
            print(_line(Path(path).name, fig))
            for k, bad in differ[:args.show]:
                print("   ", k, "; ".join(bad))
            total = fig if total is None else {k: total[k] + fig[k] for k in fig}
    if total is not None and len(args.captures) > 1:
        print(_line("ALL", total))
    report["ALL"] = total
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    ok = total and (not total["handshake_flows"] or total["rtt_within"] >= 0.99 * total["handshake_flows"]) \
        and (not total["tcp_flows"] or total["retransmits_exact"] >= 0.95 * total["tcp_flows"]) \
        and abs(total["nettally_retransmits"] - total["tshark_retransmits"]) <= 0.05 * total["tshark_retransmits"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
