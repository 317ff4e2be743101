"""The TCP health alert kinds: rtt (the flows' mean RTT above a level) and retransmits (the
retransmission rate above a share), over a window of minutes, with hysteresis; their rules
validated like every rule, their measures read from the health tiers."""
import pytest

from alerts.config import RuleError, validate_rule
from alerts.rules import MIN_SEGMENTS_FOR_RETRANSMITS, Rule, SlidingWindow, Tracker, measure
from records import FlowDelta, Rollup
from storage import alert_log, health
from storage.db import connect
from storage.store import RollupStore

T0 = 1_700_000_040
A, B = "10.0.0.1", "10.0.0.2"


def test_rules_validate():
    rule = validate_rule({"name": "slow", "kind": "rtt", "threshold": "0.2 s", "window": "5m"})
    assert (rule.threshold, rule.window, rule.scope, rule.severity, rule.unit) == (200.0, 300, "host", "warning", "ms")
    rule = validate_rule({"name": "lossy", "kind": "retransmits", "scope": "process", "threshold": "2%"})
    assert (rule.threshold, rule.unit) == (0.02, "share")
    for bad in ({"kind": "rtt", "threshold": "5 MB"}, {"kind": "retransmits", "threshold": 2},
                {"kind": "rtt", "threshold": 0}, {"kind": "retransmits", "scope": "interface", "threshold": 0.1}):
        with pytest.raises(RuleError):
            validate_rule({"name": "x", **bad})


def test_measures():
    rtt, retx = Rule("r", "rtt", threshold=100.0), Rule("x", "retransmits", threshold=0.02)
    assert measure(rtt, (300.0, 2), 300) == 150.0 and measure(rtt, (0, 0), 300) is None
    assert measure(retx, (3, 100), 300) == 0.03
    assert measure(retx, (3, MIN_SEGMENTS_FOR_RETRANSMITS - 1), 300) is None


def _minute(m, retx, rtt):
    minute = T0 + 60 * m
    flow = FlowDelta(6, A, 40000, B, 443, T0 + 1, minute + 30, 10_000, 100, 100_000, 100, 0x18, "eth0", False,
                     rtt_ms=rtt, data_segments=200, retransmits=retx)
    return Rollup(minute, [flow], {}, {}, {})


def test_retransmission_alert_opens_once_and_closes_once(tmp_path):
    """4% for five minutes, then 2.5%, then 0.5%, over a sliding 3-minute window: the alert opens
    when the window reaches 2% (16 of 600 at minute 3), stays open while the window is above
    the close level 1.8% (2% less the 10% hysteresis: 14 of 600 at minute 8), and closes once."""
    con = connect(str(tmp_path / "a.db"))
    rates = [0, 0, 8, 8, 8, 8, 8, 5, 1, 1, 1, 1]          # retransmits of 200 segments a minute
    RollupStore(con).apply([_minute(m, r, 40.0) for m, r in enumerate(rates)])
    rule = Rule("lossy", "retransmits", "host", threshold=0.02, window=180, hysteresis=0.1)
    window, tracker, events = SlidingWindow(rule.window, 60, 2), Tracker(rule), []
    for bucket, subject, a, b in alert_log.samples(con, "retransmits", "host", T0, T0 + 60 * len(rates)):
        window.add(bucket, subject, (a, b))
        now = bucket + 60
        window.advance(now)
        events += tracker.check(now, {s: measure(rule, v, 180) for s, v in window.totals.items()})
    opened = [(e.subject, e.time) for e in events if e.action == "opened"]
    closed = [(e.subject, e.time) for e in events if e.action == "closed"]
    assert sorted(opened) == [(A, T0 + 240), (B, T0 + 240)]          # both ends of the lossy flow
    assert sorted(closed) == [(A, T0 + 600), (B, T0 + 600)]


def test_rtt_measure_from_the_histogram(tmp_path):
    con = connect(str(tmp_path / "r.db"))
    RollupStore(con).apply([_minute(0, 0, 40.0), _minute(1, 0, 180.0)])
    totals = alert_log.window_totals(con, "rtt", "all", T0, T0 + 120)
    total_ms, flows = totals["all"]
    assert flows == 2
    assert total_ms == pytest.approx(health.bin_value(health.rtt_bin(40.0)) + health.bin_value(health.rtt_bin(180.0)))
    assert abs(total_ms / flows - 110.0) / 110.0 < 0.13
