#!/usr/bin/env python3
"""Live capture throughput on lo (root, Linux): the highest rate at which `run.py -i lo` counts
every packet a bounded C sender on the same machine sends.

For each rate: start `run.py --no-web -i lo -f "udp port P"`, wait for its start line, send COUNT
small UDP datagrams to 127.0.0.1:P at that rate (bench/sender.c, compiled here with gcc;
with --inject the same frames are written onto lo through a packet socket, which costs the
sender less than the UDP socket path),
SIGTERM run.py, then compare what it counted (exported flows, its exit line's kernel drop count)
with what was sent. Also reports the capture process's CPU time per packet (from /proc), which
says how far above the achieved rate it could go on a free core. With two or more CPUs the sender
is pinned to the first and run.py to the others (--no-pin to share them).

    sudo .venv/bin/python bench/live.py [--rates 100000,200000,300000,400000,1000000] [--seconds 5] [--capture-backend pcap]
                                        [--senders N] [--inject] [--no-pin] [--names on|off|both]

--names: run.py with names on (the default: the flow table reads each flow's first payloads),
off (NETTALLY_NAMES=false), or both, off and on at each rate (issue 9: lossless at 300k
packets/s on lo with names on).
"""
import argparse
import csv
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 40001
PAYLOAD = 18          # 60-byte frames: 14 Ethernet + 20 IPv4 + 8 UDP + 18


def build_sender(workdir):
    exe = Path(workdir) / "sender"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "bench" / "sender.c")], check=True)
    return exe


def wait_for_line(proc, pattern, timeout):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if pattern in line:
            return seen
    raise RuntimeError(f"run.py did not print {pattern!r}: {''.join(seen)}")


def capture_pid(parent):
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(children[0])


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counted_packets(db, senders):
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "export", "flows", "--db", db],
                         capture_output=True, text=True, check=True).stdout
    ports = {str(PORT + i) for i in range(senders)}
    return sum(int(r["orig_packets"]) + int(r["resp_packets"])
               for r in csv.DictReader(io.StringIO(out)) if r["resp_p"] in ports)


def _pin(cpus):
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def names_env(names):
    """This process's environment without the caller's NETTALLY_* settings, names on or off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETTALLY_")}
    if names == "off":
        env["NETTALLY_NAMES"] = "false"
    return env


def one_run(sender, rate, count, workdir, senders=1, sender_cpus=None, capture_cpus=None, inject=False,
            names="on", backend="ring"):
    """One capture run with `senders` sender processes sharing `rate` and `count`."""
    db = os.path.join(workdir, f"live-{rate}-{senders}-{names}.db")
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--no-web", "-i", "lo",
                             "-f", f"udp portrange {PORT}-{PORT + senders - 1}", "--db", db,
                             "--capture-backend", backend],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            preexec_fn=_pin(capture_cpus), env=names_env(names))
    try:
        wait_for_line(proc, "capturing on", 30)
        child = capture_pid(proc.pid)
        cpu0 = cpu_seconds(child)
        started = time.monotonic()
        runs = [subprocess.Popen([str(sender), str(PORT + i), str(rate / senders), str(count // senders),
                                  str(PAYLOAD)] + (["inject"] if inject else []),
                                 stdout=subprocess.PIPE, text=True, preexec_fn=_pin(sender_cpus))
                for i in range(senders)]
        outs = [r.communicate(timeout=600)[0] for r in runs]
        elapsed = time.monotonic() - started
        assert all(r.returncode == 0 for r in runs), outs
        sent = sum(int(re.match(r"sent (\d+) in", out).group(1)) for out in outs)
        # the ring hands over a partly filled block after its 50 ms timer; the CPU figure
        # should include that last block, so read it once the capture has caught up
        time.sleep(0.3)
        cpu = cpu_seconds(child) - cpu0
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stopped = re.search(r"stopped: (\d+) frames counted, (\d+) dropped", rest)
    frames, drops = (int(x) for x in stopped.groups())
    return {"names": names, "rate": rate, "sent": sent, "achieved": sent / elapsed, "counted": counted_packets(db, senders),
            "frames": frames, "drops": drops, "cpu_us": cpu / sent * 1e6, "status": proc.returncode}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/live.py", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="100000,200000,300000,400000,1000000",
                    help="nominal sender rates, packets/s (comma separated)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each run at its nominal rate")
    ap.add_argument("--senders", type=int, default=1,
                    help="sender processes sharing the rate (each on its own port); more than one is not pinned")
    ap.add_argument("--inject", action="store_true",
                    help="write the frames onto lo through a packet socket (cheaper to send than UDP sockets)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the sender to CPU 0 and run.py to the other CPUs")
    ap.add_argument("--names", choices=("on", "off", "both"), default="on",
                    help="run.py with names on (default), off (NETTALLY_NAMES=false), or both at each rate")
    ap.add_argument("--capture-backend", choices=("ring", "pcap"), default="ring",
                    help="run.py's capture backend: the kernel ring (default) or libpcap (issue 15)")
    args = ap.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    # The sender's CPU also runs the kernel's whole loopback path (transmit, receive, the copy
    # into our ring): on a shared core the sender, not the capture, sets the ceiling.
    pin = len(cpus) > 1 and args.senders == 1 and not args.no_pin
    sender_cpus, capture_cpus = ({cpus[0]}, set(cpus[1:])) if pin else (None, None)
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        print("bench/live.py: needs root on Linux (capturing on lo)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="nettally-bench-") as workdir:
        sender = build_sender(workdir)
        runs = [(int(r), names) for r in args.rates.split(",")
                for names in (("off", "on") if args.names == "both" else (args.names,))]
        for rate, names in runs:
            row = one_run(sender, rate, int(rate * args.seconds) // args.senders * args.senders, workdir,
                          args.senders, sender_cpus, capture_cpus, args.inject, names, args.capture_backend)
            rows.append(row)
            print(f"names {names:>3}, rate {row['rate']:>8}/s: sent {row['sent']} at {row['achieved']:,.0f}/s, counted "
                  f"{row['counted']} (exit line {row['frames']}), kernel drops {row['drops']}, capture "
                  f"CPU {row['cpu_us']:.2f} us/packet, exit {row['status']}", flush=True)
    print()
    print("| names | nominal rate (pkt/s) | achieved (pkt/s) | sent | counted | kernel drops | capture CPU (µs/pkt) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['names']} | {r['rate']:,} | {r['achieved']:,.0f} | {r['sent']:,} | {r['counted']:,} | {r['drops']} "
              f"| {r['cpu_us']:.2f} |")
    for names in sorted({r["names"] for r in rows}):
        lossless = [r for r in rows if r["names"] == names and r["counted"] == r["sent"] and r["drops"] == 0]
        if lossless:
            best = max(lossless, key=lambda r: r["achieved"])
            print(f"\n{args.capture_backend}, names {names}: highest lossless achieved rate: "
                  f"{best['achieved']:,.0f} packets/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
