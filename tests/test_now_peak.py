"""A real "now" and peak (issue 11): per-second host and flow-side points from the flow table,
their way through the collector (flow sides -> processes) into host_seconds / process_seconds,
current_bps over the last 5 s and peak_bps at 1 s while seconds are kept; and, as root, the
paced stream of the issue's done-when on lo through `run.py -i lo`."""
from scapy.all import IP, UDP, Ether, Raw

from capture.flows import FlowTable

T0 = 1_700_000_040.0          # a minute boundary
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def udp(src, dst, sport, dport, pad=0):
    return bytes(E / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"\x00" * pad))


def ingest(table, frames):
    table.ingest("eth0", 1, [(ts, n, data, False) for ts, data, n in frames])


def test_points_per_second_per_side_and_host():
    table = FlowTable(per_second=True)
    ab, ba, ca = udp(A, B, 1000, 53), udp(B, A, 53, 1000), udp(C, A, 7, 1000)
    ingest(table, [(T0 + 0.1, ab, 100), (T0 + 0.2, ab, 100), (T0 + 0.3, ba, 50),
                   (T0 + 1.5, ab, 10), (T0 + 1.6, ca, 7), (T0 + 3.2, ba, 1)])
    points = table.take_seconds()
    assert points == [
        (int(T0), [(int(T0), A, 200, 50), (int(T0), B, 50, 200)],
         [(int(T0), 17, A, 1000, B, 53, 200), (int(T0), 17, B, 53, A, 1000, 50)]),
        (int(T0) + 1, [(int(T0) + 1, A, 10, 7), (int(T0) + 1, B, 0, 10), (int(T0) + 1, C, 7, 0)],
         [(int(T0) + 1, 17, A, 1000, B, 53, 10), (int(T0) + 1, 17, C, 7, A, 1000, 7)])]
    assert table.take_seconds() == []                       # the open second (T0 + 3) waits ...
    assert table.take_seconds(now=T0 + 3.9) == []           # ... until it has ended
    assert table.take_seconds(now=T0 + 4.0) == [(int(T0) + 3, [(int(T0) + 3, B, 1, 0), (int(T0) + 3, A, 0, 1)],
                                                 [(int(T0) + 3, 17, B, 53, A, 1000, 1)])]
    ingest(table, [(T0 + 3.95, ba, 2)])                     # late in a second already handed on
    assert table.take_seconds(now=T0 + 4.0)[0][2] == [(int(T0) + 3, 17, B, 53, A, 1000, 2)]


def test_points_survive_drains_and_minute_rolls():
    """A drain (every flush_interval, mid-second) resets the flows' counters: the second's growth
    is kept. Crossing a minute closes the second as well as the bucket; totals agree."""
    table = FlowTable(per_second=True)
    ab = udp(A, B, 1000, 53)
    ingest(table, [(T0 + 10.1, ab, 100)])
    first = table.drain(T0 + 10.5)
    ingest(table, [(T0 + 10.7, ab, 30), (T0 + 59.9, ab, 5), (T0 + 60.2, ab, 1)])
    second = table.drain(T0 + 60.5)
    points = table.take_seconds(now=T0 + 61)
    assert [(p[0], p[2][0][-1]) for p in points] == [(int(T0) + 10, 130), (int(T0) + 59, 5), (int(T0) + 60, 1)]
    rollups = [first, *table.take(), second]
    assert sum(f.orig_bytes for r in rollups for f in r.flows) == 136


def test_off_by_default_and_for_imports():
    table = FlowTable()
    ingest(table, [(T0 + 0.1, udp(A, B, 1, 2), 100), (T0 + 1.1, udp(A, B, 1, 2), 100)])
    assert table.take_seconds(now=T0 + 5) == []


# ---- flow sides -> processes (collector/seconds.py) --------------------------------------------

def _attributed(flows, processes):
    from records import Rollup
    return Rollup(int(T0), flows, {}, {}, {}, processes=processes)


def test_flow_side_points_are_charged_to_the_processes_attribution_found():
    from collector.seconds import SecondOwners
    from records import FlowDelta, ProcessKey
    client, server = ProcessKey(10, 1.0, "curl"), ProcessKey(20, 2.0, "nginx")
    s = int(T0)
    owners = SecondOwners()
    # seconds before the flow's first rollup: held, then charged once the rollup names its owners
    assert owners.charge([(s, 6, A, 5000, A, 80, 100), (s, 6, A, 80, A, 5000, 900)]) == []
    delta = FlowDelta(6, A, 5000, A, 80, T0, T0 + 1, 100, 1, 900, 1, 0, "lo", False, 10, "curl", 20, "nginx")
    charged = owners.learn([_attributed([delta], {client: [100, 900, 1, 1], server: [900, 100, 1, 1]})])
    assert sorted(charged) == sorted([(s, client, 100, 900), (s, server, 900, 100)])
    # later seconds at once, either side sending; a flow nobody owns is held, then left out
    assert sorted(owners.charge([(s + 1, 6, A, 80, A, 5000, 7), (s + 1, 17, B, 1, C, 2, 5)])) == \
        sorted([(s + 1, server, 7, 0), (s + 1, client, 0, 7)])
    assert owners.learn([]) == [] and owners.left_out == 1
    # a flow whose record ended is forgotten after one more round
    owners.learn([_attributed([delta._replace(orig_bytes=0, orig_packets=0, resp_bytes=0, resp_packets=0,
                                              closed=True)], {})])
    assert sorted(owners.charge([(s + 2, 6, A, 5000, A, 80, 1)])) == sorted([(s + 2, client, 1, 0), (s + 2, server, 0, 1)])
    owners.learn([])
    assert owners.charge([(s + 3, 6, A, 5000, A, 80, 1)]) == [] and owners.held
