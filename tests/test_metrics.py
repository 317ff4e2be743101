"""/metrics and /health (web/metrics.py) over a real SQLite file written by the real writer
thread: read back by prometheus_client's own text parser, with exact numbers; the token rules of
every other route; the writer's status noted after each write."""
import socket

from prometheus_client.parser import text_string_to_metric_families

from records import ProcessKey, Rollup
from settings import Settings
from storage import alert_log
from storage.db import SCHEMA_VERSION, connect
from storage.writer import WriterThread
from web.app import create_app

T0 = 1_700_006_400
NOW = T0 + 3 * 3600 + 17
TOKEN = "t0ken-for-metrics-tests-0123456789"
CURL = ProcessKey(100, 1000.0, "curl")


def _iface(frames, nbytes, out_frames, out_bytes):
    """records.IFACE_FIELDS: frames, bytes, ip_frames, ip_bytes, non_ip (2), undecodable (2), out (2)."""
    return [frames, nbytes, frames, nbytes, 0, 0, 0, 0, out_frames, out_bytes]


def _written(path, settings=None):
    """Three hours of minutes through the writer thread, hours built; drops, undecodable frames,
    attribution and an open alert beside them."""
    writer = WriterThread(str(path), settings or Settings(), clock=lambda: NOW - 5, source=("live", "eth0,lo"), version="9.9")
    writer.start()
    assert writer.ready.wait(30) and writer.error is None
    for k, minute in enumerate((T0, T0 + 3600, T0 + 2 * 3600 + 60)):
        writer.submit([Rollup(minute, [], {"10.0.0.1": [1000, 500, 10, 5]},
                              {"eth0": _iface(20 + k, 5000 + k, 8, 3000), "lo": _iface(2, 100, 2, 100)},
                              {("eth0", "bad_ipv4_header"): [3, 180]}, {CURL: [700, 300, 7, 3]},
                              {"attributed": [1000, 10], "socket_closed_before_lookup": [250, 2]})])
    writer.submit_drops(T0 + 60, {"eth0": 4})
    writer.close()
    assert writer.error is None
    con = connect(path)
    alert_log.open_alert(con, "big", "bytes", "host", "10.0.0.1", "live", NOW - 60, 2e8, 1e8, "bytes", 60, "m",
                         "critical")
    con.commit()
    con.close()


def _app(path, **config):
    return create_app(test_config={"DB": str(path), "CLOCK": lambda: NOW, "TOKEN": None, "POOL_SIZE": 2,
                                   "METRICS_SINCE": T0, **config})


def _samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_read_by_prometheus_client_with_exact_numbers(tmp_path):
    path = tmp_path / "m.db"
    _written(path)
    response = _app(path).test_client().get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    got = _samples(response.get_data(as_text=True))
    agent = socket.gethostname()
    assert got[("nettally_interface_bytes_total", (("direction", "in"), ("interface", "eth0")))] == 15003 - 9000
    assert got[("nettally_interface_bytes_total", (("direction", "out"), ("interface", "eth0")))] == 9000
    assert got[("nettally_interface_frames_total", (("direction", "in"), ("interface", "eth0")))] == 63 - 24
    assert got[("nettally_interface_frames_total", (("direction", "out"), ("interface", "lo")))] == 6
    assert got[("nettally_capture_drops_total", (("interface", "eth0"),))] == 4
    assert got[("nettally_undecodable_frames_total", (("interface", "eth0"), ("reason", "bad_ipv4_header")))] == 9
    assert got[("nettally_attribution_bytes_total", (("reason", "attributed"),))] == 3000
    assert got[("nettally_attribution_bytes_total", (("reason", "socket_closed_before_lookup"),))] == 750
    assert got[("nettally_open_alerts", (("severity", "critical"),))] == 1
    assert got[("nettally_open_alerts", (("severity", "warning"),))] == 0
    assert got[("nettally_writer_last_write_rows", (("agent", agent),))] > 0
    assert got[("nettally_writer_last_write_timestamp_seconds", (("agent", agent),))] == NOW - 5
    assert got[("nettally_writer_last_write_seconds", (("agent", agent),))] >= 0
    # bounded labels only: no address, flow or process appears anywhere
    labels = {v for _, pairs in got for _, v in pairs}
    assert not labels & {"10.0.0.1", "curl", "100"}


def test_health_gives_the_age_of_the_last_write(tmp_path):
    path = tmp_path / "h.db"
    _written(path)
    body = _app(path).test_client().get("/health").get_json()
    assert body["status"] == "ok" and body["schema"] == SCHEMA_VERSION
    (writer,) = body["writers"]
    assert writer["agent"] == socket.gethostname() and writer["last_write_age_s"] == 5.0
    assert writer["last_write_rows"] > 0 and writer["writes"] >= 1


def test_agents_say_what_each_collector_is_and_when_it_last_wrote(tmp_path):
    path = tmp_path / "a.db"
    _written(path)
    (agent,) = _app(path).test_client().get("/api/agents").get_json()["agents"]
    assert agent["agent"] == socket.gethostname() and agent["version"] == "9.9"
    assert agent["interfaces"] == ["eth0", "lo"] and agent["started"] == NOW - 5
    assert agent["last_write_age_s"] == 5.0 and agent["writes"] >= 1 and agent["dropped_bytes"] == 0
    assert agent["last_write_ms"] >= 0 and agent["last_write_rows"] > 0
    assert agent["capture_drops_24h"] == 4            # eth0's, in the last 24 hours


def test_an_agent_is_named_by_its_setting_and_listed_on_the_agents_page(tmp_path):
    path = tmp_path / "n.db"
    _written(path, Settings(agent="edge-1"))
    client = _app(path).test_client()
    assert [a["agent"] for a in client.get("/api/agents").get_json()["agents"]] == ["edge-1"]
    page = client.get("/agents")
    assert page.status_code == 200 and b'id="agents"' in page.data and b"/static/js/agents.js" in page.data


def test_an_imported_database_has_no_writer_and_empty_metrics(tmp_path):
    path = tmp_path / "e.db"
    connect(path).close()
    client = _app(path).test_client()
    assert client.get("/health").get_json() == {"status": "ok", "schema": SCHEMA_VERSION, "writers": []}
    got = _samples(client.get("/metrics").get_data(as_text=True))
    assert got == {("nettally_open_alerts", (("severity", s),)): 0 for s in ("info", "warning", "critical")}


def test_off_loopback_both_need_the_token(tmp_path):
    path = tmp_path / "t.db"
    connect(path).close()
    client = _app(path, TOKEN=TOKEN, BIND_HOST="0.0.0.0").test_client()
    for url in ("/metrics", "/health", "/api/agents"):
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist(tmp_path):
    """docs/grafana-dashboard.json: valid JSON whose every query names metrics /metrics serves."""
    import json
    import re
    from pathlib import Path
    path = tmp_path / "g.db"
    _written(path)
    served = {name for name, _ in _samples(_app(path).test_client().get("/metrics").get_data(as_text=True))}
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"\bnettally_[a-z_]+", target["expr"])}
    assert len(dashboard["panels"]) == 9 and asked and asked <= served, asked - served


def test_counters_start_with_the_web_process_and_never_go_down(tmp_path):
    """Counted from the minute the app started (METRICS_SINCE): an app started after the first
    hour counts the two later ones; retention pruning everything of those days afterwards
    leaves the counts as they were (they are read from the finest tier still holding a bucket)."""
    from storage import retention
    from storage.tiers import RetentionPolicy
    path = tmp_path / "c.db"
    _written(path)
    client = _app(path, METRICS_SINCE=T0 + 3600).test_client()
    key = ("nettally_attribution_bytes_total", (("reason", "attributed"),))
    assert _samples(client.get("/metrics").get_data(as_text=True))[key] == 2000
    con = connect(path)
    policy = RetentionPolicy.from_settings(Settings(retention_minutes=1.0))
    while not retention.maintain(con, policy, NOW + 86400, budget=5):
        pass
    assert con.execute("SELECT count(*) FROM attribution_minutes").fetchone()[0] == 0
    con.close()
    assert _samples(client.get("/metrics").get_data(as_text=True))[key] == 2000


def test_a_database_older_than_the_status_table_still_answers(tmp_path):
    """Served read-only before the collector updates it (schema 10, no writer_status): /health
    says so, /metrics answers without writer metrics."""
    path = tmp_path / "old.db"
    con = connect(path)
    con.executescript("DROP TABLE writer_status; PRAGMA user_version = 10;")
    con.close()
    client = _app(path).test_client()
    assert client.get("/health").get_json() == {"status": "ok", "schema": 10, "writers": []}
    assert client.get("/metrics").status_code == 200


def test_a_database_newer_than_the_program_is_refused_in_one_line(tmp_path, capsys, clean_env, run_py):
    """import, export and serve all refuse a schema version above this program's: one line, exit 2,
    the file untouched (serve in its own process: were it not refused, it would serve)."""
    import sqlite3
    import subprocess

    from common import cli
    path = tmp_path / "newer.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE future (x)")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = path.read_bytes()
    capture = tmp_path / "empty.pcap"
    capture.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    refusal = f"{path}: schema version {SCHEMA_VERSION + 1} is newer than this NetTally ({SCHEMA_VERSION})\n"
    for argv in (("import", capture, "--db", path), ("export", "hosts", "--db", path)):
        code, out, err = cli(capsys, *argv)
        assert (code, out, err) == (2, "", f"run.py {argv[0]}: {refusal}")
    done = subprocess.run(run_py + ["serve", "--db", str(path), "--port", "18321"], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"run.py serve: {refusal}")
    assert path.read_bytes() == before
