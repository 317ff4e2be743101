#!/usr/bin/env python3
"""Writes a synthetic, deterministic pcap for the offline benchmark, and its known totals.

  python bench/gen_capture.py OUT.pcap [-n PACKETS] [--flows N] [--seconds S] [--seed N]

Frames are built with `struct` (no scapy per packet: a million scapy packets take minutes).
The traffic is a mix: IPv4 and IPv6, TCP and UDP, some flows 802.1Q VLAN-tagged, a little ARP
(non-IP, so "IP bytes" differs from "all bytes"), heavy-tailed flow sizes (few flows carry most
packets, as on real links), frame sizes from 60 to 1514 (1518 tagged) with the usual ACK-sized
and full-MTU peaks, and timestamps increasing over a few minutes (several one-minute buckets).
Every TCP flow opens with a SYN from its originator, so orientation is known.

The totals the generator knows (frames, bytes, IP frames, IP bytes) are returned by `generate`
and written next to the file as OUT.pcap.json; bench/offline.py checks the import against them.
"""
import argparse
import json
import os
import random
import struct
import sys
import time

START = 1_700_000_000          # epoch of the first packet (2023-11-14)
SNAPLEN = 262144
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1)   # microseconds, Ethernet
_RECORD = struct.Struct("<IIII").pack
_IPV4 = struct.Struct("!BBHHHBBH4s4s").pack
_IPV6 = struct.Struct("!IHBB16s16s").pack
_TCP = struct.Struct("!HHIIBBHHH").pack
_UDP = struct.Struct("!HHHH").pack
_ZEROS = bytes(1600)
_ARP = (b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06"
        + bytes.fromhex("0001080006040001") + b"\x02\x00\x00\x00\x00\x01" + bytes([10, 0, 0, 1])
        + bytes(6) + bytes([10, 0, 0, 2]) + bytes(18))        # 60-byte who-has, padded
_TCP_SYN, _TCP_ACK, _TCP_PSH_ACK = 0x02, 0x10, 0x18
ARP_SHARE = 0.005


class Flow:
    __slots__ = ("v6", "proto", "vlan", "a", "b", "ap", "bp", "l2", "started", "seq")

    def __init__(self, v6, proto, vlan, a, b, ap, bp):
        self.v6, self.proto, self.vlan = v6, proto, vlan
        self.a, self.b, self.ap, self.bp = a, b, ap, bp
        self.started = False
        self.seq = [1000, 5000]       # next TCP sequence number per direction (argus and tshark track them)
        tag = struct.pack("!HH", 0x8100, vlan) if vlan else b""
        etype = b"\x86\xdd" if v6 else b"\x08\x00"
        mac_a, mac_b = b"\x02\x00" + a[-4:], b"\x02\x01" + b[-4:]
        # Ethernet header per direction (0: a -> b, 1: b -> a)
        self.l2 = (mac_b + mac_a + tag + etype, mac_a + mac_b + tag + etype)


def _make_flows(rng, count):
    local4 = [bytes([10, 0, i // 250, i % 250 + 1]) for i in range(400)]
    local6 = [bytes.fromhex("20010db8000100000000000000000000")[:12] + struct.pack("!I", i + 1) for i in range(100)]
    flows, seen = [], set()
    while len(flows) < count:
        v6 = rng.random() < 0.25
        proto = 6 if rng.random() < 0.7 else 17
        vlan = rng.randrange(2, 4000) if rng.random() < 0.1 else 0
        if v6:
            a = rng.choice(local6)
            b = bytes.fromhex("20010db800ff") + rng.randbytes(10)
        else:
            a = rng.choice(local4)
            b = bytes([rng.randrange(11, 224)]) + rng.randbytes(3)
            if b[0] == 127:
                continue
        ap = rng.randrange(32768, 61000)
        bp = rng.choice((443, 443, 443, 80, 53, 22, 8080, 993, 5222, 3478))
        if rng.random() < 0.3:         # some flows opened from outside (server side is local)
            a, b, ap, bp = b, a, bp, ap
        key = (proto, a, ap, b, bp)
        if key in seen:
            continue
        seen.add(key)
        flows.append(Flow(v6, proto, vlan, a, b, ap, bp))
    return flows


def _frame_size(rng):
    """Wire length before any VLAN tag: ACK-sized, full MTU, or anything between."""
    x = rng.random()
    if x < 0.40:
        return 60 + int(rng.random() * 30)
    if x < 0.75:
        return 1514
    return 60 + int(rng.random() * 1455)


def _frame(flow, direction, size, rng):
    """One Ethernet frame of `size` bytes (+4 when tagged) for a packet of `flow`."""
    l2 = flow.l2[direction]
    src, dst = (flow.a, flow.b) if direction == 0 else (flow.b, flow.a)
    sport, dport = (flow.ap, flow.bp) if direction == 0 else (flow.bp, flow.ap)
    ip_header = 40 if flow.v6 else 20
    l4_header = 20 if flow.proto == 6 else 8
    payload = max(0, size - 14 - ip_header - l4_header)
    if flow.proto == 6:
        if not flow.started:
            flags, payload = _TCP_SYN, 0
        else:
            flags = _TCP_PSH_ACK if payload else _TCP_ACK
        seq = flow.seq
        l4 = _TCP(sport, dport, seq[direction], seq[1 - direction] if flow.started else 0,
                  0x50, flags, 64240, 0, 0)
        seq[direction] = (seq[direction] + (payload or flags == _TCP_SYN)) & 0xFFFFFFFF
    else:
        l4 = _UDP(sport, dport, 8 + payload, 0)
    flow.started = True
    ip_len = ip_header + l4_header + payload
    if flow.v6:
        ip = _IPV6(0x60000000, l4_header + payload, flow.proto, 64, src, dst)
    else:
        ip = _IPV4(0x45, 0, ip_len, rng.getrandbits(16), 0x4000, 64, flow.proto, 0, src, dst)
    frame = l2 + ip + l4 + _ZEROS[:payload]
    if len(frame) < 60:                          # Ethernet minimum: padding after the IP packet
        frame += _ZEROS[:60 - len(frame)]
    return frame


def _schedule(rng, flows, packets, seconds):
    """Packet times and flows: heavy-tailed flow sizes, each flow alive over its own window."""
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(flows))]
    picks = rng.choices(range(len(flows)), weights=weights, k=packets)
    windows = []
    for _ in flows:
        duration = seconds * (rng.random() ** 3)          # mostly short flows, some the whole span
        windows.append((rng.random() * (seconds - duration), duration))
    rand = rng.random
    times = []
    for i in picks:
        start, duration = windows[i]
        times.append((start + duration * rand(), i))
    times.sort()
    return times


def generate(path, packets=1_000_000, flows=10_000, seconds=240.0, seed=1):
    """Writes the capture; returns its known totals (also written to PATH.json)."""
    rng = random.Random(seed)
    table = _make_flows(rng, flows)
    schedule = _schedule(rng, table, packets, seconds)
    stats = {"packets": packets, "flows": flows, "seconds": seconds, "seed": seed,
             "frames": 0, "bytes": 0, "ip_frames": 0, "ip_bytes": 0, "non_ip_frames": 0,
             "ipv6_frames": 0, "vlan_frames": 0, "tcp_frames": 0, "udp_frames": 0}
    frames = bytes_ = ip_frames = ip_bytes = v6 = vlan = tcp = 0
    chunk = []
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER)
        for offset, i in schedule:
            ts = START + offset
            sec = int(ts)
            usec = int((ts - sec) * 1e6)
            if rng.random() < ARP_SHARE:
                frame = _ARP
            else:
                flow = table[i]
                direction = 0 if not flow.started or rng.random() < 0.45 else 1
                frame = _frame(flow, direction, _frame_size(rng), rng)
                ip_frames += 1
                ip_bytes += len(frame)
                v6 += flow.v6
                vlan += flow.vlan != 0
                tcp += flow.proto == 6
            frames += 1
            bytes_ += len(frame)
            chunk.append(_RECORD(sec, usec, len(frame), len(frame)))
            chunk.append(frame)
            if len(chunk) >= 16384:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))
    stats.update(frames=frames, bytes=bytes_, ip_frames=ip_frames, ip_bytes=ip_bytes,
                 non_ip_frames=frames - ip_frames, ipv6_frames=v6, vlan_frames=vlan,
                 tcp_frames=tcp, udp_frames=ip_frames - tcp)
    with open(path + ".json", "w") as f:
        json.dump(stats, f, indent=1)
    return stats


def cached(path, packets, flows=10_000, seconds=240.0, seed=1):
    """The totals of an already generated file with these parameters, or None."""
    try:
        with open(path + ".json") as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return None
    wanted = {"packets": packets, "flows": flows, "seconds": seconds, "seed": seed}
    if any(stats.get(k) != v for k, v in wanted.items()) or not os.path.exists(path):
        return None
    if os.path.getmtime(path + ".json") < os.path.getmtime(path):
        return None
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("-n", "--packets", type=int, default=1_000_000)
    p.add_argument("--flows", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    stats = generate(args.out, args.packets, args.flows, args.seconds, args.seed)
    took = time.perf_counter() - t0
    print(f"{args.out}: {stats['frames']} frames, {stats['bytes']} bytes, {stats['ip_bytes']} IP bytes "
          f"in {took:.1f} s")
    return 0




def bench_capture(folder, packets, seconds=240.0):
    """(path, stats, seconds spent generating or 0) of the benchmarks' capture of `packets`
    frames over `seconds` of capture time in `folder` (default: /tmp/nettally-bench), reused
    while its parameters match. 86400: the same traffic spread over a day."""
    import tempfile
    import time
    from pathlib import Path
    workdir = Path(folder or Path(tempfile.gettempdir()) / "nettally-bench")
    workdir.mkdir(parents=True, exist_ok=True)
    capture = workdir / (f"offline-{packets}.pcap" if seconds == 240.0 else f"offline-{packets}-{seconds:g}s.pcap")
    stats, spent = cached(str(capture), packets, seconds=seconds), 0.0
    if stats is None:
        started = time.perf_counter()
        stats = generate(str(capture), packets, seconds=seconds)
        spent = time.perf_counter() - started
    return capture, stats, spent

if __name__ == "__main__":
    sys.exit(main())
