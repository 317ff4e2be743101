"""The live alert runner: its thread, sliding without traffic, restarts, rule changes through the
API, every rule kind over stored rollups, storage health, and webhook retries and isolation."""
import http.server
import json
import threading

import pytest

from alerts import config
from alerts.service import AlertRunner
from alerts.webhook import WebhookSender
from records import Rollup
from records import ProcessKey
from storage import alert_log
from storage.db import connect
from storage.store import RollupStore
from storage.writer import health
from common import wait_for

T = 1_700_035_200             # a minute boundary


class Settings:
    def __init__(self, path="", webhook=""):
        self.alerts_config, self.webhook_url = path, webhook


def rules_file(tmp_path, text):
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    return Settings(str(path))


ONLY_BYTES = ('[[rule]]\nname = "host-bytes-hour"\nkind = "bytes"\nthreshold = "100 MB"\n'
              + "".join(f'[[rule]]\nname = "{n}"\nkind = "{k}"\nthreshold = 0.5\nenabled = false\n'
                        for n, k in (("process-bytes-hour", "bytes"), ("capture-drops", "drops"),
                                     ("attribution-coverage", "coverage")))
              + '[[rule]]\nname = "new-device"\nkind = "new_device"\nenabled = false\n')


def rollup(minute, hosts=None, iface_bytes=0, processes=None, attribution=None):
    hosts = {ip: [tx, rx, 1, 1] for ip, (tx, rx) in (hosts or {}).items()}
    ifaces = {"eth0": [1, iface_bytes, 1, iface_bytes, 0, 0, 0, 0, 0, 0]} if iface_bytes else {}
    return Rollup(minute, [], hosts, ifaces, {}, processes or {}, attribution or {})


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "live.db"
    s = RollupStore(connect(path))
    yield str(path), s
    s.con.close()


def kinds_open(con):
    return sorted((a["rule"], a["subject"]) for a in alert_log.alert_list(con, state="open"))


def test_thread_evaluates_on_after_write_and_windows_slide_without_traffic(tmp_path, db):
    path, s = db
    now = [T + 60]
    runner = AlertRunner(rules_file(tmp_path, ONLY_BYTES), path, clock=lambda: now[0], interval=3600)
    try:
        r = rollup(T, {"10.0.0.1": (150_000_000, 0)})
        s.apply([r])
        runner.after_write([r])
        runner.sync()
        assert kinds_open(s.con) == [("host-bytes-hour", "10.0.0.1")]
        now[0] = T + 3600 + 60             # an hour later, no traffic since: the window is empty
        runner.sync()
        assert kinds_open(s.con) == []
        assert alert_log.alert_list(s.con)[0]["closed"] == T + 3660
    finally:
        runner.close()


def test_restart_keeps_one_open_alert_and_closes_it_later(tmp_path, db):
    path, s = db
    settings = rules_file(tmp_path, ONLY_BYTES)
    s.apply([rollup(T, {"10.0.0.1": (150_000_000, 0)})])
    first = AlertRunner(settings, path, start=False)
    first.step(T + 60)
    first.con.close()                      # a crash: no close()
    second = AlertRunner(settings, path, start=False)
    second.step(T + 120)
    assert len(alert_log.alert_list(s.con)) == 1
    second.step(T + 3700)
    assert [(a["state"], a["closed"]) for a in alert_log.alert_list(s.con)] == [("closed", T + 3700)]
    second.con.close()


def test_rule_changes_through_the_api_apply_at_the_next_evaluation(tmp_path, db):
    path, s = db
    runner = AlertRunner(rules_file(tmp_path, ONLY_BYTES), path, start=False)
    s.apply([rollup(T, {"10.0.0.1": (5_000_000, 0)})])
    runner.step(T + 60)
    assert kinds_open(s.con) == []
    lower = config.validate_rule({"name": "host-bytes-hour", "kind": "bytes", "threshold": "4 MB"})
    alert_log.save_rule(s.con, config.rule_to_dict(lower), T)
    runner.step(T + 61)
    assert kinds_open(s.con) == [("host-bytes-hour", "10.0.0.1")]
    off = config.validate_rule({**config.rule_to_dict(lower), "enabled": False})
    alert_log.save_rule(s.con, config.rule_to_dict(off), T + 1)
    runner.step(T + 62)
    assert kinds_open(s.con) == [] and alert_log.alert_list(s.con)[0]["closed"] == T + 62
    runner.con.close()


def test_process_drops_coverage_and_subsecond_rate_rules(tmp_path, db):
    path, s = db
    settings = rules_file(tmp_path, """
[[rule]]
name = "process-bytes-hour"
kind = "bytes"
scope = "process"
threshold = "10 MB"
[[rule]]
name = "capture-drops"
kind = "drops"
scope = "interface"
threshold = "1%"
window = "5m"
[[rule]]
name = "attribution-coverage"
kind = "coverage"
threshold = 0.5
window = "15m"
[[rule]]
name = "burst"
kind = "rate"
scope = "all"
threshold = "8 Mbit/s"
window = 10
[[rule]]
name = "host-bytes-hour"
kind = "bytes"
threshold = "100 MB"
enabled = false
[[rule]]
name = "new-device"
kind = "new_device"
enabled = false
""")
    browser = ProcessKey(100, 5.0, "firefox")
    browser_again = ProcessKey(200, 9.0, "firefox")      # two processes, one name: counted together
    s.apply([rollup(T, iface_bytes=10**6, processes={browser: [6_000_000, 0, 1, 0], browser_again: [4_000_000, 0, 1, 0]},
                    attribution={"attributed": [400_000, 1], "socket_closed_before_lookup": [600_000, 1]})])
    s.add_drops(T, {"eth0": 30})
    # 1-second points: 1 MB/s (8 Mbit/s) in each of the 10 seconds before T + 60
    s.add_seconds([(T + 50 + i, "eth0", 1, 1_000_000, 0, 0) for i in range(10)])
    with s.con:
        s.con.execute("UPDATE iface_minutes SET frames = 970")
    runner = AlertRunner(settings, path, start=False)
    runner.step(T + 60)
    assert kinds_open(s.con) == [("attribution-coverage", "all"), ("burst", "all"),
                                 ("capture-drops", "eth0"), ("process-bytes-hour", "firefox")]
    by_rule = {a["rule"]: a for a in alert_log.alert_list(s.con)}
    assert by_rule["capture-drops"]["value"] == 0.03 and by_rule["capture-drops"]["unit"] == "share"
    assert by_rule["attribution-coverage"]["value"] == 0.4
    assert by_rule["burst"]["value"] == 8_000_000 and by_rule["burst"]["unit"] == "bit/s"
    assert by_rule["process-bytes-hour"]["value"] == 10_000_000
    runner.step(T + 61)                     # 9 MB in the last 10 s: 7.2 Mbit/s, not under 90 % of the limit
    assert ("burst", "all") in kinds_open(s.con)
    runner.step(T + 62)                     # 8 MB: 6.4 Mbit/s, under it
    assert ("burst", "all") not in kinds_open(s.con)
    runner.con.close()


def test_new_device_after_the_learning_window(tmp_path, db):
    path, s = db
    settings = rules_file(tmp_path, '[[rule]]\nname = "new-device"\nkind = "new_device"\nwindow = "1h"\n'
                                    'match = ["192.168.0.0/16"]\n')
    runner = AlertRunner(settings, path, start=False)
    first = rollup(T, {"192.168.1.10": (1, 1), "8.8.8.8": (1, 1)})
    s.apply([first])
    runner.after_write([first])
    runner.step(T + 60)                     # learning: the database holds less than an hour
    later = rollup(T + 7200, {"192.168.1.10": (1, 1), "192.168.1.77": (1, 1), "9.9.9.9": (1, 1)})
    s.apply([later])
    runner.after_write([later])
    runner.step(T + 7230)
    runner.after_write([later])
    runner.step(T + 7240)
    alerts = alert_log.alert_list(s.con)
    assert [(a["kind"], a["subject"], a["state"], a["opened"]) for a in alerts] == [
        ("new_device", "192.168.1.77", "open", T + 7230)]
    alert_log.acknowledge(s.con, alerts[0]["id"], T + 8000)
    runner.after_write([later])
    runner.step(T + 7250)
    assert [a["state"] for a in alert_log.alert_list(s.con)] == ["closed"]
    runner.con.close()


def test_new_devices_learn_for_a_while_after_the_first_live_start_whatever_was_imported(tmp_path, db):
    """A database that held an import from last year: the first live start still learns for
    new_device_learning seconds before any device counts as new (the resolver seen in the first
    minute is not news)."""
    path, s = db
    settings = rules_file(tmp_path, '[[rule]]\nname = "new-device"\nkind = "new_device"\nwindow = "1h"\n')
    settings.new_device_learning = 3600
    imported = rollup(T - 365 * 86400, {"10.0.0.1": (1, 1)})
    s.apply([imported])
    s.begin_source("live", "lo", started=T)
    runner = AlertRunner(settings, path, start=False)
    resolver = rollup(T, {"10.0.0.53": (1, 1)})
    s.apply([resolver])
    runner.after_write([resolver])
    runner.step(T + 60)
    assert alert_log.alert_list(s.con) == []
    late = rollup(T + 3600, {"10.0.0.77": (1, 1)})
    s.apply([late])
    runner.after_write([late])
    runner.step(T + 3660)
    assert [(a["subject"], a["opened"]) for a in alert_log.alert_list(s.con)] == [("10.0.0.77", T + 3660)]
    runner.con.close()


def test_storage_stall_opens_and_closes_an_alert(tmp_path, db):
    path, s = db
    runner = AlertRunner(rules_file(tmp_path, ONLY_BYTES), path, start=False)
    h = health(path)
    h.stalled_since, h.reason = T + 5, "database or disk is full"
    runner.step(T + 10)
    runner.step(T + 11)
    assert kinds_open(s.con) == [("database-writable", h.path)]
    with h._lock:
        h.finished.append((T + 5, T + 20, h.reason))
    h.stalled_since = None
    runner.step(T + 21)
    rows = alert_log.alert_list(s.con)
    assert [(a["kind"], a["opened"], a["closed"]) for a in rows] == [("storage", T + 5, T + 20)]
    assert "database or disk is full" in rows[0]["message"]
    runner.con.close()


# ---- webhook ------------------------------------------------------------------------------------

class FlakyHook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        srv.requests.append((self.headers["X-NetTally-Event"], body))
        srv.gate.wait(30)
        status = srv.statuses.pop(0) if srv.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyHook)
    server.requests, server.statuses, server.gate = [], [], threading.Event()
    server.gate.set()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.gate.set()
    server.shutdown()
    server.server_close()



@pytest.mark.system
def test_webhook_retries_server_errors_with_the_same_event_id(hook):
    hook.statuses = [503, 500]
    sender = WebhookSender(f"http://127.0.0.1:{hook.server_port}/", backoff=0.01)
    sender.send("e1", {"event": "opened"})
    wait_for(lambda: sender.delivered == 1)
    sender.close()
    assert [e for e, _ in hook.requests] == ["e1", "e1", "e1"] and sender.failed == 0


@pytest.mark.system
def test_webhook_gives_up_on_a_client_error_and_after_its_retries(hook):
    hook.statuses = [404] + [503] * 3
    sender = WebhookSender(f"http://127.0.0.1:{hook.server_port}/", retries=2, backoff=0.01)
    sender.send("bad", {})
    sender.send("down", {})
    wait_for(lambda: sender.failed == 2)
    sender.close()
    assert [e for e, _ in hook.requests] == ["bad", "down", "down", "down"]


@pytest.mark.system
def test_a_stuck_webhook_never_holds_up_evaluation(tmp_path, db, hook):
    path, s = db
    hook.gate.clear()                        # the receiver hangs on every request
    settings = rules_file(tmp_path, ONLY_BYTES)
    settings.webhook_url = f"http://127.0.0.1:{hook.server_port}/"
    runner = AlertRunner(settings, path, clock=lambda: T + 60, start=False)
    s.apply([rollup(T, {f"10.0.0.{i}": (150_000_000, 0) for i in range(1, 6)})])
    done = threading.Event()
    threading.Thread(target=lambda: (runner.step(T + 60), done.set()), daemon=True).start()
    assert done.wait(20)                     # evaluation finished while the receiver hung
    assert len(kinds_open(s.con)) == 5
    hook.gate.set()
    wait_for(lambda: runner.webhook.delivered == 5)
    runner.close()
    assert sorted(b["subject"] for _, b in hook.requests) == [f"10.0.0.{i}" for i in range(1, 6)]


def test_webhook_queue_is_bounded():
    sender = WebhookSender("http://127.0.0.1:9/", retries=0, max_waiting=3)
    with sender._wake:          # its thread cannot take an event while the queue is looked at (re-entrant lock)
        for i in range(5):
            sender.send(f"e{i}", {})
        assert [e for e, _ in sender.waiting] == ["e2", "e3", "e4"] and sender.given_up == 2
    # the refused deliveries end here: a sender left running would log into a later test's records
    sender.close()
    assert not sender._thread.is_alive() and sender.failed == 3
