"""The 100 MB rule over a generated capture, both ways it runs: over an import on the capture's
own timeline (evaluate_import) and live, fed the capture's rollups the way the collector feeds
them (store, after_write), delivering to a webhook test server on 127.0.0.1.

The capture: 10.0.0.1 sends 4 MB a minute for 30 minutes (crosses 100 MB in an hour at the end
of minute 24), then 0.1 MB a minute; 10.0.0.2 sends 2 MB a minute for 40 minutes (80 MB: never).
Frames carry 60 captured bytes and a 50,000-byte wire length (pcap orig_len), so 2 hours of this
traffic is a 300 kB file.
"""
import http.server
import json
import struct
import threading

import pytest

from alerts.service import AlertRunner, evaluate_import
from capture.flows import FlowTable
from capture.offline import import_file
from storage import alert_log
from storage.db import connect
from storage.store import RollupStore
from common import wait_for

S = 1_700_035_200             # capture start, a minute boundary (2023-11-15 08:00 UTC)
WIRE = 50_000
A, B = "10.0.0.1", "10.0.0.2"
PEER = {A: "192.0.2.1", B: "192.0.2.2"}
OPENED, CLOSED = S + 25 * 60, S + 69 * 60      # end of minute 24; end of minute 68 (87.9 MB < 90 MB)


def _frame(src, dst):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, WIRE - 14, 0, 0, 64, 17, 0, bytes(map(int, src.split("."))),
                     bytes(map(int, dst.split("."))))
    frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + struct.pack("!HHHH", 40000, 9000, WIRE - 34, 0)
    return frame + bytes(60 - len(frame))


def mb_per_minute(host, minute):
    if host == A:
        return 4.0 if minute < 30 else 0.1
    return 2.0 if minute < 40 else 0.0


def write_capture(path, minutes=120):
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    frames = {h: _frame(h, PEER[h]) for h in (A, B)}
    for m in range(minutes):
        for host in (A, B):
            count = round(mb_per_minute(host, m) * 1e6 / WIRE)
            for j in range(count):
                ts = S + 60 * m + 0.5 + j * (59.0 / max(count, 1)) + (0.25 if host == B else 0)
                out.append(struct.pack("<IIII", int(ts), int(ts % 1 * 1e6), 60, WIRE) + frames[host])
    # the frames of each minute are sorted by time: A's and B's interleave
    header, records = out[0], out[1:]
    records.sort(key=lambda r: struct.unpack_from("<II", r))
    path.write_bytes(header + b"".join(records))


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.headers["X-NetTally-Event"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Settings:
    alerts_config = ""
    webhook_url = ""


@pytest.fixture
def capture(tmp_path):
    path = tmp_path / "hour.pcap"
    write_capture(path)
    return path


def lan_rules(tmp_path):
    """The default 100 MB rule limited to the LAN (the remote peers cross it too: they receive it)."""
    s = Settings()
    s.alerts_config = str(tmp_path / "alerts.toml")
    (tmp_path / "alerts.toml").write_text(
        '[[rule]]\nname = "host-bytes-hour"\nkind = "bytes"\nthreshold = "100 MB"\nwindow = "1h"\n'
        'match = ["10.0.0.0/24"]\n')
    return s


def test_import_alerts_on_the_captures_own_timeline(tmp_path, capture):
    con = connect(tmp_path / "i.db")
    store_ = RollupStore(con)
    import_file(str(capture), store_.apply, FlowTable())
    assert store_.span == (S, S + 120 * 60)
    lines = evaluate_import(lan_rules(tmp_path), con, *store_.span)
    rows = alert_log.alert_list(con)
    assert [(r["rule"], r["subject"], r["origin"], r["state"]) for r in rows] == [
        ("host-bytes-hour", A, "import", "closed")]
    a = rows[0]
    assert (a["opened"], a["closed"], a["value"], a["peak"], a["threshold"]) == (OPENED, CLOSED, 100e6, 123e6, 100e6)
    assert lines == ["2023-11-15T08:25:00Z  warning  host 10.0.0.1: 100 MB in 1 h (limit 100 MB, rule host-bytes-hour)"
                     "; back under at 2023-11-15T09:09:00Z (peak 123 MB)"]
    # the built-in rule counts every address: the peer that received it all crosses too, B's never
    evaluate_import(Settings(), con, *store_.span)
    subjects = sorted(r["subject"] for r in alert_log.alert_list(con) if r["rule"] == "host-bytes-hour")
    assert subjects == [A, A, PEER[A]]


def test_import_alert_open_at_the_end_of_the_capture(tmp_path):
    path = tmp_path / "short.pcap"
    write_capture(path, minutes=40)
    con = connect(tmp_path / "s.db")
    store_ = RollupStore(con)
    import_file(str(path), store_.apply, FlowTable())
    lines = evaluate_import(lan_rules(tmp_path), con, *store_.span)
    assert [(r["opened"], r["closed"]) for r in alert_log.alert_list(con)] == [(OPENED, S + 40 * 60)]
    assert lines[0].endswith("; still over when the capture ended (peak 121 MB)")


@pytest.mark.system
def test_live_runner_alerts_once_and_the_webhook_gets_one_post_per_event(tmp_path, capture, webhook):
    settings = lan_rules(tmp_path)
    settings.webhook_url = f"http://127.0.0.1:{webhook.server_port}/hook"
    db = tmp_path / "live.db"
    store_ = RollupStore(connect(db))
    clock = [S]
    runner = AlertRunner(settings, str(db), clock=lambda: clock[0], start=False)

    def collector_flush(rollups):      # what the collector does after each drain
        for r in rollups:
            store_.apply([r])
            runner.after_write([r])
            clock[0] = r.bucket + 60
            runner.step(clock[0])
    import_file(str(capture), collector_flush, FlowTable())
    rows = alert_log.alert_list(store_.con)
    assert [(r["subject"], r["origin"], r["opened"], r["closed"]) for r in rows] == [(A, "live", OPENED, CLOSED)]
    wait_for(lambda: len(webhook.posts) >= 2 and runner.webhook.idle(), 20, "the webhook's two POSTs")
    runner.close()
    assert [(p["event"], p["subject"], p["id"]) for _, p in webhook.posts] == [
        ("opened", A, rows[0]["id"]), ("closed", A, rows[0]["id"])]
    opened, closed = (p for _, p in webhook.posts)
    assert (opened["value"], opened["threshold"], opened["unit"], opened["window_seconds"]) == (100e6, 100e6, "bytes", 3600)
    assert opened["severity"] == closed["severity"] == "warning"
    assert opened["time"] == "2023-11-15T08:25:00Z" and closed["closed"] == "2023-11-15T09:09:00Z"
    assert closed["opened"] == opened["time"]
    assert len({event_id for event_id, _ in webhook.posts}) == 2


def test_the_import_prints_counts_by_rule_and_severity_and_the_first_alerts_only():
    from alerts.service import AlertLine, import_summary
    lines = [AlertLine(f"2023-11-15T08:{m:02d}:00Z  info  new device 10.0.0.{m}", "new-device", "info")
             for m in range(7)]
    lines.append(AlertLine("2023-11-15T09:00:00Z  warning  host 10.0.0.1: 100 MB in 1 h", "host-bytes-hour", "warning"))
    out = import_summary(lines, first=3)
    assert out == ["alerts: 8 (new-device 7, host-bytes-hour 1); 1 warning, 7 info",
                   "  2023-11-15T08:00:00Z  info  new device 10.0.0.0",
                   "  2023-11-15T08:01:00Z  info  new device 10.0.0.1",
                   "  2023-11-15T08:02:00Z  info  new device 10.0.0.2",
                   "  ... 5 more: run.py export alerts, or the dashboard's alerts page"]
    assert import_summary([]) == []


def test_import_rules_measure_only_what_moved_yet_judge_as_if_all(tmp_path):
    """_import_slide measures, each minute, only subjects whose window totals moved (and the open
    ones): on random traffic of 12 hosts over 3 hours, with a bytes and a rate rule, including an
    end that is not on a minute, its events equal a straightforward evaluation of every subject
    every minute (written out here as the oracle), in any order within a minute."""
    import random

    from alerts.rules import Rule, SlidingWindow, Tracker, measure
    from alerts.service import _import_slide

    con = connect(str(tmp_path / "r.db"))
    rng = random.Random(7)
    hosts = [f"10.0.1.{i}" for i in range(12)]
    rows = []
    for m in range(180):
        for ip in rng.sample(hosts, rng.randint(0, 6)):
            tx = rng.choice((0, 1, 3, 8)) * 1_000_000
            rows.append((S + 60 * m, ip, tx, rng.randint(0, 2_000_000), 1, 1))
    with con:
        con.executemany("INSERT INTO host_minutes (minute, ip, tx_bytes, rx_bytes, tx_packets, rx_packets) "
                        "VALUES (?, ?, ?, ?, ?, ?)", rows)
    until = S + 180 * 60 - 17

    def every_subject(rule):
        window, tracker, events = SlidingWindow(rule.window, 60, 2), Tracker(rule), []
        samples = list(alert_log.samples(con, rule.kind, rule.scope, S - rule.window, until))
        for minute in range(S, until, 60):
            for row in samples:
                if minute <= row[0] < minute + 60:
                    window.add(row[0], row[1], row[2:])
            now = min(minute + 60, until)
            window.advance(now)
            span = window.span(now)
            events += tracker.check(now, {s: measure(rule, v, span) for s, v in window.totals.items()})
        return events + tracker.close_all(until)

    for rule in (Rule("b", "bytes", threshold=20e6, window=900, hysteresis=0.2),
                 Rule("r", "rate", threshold=3e5, window=600, hysteresis=0.1)):
        expected = every_subject(rule)
        assert sum(e.action == "opened" for e in expected) >= 3        # the traffic does cross, and clear
        assert sum(e.action == "closed" for e in expected) >= 3
        by_minute = sorted(expected, key=_when_who_what)
        assert sorted(_import_slide(con, rule, S, until), key=_when_who_what) == by_minute


def _when_who_what(event):
    return event.time, event.subject, event.action
