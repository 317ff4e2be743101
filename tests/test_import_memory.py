"""Import memory is bounded by max_flows and flat under flow churn (issue 10, "Memory"): a SYN
flood of N or 4N distinct flows leaves the flow table, the rollups it hands on and the import's
process tree the same size, and still counts every flow exactly once. Figures: bench/memory.py,
docs/PERFORMANCE.md "Memory"."""
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from collections import Counter

import pytest

from bench.memory import TreeSampler, syn_frames, write_syn_flood
from capture.flows import ROLLUP_FLOWS, FlowTable
from capture.offline import import_file
from common import ROOT, system

MAX = 1000                  # max_flows of the in-process tests
N = 8000                    # flows of the smaller flood; the larger has 4N
BATCH = 512


def _bounded(table):
    """Every structure of the table within its bound (held() names them all)."""
    held = table.held()
    assert held["flows"] <= MAX and held["directions"] <= 2 * MAX, held
    assert held["new_flows"] <= MAX and held["fragments"] <= MAX, held
    assert held["macs"] == held["names"] == held["samples"] == 0, held     # a SYN flood has none
    return held


class _Tally:
    """A sink that keeps only counts: what each flow was credited, and the largest rollup."""

    def __init__(self):
        self.closed = Counter()        # (orig_h, orig_p) -> records closed
        self.packets = self.host_tx_packets = self.iface_frames = self.largest = 0

    def __call__(self, rollup):
        self.largest = max(self.largest, len(rollup.flows))
        for f in rollup.flows:
            self.packets += f.orig_packets + f.resp_packets
            if f.closed:
                self.closed[f.orig_h, f.orig_p] += 1
        self.host_tx_packets += sum(h[2] for h in rollup.hosts.values())
        self.iface_frames += sum(c[0] for c in rollup.interfaces.values())

    def exact(self, flows):
        assert self.packets == self.host_tx_packets == self.iface_frames == flows
        assert len(self.closed) == flows and set(self.closed.values()) == {1}     # each flow once


def _stream(flows, check=_bounded, tally=None):
    """A flood of `flows` flows through a table streaming to `tally` (default a _Tally), checked
    after each batch."""
    table, tally = FlowTable(max_flows=MAX), tally or _Tally()
    table.stream_to(tally)
    for first in range(0, flows, BATCH):
        table.ingest("eth0", 1, syn_frames(first, min(BATCH, flows - first)))
        held = check(table)
        assert held["new_flows"] == 0 and held["ready_flows"] == 0     # streamed: nothing waits
    table.close()
    return table, tally


@pytest.mark.slow
@pytest.mark.parametrize("flows", [N, 4 * N])
def test_a_streamed_table_stays_within_max_flows_and_counts_each_flow_once(flows):
    table, tally = _stream(flows)
    assert table.evicted_flows >= flows - MAX and len(table) == 0
    assert tally.largest <= ROLLUP_FLOWS
    tally.exact(flows)


@pytest.mark.slow
def test_nobody_taking_new_flows_keeps_at_most_max_flows_of_them():
    """Live mode (take() and take_new_flows() called by the capture loop): new flows not taken
    stop being listed at max_flows; evicted flows come out of take() at once, not at minute's end."""
    table = FlowTable(max_flows=MAX)
    tally = _Tally()
    for first in range(0, 4 * N, BATCH):
        table.ingest("eth0", 1, syn_frames(first, min(BATCH, 4 * N - first)))
        held = _bounded(table)
        assert held["ready_flows"] <= BATCH + MAX   # since the last take(): this batch's evictions, a closed minute
        for rollup in table.take():
            tally(rollup)
    assert len(table.new_flows) == MAX and table.unlisted_flows == 4 * N - MAX
    assert len(table.take_new_flows()) == MAX and table.take_new_flows() == []
    tally(table.drain(0.0, close_all=True))
    tally.exact(4 * N)


def _peak(flows):
    tracemalloc.start()
    try:
        _stream(flows, check=lambda table: table.held(), tally=lambda rollup: None)     # a tally grows per flow
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_of_a_streamed_import_is_flat_in_the_number_of_flows():
    _peak(N // 4)                    # warm-up: first-use allocations (imports, caches) are not the table's
    small, large = _peak(N), _peak(4 * N)
    assert large < 1.2 * small, (small, large)
    assert small < 3000 * MAX + 2_000_000, small     # ~1 KB per flow held, batches and pieces beside


@pytest.mark.slow
def test_import_file_keeps_every_structure_within_max_flows(tmp_path):
    path = tmp_path / "flood.pcap"
    write_syn_flood(path, 4 * N)
    table, tally, checks = FlowTable(max_flows=MAX), _Tally(), []

    def between_batches():           # import_file asks stop() after every batch
        checks.append(_bounded(table))
        assert checks[-1]["new_flows"] == 0 and checks[-1]["ready_flows"] == 0
        return False

    def sink(rollups):
        for rollup in rollups:
            tally(rollup)

    result = import_file(str(path), sink, table, parallel=True, stop=between_batches)
    assert result.frames == 4 * N and result.damage is None and len(checks) >= 4 * N // 4096
    assert tally.largest <= ROLLUP_FLOWS
    tally.exact(4 * N)


FLOOD = 200_000             # flows of the end-to-end import
FLOOD_MAX_FLOWS = 10_000
TREE_BOUND_MB = 250         # sum of the processes' peaks: ~120 MB here; before the bound it was ~460 MB


@system                     # processes of its own: the importer, its reader and its writer
@pytest.mark.slow
def test_run_py_import_of_a_flood_stays_bounded_and_stores_every_flow(tmp_path):
    path, db = tmp_path / "flood.pcap", tmp_path / "flood.db"
    write_syn_flood(path, FLOOD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETTALLY_")}
    env["NETTALLY_MAX_FLOWS"] = str(FLOOD_MAX_FLOWS)
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "import", str(path), "--db", str(db)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with TreeSampler(proc.pid) as sampler:
        out = proc.communicate(timeout=300)[0].decode(errors="replace")
    assert proc.returncode == 0, out
    assert sampler.sum_of_peaks < TREE_BOUND_MB * 1024, (sampler.sum_of_peaks // 1024, sampler.peaks)
    with sqlite3.connect(db) as con:
        rows, packets = con.execute("SELECT count(*), sum(orig_packets + resp_packets) FROM flows").fetchone()
    assert rows == packets == FLOOD
