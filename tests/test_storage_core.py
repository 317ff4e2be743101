"""Storage on real SQLite files: rollups applied, exported, selected by minute; exports' columns,
formula-safe CSV cells and JSON."""
import csv
import io
import json

import pytest
from scapy.all import ARP, IP, TCP, UDP, Ether

import captures
import run
from capture.flows import FlowTable
from records import FlowDelta, Rollup
from storage.db import connect
from storage.export import flow_row, render
from storage.flows import flows_between
from storage.hosts import top_hosts
from storage.interfaces import interface_totals
from storage.store import RollupStore

T0 = 1_700_000_040.0          # a minute boundary
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A, B, C = "10.0.0.1", "10.0.0.2", "2001:db8::3"
HOST_COLUMNS = ["ip", "tx_bytes", "rx_bytes", "tx_packets", "rx_packets", "name", "mac", "vendor"]
FLOW_COLUMNS = ["proto", "orig_h", "orig_p", "resp_h", "resp_p", "orig_bytes", "resp_bytes", "orig_packets",
                "resp_packets", "first_seen", "last_seen", "orig_pid", "orig_process", "resp_pid", "resp_process"]


@pytest.fixture
def clean_env(monkeypatch):
    import os
    for name in list(os.environ):
        if name.startswith("NETTALLY_"):
            monkeypatch.delenv(name)


def stream():
    """Frames over three minutes: two flows, one reply, one host talking to itself, an ARP."""
    frames = []
    for k in range(12):
        ts = T0 + 15 * k                       # minutes T0, T0+60, T0+120
        frames.append((ts, bytes(E / IP(src=A, dst=B) / TCP(sport=40000, dport=443, flags="S" if k == 0 else "A"))))
        if k % 3 == 0:
            frames.append((ts + 1, bytes(E / IP(src=B, dst=A) / TCP(sport=443, dport=40000, flags="A") / (b"r" * k))))
        if k % 4 == 1:
            frames.append((ts + 2, bytes(Ether() / IP(src=B, dst=B) / UDP(sport=53, dport=53))))
    frames.append((T0 + 5, bytes(E / ARP())))
    return [(ts, len(d), d, False) for ts, d in sorted(frames, key=lambda f: f[0])]


def rollups_of(frames, drain_every=None):
    """Rollups of the stream: as an import makes them, or also drained every `drain_every` s (live)."""
    table = FlowTable()
    out = []
    if drain_every is None:
        table.ingest("eth0", 1, frames)
        out += table.take()
    else:
        next_drain = frames[0][0] + drain_every
        for f in frames:
            if f[0] >= next_drain:
                out += table.take() + [table.drain(next_drain)]
                next_drain += drain_every
            table.ingest("eth0", 1, [f])
    return out + table.take() + [table.drain(0.0, close_all=True)]


def apply(path, batches):
    store = RollupStore(connect(str(path)))
    for batch in batches:
        store.apply(batch)
    store.con.close()


def exports(path, since=None, until=None):
    con = connect(str(path), readonly=True)
    try:
        flows = render("flows", [flow_row(r) for r in flows_between(con, since, until)], "csv")
        hosts = render("hosts", top_hosts(con, since, until), "csv")
        ifaces = interface_totals(con, since, until)
    finally:
        con.close()
    return flows, hosts, ifaces


def hosts_table(text):
    return {r["ip"]: [int(r[k]) for k in HOST_COLUMNS[1:5]] for r in csv.DictReader(io.StringIO(text))}


# ---- rollups to rows --------------------------------------------------------------------------------

def test_rollups_applied_to_a_database_file_give_exact_totals(tmp_path):
    frames = stream()
    apply(tmp_path / "a.db", [rollups_of(frames)])
    flows, hosts, [iface] = exports(tmp_path / "a.db")
    rows = list(csv.DictReader(io.StringIO(flows)))
    assert [(r["proto"], r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["orig_bytes"], r["resp_bytes"],
             r["orig_packets"], r["resp_packets"], r["first_seen"], r["tcp_flags"]) for r in rows] == [
        ("tcp", A, "40000", B, "443", str(12 * 54), str(4 * 54 + 18), "12", "4", "2023-11-14T22:14:00.000000Z", "SA"),
        ("udp", B, "53", B, "53", str(3 * 42), "0", "3", "0", "2023-11-14T22:14:17.000000Z", ""),
    ]
    assert hosts_table(hosts) == {A: [648, 234, 12, 4], B: [234 + 126, 648 + 126, 4 + 3, 12 + 3]}
    assert (iface["frames"], iface["bytes"], iface["ip_frames"], iface["non_ip_frames"]) == (
        20, 648 + 234 + 126 + 42, 19, 1)


def test_the_same_stream_in_different_batches_gives_identical_exports(tmp_path):
    frames = stream()
    rollups = rollups_of(frames)
    assert len(rollups) == 3
    apply(tmp_path / "one.db", [rollups])
    apply(tmp_path / "each.db", [[r] for r in rollups])
    apply(tmp_path / "split.db", [rollups[:1], [], rollups[1:]])
    apply(tmp_path / "live.db", [[r] for r in rollups_of(frames, drain_every=7)])     # more, smaller deltas
    apply(tmp_path / "live2.db", [rollups_of(frames, drain_every=20)])
    want = exports(tmp_path / "one.db")
    for name in ("each", "split", "live", "live2"):
        assert exports(tmp_path / f"{name}.db") == want, name
        for since, until in ((T0 + 60, T0 + 120), (T0, T0 + 61), (T0 + 90, None)):
            assert exports(tmp_path / f"{name}.db", since, until) == exports(tmp_path / "one.db", since, until)


def test_since_and_until_select_whole_minutes(tmp_path):
    apply(tmp_path / "a.db", [rollups_of(stream())])
    per_minute = []
    for m in range(3):
        _, hosts, [iface] = exports(tmp_path / "a.db", T0 + 60 * m, T0 + 60 * (m + 1))
        per_minute.append((hosts_table(hosts)[A], iface["frames"]))
    # minute 0: A sends 4 (k=0..3), B replies twice (k=0, 3), B to itself once, one ARP;
    # minutes 1 and 2: 4 sent, 1 reply (of 54 + k bytes), 1 to itself
    assert per_minute == [([216, 54 + 57, 4, 2], 4 + 2 + 1 + 1), ([216, 60, 4, 1], 4 + 1 + 1),
                          ([216, 63, 4, 1], 4 + 1 + 1)]
    assert exports(tmp_path / "a.db", T0 + 90, T0 + 121)[2][0]["frames"] == 12      # overlapping minutes 1 and 2
    assert exports(tmp_path / "a.db", T0 + 60, T0 + 60)[1] == ",".join(HOST_COLUMNS) + "\n"
    flows, _, _ = exports(tmp_path / "a.db", T0 + 120, None)
    [tcp_row, udp_row] = csv.DictReader(io.StringIO(flows))
    assert (tcp_row["orig_packets"], tcp_row["resp_packets"], udp_row["orig_packets"]) == ("4", "1", "1")


@pytest.mark.parametrize("since, until", [(1e30, None), (None, -1e30), (float("-inf"), float("inf")), (-1e30, 1e30)])
def test_times_beyond_any_integer_do_not_break_queries(tmp_path, since, until):
    apply(tmp_path / "a.db", [rollups_of(stream())])
    flows, hosts, ifaces = exports(tmp_path / "a.db", since, until)
    everything = since == -1e30 or since == float("-inf")
    assert (len(hosts_table(hosts)) == 2) == everything and bool(ifaces) == everything


# ---- export format ----------------------------------------------------------------------------------

def test_export_columns_are_the_documented_names(tmp_path):
    apply(tmp_path / "a.db", [rollups_of(stream())])
    flows, hosts, _ = exports(tmp_path / "a.db")
    assert hosts.splitlines()[0].split(",") == HOST_COLUMNS
    assert flows.splitlines()[0].split(",")[:len(FLOW_COLUMNS)] == FLOW_COLUMNS


HOSTILE = ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"http://x\")"]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    base = dict(proto=6, orig_h=A, orig_p=1, resp_h=B, resp_p=2, orig_bytes=1, resp_bytes=0, orig_packets=1,
                resp_packets=0, first_seen=T0, last_seen=T0, tcp_flags=2, iface="eth0")
    rows = [flow_row(dict(base, orig_process=h, resp_process="ok", iface=h)) for h in HOSTILE]
    text = render("flows", rows, "csv")
    got = list(csv.DictReader(io.StringIO(text)))
    assert [r["orig_process"] for r in got] == ["'" + h.replace("\r", "\n") for h in HOSTILE]
    assert [r["iface"] for r in got] == ["'" + h.replace("\r", "\n") for h in HOSTILE]
    assert {r["resp_process"] for r in got} == {"ok"} and {r["orig_bytes"] for r in got} == {"1"}
    assert json.loads(render("flows", rows, "json"))[0]["orig_process"] == HOSTILE[0]   # JSON is data: as is


def test_a_carriage_return_in_a_cell_does_not_forge_a_row():
    row = dict(ip="10.0.0.1", tx_bytes=1, rx_bytes=2, tx_packets=3, rx_packets=4)
    text = render("hosts", [dict(row, ip="x\r=1+2,9,9,9,9\r\ny")], "csv")
    got = list(csv.reader(io.StringIO(text, newline="")))
    assert got == [HOST_COLUMNS, ["x\n=1+2,9,9,9,9\ny", "1", "2", "3", "4", "", "", ""]]


def test_hostile_interface_name_from_a_capture_file_is_neutralised(tmp_path, capsys, clean_env):
    frame = bytes(E / IP(src=A, dst=B) / UDP(sport=1, dport=2))
    data = captures.shb() + captures.idb(1, name="=cmd|' /C calc'!A0") + captures.epb(0, int(T0 * 1e6), frame)
    (tmp_path / "h.pcapng").write_bytes(data)
    assert run.main(["import", str(tmp_path / "h.pcapng"), "--db", str(tmp_path / "h.db")]) == 0
    capsys.readouterr()                          # the import's lines
    assert run.main(["export", "flows", "--db", str(tmp_path / "h.db")]) == 0
    [row] = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["iface"] == "'=cmd|' /C calc'!A0"


def test_json_export_has_the_same_rows_with_numbers(tmp_path, capsys, clean_env):
    apply(tmp_path / "a.db", [rollups_of(stream())])
    out = {}
    for table in ("hosts", "flows"):
        for fmt in ("csv", "json"):
            assert run.main(["export", table, "--db", str(tmp_path / "a.db"), "--format", fmt]) == 0
            out[table, fmt] = capsys.readouterr().out
    hosts = json.loads(out["hosts", "json"])
    unnamed = dict(name=None, mac=None, vendor="")
    assert hosts == [dict(ip=B, tx_bytes=360, rx_bytes=774, tx_packets=7, rx_packets=15, **unnamed),
                     dict(ip=A, tx_bytes=648, rx_bytes=234, tx_packets=12, rx_packets=4, **unnamed)]
    flows = json.loads(out["flows", "json"])
    assert [list(f)[:len(FLOW_COLUMNS)] for f in flows] == [FLOW_COLUMNS] * 2
    assert [(f["proto"], f["orig_bytes"], f["resp_packets"], f["orig_pid"]) for f in flows] == [
        ("tcp", 648, 4, None), ("udp", 126, 0, None)]
    csv_rows = list(csv.DictReader(io.StringIO(out["flows", "csv"])))
    assert [{k: str(v) if v is not None else "" for k, v in f.items()} for f in flows] == csv_rows


def test_a_hand_made_rollup_round_trips(tmp_path):
    delta = FlowDelta(17, C, 5353, "ff02::fb", 5353, T0 + 1.5, T0 + 2.25, 100, 1, 0, 0, 0, "wlan0", True,
                      1234, "avahi-daemon", None, None)
    rollup = Rollup(int(T0), [delta], {C: [100, 0, 1, 0], "ff02::fb": [0, 100, 0, 1]},
                    {"wlan0": [1, 100, 1, 100, 0, 0, 0, 0, 1, 100]}, {}, {}, {})
    apply(tmp_path / "r.db", [[rollup]])
    flows, hosts, [iface] = exports(tmp_path / "r.db")
    [row] = csv.DictReader(io.StringIO(flows))
    assert (row["orig_h"], row["resp_h"], row["orig_pid"], row["orig_process"], row["resp_pid"]) == (
        C, "ff02::fb", "1234", "avahi-daemon", "")
    assert (row["first_seen"], row["last_seen"]) == ("2023-11-14T22:14:01.500000Z", "2023-11-14T22:14:02.250000Z")
    assert hosts_table(hosts) == {C: [100, 0, 1, 0], "ff02::fb": [0, 100, 0, 1]}
    assert (iface["iface"], iface["out_bytes"]) == ("wlan0", 100)


@pytest.mark.parametrize("content", [b"", None])
def test_reading_a_file_that_is_not_a_nettally_database_is_a_one_line_error(tmp_path, content):
    """Found in review: an empty file or a foreign SQLite file gave 'no such table' tracebacks."""
    import sqlite3
    from storage.db import DatabaseError
    path = tmp_path / "other.db"
    if content is None:
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    else:
        path.write_bytes(content)
    with pytest.raises(DatabaseError, match="not a NetTally database"):
        connect(str(path), readonly=True)


def test_host_macs_keep_the_latest_announcement_and_show_in_the_hosts_api(tmp_path):
    from settings import Settings
    from storage.hosts import host_usage
    from storage.tiers import RetentionPolicy
    con = connect(str(tmp_path / "m.db"))
    store = RollupStore(con)
    hosts = {"10.0.0.5": [100, 0, 1, 0]}
    store.apply([Rollup(60, [], hosts, {}, {}, {}, {}, {"10.0.0.5": "02:00:00:00:00:05"}),
                 Rollup(120, [], hosts, {}, {}, {}, {}, {"10.0.0.5": "02:00:00:00:00:05"}),
                 Rollup(180, [], hosts, {}, {}, {}, {}, {"10.0.0.5": "02:00:00:00:00:06"})])
    store.apply([Rollup(120, [], {}, {}, {}, {}, {}, {"10.0.0.5": "02:00:00:00:00:05"})])   # a late, older one
    assert con.execute("SELECT ip, mac, first_seen, last_seen FROM host_macs").fetchall() == [
        ("10.0.0.5", "02:00:00:00:00:06", 180, 180)]
    rows = host_usage(con, 0, 240, 240, policy=RetentionPolicy.from_settings(Settings()))["rows"]
    assert [(r["ip"], r["mac"]) for r in rows] == [("10.0.0.5", "02:00:00:00:00:06")]


def test_per_second_points_add_up_and_leave_with_retention_seconds(tmp_path):
    """host_seconds and process_seconds (issue 11): points of the same second add up; retention
    prunes them past retention_seconds, like iface_seconds; a process with only seconds is kept
    while they are."""
    from records import ProcessKey
    from storage import retention, tiers
    con = connect(str(tmp_path / "s.db"))
    store = RollupStore(con)
    curl = ProcessKey(7, 1.0, "curl")
    store.add_activity([(100, A, 10, 20), (1000, A, 1, 2)], [(100, curl, 5, 0), (1000, curl, 1, 1)])
    store.add_activity([(1000, A, 3, 4)], [(1000, curl, 2, 2)])
    assert con.execute("SELECT second, ip, tx_bytes, rx_bytes FROM host_seconds ORDER BY second").fetchall() == \
        [(100, A, 10, 20), (1000, A, 4, 6)]
    assert con.execute("SELECT s.second, p.name, s.tx_bytes, s.rx_bytes FROM process_seconds s "
                       "JOIN processes p ON p.id = s.process_id ORDER BY second").fetchall() == \
        [(100, "curl", 5, 0), (1000, "curl", 3, 3)]
    policy = tiers.RetentionPolicy(seconds=900, minute=86400, hour=86400, day=86400, flows=86400)
    assert retention.maintain(con, policy, now=1500)
    assert con.execute("SELECT second FROM host_seconds").fetchall() == [(1000,)]
    assert con.execute("SELECT second FROM process_seconds").fetchall() == [(1000,)]
    assert con.execute("SELECT name FROM processes").fetchall() == [("curl",)]
    assert retention.maintain(con, policy, now=2000)
    assert con.execute("SELECT count(*) FROM host_seconds").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM processes").fetchone() == (0,)
    con.close()
