"""Alert severities: stored with each alert (schema 6 adds the column to databases of before,
which keep their kind's default), read by readers of a database not updated yet, filtered in the
API and its CSV, exported, in the log line, the webhook body and the import's summary."""
import csv
import io
import logging
import sqlite3
from pathlib import Path

import pytest

import storage
from alerts import messages
from alerts.config import validate_rule
from alerts.service import STORAGE_RULE, Delivery
from storage import alert_log
from storage.db import SCHEMA_FILES, SCHEMA_VERSION, connect
from web.app import create_app
from web_helpers import NOW, make_db

STORAGE_DIR = Path(storage.__file__).parent
VERSION_5_FILES = SCHEMA_FILES[:SCHEMA_FILES.index("imports.sql") + 1]


def version_5_database(path):
    """A database as NetTally of schema version 5 left it, with one alert of each kind."""
    con = sqlite3.connect(path)
    con.executescript("".join((STORAGE_DIR / name).read_text() + "\n" for name in VERSION_5_FILES))
    for n, kind in enumerate(("bytes", "new_device", "coverage", "storage", "drops")):
        con.execute("INSERT INTO alerts (rule, kind, scope, subject, origin, state, opened, value, peak, threshold, "
                    "unit, window, message) VALUES (?, ?, 'all', 'all', 'live', 'closed', ?, 1, 1, 1, '', 60, 'm')",
                    (f"r{n}", kind, 1000.0 + n))
    con.execute("PRAGMA user_version = 5")
    con.commit()
    con.close()


def test_schema_6_adds_the_column_and_gives_old_alerts_their_kinds_severity(tmp_path):
    path = str(tmp_path / "v5.db")
    version_5_database(path)
    reader = connect(path, readonly=True)      # before the collector updates it: read as the update will
    before = {a["kind"]: a["severity"] for a in alert_log.alert_list(reader)}
    assert [a["kind"] for a in alert_log.alert_list(reader, severity=("info",))] == ["coverage", "new_device"]
    reader.close()
    con = connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6
    after = {a["kind"]: a["severity"] for a in alert_log.alert_list(con)}
    assert after == before == {"bytes": "warning", "new_device": "info", "coverage": "info", "storage": "critical",
                               "drops": "warning"}
    assert alert_log.delivery_status(con) == []
    con.close()


def test_a_later_step_applies_the_files_again_without_harm(tmp_path):
    """Every schema file runs at every version step: the ADD COLUMN must not fail the second time."""
    path = str(tmp_path / "again.db")
    con = connect(path)
    alert_log.open_alert(con, "x", "bytes", "host", "10.0.0.1", "live", 1.0, 1, 1, "bytes", 60, "m", "critical")
    con.execute("PRAGMA user_version = 5")      # as if a newer step were still to come
    con.commit()
    con.close()
    storage.db._CHECKED.clear()
    con = connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [a["severity"] for a in alert_log.alert_list(con)] == ["critical"]
    con.close()


def _event(rule, action="opened", subject="10.0.0.1", time=1_700_000_000.0, value=2e8):
    from alerts.rules import Event
    return Event(action, rule, subject, time, value)


class Hook:
    def __init__(self):
        self.sent = []

    def send(self, event_id, payload):
        self.sent.append(payload)


def test_delivery_stores_logs_and_posts_the_rules_severity(tmp_path, caplog):
    con = connect(str(tmp_path / "d.db"))
    rule = validate_rule({"name": "lan", "kind": "bytes", "threshold": "100 MB", "severity": "critical"})
    hook = Hook()
    delivery = Delivery(con, "live", hook)
    with caplog.at_level(logging.WARNING, "nettally.alerts"):
        delivery.deliver([_event(rule), _event(rule, "closed", time=1_700_000_600.0, value=1e6)])
        delivery.deliver([_event(STORAGE_RULE, subject="/x.db", value="disk full")])
    rows = alert_log.alert_list(con)
    assert [(a["rule"], a["severity"]) for a in rows] == [("database-writable", "critical"), ("lan", "critical")]
    assert [p["severity"] for p in hook.sent] == ["critical", "critical", "critical"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["critical alert: host 10.0.0.1: 200 MB in 1 h (limit 100 MB, rule lan)",
                     "critical alert over: lan 10.0.0.1 at 2023-11-14T22:23:20Z (now 1 MB)",
                     "critical alert: database /x.db cannot be written: disk full; counts held in memory"]
    assert messages.payload("opened", rule, "10.0.0.1", 0.0, 1.0, 1, "m")["severity"] == "critical"
    con.close()


def test_api_and_csv_filter_by_severity(tmp_path):
    path = make_db(tmp_path / "w.db")
    con = connect(path)
    for n, severity in enumerate(("info", "warning", "critical", "warning")):
        alert_log.open_alert(con, f"r{n}", "bytes", "host", f"10.0.0.{n}", "live", NOW - 600 + n, 1, 1, "bytes",
                             60, "m", severity)
    con.close()
    app = create_app(test_config={"DB": path, "CLOCK": lambda: NOW, "TOKEN": None, "POOL_SIZE": 2})
    client = app.test_client()
    try:
        rows = client.get("/api/alerts").get_json()["rows"]
        assert [(r["rule"], r["severity"]) for r in rows] == [("r3", "warning"), ("r2", "critical"),
                                                              ("r1", "warning"), ("r0", "info")]
        assert [r["rule"] for r in client.get("/api/alerts?severity=warning").get_json()["rows"]] == ["r3", "r1"]
        assert [r["rule"] for r in client.get("/api/alerts?severity=critical,warning").get_json()["rows"]] == [
            "r3", "r2", "r1"]
        bad = client.get("/api/alerts?severity=urgent")
        assert bad.status_code == 400 and bad.get_json()["parameter"] == "severity"
        exported = list(csv.DictReader(io.StringIO(client.get("/api/alerts.csv?severity=info").get_data(as_text=True))))
        assert [(r["rule"], r["severity"]) for r in exported] == [("r0", "info")]
        assert list(exported[0])[-1] == "severity"
        assert client.get("/api/alerts/delivery").get_json() == {"channels": []}
    finally:
        app.extensions["nettally.changes"].close()
        app.extensions["nettally.pool"].close()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_run_py_export_alerts_carries_the_severity(tmp_path, capsys, fmt):
    from common import cli
    path = str(tmp_path / "e.db")
    con = connect(path)
    alert_log.open_alert(con, "new-device", "new_device", "host", "10.0.0.9", "import", 1_700_000_000.0, 1, 0, "",
                         3600, "new device 10.0.0.9 seen (rule new-device)", "info")
    con.close()
    code, out, err = cli(capsys, "export", "alerts", "--db", path, "--format", fmt)
    assert code == 0, err
    if fmt == "csv":
        header, row = out.splitlines()
        assert header.endswith(",message,severity") and row.endswith(",info")
    else:
        import json
        assert [a["severity"] for a in json.loads(out)] == ["info"]
