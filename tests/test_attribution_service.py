"""The Attributor with fakes for the outside world (socket table, processes, kernel events,
clock): lookups, reasons, the grace window, pid identity, and what storage makes of it all."""
import subprocess

import pytest

from records import FlowDelta, ProcessKey, Rollup
from settings import Settings
from storage.db import connect
from storage.processes import attribution_coverage, flow_totals_by_process, flows_with_processes, process_totals
from storage.store import RollupStore

from attribution.cache import OwnerCache
from attribution.service import GRACE, OTHER_NS_MEMORY, Attributor
from attribution.table import SocketTable

OWN = {"127.0.0.1", "::1", "192.0.2.2"}
OTHER_NS = {"10.9.0.2"}
LISTEN = (6, "0.0.0.0", 80, None, 0)


class World:
    """What the host looks like: sockets (key -> pid), processes (pid -> (start, name)), events."""

    def __init__(self):
        self.now = 1000.0
        self.sockets, self.unowned, self.processes = {}, {}, {}
        self.events, self.reads = [], 0

    def clock(self):
        return self.now

    def table(self):
        self.reads += 1
        return SocketTable(dict(self.sockets), dict(self.unowned))

    def process_key(self, pid):
        if pid not in self.processes:
            return None
        start, name = self.processes[pid]
        return ProcessKey(pid, start, name, f"/bin/{name}", f"{name} --flag", "root", "")

    def start_time(self, pid):
        return self.processes[pid][0] if pid in self.processes else None

    def drain(self):
        out, self.events = self.events, []
        return out

    def event(self, key, pid, netns="net:[1]"):
        self.events.append((key, self.process_key(pid), netns, self.now))

    def attributor(self):
        cache = OwnerCache(self.table, self.process_key, self.start_time, events=self, netns="net:[1]",
                           clock=self.clock)
        return Attributor(Settings(), cache=cache, addresses=lambda: (OWN, OTHER_NS), clock=self.clock)


def flow(a="127.0.0.1", ap=40000, b="127.0.0.1", bp=80, proto=6, first=1000.0, ob=100, op=2, rb=1000, rp=3,
         closed=False):
    return FlowDelta(proto, a, ap, b, bp, first, first + 0.1, ob, op, rb, rp, 0x1B, "lo", closed)


def one(attributor, *deltas, bucket=960):
    return attributor.attribute([Rollup(bucket, list(deltas), {}, {}, {})])


def test_connected_socket_and_listener_charge_both_processes():
    w = World()
    w.processes = {10: (1.0, "client"), 20: (2.0, "server")}
    w.sockets = {(6, "127.0.0.1", 40000, "127.0.0.1", 80): 10, LISTEN: 20}
    [out] = one(w.attributor(), flow())
    d = out.flows[0]
    assert (d.orig_pid, d.orig_process, d.resp_pid, d.resp_process) == (10, "client", 20, "server")
    assert {k.pid: v for k, v in out.processes.items()} == {10: [100, 1000, 2, 3], 20: [1000, 100, 3, 2]}
    assert out.attribution == {"attributed": [2200, 10]}


def test_observe_refreshes_at_once_on_a_miss_and_is_rate_limited():
    w = World()
    w.processes = {10: (1.0, "client")}
    a = w.attributor()
    a.tick()
    assert w.reads == 1
    w.sockets[(6, "127.0.0.1", 40000, "127.0.0.1", 80)] = 10
    w.now += 0.2
    a.observe([(6, "127.0.0.1", 40000, "127.0.0.1", 80, w.now - 0.05)])
    assert w.reads == 2                              # missed: read now, not at the next tick
    a.observe([(6, "127.0.0.1", 40000, "127.0.0.1", 80, w.now - 0.05)])
    assert w.reads == 2                              # known now: nothing to read
    w.now += 0.01
    a.observe([(6, "127.0.0.1", 40001, "127.0.0.1", 80, w.now)])
    assert w.reads == 2                              # a miss, but within the rate limit
    w.now += 0.1
    a.observe([(6, "127.0.0.1", 40001, "127.0.0.1", 80, w.now)])
    assert w.reads == 3
    a.observe([(1, "127.0.0.1", 0, "127.0.0.1", 0, w.now), (6, "198.51.100.1", 1, "198.51.100.2", 2, w.now)])
    assert w.reads == 3                              # nothing local and attributable


def test_kernel_event_names_the_owner_of_a_socket_the_table_never_showed():
    w = World()
    w.processes = {10: (1.0, "client")}
    a = w.attributor()
    a.tick()
    w.now += 0.5
    w.event((6, "127.0.0.1", 40000, "127.0.0.1", 80), 10)
    del w.processes[10]                              # it even exited since
    [out] = one(a, flow(first=1000.2))
    assert out.flows[0].orig_pid == 10 and out.flows[0].resp_pid is None
    assert out.attribution == {"attributed": [1100, 5], "socket_closed_before_lookup": [1100, 5]}


def test_grace_window_moves_early_bytes_to_the_owner_found_later():
    w = World()
    w.processes = {10: (1.0, "client")}
    a = w.attributor()
    a.tick()
    w.now += 1.0
    first = one(a, flow(first=1000.5, bp=9000, b="198.51.100.9"), bucket=960)
    assert first[0].attribution == {"socket_closed_before_lookup": [1100, 5]}
    w.now += 2.0                                     # appears in the table within the grace window
    w.sockets[(6, "127.0.0.1", 40000, "198.51.100.9", 9000)] = 10
    a.tick()
    later = one(a, flow(first=1000.5, bp=9000, b="198.51.100.9", ob=10, op=1, rb=0, rp=0, closed=True),
                bucket=1020)
    assert len(later) == 2
    fix, out = later                                 # found by the tick: before this call's rollups
    assert out.bucket == 1020 and out.flows[0].orig_pid == 10
    assert out.attribution == {"attributed": [10, 1]}
    assert fix.bucket == 960 and fix.flows[0].orig_pid == 10 and fix.flows[0].orig_bytes == 0
    assert {k.pid: v for k, v in fix.processes.items()} == {10: [100, 1000, 2, 3]}
    assert fix.attribution == {"attributed": [1100, 5], "socket_closed_before_lookup": [-1100, -5]}
    assert not a.pending and not a.sides


def test_grace_window_found_by_tick_for_a_flow_that_already_ended():
    w = World()
    w.processes = {10: (1.0, "client")}
    a = w.attributor()
    a.tick()
    one(a, flow(b="198.51.100.9", closed=True))
    w.now += 3.0
    w.event((6, "127.0.0.1", 40000, "198.51.100.9", 80), 10)
    a.tick()
    [fix] = one(a)[:1]
    assert fix.flows[0].closed and fix.flows[0].orig_pid == 10
    assert not a.pending and not a.sides


def test_past_the_grace_window_the_reason_is_final():
    w = World()
    w.processes = {10: (1.0, "client")}
    a = w.attributor()
    a.tick()
    one(a, flow())
    w.now += GRACE + 1
    a.tick()
    assert not a.pending
    w.sockets[(6, "127.0.0.1", 40000, "127.0.0.1", 80)] = 10
    w.now += 1.1
    a.tick()
    [out] = one(a, flow())
    assert out.flows[0].orig_pid is None
    assert out.attribution == {"socket_closed_before_lookup": [2200, 10]}


def test_recycled_pid_is_another_process():
    w = World()
    w.processes = {10: (1.0, "old")}
    w.sockets = {(17, "0.0.0.0", 53, None, 0): 10}
    a = w.attributor()
    [out] = one(a, flow(proto=17, ap=53, bp=9999))
    old = next(iter(out.processes))
    w.processes = {10: (50.0, "new")}
    w.sockets = {(17, "0.0.0.0", 54, None, 0): 10}
    w.now += 1.5
    a.tick()
    [out] = one(a, flow(proto=17, ap=54, bp=9999, first=w.now))
    new = next(iter(out.processes))
    assert (old.pid, old.start_time, old.name) == (10, 1.0, "old")
    assert (new.pid, new.start_time, new.name) == (10, 50.0, "new")


def test_reasons():
    w = World()
    w.processes = {10: (1.0, "client")}
    w.unowned = {(6, "192.0.2.2", 22, None, 0): "no_permission"}
    a = w.attributor()
    a.tick()
    w.now += 0.5
    w.event((6, "192.0.2.2", 5000, "10.9.0.2", 80), 10, netns="net:[2]")    # its owner is in another netns
    deltas = [
        flow(a="192.0.2.2", ap=5000, b="10.9.0.2", bp=80, ob=1, op=1, rb=0, rp=0),           # other netns both sides
        flow(a="198.51.100.1", ap=1, b="192.0.2.2", bp=22, ob=2, op=1, rb=0, rp=0),          # hidden owner
        flow(proto=1, a="192.0.2.2", ap=0, b="198.51.100.1", bp=0, ob=4, op=1, rb=0, rp=0),  # ICMP
        flow(a="198.51.100.1", ap=1, b="198.51.100.2", bp=2, ob=8, op=1, rb=0, rp=0),        # not this host
        flow(a="192.0.2.2", ap=6000, b="198.51.100.1", bp=443, ob=16, op=1, rb=0, rp=0, first=998.0),
        flow(a="192.0.2.2", ap=6001, b="198.51.100.1", bp=443, ob=32, op=1, rb=0, rp=0, first=1000.6),  # no read since
    ]
    [out] = one(a, *deltas)
    assert out.attribution == {"other_network_namespace": [2, 2], "no_permission": [2, 1], "unknown": [36, 2],
                               "no_local_endpoint": [8, 1], "socket_closed_before_lookup": [16, 1]}


def test_off_mode_passes_rollups_through():
    a = Attributor(Settings(attribution="off"))
    r = [Rollup(60, [flow()], {}, {}, {})]
    assert a.attribute(r) is r


def test_bad_mode_is_one_line():
    try:
        Attributor(Settings(attribution="magic"))
    except ValueError as e:
        assert "auto, proc, psutil, off" in str(e)
    else:
        raise AssertionError("no error")


@pytest.mark.system
def test_storage_totals_agree_with_flows(tmp_path, run_py):
    """Through the real writer: per-process totals equal the sum of their flows (corrections
    included), coverage equals the reasons, and `run.py export processes` lists them."""
    w = World()
    w.processes = {10: (1.0, "client"), 20: (2.0, "=cmd|' /C calc'!A0")}
    w.sockets = {LISTEN: 20}
    a = w.attributor()
    a.tick()
    db = tmp_path / "t.db"
    store = RollupStore(connect(str(db)))
    rollups = []
    w.now += 0.5
    for i in range(5):
        rollups += one(a, flow(ap=41000 + i, first=1000.0 + i / 10, closed=True), bucket=960)
    w.now += 1.0
    w.event((6, "127.0.0.1", 41003, "127.0.0.1", 80), 10)
    w.event((6, "127.0.0.1", 41004, "127.0.0.1", 80), 10)
    a.tick()
    rollups += one(a, flow(a="198.51.100.1", ap=1, b="198.51.100.2", bp=2), bucket=1020)
    store.apply(rollups)
    con = connect(str(db), readonly=True)
    totals = {(r["pid"], r["process"]): [r["tx_bytes"], r["rx_bytes"], r["tx_packets"], r["rx_packets"]]
              for r in process_totals(con)}
    by_flows = {(r["pid"], r["process"]): [r["tx_bytes"], r["rx_bytes"], r["tx_packets"], r["rx_packets"]]
                for r in flow_totals_by_process(con)}
    assert totals == by_flows == {(20, "=cmd|' /C calc'!A0"): [5000, 500, 15, 10], (10, "client"): [200, 2000, 4, 6]}
    assert process_totals(con, since=960, until=1020) == process_totals(con)
    cov = attribution_coverage(con)
    assert cov["attributed"] == {"bytes": 7700, "packets": 35}
    assert cov["reasons"] == {"socket_closed_before_lookup": {"bytes": 3300, "packets": 15},
                              "no_local_endpoint": {"bytes": 1100, "packets": 5}}
    assert cov["local_bytes"] == 11000 and cov["coverage"] == 0.7
    out = subprocess.run(run_py + ["export", "processes", "--db", str(db)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fixed = "pid,process,tx_bytes,rx_bytes,tx_packets,rx_packets"       # DESIGN.md; more columns may follow
    lines = out.stdout.splitlines()
    assert lines[0].startswith(fixed) and len(lines) == 3
    assert lines[1].startswith("20,'=cmd|' /C calc'!A0,5000,500,15,10")
    assert lines[2].startswith("10,client,200,2000,4,6")


def test_addresses_are_read_again_soon_when_an_unplaced_address_shows_up():
    w = World()
    reads, other = [], set()

    def addresses():
        reads.append(w.now)
        return OWN, set(other)
    cache = OwnerCache(w.table, w.process_key, w.start_time, clock=w.clock)
    a = Attributor(Settings(), cache=cache, addresses=addresses, clock=w.clock)
    a.observe([(6, "192.0.2.2", 1, "198.51.100.1", 2, w.now)])
    assert len(reads) == 1
    w.now += 0.5
    a.observe([(6, "192.0.2.2", 1, "10.9.0.2", 2, w.now)])
    assert len(reads) == 1                          # too soon
    w.now += 1.0
    a.observe([(6, "192.0.2.2", 1, "198.51.100.1", 2, w.now)])
    assert len(reads) == 1                          # placed at the last read: nothing new
    other.add("10.9.0.2")                           # a namespace appeared
    a.observe([(6, "192.0.2.2", 1, "10.9.0.2", 2, w.now)])
    assert len(reads) == 2 and a.other_ns == {"10.9.0.2"}
    other.clear()                                   # its processes are gone for a moment
    w.now += 10.0
    a.tick()
    assert len(reads) == 3                          # every ADDRESSES_EVERY seconds anyway...
    assert a.other_ns == {"10.9.0.2"}               # ... and a namespace's addresses are kept a while
    w.now += OTHER_NS_MEMORY
    a.tick()
    assert a.other_ns == set()


def test_each_mode_builds_on_this_platform_and_runs_empty():
    for mode in ("auto", "proc", "psutil"):
        a = Attributor(Settings(attribution=mode))
        try:
            assert a.describe() and a.cache is not None
            a.observe([])
            a.tick()
            assert a.attribute([]) == []
            assert a.own and "127.0.0.1" in a.own
        finally:
            a.close()


def test_a_late_correction_never_reopens_a_closed_flow(tmp_path):
    w = World()
    w.processes = {10: (1.0, "client")}
    a = w.attributor()
    a.tick()
    store = RollupStore(connect(str(tmp_path / "c.db")))
    store.apply(one(a, flow(b="198.51.100.9")))
    w.now += 2.0
    w.event((6, "127.0.0.1", 40000, "198.51.100.9", 80), 10)
    a.tick()                                          # found: a correction waits, its stub still open
    store.apply(one(a, flow(b="198.51.100.9", ob=10, op=1, rb=0, rp=0, closed=True)))
    con = connect(str(tmp_path / "c.db"), readonly=True)
    [row] = flows_with_processes(con)
    assert (row["closed"], row["orig_pid"], row["orig_process"], row["orig_bytes"]) == (1, 10, "client", 110)
    assert [(r["pid"], r["tx_bytes"], r["rx_bytes"]) for r in process_totals(con)] == [(10, 110, 1000)]
    assert attribution_coverage(con)["reasons"] == {}


def test_a_reused_pid_makes_a_remembering_table_look_again():
    """A listener inherited by a child: its parent exits and its pid is reused by an unrelated
    process. A source that remembers socket holders (the Linux inode map) would go on naming the
    pid; the cache makes it forget and reads again, so the child is charged, not the newcomer."""
    w = World()
    w.processes = {10: (1.0, "parent"), 20: (2.0, "child")}
    w.sockets = {LISTEN: 10}
    forgotten = []

    def forget(pids):
        forgotten.extend(pids)
        if 10 in pids:
            w.sockets = {LISTEN: 20}        # looking again finds who really holds it
    cache = OwnerCache(w.table, w.process_key, w.start_time, forget=forget, clock=w.clock)
    a = Attributor(Settings(), cache=cache, addresses=lambda: (OWN, OTHER_NS), clock=w.clock)
    [out] = one(a, flow())
    assert [p.name for p in out.processes] == ["parent"]
    w.processes = {10: (50.0, "newcomer"), 20: (2.0, "child")}
    w.now += 1.5
    a.tick()
    [out] = one(a, flow(ap=40001, first=w.now))
    assert [p.name for p in out.processes] == ["child"] and 10 in forgotten
