#!/usr/bin/env python3
"""Per-packet cost of the flow table's per-second points (issue 11): FlowTable.ingest over the
same synthetic Ethernet/IPv4/UDP frames with per_second off (imports) and on (live), best of
--repeat runs, in ns per frame. Run it from a checkout: `python bench/per_second.py`."""
import argparse
import os
import struct
import sys
import time

sys.path.insert(0, os.getcwd())
from capture.flows import FlowTable  # noqa: E402


def frame(i):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0, 64, 17, 0, b"\x0a\x00\x00\x01", bytes([10, 1, i >> 8 & 255, i & 255]))
    return b"\x00" * 12 + b"\x08\x00" + ip + struct.pack("!HHHH", 40000, 53, 26, 0) + b"x" * 18


def frames(n, flows, pps):
    datas = [frame(i) for i in range(flows)]
    t0 = 1_700_000_040.0
    return [(t0 + k / pps, 60, datas[k % flows], False) for k in range(n)]


def run(batch, per_second, repeat):
    kwargs = {"per_second": per_second} if per_second is not None else {}
    best = float("inf")
    for _ in range(repeat):
        table = FlowTable(read_payload=False, **kwargs)
        start = time.process_time()
        for k in range(0, len(batch), 4096):
            table.ingest("eth0", 1, batch[k:k + 4096])
            if per_second:
                table.take_seconds()
        best = min(best, time.process_time() - start)
    return best / len(batch) * 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for flows in (1, 1000, 50_000):
        batch = frames(args.frames, flows, 300_000)
        cells = []
        for ps in ((None,) if "per_second" not in FlowTable.__init__.__code__.co_varnames else (False, True)):
            cells.append(f"per_second={ps}: {run(batch, ps, args.repeat):.0f} ns/frame")
        print(f"{flows:>6} flows, 300k frames/s of packet time: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
