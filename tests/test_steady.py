"""The compiled steady path of FlowTable.ingest (capture/_steady.c) against the Python loop it was
written from: the same frames through a table with it and a table without, and everything a table
hands on (new flows, per-second points, closed buckets, the drained rollup with its TCP health)
is the same. On hand-made exchanges with every shape the compiled path must hand back (VLAN tags,
IPv6, SYNs, first payloads, non-IP frames, new seconds and minutes) and on random ones."""
import random

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from capture import flows

pytestmark = pytest.mark.skipif(flows._steady_count is None, reason="the compiled steady path is not built "
                                "(no C compiler, or NETTALLY_PURE_PYTHON=1): nothing to compare")
T0 = 1_700_000_000.0
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")


def frame(kind, forward, sport, dport, flags="A", seq=0, ack=0, payload=b"", vlan=False):
    src, dst = (0, 1) if forward else (1, 0)
    eth = Ether(src=MACS[src], dst=MACS[dst])
    if vlan:
        eth = eth / Dot1Q(vlan=7)
    if kind == "arp":
        return bytes(eth / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    ip = IP(src=f"10.0.0.{src + 1}", dst=f"10.0.0.{dst + 1}") if kind.endswith("4") else \
        IPv6(src=f"fd00::{src + 1}", dst=f"fd00::{dst + 1}")
    ports = (sport, dport) if forward else (dport, sport)
    l4 = TCP(sport=ports[0], dport=ports[1], flags=flags, seq=seq, ack=ack, window=512) if kind.startswith("tcp") \
        else UDP(sport=ports[0], dport=ports[1])
    return bytes(eth / ip / l4 / payload)


def outputs(frame_batches, steady):
    """What a table hands on after ingesting the batches, with the compiled path on or off."""
    saved = flows._steady_count
    flows._steady_count = saved if steady else None
    try:
        table = flows.FlowTable(read_payload=True, tcp_health=True, per_second=True)
        said = []
        for batch in frame_batches:
            table.ingest("eth0", 1, list(batch))
            said.append(("new", table.take_new_flows()))
            said.append(("points", table.take_seconds(batch[-1][0] - 2) if batch else []))
            said.append(("ready", table.take()))
        end = frame_batches[-1][-1][0] + 1
        said.append(("drain", table.drain(end, close_all=True)))
        said.append(("points", table.take_seconds(float("inf"))))
        return [(what, _ordered(value)) for what, value in said]
    finally:
        flows._steady_count = saved


def _ordered(value):
    """`value` with every list in one order (compared as dicts are, whatever the order): a table
    lists its flows, hosts and points in the order of a set of objects, which is not the same from
    one table to the next."""
    if isinstance(value, list):
        return sorted((_ordered(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {k: _ordered(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_ordered(v) for v in value))
    if isinstance(value, tuple):
        return tuple(_ordered(v) for v in value)
    return value


def exchange(t, sport, kind="tcp4", vlan=False, segments=40, spacing=0.01):
    """A TCP connection (handshake, a first payload, data both ways with a retransmission, FIN)
    or a UDP conversation, from time t."""
    out = []
    if kind.startswith("tcp"):
        seq, ack = 1000, 5000
        out += [frame(kind, True, sport, 443, "S", seq - 1, 0, vlan=vlan),
                frame(kind, False, sport, 443, "SA", ack - 1, seq, vlan=vlan),
                frame(kind, True, sport, 443, "A", seq, ack, vlan=vlan),
                frame(kind, True, sport, 443, "PA", seq, ack, b"\x16\x03\x01" + bytes(60), vlan=vlan)]
        seq += 63
        for k in range(segments):
            out.append(frame(kind, False, sport, 443, "PA", ack, seq, bytes(300), vlan=vlan))
            if k == segments // 2:
                out.append(frame(kind, False, sport, 443, "PA", ack, seq, bytes(300), vlan=vlan))   # again
            ack += 300
            out.append(frame(kind, True, sport, 443, "A", seq, ack, vlan=vlan))
        out += [frame(kind, True, sport, 443, "FA", seq, ack, vlan=vlan),
                frame(kind, False, sport, 443, "FA", ack, seq + 1, vlan=vlan)]
    else:
        for k in range(segments):
            out.append(frame(kind, k % 2 == 0, sport, 5353 + (sport % 3), payload=bytes(20 + k), vlan=vlan))
    return [(t + k * spacing, len(f) + 4, f, k % 3 == 0) for k, f in enumerate(out)]


def test_hand_made_traffic_of_every_shape_gives_the_same_rollups():
    mixed = []
    for n, (kind, vlan) in enumerate([("tcp4", False), ("tcp6", False), ("udp4", False), ("udp6", True),
                                      ("tcp4", True)]):
        mixed += exchange(T0 + 58 + n * 0.3, 40000 + n, kind, vlan)    # across a minute's end and seconds
    mixed += [(T0 + 59.5, 60, frame("arp", True, 0, 0), False)]
    mixed.sort(key=lambda f: f[0])
    batches = [mixed[i:i + 37] for i in range(0, len(mixed), 37)]
    assert outputs(batches, steady=True) == outputs(batches, steady=False)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_random_interleavings_give_the_same_rollups(seed):
    rnd = random.Random(seed)
    frames_ = []
    for n in range(rnd.randint(1, 6)):
        kind = rnd.choice(("tcp4", "tcp6", "udp4", "udp6"))
        frames_ += exchange(T0 + rnd.uniform(0, 130), 30000 + n, kind, rnd.random() < 0.3,
                            rnd.randint(1, 30), rnd.choice((0.001, 0.2, 0.7)))
    frames_.sort(key=lambda f: f[0])
    if rnd.random() < 0.3:                  # time stepping back a little
        k = rnd.randrange(len(frames_))
        frames_.insert(k, (frames_[k][0] - 0.5,) + frames_[k][1:])
    size = rnd.randint(1, 64)
    batches = [frames_[i:i + size] for i in range(0, len(frames_), size)]
    assert outputs(batches, steady=True) == outputs(batches, steady=False)


def test_frames_it_cannot_read_are_left_to_the_python_loop():
    """Frames whose time is not a float, whose bytes are not bytes or whose length does not fit
    a C integer are counted all the same; an empty batch makes its interface known, as in Python."""
    good = exchange(T0 + 1, 41000, "udp4", segments=6)
    odd = [(int(ts), n, bytearray(data), out) for ts, n, data, out in good[:3]] + good[3:]
    huge = good[:4] + [(good[4][0], 2 ** 64, good[4][2], True)] + good[5:]
    for batches in ([odd], [huge], [[], good]):
        assert outputs(batches, steady=True) == outputs(batches, steady=False)
