"""Forecasts made off the request path (issue 16): web/forecasts.py's refresh over a real
database stores every subject's forecasts through the web side's write path, /api/forecast
serves them exactly as `run.py forecast` computes them, and the refresher thread makes them by
itself. Too little history is stored as such and said; a bad subject or horizon is a 400."""
import json

from common import wait_for
from settings import Settings
from test_forecast_command import T0, make, pattern
from web.app import create_app
from web.forecasts import ForecastRefresher, refresh

NOW = T0 + 4 * 86400 + 1800          # half an hour into day 5: 96 whole hours of history
LIVE_WINDOW = 900                    # seconds of per-second points that make a database live


def _app(path, now=NOW):
    return create_app(Settings(db=str(path)), test_config={"CLOCK": lambda: now, "TOKEN": None})


def _refreshed(path, now=NOW):
    app = _app(path, now)
    with app.extensions["nettally.pool"].connection() as con:
        made = refresh(con, app.extensions["nettally.changes"].store_forecasts, now, LIVE_WINDOW)
    return app, made


def test_a_refresh_stores_every_subject_and_the_api_serves_it(tmp_path):
    app, made = _refreshed(make(tmp_path / "f.db", 5))
    assert made == 3 * 2                 # all, iface:eth0, host:10.0.0.1 (no class: no app rows); both horizons
    client = app.test_client()
    answer = client.get("/api/forecast?subject=host:10.0.0.1").get_json()
    assert answer["made"] == T0 + 4 * 86400 and answer["history_hours"] == 96 and answer["needed_hours"] == 0
    assert [r["forecast"] for r in answer["forecast"]] == [pattern(h) for h in range(24)]
    assert answer["forecast"][0]["start"] == T0 + 4 * 86400
    days = client.get("/api/forecast?subject=iface:eth0&horizon=7d").get_json()["forecast"]
    assert [r["forecast"] for r in days] == [2 * sum(pattern(h) for h in range(24))] * 7
    everything = client.get("/api/forecast").get_json()            # subject all by default
    assert everything["subject"] == "all" and [r["forecast"] for r in everything["forecast"]] == \
        [2 * pattern(h) for h in range(24)]


def test_an_imported_capture_is_forecast_from_its_end_not_from_today(tmp_path):
    """No live capture: history ends at the data's last whole hour (T0 + 119 h), as the API's
    ranges end there, instead of running on to a `now` a month later as quiet hours."""
    app, made = _refreshed(make(tmp_path / "f.db", 5), now=T0 + 35 * 86400)
    assert made == 3 * 2
    answer = app.test_client().get("/api/forecast?subject=host:10.0.0.1").get_json()
    assert answer["made"] == T0 + 119 * 3600 and answer["history_hours"] == 119
    assert [r["forecast"] for r in answer["forecast"]] == [pattern((119 + h) % 24) for h in range(24)]


def test_too_little_history_is_stored_and_said(tmp_path):
    # 2 days imported: history ends at the last whole hour of the data, T0 + 47 h
    app, made = _refreshed(make(tmp_path / "f.db", 2), now=T0 + 2 * 86400 + 60)
    answer = app.test_client().get("/api/forecast?subject=host:10.0.0.1").get_json()
    assert answer["forecast"] == [] and answer["history_hours"] == 47 and answer["needed_hours"] == 25
    assert answer["message"] == "47 hours of history; a forecast needs 72 (25 more)"


def test_what_is_not_stored_is_a_404_and_bad_parameters_a_400(tmp_path):
    app, _ = _refreshed(make(tmp_path / "f.db", 5))
    client = app.test_client()
    for url, status, words in (("/api/forecast?subject=host:10.9.9.9", 404, "no forecast of this subject"),
                               ("/api/forecast?subject=host:10.0.0.1&agent=other", 404, "not one agent"),
                               ("/api/forecast?subject=bogus", 400, "use all, iface:NAME"),
                               ("/api/forecast?subject=all&horizon=1y", 400, "must be one of 24h, 7d"),
                               ("/api/forecast?subject=all&typo=1", 400, "unknown parameter")):
        response = client.get(url)
        assert response.status_code == status and words in json.dumps(response.get_json()), (url, response.get_json())


def test_a_database_the_dashboard_cannot_write_has_no_forecasts_and_says_why(tmp_path):
    """A database of schema 12 (the collector has not updated it yet): no table of forecasts."""
    import sqlite3
    path = make(tmp_path / "f.db", 1)
    con = sqlite3.connect(path)
    con.execute("DROP TABLE forecasts")
    con.execute("PRAGMA user_version = 12")
    con.commit()
    con.close()
    response = _app(path).test_client().get("/api/forecast")
    assert response.status_code == 404
    assert response.get_json()["error"] == (
        f"no forecasts: they are stored by the dashboard, and alert changes are off: the database cannot be "
        f"opened for writing ({path}: schema version 12, not 13 (the collector updates it))")


def test_the_refresher_makes_them_by_itself(tmp_path):
    app = _app(make(tmp_path / "f.db", 5))
    refresher = ForecastRefresher(app.extensions["nettally.pool"], app.extensions["nettally.changes"],
                                  LIVE_WINDOW, clock=lambda: NOW)
    refresher.start()
    try:
        wait_for(lambda: refresher.made == 6, 60, "the first refresh")
    finally:
        refresher.close()
    assert refresher.failures == 0
    assert app.test_client().get("/api/forecast?subject=iface:eth0").status_code == 200
