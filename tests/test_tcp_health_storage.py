"""TCP health stored: flow columns (RTTs the latest, counts summed), the per host / process /
app health tiers whose RTT histograms add up across buckets and tiers, /api/health's read
(storage.health.health) and the flows export's columns, on real SQLite files."""
import csv
import io

from records import FlowDelta, ProcessKey, Rollup
from settings import Settings
from storage import health, tiers
from storage.db import connect
from storage.export import render
from storage.flows import flows_between
from storage.store import RollupStore

T0 = 1_700_000_040          # a minute boundary
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
POLICY = tiers.RetentionPolicy.from_settings(Settings())


def tcp(a, ap, b, bp, first, **health_fields):
    return FlowDelta(6, a, ap, b, bp, first, first + 1, 1000, 10, 2000, 12, 0x18, "eth0", False,
                     app="tls", app_source="dpi", service="Example", **health_fields)


def store(path, rollups):
    con = connect(str(path))
    RollupStore(con).apply(rollups)
    return con


def test_histogram_sums_match_the_family():
    assert tiers.FAMILIES["host_health"].sums == health.SUMS
    assert [health.rtt_bin(x) for x in (0.0, 0.05, 0.0631, 1.0, 40.0, 1e9)] == [0, 0, 1, 12, 28, 47]
    assert health.percentile([0] * 48, 0.5) is None
    hist = [0] * 48
    hist[28] = 19
    hist[40] = 1
    assert health.percentile(hist, 0.5) == health.bin_value(28) and health.percentile(hist, 0.95) == health.bin_value(28)
    hist[40] = 2
    assert health.percentile(hist, 0.95) == health.bin_value(40)
    assert abs(health.bin_value(28) - 40.0) / 40.0 < 0.13


def test_flow_columns_rtt_latest_counts_summed(tmp_path):
    first = T0 + 1.0
    d1 = tcp(A, 40000, B, 443, first, rtt_ms=40.5, data_segments=50, retransmits=2, out_of_order=1)
    d2 = tcp(A, 40000, B, 443, first, rtt_ms=40.5, rtt_min_ms=39.0, rtt_avg_ms=41.0, rtt_max_ms=60.0,
             data_segments=30, retransmits=1, zero_windows=3, resets=1)._replace(closed=True)
    con = store(tmp_path / "h.db", [Rollup(T0, [d1], {}, {}, {}), Rollup(T0 + 60, [d2], {}, {}, {})])
    [row] = flows_between(con)
    assert {k: row[k] for k in ("rtt_ms", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "data_segments",
                                "retransmits", "out_of_order", "zero_windows", "resets")} == dict(
        rtt_ms=40.5, rtt_min_ms=39.0, rtt_avg_ms=41.0, rtt_max_ms=60.0, data_segments=80, retransmits=3,
        out_of_order=1, zero_windows=3, resets=1)
    text = render("flows", flows_between(con), "csv")
    [exported] = csv.DictReader(io.StringIO(text))
    assert [exported[k] for k in ("rtt_ms", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "retransmits",
                                  "out_of_order", "zero_windows", "resets")] == \
        ["40.5", "39.0", "41.0", "60.0", "3", "1", "3", "1"]
    assert text.splitlines()[0].endswith("rtt_ms,rtt_min_ms,rtt_avg_ms,rtt_max_ms,retransmits,out_of_order,"
                                         "zero_windows,resets,data_segments")


def test_health_per_host_process_app_over_tiers(tmp_path):
    """Two minutes of one hour; the hour tier, built from them, gives the same answer."""
    proc = ProcessKey(4242, 1.0, "curl")
    rollups = []
    for m, (rtt, segs, retx) in enumerate([(10.0, 100, 1), (80.0, 100, 9)]):
        minute = T0 + 60 * m
        flows = [tcp(A, 40000 + m, B, 443, minute + 1, rtt_ms=rtt, data_segments=segs, retransmits=retx)
                 ._replace(orig_pid=4242, orig_process="curl"),
                 tcp(A, 50000 + m, C, 80, minute + 2, data_segments=10),          # no RTT: counts only
                 FlowDelta(17, A, 53, C, 53, minute, minute, 80, 1, 0, 0, 0, "eth0", False)]
        rollups.append(Rollup(minute, flows, {}, {}, {}, {proc: [1, 1, 1, 1]}))
    con = store(tmp_path / "h.db", rollups)
    now = T0 + 120
    by_host = {r["ip"]: r for r in health.health(con, T0, now, now, by="host", policy=POLICY)["rows"]}
    assert by_host[A] == dict(ip=A, tcp_flows=4, data_segments=220, retransmits=10, out_of_order=0, zero_windows=0,
                              resets=0, rtt_flows=2, retransmit_rate=round(10 / 220, 6),
                              rtt_p50_ms=health.bin_value(health.rtt_bin(10.0)),
                              rtt_p95_ms=health.bin_value(health.rtt_bin(80.0)))
    assert by_host[C]["rtt_p50_ms"] is None and by_host[C]["retransmit_rate"] == 0.0
    [curl] = health.health(con, T0, now, now, by="process", policy=POLICY)["rows"]
    assert (curl["process"], curl["tcp_flows"], curl["retransmits"], curl["data_segments"]) == ("curl", 2, 10, 200)
    [app] = health.health(con, T0, now, now, by="app", policy=POLICY)["rows"]
    assert (app["app"], app["service"], app["tcp_flows"]) == ("tls", "Example", 4)
    rows = health.health(con, T0, now, now, by="host", sort="retransmit_rate", policy=POLICY)["rows"]
    assert [r["ip"] for r in rows] == [B, A, C]          # 10/200, 10/220, 0/20
    # the hour, built from the minutes, sums the same bins
    tiers.build_pending(con)
    got = con.execute("SELECT tcp_flows, retransmits, rtt_flows, rtt_h%02d, rtt_h%02d FROM host_health_hours "
                      "WHERE ip = ?" % (health.rtt_bin(10.0), health.rtt_bin(80.0)), (A,)).fetchone()
    assert got == (4, 10, 2, 1, 1)


def test_flows_without_health_store_as_before(tmp_path):
    d = FlowDelta(6, A, 1, B, 2, T0 + 1, T0 + 2, 60, 1, 0, 0, 2, "eth0", True)
    con = store(tmp_path / "n.db", [Rollup(T0, [d], {}, {}, {})])
    [row] = flows_between(con)
    assert row["rtt_ms"] is None and row["retransmits"] == 0


def test_backlog_merge_keeps_the_health_fields():
    """Deltas merged while the database cannot be written (storage/backlog.py) add their counts
    and keep the latest RTTs."""
    from storage.backlog import _merge_flow
    a = tcp(A, 1, B, 2, T0 + 1, rtt_ms=5.0, data_segments=3, retransmits=1)
    b = tcp(A, 1, B, 2, T0 + 1, rtt_avg_ms=7.0, data_segments=2, resets=1, zero_windows=2, out_of_order=1)
    m = _merge_flow(a, b)
    assert (m.rtt_ms, m.rtt_min_ms, m.rtt_avg_ms, m.data_segments, m.retransmits, m.out_of_order, m.zero_windows,
            m.resets, m.orig_bytes) == (5.0, None, 7.0, 5, 1, 1, 2, 1, 2000)
