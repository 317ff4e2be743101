"""Forecasts made off the request path (issue 16, docs/FORESIGHT.md): a thread of the web
process makes every subject's forecasts (storage/forecasts.py `subjects`) over both horizons
once an hour, a few minutes after the hour is whole, and stores them through the web side's one
write path (web/changes.py); /api/forecast serves what is stored. pandas (foresight/forecast.py)
is loaded when the refresher is made: before the web process gives up root (collector/web_process.py).

The forecasts are of the unfiltered view (every agent's counts added up): `agent=` finds none."""
import json
import logging
import threading
import time

from storage import forecasts

log = logging.getLogger("nettally.web")
AFTER_HOUR = 300      # seconds past a whole hour a refresh waits: that hour's last minutes are written by then


def refresh(con, store, now, live_window):
    """Forecasts every subject from its hours before the whole hour of `now` and hands the rows to
    `store` (storage/forecasts.py `save`'s rows), as the unfiltered view's (agent ''). Returns how
    many forecasts were made. Without live capture within `live_window` seconds (an imported
    capture) history ends where the data does (storage/forecasts.py history_end)."""
    from foresight.forecast import HORIZONS, TooLittleHistory, horizon_points, hourly
    until = forecasts.history_end(con, now, live_window)
    rows = []
    for subject in forecasts.subjects(con, until):
        first, hours = forecasts.hourly_bytes(con, *forecasts.parse_subject(subject), until)
        if first is None:
            continue
        series = hourly([b for b, _ in hours], [v for _, v in hours], first, until)
        for horizon in HORIZONS:
            try:
                points, needed = horizon_points(series, horizon, until), 0
            except TooLittleHistory as e:
                points, needed = [], e.needed
            rows.append((subject, horizon, "", until, len(series), needed, json.dumps(points)))
    store(rows)
    return len(rows)


class ForecastRefresher:
    """refresh() now and then AFTER_HOUR past every hour, on a daemon thread, until close()."""

    def __init__(self, pool, changes, live_window, clock=time.time):
        import foresight.forecast  # noqa: F401  (pandas, while the interpreter's files are readable)
        self.pool, self.changes, self.live_window, self.clock = pool, changes, live_window, clock
        self.made = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forecasts", daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        wait = 0.0
        while not self._stop.wait(wait):
            now = self.clock()
            try:
                with self.pool.connection() as con:
                    self.made += refresh(con, self.changes.store_forecasts, now, self.live_window)
            except Exception as e:          # one bad refresh must not end the thread: the next hour tries again
                self.failures += 1
                log.warning("forecasts: refresh failed: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
            wait = (now // 3600 + 1) * 3600 + AFTER_HOUR - self.clock()

    def close(self):
        self._stop.set()
        self._thread.join(10)
