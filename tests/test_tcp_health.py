"""capture/tcp_health.py with exact numbers: hand-made segment sequences (tests/tcp_scenarios.py,
whose numbers tshark confirms in tests/test_tcp_health_oracle.py), bad input that must give
sensible numbers and never raise, the short ways of `see` agreeing with tshark's steps in
`_see` (tests/test_tcp_health_equivalence.py), and the state's size. Every test runs on both implementations: the
Python reference (the fallback) and the compiled one (capture/_tcp_health.c), which must also
leave every field exactly as the Python one does."""
import random
import sys

import pytest

from capture import flows, tcp_health, tcp_later
from tests.tcp_scenarios import ACK, SCENARIOS, SYN, SYN_FLOOD


@pytest.fixture(autouse=True, params=["python", "compiled"])
def impl(request, monkeypatch):
    """The analysis every test here uses, everywhere the flow table reaches it."""
    if request.param == "compiled":
        if tcp_health.compiled is None:
            pytest.skip("capture/_tcp_health.c is not built (`make test` builds it with pip install -e .)")
        half, see = tcp_health.compiled.Half, tcp_health.compiled.see
    else:
        half, see = tcp_health.PyHalf, tcp_health.py_see
    monkeypatch.setattr(tcp_health, "Half", half)
    monkeypatch.setattr(tcp_health, "see", see)
    monkeypatch.setattr(flows, "tcp_see", see)
    monkeypatch.setattr(tcp_later, "tcp_see", see)
    return request.param


def analyse(segments):
    """Feeds the segments; returns the flow's numbers as the scenarios state them."""
    c, s = tcp_health.pair()
    for t, side, flags, seq, ack, win, n in segments:
        tcp_health.see(c if side == "c" else s, t, flags, seq, ack, win, n)
    data, retx, ooo, zw, rst = tcp_health.take(*c)
    rtt = tcp_health.rtts(*c)[0]
    return dict(rtt_ms=None if rtt is None else round(rtt, 6), retransmits=retx, out_of_order=ooo,
                zero_windows=zw, resets=rst), c


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name):
    segments, expected = SCENARIOS[name]
    got, _ = analyse(segments)
    assert got == expected


def test_no_handshake_no_rtt_never_zero():
    got, c = analyse(SCENARIOS["mid_stream"][0])
    assert got["rtt_ms"] is None
    # the running samples still measure: data at 10.0 acknowledged at 10.02
    assert tcp_health.rtts(*c)[1] == pytest.approx(20.0)


def test_same_timestamp_ack_is_no_rtt_yet():
    """tshark leaves initial_rtt unset while SYN and ACK share a timestamp and takes the next ACK."""
    segments = [(1.0, "c", SYN, 10, 0, 100, 0), (1.0, "s", SYN | ACK, 20, 11, 100, 0),
                (1.0, "c", ACK, 11, 21, 100, 0), (1.002, "s", ACK, 21, 11, 100, 0)]
    assert analyse(segments)[0]["rtt_ms"] == 2.0


def test_syn_flood_each_flow_sensible():
    for segments in SYN_FLOOD.values():
        assert analyse(segments)[0] == dict(rtt_ms=None, retransmits=0, out_of_order=0, zero_windows=0, resets=0)


def test_counters_are_deltas_rtt_stays():
    segments, _ = SCENARIOS["timeout_retransmission"]
    c, s = tcp_health.pair()
    for t, side, flags, seq, ack, win, n in segments:
        tcp_health.see(c if side == "c" else s, t, flags, seq, ack, win, n)
    assert tcp_health.take(*c) == (3, 1, 0, 0, 0)
    assert tcp_health.take(*s) == (0, 0, 0, 0, 0)
    rtt, lo, avg, hi = tcp_health.rtts(*c)
    assert rtt == pytest.approx(30.1)
    # the client's SYN (30 ms) and its first data segment (30 ms); the retransmitted one is not
    # timed (Karn); the server's SYN-ACK -> ACK (0.1 ms) is the near side: not the one reported
    assert (lo, avg, hi) == (pytest.approx(30.0), pytest.approx(30.0), pytest.approx(30.0))


def test_random_segments_never_raise():
    rng = random.Random(13)
    for _ in range(200):
        c, s = tcp_health.pair()
        ts = 1e9
        for _ in range(200):
            ts += rng.choice([0.0, 0.001, -0.5, 2.0])              # time may step back
            h = rng.choice((c, s))
            tcp_health.see(h, ts, rng.randrange(256), rng.randrange(1 << 32), rng.randrange(1 << 32),
                           rng.randrange(1 << 16), rng.choice([0, 1, 10, 1448, 65495]))
        rtt = tcp_health.rtts(*c)
        assert all(v is None or v >= 0 for v in rtt)
        assert all(v >= 0 for v in tcp_health.take(*c))


def test_state_is_small():
    """Bytes a TCP flow's analysis holds: two halves and the two tuples that pair them."""
    c, s = analyse(SCENARIOS["clean"][0])[1]
    size = sys.getsizeof(c) + sys.getsizeof(s) + 2 * sys.getsizeof((c, s))
    assert size <= 600, size


def test_flow_table_deltas_carry_the_scenarios_numbers(tmp_path):
    """The same scenarios through the flow table (Ethernet fast path): each TCP flow's deltas
    carry the numbers, in records.FlowDelta's fields; with tcp_health off, none."""
    from capture.capfile import CaptureFile
    from capture.flows import FlowTable
    from tests.tcp_scenarios import pcap

    path = tmp_path / "s.pcap"
    pcap(path, {name: segments for name, (segments, _) in SCENARIOS.items()})
    for health in (True, False):
        table, deltas = FlowTable(read_payload=False, list_new_flows=False, tcp_health=health), []
        table.stream_to(lambda r, into=deltas: into.extend(r.flows))
        cap = CaptureFile(str(path))
        for _, frames in cap.batches():
            table.ingest("x", 1, frames)
        table.close()
        got = {}
        for d in deltas:
            g = got.setdefault(d.orig_p, dict(rtt_ms=None, retransmits=0, out_of_order=0, zero_windows=0, resets=0))
            if d.rtt_ms is not None:
                g["rtt_ms"] = round(d.rtt_ms, 3)
            for k in ("retransmits", "out_of_order", "zero_windows", "resets"):
                g[k] += getattr(d, k)
        for port, name in enumerate(sorted(SCENARIOS), start=20000):
            expected = dict(SCENARIOS[name][1])
            if not health:
                expected = dict(rtt_ms=None, retransmits=0, out_of_order=0, zero_windows=0, resets=0)
            elif expected["rtt_ms"] is not None:
                expected["rtt_ms"] = pytest.approx(expected["rtt_ms"], abs=0.001)   # ns pcap, float times
            assert got[port] == expected, name


def test_deltas_taken_after_every_segment_add_up_to_the_same_numbers(tmp_path):
    """A TCP flow's health state is made at its second segment (a SYN flood's one-segment flows
    hold none); a delta taken while a flow has one segment counts that segment once, and the
    state made later does not count it again: draining after every single frame gives the
    scenarios' numbers."""
    from capture.capfile import CaptureFile
    from capture.flows import FlowTable
    from capture.tcp_later import LATER
    from tests.tcp_scenarios import pcap

    path = tmp_path / "s.pcap"
    pcap(path, {name: segments for name, (segments, _) in SCENARIOS.items()})
    table, deltas = FlowTable(read_payload=False, list_new_flows=False), []
    table.stream_to(lambda r: deltas.extend(r.flows))
    cap = CaptureFile(str(path))
    first = True
    for _, frames in cap.batches():
        for frame in frames:
            table.ingest("x", 1, [frame])
            if first:                     # one segment seen: no state made yet
                (flow,) = table._flows
                assert flow.resp[6] is LATER and isinstance(flow.orig[6], bytes)
                first = False
            deltas.extend(table.drain(frame[0]).flows)
    table.close()
    got = {}
    for d in deltas:
        g = got.setdefault(d.orig_p, dict(rtt_ms=None, retransmits=0, out_of_order=0, zero_windows=0, resets=0))
        if d.rtt_ms is not None:
            g["rtt_ms"] = round(d.rtt_ms, 3)
        for k in ("retransmits", "out_of_order", "zero_windows", "resets"):
            g[k] += getattr(d, k)
    for port, name in enumerate(sorted(SCENARIOS), start=20000):
        expected = dict(SCENARIOS[name][1])
        if expected["rtt_ms"] is not None:
            expected["rtt_ms"] = pytest.approx(expected["rtt_ms"], abs=0.001)
        assert got[port] == expected, name
