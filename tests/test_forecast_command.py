"""`run.py forecast`: a subject's hours read from a real database's tiers (pending hours from
their minutes, built hours from the hour table) and forecast with their bands; too little
history, no traffic and a bad subject are one line and exit 2."""
import json

import pytest

from collector.forecaster import run_forecast
from records import Rollup
from settings import Settings
from storage import tiers
from storage.db import connect
from storage.store import RollupStore
from runtime.exits import UsageError

T0 = 1_788_739_200          # 2026-09-07 00:00 UTC


def _iface(nbytes):
    return [1, nbytes, 1, nbytes, 0, 0, 0, 0, 0, 0]


def pattern(hour):
    """Bytes of hour-of-day `hour`: the same every day."""
    return 1000 * (1 + hour)


def make(path, days, build_hours=True):
    """`days` days of one host and one interface, one minute row per hour, every day alike."""
    con = connect(str(path))
    store = RollupStore(con)
    store.apply([Rollup(T0 + h * 3600 + 60 * (h % 7), [], {"10.0.0.1": [pattern(h % 24), 0, 1, 0]},
                        {"eth0": _iface(2 * pattern(h % 24))}, {}) for h in range(days * 24)])
    if build_hours:
        tiers.build_pending(con)
    con.close()
    return str(path)


def run(path, subject, horizon="24h", fmt="json", capsys=None):
    status = run_forecast(Settings(db=str(path)), {"subject": subject, "horizon": horizon, "format": fmt},
                          now=T0 + 4 * 86400 + 1800)
    return status, capsys.readouterr().out if capsys else None


@pytest.mark.parametrize("built", [True, False])
def test_a_daily_pattern_is_forecast_hour_by_hour(tmp_path, capsys, built):
    path = make(tmp_path / "f.db", 5, build_hours=built)    # read up to day 4 or into day 5
    status, out = run(path, "host:10.0.0.1", capsys=capsys)
    answer = json.loads(out)
    assert status == 0 and answer["history_hours"] == 96
    assert [r["forecast"] for r in answer["forecast"]] == [pattern(h) for h in range(24)]
    assert answer["forecast"][0]["start"] == T0 + 4 * 86400
    assert all(r["lo95"] == r["forecast"] == r["hi95"] for r in answer["forecast"])   # no error: no width
    status, out = run(path, "iface:eth0", "7d", capsys=capsys)
    days = json.loads(out)["forecast"]
    assert [r["forecast"] for r in days] == [2 * sum(pattern(h) for h in range(24))] * 7
    status = run_forecast(Settings(db=path), {"subject": "iface:eth0", "horizon": "7d", "format": "json"},
                          now=T0 + 4 * 86400 + 5 * 3600 + 600)       # mid-day: the days start at midnight
    days = json.loads(capsys.readouterr().out)["forecast"]
    assert [(r["start"], r["forecast"]) for r in days] == [
        (T0 + (5 + d) * 86400, 2 * sum(pattern(h) for h in range(24))) for d in range(7)]
    status, out = run(path, "all", "24h", "text", capsys=capsys)
    assert out.splitlines()[0] == "all: bytes per hour, from 96 hours of history (UTC)"
    assert out.splitlines()[2].split()[:2] == ["2026-09-11T00:00Z", "2,000"]


def test_an_imported_capture_is_forecast_from_its_end(tmp_path, capsys):
    """No live capture: history ends at the data's last whole hour (T0 + 119 h of 5 days), not
    at a `now` a month later, as the stored forecasts (tests/test_forecast_store.py)."""
    path = make(tmp_path / "f.db", 5)
    run_forecast(Settings(db=path), {"subject": "host:10.0.0.1", "horizon": "24h", "format": "json"},
                 now=T0 + 35 * 86400)
    answer = json.loads(capsys.readouterr().out)
    assert answer["history_hours"] == 119 and answer["forecast"][0]["start"] == T0 + 119 * 3600
    assert [r["forecast"] for r in answer["forecast"]] == [pattern((119 + h) % 24) for h in range(24)]


def test_too_little_history_no_traffic_and_a_bad_subject_are_one_line(tmp_path):
    path = make(tmp_path / "short.db", 2)
    with pytest.raises(UsageError) as e:
        run_forecast(Settings(db=path), {"subject": "host:10.0.0.1", "horizon": "24h", "format": "json"},
                     now=T0 + 40 * 3600)
    assert str(e.value) == "host:10.0.0.1: 40 hours of history; a forecast needs 72 (32 more)"
    with pytest.raises(UsageError, match="no traffic stored before"):
        run_forecast(Settings(db=path), {"subject": "host:10.0.0.1", "horizon": "24h", "format": "json"}, now=T0)
    for bad in ("nothing", "host:", "all:x", "iface:" + "x" * 300):
        with pytest.raises(UsageError, match="use all, iface:NAME, host:ADDRESS or class:NAME"):
            run_forecast(Settings(db=path), {"subject": bad, "horizon": "24h", "format": "json"})


def test_the_command_line_says_a_bad_subject_in_one_line(tmp_path, capsys):
    import run as cli
    path = make(tmp_path / "c.db", 1)
    assert cli.main(["forecast", "hostx", "--db", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run.py forecast: subject 'hostx'") and err.count("\n") == 1
