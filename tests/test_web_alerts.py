"""Alerts on the web side: the list and its CSV, acknowledging, rule changes through the API (and
that the live alert runner uses them), the cross-site and token checks of changes, the alerts
event of the live stream, the one write path after the privilege drop, and the toast in Chromium.

Through Flask's test client over a real SQLite file (tests/web_helpers.py), and through real
waitress servers on 127.0.0.1 (`run.py serve`, and a small server script for token mode)."""
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from storage.db import SCHEMA_VERSION

from alerts.service import AlertRunner
from common import IS_ROOT, ROOT, needs_root
from settings import Settings
from storage import alert_log
from storage.db import connect
from web_helpers import A, B, EVIL_PROCESS, FORMULA_PROCESS, NOW, answering, chromium_missing, free_port, \
    listening_pid, make_db, start_chromium, stop, uids_of, wait_for
from web.app import create_app

TOKEN = "t0ken-for-alert-tests-0123456789"
CHANGE = {"X-NetTally-Request": "1"}          # what the dashboard's script sends with a change
HOSTILE_MESSAGE = '<img src=x onerror="window.__xss=1"> used 200 MB\n\nevent: usage\ndata: {}'


def open_alert(path, rule, kind, scope, subject, opened, message, value=2e8, threshold=1e8, unit="bytes"):
    con = connect(path)
    try:
        return alert_log.open_alert(con, rule, kind, scope, subject, "live", opened, value, threshold, unit, 3600,
                                message)
    finally:
        con.close()


@pytest.fixture
def db_path(tmp_path):
    """The web test database plus three alerts: a process named like an HTML tag (open), a device
    (open, new_device), a process named like a spreadsheet formula (closed)."""
    path = make_db(tmp_path / "alerts.db")
    open_alert(path, "process-bytes-hour", "bytes", "process", EVIL_PROCESS, NOW - 600,
               f"process {EVIL_PROCESS}: 200 MB in 1 h (limit 100 MB, rule process-bytes-hour)")
    open_alert(path, "new-device", "new_device", "host", "192.168.1.9", NOW - 300,
               "new device 192.168.1.9 seen (rule new-device)", value=1.0, threshold=0.0, unit="")
    open_alert(path, "process-bytes-hour", "bytes", "process", FORMULA_PROCESS, NOW - 900, "=cmd|' /C calc'!A0")
    con = connect(path)
    alert_log.close_alert(con, "process-bytes-hour", FORMULA_PROCESS, "live", NOW - 200)
    con.close()
    return path


def make_app(path, **config):
    return create_app(test_config={"DB": path, "CLOCK": lambda: NOW, "TOKEN": None, "POOL_SIZE": 2, **config})


@pytest.fixture
def client(db_path):
    app = make_app(db_path)
    yield app.test_client()
    app.extensions["nettally.changes"].close()
    app.extensions["nettally.pool"].close()


def stored(path, alert_id):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT state, closed, acked, acked_by FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    finally:
        con.close()


def overrides(path):
    con = connect(path)
    try:
        return alert_log.rule_overrides(con)
    finally:
        con.close()


# ---- the list, acknowledging ------------------------------------------------------------------

def test_list_shows_open_alerts_newest_first_and_says_it_can_write(client):
    a = client.get("/api/alerts?state=open").get_json()
    assert a["available"] is True and a["writable"] is True
    assert [(r["id"], r["rule"], r["subject"], r["state"], r["acked"]) for r in a["rows"]] == [
        (2, "new-device", "192.168.1.9", "open", None), (1, "process-bytes-hour", EVIL_PROCESS, "open", None)]
    assert [r["id"] for r in client.get("/api/alerts").get_json()["rows"]] == [2, 1, 3]
    assert [r["id"] for r in client.get("/api/alerts?state=closed").get_json()["rows"]] == [3]


def test_acknowledge_changes_the_stored_state_and_the_list(client, db_path):
    response = client.post("/api/alerts/1/acknowledge", headers=CHANGE, json={"by": "ops on call"})
    assert response.status_code == 200
    alert = response.get_json()["alert"]
    assert (alert["id"], alert["state"], alert["acked"], alert["acked_by"]) == (1, "open", NOW, "ops on call")
    assert stored(db_path, 1) == ("open", None, NOW, "ops on call")       # a level alert stays open
    rows = {r["id"]: r for r in client.get("/api/alerts?state=open").get_json()["rows"]}
    assert (rows[1]["acked"], rows[1]["acked_by"]) == (NOW, "ops on call")

    # Without a body: who is the client's address. A new device is an event: acknowledging closes it.
    response = client.post("/api/alerts/2/acknowledge", headers=CHANGE)
    assert response.status_code == 200 and response.get_json()["alert"]["state"] == "closed"
    assert stored(db_path, 2) == ("closed", NOW, NOW, "web 127.0.0.1")
    assert [r["id"] for r in client.get("/api/alerts?state=open").get_json()["rows"]] == [1]

    # Again: no change (the first acknowledgement is kept), still 200.
    again = client.post("/api/alerts/1/acknowledge", headers=CHANGE, json={"by": "someone else"})
    assert again.status_code == 200 and again.get_json()["alert"]["acked_by"] == "ops on call"
    assert client.post("/api/alerts/99/acknowledge", headers=CHANGE).get_json() == {"error": "no alert 99"}
    assert client.post("/api/alerts/99/acknowledge", headers=CHANGE).status_code == 404


# Changes with something wrong: (method, url, raw JSON body or None, the parameter the 400 names).
RULE = '{"kind": "bytes", "threshold": "1 GB"'
BAD_CHANGES = [
    ("POST", "/api/alerts/abc/acknowledge", None, "id"),
    ("POST", "/api/alerts/-1/acknowledge", None, "id"),
    ("POST", "/api/alerts/1.5/acknowledge", None, "id"),
    ("POST", "/api/alerts/%EF%BC%91/acknowledge", None, "id"),         # a full-width digit one
    ("POST", "/api/alerts/1/acknowledge?x=1", None, "x"),
    ("POST", "/api/alerts/1/acknowledge", '{"by": ""}', "by"),
    ("POST", "/api/alerts/1/acknowledge", '{"by": "a\\nb"}', "by"),
    ("POST", "/api/alerts/1/acknowledge", '{"by": 7}', "by"),
    ("POST", "/api/alerts/1/acknowledge", '{"by": "' + "x" * 65 + '"}', "by"),
    ("POST", "/api/alerts/1/acknowledge", '{"who": "me"}', "who"),
    ("POST", "/api/alerts/1/acknowledge", "[1]", "body"),
    ("POST", "/api/alerts/1/acknowledge", "{", "body"),
    ("PUT", "/api/alerts/rules/x%20y", RULE + "}", "name"),
    ("PUT", "/api/alerts/rules/x%0A", RULE + "}", "name"),
    ("PUT", "/api/alerts/rules/" + "x" * 65, RULE + "}", "name"),
    ("PUT", "/api/alerts/rules/lan", None, "body"),
    ("PUT", "/api/alerts/rules/lan", '"bytes"', "body"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "name": "wan"}', "name"),
    ("PUT", "/api/alerts/rules/lan", '{"kind": "bits", "threshold": 1}', "kind"),
    ("PUT", "/api/alerts/rules/lan", '{"kind": "bytes"}', "threshold"),
    ("PUT", "/api/alerts/rules/lan", '{"kind": "bytes", "threshold": "100 MQ"}', "threshold"),
    ("PUT", "/api/alerts/rules/lan", '{"kind": "bytes", "threshold": 1e999}', "threshold"),
    ("PUT", "/api/alerts/rules/lan", '{"kind": "bytes", "threshold": NaN}', "threshold"),
    ("PUT", "/api/alerts/rules/lan", '{"kind": "bytes", "threshold": ' + "9" * 400 + "}", "threshold"),
    ("PUT", "/api/alerts/rules/lan", '{"kind": "drops", "threshold": 2}', "threshold"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "window": "90s"}', "window"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "window": 1e999}', "window"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "scope": "planet"}', "scope"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "direction": "up"}', "direction"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "match": ["not-an-address"]}', "match"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "match": [1]}', "match"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "hysteresis": 1.5}', "hysteresis"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "enabled": "yes"}', "enabled"),
    ("PUT", "/api/alerts/rules/lan", RULE + ', "colour": "red"}', "colour"),
    ("PATCH", "/api/alerts/rules/host-bytes-hour", '{"threshold": -1}', "threshold"),
    ("PATCH", "/api/alerts/rules/host-bytes-hour", '{"name": "other"}', "name"),
    ("DELETE", "/api/alerts/rules/x%20y", None, "name"),
    ("DELETE", "/api/alerts/rules/lan?force=1", None, "force"),
]


@pytest.mark.parametrize("method,url,body,parameter", BAD_CHANGES)
def test_bad_changes_are_400_naming_the_parameter_and_change_nothing(client, db_path, method, url, body, parameter):
    response = client.open(url, method=method, data=body, headers=CHANGE,
                           content_type="application/json" if body is not None else None)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()
    assert error["parameter"] == parameter and error["error"].startswith(parameter + ": ")
    assert "\n" not in error["error"]
    assert overrides(db_path) == [] and stored(db_path, 1) == ("open", None, None, None)


@pytest.mark.parametrize("url,parameter", [
    ("/api/alerts?state=maybe", "state"), ("/api/alerts.csv?state=maybe", "state"), ("/api/alerts.csv?limit=0", "limit"),
    ("/api/alerts/rules?x=1", "x"), ("/api/alerts/rules/x%20y", "name"), ("/api/alerts/rules/lan?x=1", "x"),
])
def test_bad_read_parameters_are_400(client, url, parameter):
    response = client.get(url)
    assert response.status_code == 400 and response.get_json()["parameter"] == parameter


def test_unknown_rule_and_methods(client):
    assert client.get("/api/alerts/rules/nope").status_code == 404
    assert client.patch("/api/alerts/rules/nope", headers=CHANGE, json={"enabled": False}).status_code == 404
    assert client.delete("/api/alerts/rules/host-bytes-hour", headers=CHANGE).get_json() == {
        "error": "no rule host-bytes-hour was saved through the API"}
    assert client.get("/api/alerts/1/acknowledge").status_code == 405
    response = client.put("/api/alerts/rules/big", headers=CHANGE, data=b"{" + b" " * 70_000 + b"}",
                          content_type="application/json")
    assert response.status_code == 413 and "error" in response.get_json()


def test_a_change_waits_for_the_write_lock_then_is_refused_and_reads_go_on(db_path):
    """The collector's writer holding the write lock longer than a change waits: 503, nothing
    half done; the dashboard still reads; once the lock is free the same change works."""
    app = make_app(db_path, CHANGE_WAIT=0.2)
    client = app.test_client()
    collector = sqlite3.connect(db_path, isolation_level=None)
    collector.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        response = client.post("/api/alerts/1/acknowledge", headers=CHANGE)
        assert time.monotonic() - started < 5
        assert (response.status_code, response.get_json()) == (
            503, {"error": "cannot change alerts now: database is locked"})
        assert client.put("/api/alerts/rules/lan", headers=CHANGE,
                          json={"kind": "bytes", "threshold": 1}).status_code == 503
        assert client.get("/api/alerts?state=open").status_code == 200
    finally:
        collector.rollback()
        collector.close()
    assert stored(db_path, 1) == ("open", None, None, None) and overrides(db_path) == []
    assert client.post("/api/alerts/1/acknowledge", headers=CHANGE).status_code == 200
    app.extensions["nettally.changes"].close()


def test_the_web_side_never_migrates_an_older_database_it_only_reads_it(db_path):
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA user_version = 1")            # as the collector of the previous version left it
    con.close()
    app = make_app(db_path)
    client = app.test_client()
    assert client.get("/api/alerts").get_json()["writable"] is False
    assert client.get("/api/alerts/rules").get_json()["writable"] is False
    response = client.post("/api/alerts/1/acknowledge", headers=CHANGE)
    assert response.status_code == 503
    assert response.get_json()["error"] == ("alert changes are off: the database cannot be opened for writing "
                                            f"({db_path}: schema version 1, not {SCHEMA_VERSION} (the collector updates it))")
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1 and stored(db_path, 1)[2] is None
    con.close()


def test_the_warm_up_before_the_privilege_drop_writes_nothing(db_path):
    from collector.web_process import warm_up
    app = make_app(db_path)
    wal = db_path + "-wal"
    assert os.path.getsize(wal) == 0                  # all connections closed before: checkpointed, empty
    warm_up(app)
    assert os.path.getsize(wal) == 0                  # no transaction wrote a page
    assert overrides(db_path) == [] and stored(db_path, 1) == ("open", None, None, None)
    app.extensions["nettally.changes"].close()


# ---- cross-site requests and the token ---------------------------------------------------------

def test_changes_from_other_sites_are_refused(client, db_path):
    # A form on another site posts without the header (it cannot add one) and as text/plain.
    no_header = client.post("/api/alerts/1/acknowledge", data="by=evil", content_type="text/plain")
    assert no_header.status_code == 403
    assert no_header.get_json() == {"error": "changes need the header X-NetTally-Request: 1 (the dashboard sends it); "
                                             "requests from other sites are refused"}
    assert client.put("/api/alerts/rules/lan", json={"kind": "bytes", "threshold": 1}).status_code == 403
    assert client.delete("/api/alerts/rules/lan").status_code == 403
    other_origin = {**CHANGE, "Origin": "http://attacker.example"}
    assert client.post("/api/alerts/1/acknowledge", headers=other_origin).status_code == 403
    assert client.post("/api/alerts/1/acknowledge", headers={**CHANGE, "Origin": "null"}).status_code == 403
    cross_site = {**CHANGE, "Sec-Fetch-Site": "cross-site"}
    assert client.post("/api/alerts/1/acknowledge", headers=cross_site).status_code == 403
    form = client.post("/api/alerts/1/acknowledge", headers=CHANGE, data="by=x",
                       content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    assert stored(db_path, 1) == ("open", None, None, None) and overrides(db_path) == []
    # The preflight a cross-origin script would need is never granted.
    preflight = client.options("/api/alerts/1/acknowledge", headers={
        "Origin": "http://attacker.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-nettally-request"})
    assert not any(h.lower().startswith("access-control-allow") for h in preflight.headers.keys())
    # The dashboard's own request: same origin, the header, JSON.
    own = {**CHANGE, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/alerts/1/acknowledge", headers=own, json={"by": "me"}).status_code == 200


def test_non_loopback_changes_need_the_token(db_path):
    app = make_app(db_path, TOKEN=TOKEN, BIND_HOST="0.0.0.0")
    client = app.test_client()
    response = client.post("/api/alerts/1/acknowledge", headers=CHANGE)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="nettally"'
    assert client.put("/api/alerts/rules/lan", headers=CHANGE, json={"kind": "bytes", "threshold": 1}).status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/alerts/1/acknowledge", headers=bearer).status_code == 403     # token, no header
    assert stored(db_path, 1) == ("open", None, None, None)
    assert client.post("/api/alerts/1/acknowledge", headers={**bearer, **CHANGE}).status_code == 200
    assert stored(db_path, 1)[2] == NOW


# ---- rules --------------------------------------------------------------------------------------

def test_rules_in_force_with_their_sources(tmp_path, db_path):
    rules_file = tmp_path / "alerts.toml"
    rules_file.write_text('[[rule]]\nname = "host-bytes-hour"\nkind = "bytes"\nthreshold = "1 GB"\n'
                          '[[rule]]\nname = "wan-busy"\nkind = "rate"\nscope = "interface"\nmatch = ["eth0"]\n'
                          'threshold = "80 Mbit/s"\nwindow = "5m"\n')
    app = make_app(db_path, ALERTS_CONFIG=str(rules_file))
    client = app.test_client()
    r = client.get("/api/alerts/rules").get_json()
    assert (r["writable"], r["rules_file"], r["problems"]) == (True, str(rules_file), [])
    assert [(e["rule"]["name"], e["source"], e["replaces"]) for e in r["rules"]] == [
        ("host-bytes-hour", "file", "built-in"), ("process-bytes-hour", "built-in", None),
        ("new-device", "built-in", None), ("capture-drops", "built-in", None),
        ("attribution-coverage", "built-in", None), ("wan-busy", "file", None)]
    assert r["rules"][5] == {"rule": {"name": "wan-busy", "kind": "rate", "scope": "interface",
                                      "threshold": 80_000_000.0, "window": 300, "direction": "both",
                                      "match": ["eth0"], "hysteresis": 0.1, "enabled": True,
                                      "severity": "warning"},
                             "unit": "bit/s", "source": "file", "replaces": None}

    put = client.put("/api/alerts/rules/host-bytes-hour", headers=CHANGE,
                     json={"kind": "bytes", "threshold": "2 GiB", "match": ["10.0.0.0/8"], "direction": "rx"})
    assert put.status_code == 200 and put.get_json() == {
        "rule": {"name": "host-bytes-hour", "kind": "bytes", "scope": "host", "threshold": float(2 ** 31),
                 "window": 3600, "direction": "rx", "match": ["10.0.0.0/8"], "hysteresis": 0.1, "enabled": True,
                 "severity": "warning"},
        "unit": "bytes", "source": "api", "replaces": "file"}
    patched = client.patch("/api/alerts/rules/wan-busy", headers=CHANGE, json={"enabled": False}).get_json()
    assert (patched["rule"]["enabled"], patched["rule"]["threshold"], patched["source"]) == (False, 8e7, "api")
    new = client.put("/api/alerts/rules/lan-new", headers=CHANGE, json={"kind": "new_device", "match": "10.0.0.0/8"})
    assert new.get_json()["rule"]["match"] == ["10.0.0.0/8"] and new.get_json()["replaces"] is None
    assert sorted(o["name"] for o in overrides(db_path)) == ["host-bytes-hour", "lan-new", "wan-busy"]

    dropped = client.delete("/api/alerts/rules/host-bytes-hour", headers=CHANGE).get_json()
    assert dropped["deleted"] == "host-bytes-hour" and dropped["rule"]["source"] == "file"
    assert dropped["rule"]["rule"]["threshold"] == 1e9
    gone = client.delete("/api/alerts/rules/lan-new", headers=CHANGE).get_json()
    assert gone == {"deleted": "lan-new", "rule": None}
    assert client.get("/api/alerts/rules/lan-new").status_code == 404
    assert [o["name"] for o in overrides(db_path)] == ["wan-busy"]


def test_a_bad_rules_file_or_stored_rule_is_reported_not_fatal(tmp_path, db_path):
    rules_file = tmp_path / "bad.toml"
    rules_file.write_text('[[rule]]\nname = "x"\nkind = "bytes"\n')
    con = connect(db_path)
    alert_log.save_rule(con, {"name": "old", "kind": "bytes", "threshold": 1, "future_field": 1}, 1.0)
    con.close()
    r = make_app(db_path, ALERTS_CONFIG=str(rules_file)).test_client().get("/api/alerts/rules").get_json()
    assert r["problems"] == [f"alert rules {rules_file}: rule x: threshold is required",
                             "rule saved through the API left out: unknown rule field 'future_field' (fields: name, "
                             "kind, scope, threshold, window, direction, match, hysteresis, enabled, severity)"]
    assert [e["source"] for e in r["rules"]] == ["built-in"] * 5


def test_a_rule_saved_through_the_api_is_used_by_the_alert_runner(tmp_path):
    """Stored rollups of web_helpers: in the last hour 10.0.0.1 moved 6810 bytes, 10.0.0.2 6600."""
    path = make_db(tmp_path / "runner.db")
    app = make_app(path)
    client = app.test_client()
    runner = AlertRunner(Settings(db=path), path, clock=lambda: NOW, start=False)
    try:
        runner.step(NOW)
        assert client.get("/api/alerts").get_json()["rows"] == []

        assert client.put("/api/alerts/rules/host-bytes-hour", headers=CHANGE,
                          json={"kind": "bytes", "threshold": "6700 B"}).status_code == 200
        runner.step(NOW + 1)
        rows = client.get("/api/alerts?state=open").get_json()["rows"]
        assert [(r["rule"], r["subject"], r["value"], r["threshold"], r["opened"], r["message"]) for r in rows] == [
            ("host-bytes-hour", A, 6810.0, 6700.0, NOW + 1,
             "host 10.0.0.1: 6.81 kB in 1 h (limit 6.7 kB, rule host-bytes-hour)")]

        assert client.patch("/api/alerts/rules/host-bytes-hour", headers=CHANGE,
                            json={"threshold": 6500, "direction": "both"}).status_code == 200
        runner.step(NOW + 2)
        rows = client.get("/api/alerts?state=open").get_json()["rows"]
        assert [(r["subject"], r["value"], r["threshold"]) for r in rows] == [(B, 6600.0, 6500.0), (A, 6810.0, 6700.0)]

        assert client.delete("/api/alerts/rules/host-bytes-hour", headers=CHANGE).status_code == 200
        runner.step(NOW + 3)                       # back to the built-in 100 MB: both fall back
        assert client.get("/api/alerts?state=open").get_json()["rows"] == []
        assert [(r["subject"], r["state"], r["closed"]) for r in client.get("/api/alerts").get_json()["rows"]] == [
            (B, "closed", NOW + 3), (A, "closed", NOW + 3)]
    finally:
        runner.con.close()
        app.extensions["nettally.changes"].close()


def test_the_runner_lets_go_of_a_device_alert_acknowledged_through_the_api(tmp_path):
    path = make_db(tmp_path / "device.db")
    client = make_app(path).test_client()
    runner = AlertRunner(Settings(db=path), path, clock=lambda: NOW, start=False)
    try:
        runner.trackers["new-device"].open["192.168.1.9"] = 1.0       # as after a check that opened it
        alert_id = open_alert(path, "new-device", "new_device", "host", "192.168.1.9", NOW - 60,
                              "new device 192.168.1.9 seen (rule new-device)", 1.0, 0.0, "")
        assert client.post(f"/api/alerts/{alert_id}/acknowledge", headers=CHANGE).status_code == 200
        runner.step(NOW + 1)
        assert runner.trackers["new-device"].open == {}
        # Switching the rule off now closes nothing again: the alert keeps its acknowledgement time.
        client.patch("/api/alerts/rules/new-device", headers=CHANGE, json={"enabled": False})
        events = runner.evaluate(NOW + 2)
        assert events == [] and stored(path, alert_id) == ("closed", NOW, NOW, "web 127.0.0.1")
    finally:
        runner.con.close()


# ---- hostile text: JSON as is, CSV neutralised, pages without data ------------------------------

def test_hostile_subjects_and_messages_in_csv_json_and_pages(client):
    rows = client.get("/api/alerts").get_json()["rows"]
    assert {r["subject"] for r in rows} == {EVIL_PROCESS, "192.168.1.9", FORMULA_PROCESS}     # JSON: as they are
    response = client.get("/api/alerts.csv")
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="nettally-alerts-20231114T223030Z.csv"'
    exported = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["id"], r["subject"], r["message"], r["state"]) for r in exported] == [
        ("3", "'" + FORMULA_PROCESS, "'=cmd|' /C calc'!A0", "closed"),
        ("1", EVIL_PROCESS, f"process {EVIL_PROCESS}: 200 MB in 1 h (limit 100 MB, rule process-bytes-hour)", "open"),
        ("2", "192.168.1.9", "new device 192.168.1.9 seen (rule new-device)", "open")]
    assert list(exported[0]) == ["id", "rule", "kind", "scope", "subject", "state", "opened", "closed", "value",
                                 "peak", "threshold", "unit", "window_seconds", "origin", "acknowledged",
                                 "acknowledged_by", "message", "severity"]
    only_open = list(csv.DictReader(io.StringIO(client.get("/api/alerts.csv?state=open&limit=1").get_data(as_text=True))))
    assert [r["id"] for r in only_open] == ["2"]
    for page in ("/", "/alerts"):
        html = client.get(page).get_data(as_text=True)
        assert EVIL_PROCESS not in html and "<img" not in html and "calc" not in html     # data only via the API


# ---- the live stream's alerts event -------------------------------------------------------------

class Events:
    """(name, data) of a streamed response: comments and `retry` skipped, data parsed as JSON."""

    def __init__(self, response):
        self.response, self.chunks, self.buffer = response, iter(response.response), ""

    def next(self, name, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            while "\n\n" not in self.buffer:
                assert time.monotonic() < deadline, f"no {name} event in time"
                self.buffer += next(self.chunks).decode()
            block, self.buffer = self.buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
            if fields.get("event") == name:
                assert "id" not in fields or name == "usage"
                return json.loads(fields["data"])


def test_stream_tells_of_alerts_as_they_open_and_are_acknowledged(db_path):
    app = make_app(db_path, STREAM_HEARTBEAT=30.0)
    client = app.test_client()
    stream = Events(client.get("/api/stream", buffered=False))
    try:
        first = stream.next("alerts")
        assert (first["latest"], first["open_count"], [r["id"] for r in first["open"]]) == (3, 2, [2, 1])
        assert first["open"][1]["subject"] == EVIL_PROCESS

        new_id = open_alert(db_path, "host-bytes-hour", "bytes", "host", "10.9.9.9", NOW, HOSTILE_MESSAGE)
        opened = stream.next("alerts")
        assert (opened["latest"], opened["open_count"], [r["id"] for r in opened["open"]]) == (4, 3, [4, 2, 1])
        assert opened["open"][0]["message"] == HOSTILE_MESSAGE      # one data line, whatever the text holds

        assert client.post(f"/api/alerts/{new_id}/acknowledge", headers=CHANGE).status_code == 200
        acked = stream.next("alerts")
        assert acked["open"][0]["acked"] == NOW and acked["open_count"] == 3
    finally:
        stream.response.close()
        app.extensions["nettally.changes"].close()


# ---- real servers -------------------------------------------------------------------------------

def request(url, method="GET", body=None, headers=None):
    """(status, parsed JSON) of a request; HTTP errors are answers."""
    data = None if body is None else json.dumps(body).encode()
    headers = {**({"Content-Type": "application/json"} if data else {}), **(headers or {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.system
def test_acknowledge_over_http_from_run_py_serve(db_path, tmp_path, run_py):
    """`run.py serve` (as root it gives up root first: the change goes through the one
    read-write connection it opened before, into a directory the web user cannot even enter)."""
    if IS_ROOT:
        os.chmod(tmp_path, 0o700)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "NETTALLY_WEB_USER")}
    proc = subprocess.Popen(run_py + ["serve", "--db", db_path, "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answering(base), 30, "the dashboard")
        if IS_ROOT:
            assert all(uid != 0 for uid in uids_of(listening_pid(port)))
            assert os.stat(os.path.dirname(db_path)).st_mode & 0o007 == 0      # nobody cannot enter it
        assert request(base + "/api/alerts/1/acknowledge", "POST", {"by": "ops"}) == (
            403, {"error": "changes need the header X-NetTally-Request: 1 (the dashboard sends it); "
                           "requests from other sites are refused"})
        status, body = request(base + "/api/alerts/1/acknowledge", "POST", {"by": "ops"}, CHANGE)
        assert status == 200 and body["alert"]["acked_by"] == "ops"
        assert stored(db_path, 1)[3] == "ops"
        status, body = request(base + "/api/alerts/rules/host-bytes-hour", "PUT",
                               {"kind": "bytes", "threshold": "5 MB"}, CHANGE)
        assert status == 200 and body["source"] == "api"
        assert [o["threshold"] for o in overrides(db_path)] == [5e6]
        status, body = request(base + "/api/alerts/rules/host-bytes-hour", "PUT", {"kind": "bytes"}, CHANGE)
        assert (status, body["parameter"]) == (400, "threshold")
        assert request(base + "/api/alerts/rules/host-bytes-hour", "DELETE", None, CHANGE)[0] == 200
        assert overrides(db_path) == []
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0 and err == ""


# 200 kB over one TCP connection on loopback, once.
TALK = r"""
import socket, threading
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
def drain():
    got = 0
    while got < 200_000:
        got += len(peer.recv(65536))
reader = threading.Thread(target=drain)
reader.start()
client.sendall(b"x" * 200_000)
reader.join(10)
client.close()
peer.close()
"""


@needs_root
def test_the_capturing_collector_applies_a_rule_put_through_the_dashboard(tmp_path, run_py):
    """`run.py -i lo` (capture, collector with its alert runner, web server as nobody): a rule
    saved through the web server fires in the collector within seconds; acknowledged through
    the web server again."""
    port = free_port()
    base, db = f"http://127.0.0.1:{port}", str(tmp_path / "live.db")
    env = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "NETTALLY_WEB_USER")}
    service = subprocess.Popen(run_py + ["-i", "lo", "--db", db, "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answering(base), 30, "the dashboard of the live capture")
        status, body = request(base + "/api/alerts/rules/lo-busy", "PUT", {
            "kind": "bytes", "threshold": "50 kB", "match": ["127.0.0.1/32"]}, CHANGE)
        assert (status, body["source"], body["rule"]["threshold"]) == (200, "api", 50_000.0)
        subprocess.run([sys.executable, "-c", TALK], check=True, timeout=30)

        def opened():
            rows = request(base + "/api/alerts?state=open")[1]["rows"]
            return [r for r in rows if r["rule"] == "lo-busy"]
        rows = wait_for(opened, 15, "the collector to open the lo-busy alert")
        assert [(r["subject"], r["threshold"], r["unit"], r["origin"]) for r in rows] == [
            ("127.0.0.1", 50_000.0, "bytes", "live")]
        assert rows[0]["value"] >= 50_000              # opened when the window crossed the limit,
        # which may be before every byte of the talk was written: its peak follows as they are.
        # 127.0.0.1 sent and received the 200 kB (frames on the wire: more); the test's own HTTP
        # requests to the dashboard are on lo too, so the peak has no exact upper bound here.
        rows = wait_for(lambda: [r for r in opened() if r["peak"] >= 2 * 200_000], 15,
                        "the alert's peak to reach both directions of the 200 kB")
        status, body = request(base + f"/api/alerts/{rows[0]['id']}/acknowledge", "POST", {"by": "ops"}, CHANGE)
        assert status == 200 and body["alert"]["acked_by"] == "ops"
    finally:
        out, err = stop(service)
    assert service.returncode == 0, err
    assert "alert: host 127.0.0.1: " in err and "(limit 50 kB, rule lo-busy)" in err
    assert stored(db, rows[0]["id"])[3] == "ops"


# A waitress server in token mode (as for a non-loopback bind) that listens on 127.0.0.1 only.
TOKEN_SERVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import waitress
from web.app import create_app
app = create_app(test_config={"DB": sys.argv[2], "TOKEN": sys.argv[4], "BIND_HOST": "0.0.0.0", "POOL_SIZE": 5})
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[3]), threads=4, _quiet=True)
"""


@pytest.mark.system
def test_token_mode_over_http(db_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", TOKEN_SERVER, str(ROOT), db_path, str(port), TOKEN],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: request(base + "/api/alerts")[0] == 401 if _listening(port) else False, 30, "the server")
        assert request(base + "/api/alerts/1/acknowledge", "POST", None, CHANGE)[0] == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert request(base + "/api/alerts/1/acknowledge", "POST", None, bearer)[0] == 403
        assert stored(db_path, 1) == ("open", None, None, None)
        status, body = request(base + "/api/alerts/1/acknowledge", "POST", None, {**bearer, **CHANGE})
        assert status == 200 and body["alert"]["acked_by"] == "web 127.0.0.1"
        assert stored(db_path, 1)[3] == "web 127.0.0.1"
    finally:
        stop(proc)


def _listening(port):
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---- the toast in Chromium ----------------------------------------------------------------------

@pytest.fixture
def browser(tmp_path):
    why = chromium_missing()
    if why:
        pytest.skip(why)
    driver = start_chromium(tempfile.mkdtemp(dir=tmp_path))
    yield driver
    driver.quit()


def js(driver, script):
    return driver.execute_script(script)


@pytest.mark.system
def test_toast_when_an_alert_opens_and_acknowledge_from_it(browser, tmp_path, run_py):
    path = make_db(tmp_path / "toast.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(run_py + ["serve", "--db", path, "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answering(base), 30, "the dashboard")
        browser.get(base + "/")
        wait_for(lambda: js(browser, "return document.body.dataset.alertsKnown") == "0", 10,
                 "the overview to hear the alerts of the live stream")

        alert_id = open_alert(path, "process-bytes-hour", "bytes", "process", EVIL_PROCESS, time.time(),
                              HOSTILE_MESSAGE)
        toast = "document.querySelector('#toasts .toast')"
        wait_for(lambda: js(browser, f"return {toast} && {toast}.dataset.alert") == str(alert_id), 5, "the toast")
        assert js(browser, f"return {toast}.querySelector('.toast-message').textContent") == HOSTILE_MESSAGE
        assert js(browser, f"return {toast}.getAttribute('role')") == "alert"
        assert js(browser, "return [document.images.length, window.__xss === undefined]") == [0, True]
        wait_for(lambda: js(browser, "return [...document.querySelectorAll('#recent-alerts tbody tr')]"
                                     ".map(tr => tr.cells.length > 2 ? tr.cells[2].textContent : '')") == [HOSTILE_MESSAGE], 10,
                 "the panel row")

        js(browser, f"{toast}.querySelector('button.ack').click()")
        wait_for(lambda: stored(path, alert_id)[2] is not None, 10, "the acknowledgement in the database")
        assert stored(path, alert_id)[3] == "web 127.0.0.1"
        wait_for(lambda: js(browser, f"return {toast} === null"), 5, "the toast to go")
        wait_for(lambda: js(browser, "const c = document.querySelector('#recent-alerts tbody tr').cells; "
                                     "return c.length > 3 ? c[3].textContent : ''").startswith("acknowledged "), 10,
                 "the panel to show the acknowledgement")

        # The alerts page: its rules table switches a rule off through the API.
        browser.get(base + "/alerts")
        row = "[...document.querySelectorAll('#rules tbody tr')].find(tr => tr.cells[0].textContent === 'new-device')"
        wait_for(lambda: js(browser, f"return !!({row})"), 10, "the rules table")
        js(browser, f"({row}).querySelector('button.toggle').click()")
        wait_for(lambda: [o["enabled"] for o in overrides(path)] == [False], 10, "the rule switched off")
        wait_for(lambda: js(browser, f"const r = {row}; return r ? r.cells[6].textContent : ''") == "off", 10,
                 "the rule shown off")
        assert [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        stop(server)
