"""The web side's one write path: acknowledging alerts, changing alert rules, and storing the
forecasts web/forecasts.py makes.

Everything else in the web process reads through read-only connections (web/pool.py). These few
changes go through ONE read-write connection, opened with the others before the server gives up
root (its file descriptors then keep working, as the readers' do), used only through the
storage/alert_log.py functions below, one change at a time (a lock), each a short BEGIN IMMEDIATE
transaction beside the collector's writer (WAL allows one writer at a time; busy_timeout makes
either wait for the other, a change up to `wait` seconds, instead of failing at once).

If the connection cannot be opened or the database cannot be written (a read-only file or file
system, a full disk, a lock held too long), the change is refused with ChangeRefused (503); the
rest of the dashboard works on. With the setting read_only the connection is never opened (and
web/auth.py refuses every change before it gets here).
"""
import sqlite3
import threading

from storage import alert_log, forecasts
from storage.db import DatabaseError


class ChangeRefused(RuntimeError):
    """The database cannot take the change now (the API answers 503)."""


class AlertChanges:
    """wait: seconds a change waits for the collector's write lock before it is refused."""

    def __init__(self, path, wait=5.0, read_only=False):
        self.problem = None
        self._lock = threading.Lock()
        if read_only:
            self.con, self.problem = None, "alert changes are off: the dashboard is read-only (setting read_only)"
            return
        try:
            self.con = alert_log.changes_connection(path, wait)
        except (DatabaseError, sqlite3.DatabaseError) as e:
            self.con = None
            self.problem = f"alert changes are off: the database cannot be opened for writing ({e})"

    @property
    def writable(self):
        return self.con is not None

    def _run(self, fn, *args):
        if self.con is None:
            raise ChangeRefused(self.problem)
        with self._lock:
            try:
                return fn(self.con, *args)
            except sqlite3.DatabaseError as e:
                raise ChangeRefused(f"cannot change alerts now: {e}") from None

    def acknowledge(self, alert_id, now, by):
        """The alert after acknowledging it, None for an unknown id."""
        def ack(con):
            if not alert_log.acknowledge(con, alert_id, now, by):
                return None
            return alert_log.alert_by_id(con, alert_id)
        return self._run(ack)

    def save_rule(self, rule_dict, now):
        self._run(alert_log.save_rule, rule_dict, now)

    def forget_rule(self, name):
        """True if an override was dropped."""
        return self._run(alert_log.forget_rule, name)

    def store_forecasts(self, rows):
        self._run(forecasts.save, rows)

    def close(self):
        if self.con is not None:
            self.con.close()
            self.con = None
