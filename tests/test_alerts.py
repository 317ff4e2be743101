"""Alert rules: validation, TOML loading, hysteresis and de-duplication, sliding windows, and the
alerts table (open, peak, close, acknowledge, export)."""
import pytest

from alerts import config
from alerts.rules import Rule, SlidingWindow, Tracker, measure
from storage import alert_log
from storage.db import connect


# ---- validation -------------------------------------------------------------------------------

def test_validate_rule_reads_units_and_spans():
    r = config.validate_rule({"name": "lan-hour", "kind": "bytes", "threshold": "100 MB", "window": "1h",
                              "match": ["10.0.0.0/24"], "direction": "tx"})
    assert (r.kind, r.scope, r.threshold, r.window, r.direction, r.match) == (
        "bytes", "host", 100_000_000, 3600, "tx", ("10.0.0.0/24",))
    assert config.validate_rule({"name": "r", "kind": "rate", "scope": "interface", "threshold": "50 Mbit/s",
                                 "window": 10}).threshold == 50_000_000
    assert config.validate_rule({"name": "d", "kind": "drops", "threshold": "1%"}).threshold == 0.01
    assert config.validate_rule({"name": "d", "kind": "drops", "threshold": "1%"}).scope == "interface"
    assert config.validate_rule({"name": "n", "kind": "new_device"}).threshold == 0
    assert config.validate_rule({"name": "g", "kind": "bytes", "threshold": "1 GiB", "window": "30m"}).threshold == 2 ** 30


@pytest.mark.parametrize("data, says", [
    ({"kind": "bytes"}, "rule name"),
    ({"name": "x y", "kind": "bytes"}, "rule name"),
    ({"name": "x", "kind": "bits"}, "kind must be one of"),
    ({"name": "x", "kind": "bytes"}, "threshold is required"),
    ({"name": "x", "kind": "bytes", "threshold": "100 MQ"}, "unknown unit"),
    ({"name": "x", "kind": "bytes", "threshold": -5}, "above 0"),
    ({"name": "x", "kind": "bytes", "threshold": True}, "must be a number"),
    ({"name": "x", "kind": "drops", "threshold": 2}, "at most 1"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "window": "90s"}, "whole minutes"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "window": 30}, "under 60 s only"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "window": "3d"}, "from 1 to"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "window": "soon"}, "span like"),
    ({"name": "x", "kind": "coverage", "scope": "host", "threshold": 0.5}, "scope is one of all"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "match": ["not-an-address"]}, "match"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "match": [""]}, "non-empty"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "hysteresis": 1.5}, "hysteresis"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "enabled": "yes"}, "true or false"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "colour": "red"}, "unknown rule field 'colour'"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "severity": "urgent"}, "severity is one of info, warning, critical"),
    ({"name": "x", "kind": "bytes", "threshold": 1, "severity": 3}, "severity is one of"),
    ("bytes", "is an object"),
])
def test_validate_rule_says_what_is_wrong_in_one_line(data, says):
    with pytest.raises(ValueError) as e:
        config.validate_rule(data)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_severity_defaults_by_kind_and_reads_any_case():
    assert {r.name: r.severity for r in config.DEFAULT_RULES} == {
        "host-bytes-hour": "warning", "process-bytes-hour": "warning", "new-device": "info",
        "capture-drops": "warning", "attribution-coverage": "info"}
    assert config.validate_rule({"name": "n", "kind": "new_device"}).severity == "info"
    assert config.validate_rule({"name": "b", "kind": "bytes", "threshold": 1}).severity == "warning"
    assert config.validate_rule({"name": "b", "kind": "bytes", "threshold": 1, "severity": "Critical"}).severity == "critical"
    assert config.rule_to_dict(config.DEFAULT_RULES[2])["severity"] == "info"
    assert all(kind in config.SEVERITY_OF_KIND for kind in config.KINDS)


def test_rule_dict_round_trip():
    for rule in config.DEFAULT_RULES:
        assert config.validate_rule(config.rule_to_dict(rule)) == rule


class _Settings:
    def __init__(self, path):
        self.alerts_config = str(path)


def test_toml_rules_replace_defaults_by_name_and_api_rules_replace_both(tmp_path):
    path = tmp_path / "alerts.toml"
    path.write_text('[[rule]]\nname = "host-bytes-hour"\nkind = "bytes"\nthreshold = "1 GB"\n'
                    '[[rule]]\nname = "new-device"\nkind = "new_device"\nenabled = false\n'
                    '[[rule]]\nname = "wan-rate"\nkind = "rate"\nscope = "interface"\nthreshold = "80 Mbit/s"\n'
                    'window = "5m"\nmatch = ["eth0"]\n')
    rules = {r.name: r for r in config.load_rules(_Settings(path))}
    assert rules["host-bytes-hour"].threshold == 1e9
    assert not rules["new-device"].enabled
    assert rules["wan-rate"].match == ("eth0",) and rules["wan-rate"].window == 300
    assert rules["process-bytes-hour"] == config.DEFAULT_RULES[1]
    api = config.rule_to_dict(Rule("host-bytes-hour", "bytes", threshold=5e6))
    assert {r.name: r for r in config.load_rules(_Settings(path), [api])}["host-bytes-hour"].threshold == 5e6
    assert [r.name for r in config.load_rules(None)] == [r.name for r in config.DEFAULT_RULES]


@pytest.mark.parametrize("text, says", [
    ("[[rule]]\nname = 'x'\nkind = 'bytes'\n", "threshold is required"),
    ("[rules]\n", "unknown key 'rules'"),
    ("[[rule]\n", "alerts.toml"),
])
def test_bad_toml_is_one_line(tmp_path, text, says):
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        config.load_rules(_Settings(path))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_missing_toml_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="alert rules .*nope.toml"):
        config.load_rules(_Settings(tmp_path / "nope.toml"))


# ---- evaluation -------------------------------------------------------------------------------

def test_tracker_opens_once_and_closes_below_the_hysteresis_margin():
    t = Tracker(Rule("b", "bytes", threshold=100, hysteresis=0.1))
    assert [e.action for e in t.check(1, {"a": 99, "b": 10})] == []
    assert [(e.action, e.subject, e.value) for e in t.check(2, {"a": 100})] == [("opened", "a", 100)]
    assert [(e.action, e.value) for e in t.check(3, {"a": 120})] == [("peak", 120)]
    assert t.check(4, {"a": 95}) == []                    # under the limit, not under 90: still open
    assert t.check(5, {"a": 101}) == []                   # no second alert
    assert [(e.action, e.time) for e in t.check(6, {"a": 89.9})] == [("closed", 6)]
    assert [e.action for e in t.check(7, {"a": 100})] == ["opened"]
    assert [e.action for e in t.check(8, {})] == ["closed"]     # no traffic at all: back to normal


def test_coverage_fires_below_and_needs_data():
    rule = Rule("c", "coverage", "all", threshold=0.5, window=900)
    t = Tracker(rule)
    assert measure(rule, (10, 999_999), 900) is None       # too little traffic to judge
    assert t.check(1, {"all": measure(rule, (400_000, 1_000_000), 900)})[0].action == "opened"
    assert t.check(2, {"all": 0.54}) == []
    assert t.check(3, {"all": 0.56})[0].action == "closed"


def test_drops_share_and_rate_measures():
    assert measure(Rule("d", "drops", "all", threshold=0.01), (20, 980), 300) == 0.02
    assert measure(Rule("d", "drops", "all", threshold=0.01), (20, 900), 300) is None
    assert measure(Rule("r", "rate", "all", threshold=1, direction="rx"), (100, 1000), 10) == 800.0


def test_match_limits_subjects():
    t = Tracker(Rule("b", "bytes", threshold=1, match=("10.0.0.0/24", "2001:db8::1")))
    events = t.check(1, {"10.0.0.7": 5, "10.0.1.7": 5, "2001:db8::1": 5, "zzz": 5})
    assert sorted(e.subject for e in events) == ["10.0.0.7", "2001:db8::1"]


def test_new_device_events_only_open():
    t = Tracker(Rule("n", "new_device"))
    assert [e.action for e in t.check(1, {"10.0.0.9": 1.0})] == ["opened"]
    assert t.check(2, {"10.0.0.9": 1.0}) == [] and t.check(3, {}) == []


def test_sliding_window_keeps_bins_starting_within_the_window():
    w = SlidingWindow(3600, 60, 2)
    for m in range(0, 7200, 60):
        w.add(m, "a", (1, 2))
    w.advance(7200)
    assert w.totals == {"a": [60, 120]} and w.span(7200) == 3600
    w.advance(7200 + 30)
    assert w.totals == {"a": [59, 118]} and w.span(7230) == 3570
    w.advance(20000)
    assert w.totals == {}


# ---- the alerts table -------------------------------------------------------------------------

@pytest.fixture
def con(tmp_path):
    c = connect(tmp_path / "a.db")
    yield c
    c.close()


def _open(con, subject="10.0.0.1", origin="live", kind="bytes", at=1000.0):
    return alert_log.open_alert(con, "r", kind, "host", subject, origin, at, 1.5e8, 1e8, "bytes", 3600, "msg")


def test_one_open_alert_per_rule_subject_and_origin(con):
    first = _open(con)
    assert _open(con) == first
    assert _open(con, origin="import") != first
    alert_log.update_peak(con, "r", "10.0.0.1", "live", 2e8)
    assert alert_log.close_alert(con, "r", "10.0.0.1", "live", 2000.0) == first
    assert alert_log.close_alert(con, "r", "10.0.0.1", "live", 2001.0) is None
    again = _open(con, at=3000.0)
    assert again != first
    rows = alert_log.alert_list(con)
    assert [(r["id"], r["state"]) for r in rows] == [(again, "open"), (rows[1]["id"], "open"), (first, "closed")]
    assert alert_log.alert_list(con, state="closed")[0]["peak"] == 2e8
    assert [r["id"] for r in alert_log.alert_list(con, since=2500, until=4000)] == [again, rows[1]["id"]]
    assert alert_log.alert_list(con, since=1500, until=1800, state="closed")[0]["id"] == first


def test_acknowledge_marks_and_closes_instant_alerts(con):
    level = _open(con)
    device = _open(con, subject="10.0.0.9", kind="new_device")
    assert alert_log.acknowledge(con, level, 5000.0, "ops")
    assert alert_log.acknowledge(con, device, 5001.0)
    assert not alert_log.acknowledge(con, 999, 5002.0)
    by_id = {r["id"]: r for r in alert_log.alert_list(con)}
    assert (by_id[level]["state"], by_id[level]["acked"], by_id[level]["acked_by"]) == ("open", 5000.0, "ops")
    assert (by_id[device]["state"], by_id[device]["closed"]) == ("closed", 5001.0)


def test_export_rows_have_the_declared_fields(con):
    a = _open(con, at=1_700_000_000.0)
    alert_log.close_alert(con, "r", "10.0.0.1", "live", 1_700_003_600.0)
    rows = alert_log.alert_rows_for_export(con, None, None)
    assert [tuple(r) for r in rows] == [tuple(name for name, _ in alert_log.ALERT_FIELDS)]
    assert rows[0]["id"] == a and rows[0]["opened"] == "2023-11-14T22:13:20Z"
    assert rows[0]["closed"] == "2023-11-14T23:13:20Z" and rows[0]["acknowledged"] is None
    assert alert_log.alert_rows_for_export(con, 1_700_003_600.0, None) == rows
    assert alert_log.alert_rows_for_export(con, 1_700_003_601.0, None) == []


def test_rules_saved_through_the_api_round_trip(con):
    rule = config.validate_rule({"name": "x", "kind": "bytes", "threshold": "5 MB"})
    alert_log.save_rule(con, config.rule_to_dict(rule), 1.0)
    assert [config.validate_rule(d) for d in alert_log.rule_overrides(con)] == [rule]
    assert alert_log.forget_rule(con, "x") and alert_log.rule_overrides(con) == []


def test_alert_list_on_a_database_from_before_alerts(tmp_path):
    import sqlite3
    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE t (a)").connection.commit()
    assert alert_log.alert_list(sqlite3.connect(path)) == []


def test_coverage_leaves_traffic_without_a_local_side_out(tmp_path):
    """Coverage is attributed / this host's own bytes (storage/coverage.py), and every place that
    reads it over its own range and tier agrees on one database: the dashboard's figure, the
    alert rule's window and the export side (storage.processes). Forwarded or broadcast traffic
    (no_local_endpoint) is in neither."""
    from records import Rollup
    from settings import Settings
    from storage import coverage, processes
    from storage.tiers import RetentionPolicy
    from storage.store import RollupStore
    con = connect(str(tmp_path / "c.db"))
    now = 1_700_001_030.5
    minute = int(now // 60 * 60) - 120
    RollupStore(con).apply([Rollup(minute, [], {}, {}, {}, {}, {
        "attributed": [900_000, 10], "socket_closed_before_lookup": [100_000, 1], "no_local_endpoint": [9_000_000, 90]})])
    shown = coverage.attribution_coverage(con, now - 3600, now + 60, now, RetentionPolicy.from_settings(Settings()))
    assert (shown["attributed_bytes"], shown["unattributed_bytes"], shown["ratio"]) == (900_000, 100_000, 0.9)
    assert alert_log.window_totals(con, "coverage", "all", minute, minute + 60) == {"all": (900_000, 1_000_000)}
    assert processes.attribution_coverage(con)["coverage"] == 0.9


@pytest.mark.parametrize("late", [30, 62, 300])
def test_a_new_device_alerts_however_late_its_minute_is_evaluated(tmp_path, late):
    """The device's own first minute is not 'traffic seen before': evaluated 30 s into that minute
    or minutes after it ended, it is new exactly once."""
    from alerts.service import AlertRunner
    from records import Rollup
    from settings import Settings
    from storage.store import RollupStore
    path = str(tmp_path / "nd.db")
    con = connect(path)
    writer = RollupStore(con)
    minute = 1_700_000_000 // 60 * 60
    writer.apply([Rollup(minute - 7200, [], {"10.0.0.1": [100, 100, 1, 1]}, {}, {})])   # 2 h of history
    now = [minute + 10]
    runner = AlertRunner(Settings(db=path), path, clock=lambda: now[0], start=False)
    runner.step(now[0])
    new = Rollup(minute, [], {"10.0.0.99": [100, 100, 1, 1]}, {}, {})
    writer.apply([new])
    runner.after_write([new])
    now[0] = minute + late
    runner.step(now[0])
    again = Rollup(minute + late // 60 * 60 + 60, [], {"10.0.0.99": [100, 100, 1, 1]}, {}, {})
    writer.apply([again])
    runner.after_write([again])
    runner.step(now[0] + 60)
    assert [a["subject"] for a in alert_log.alert_list(con) if a["kind"] == "new_device"] == ["10.0.0.99"]
    runner.close()
