"""The single writer thread: rollups from the flow table become rows (storage/store.py), one
transaction per batch.

Crash safety. Every batch is applied inside one transaction, so a crash (kill -9) loses at most
the batches not yet committed (what was counted since the last flush, settings.flush_interval)
and never applies one twice: counters leave the flow table as deltas when drained, and a
committed delta is never resent. Flow rows are keyed by their natural key (5-tuple and
first-seen time), so a restarted writer adds to the same rows instead of duplicating them.

The writer thread also checks the file at start (storage.db.connect_checked), keeps counts in
memory while the database cannot be written (disk full, read-only: storage/backlog.py) and writes
them when it can again, and runs housekeeping (tiers, retention, WAL checkpoints) between batches.
"""
import logging
import os
import queue
import socket
import sqlite3
import threading
import time

from storage import postgres, retention, status, tiers
from storage.backlog import Backlog, rows_of
from storage.db import DatabaseError, connect, connect_checked, shown
from storage.store import RollupStore

log = logging.getLogger("nettally.storage")

# SQLite result codes that mean "cannot write now, may later": the batch waits in memory.
_SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 5, 8, 10, 13, 14
_STALLS = {_SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN}


def is_stall(error):
    """True for errors that say the database cannot be written now (full, read-only, I/O)."""
    code = getattr(error, "sqlite_errorcode", None)
    return getattr(error, "stall", False) or (code is not None and code & 0xFF in _STALLS)


class Health:
    """What a writer says about its database, read by the alert runner (alerts/service.py) in the
    same process: whether writing is stalled, since when and why, and stalls already over."""

    def __init__(self, path):
        self.path = path
        self.stalled_since = None     # clock time the current stall began, None when writing
        self.reason = ""
        self.backlog_rows = 0
        self.dropped_bytes = 0        # counts given up because the backlog bound was reached
        self.finished = []            # (since, until, reason) of stalls since taken by take_finished()
        self._lock = threading.Lock()

    def take_finished(self):
        with self._lock:
            done, self.finished = self.finished, []
        return done


_HEALTH, _HEALTH_LOCK = {}, threading.Lock()


def health(path):
    """The Health of the writer of database `path` in this process."""
    key = postgres.shown(path) if postgres.is_url(path) else os.path.abspath(path)   # named in alerts
    with _HEALTH_LOCK:
        return _HEALTH.setdefault(key, Health(key))


_TICK = object()
_CHUNK_ROWS = 50_000          # rows per transaction when a backlog is written after a stall


class WriterThread(threading.Thread):
    """The one thread that writes: takes rollups from a queue and commits whatever has queued
    up since the last commit in a single transaction; between batches it builds tiers, prunes and
    checkpoints (settings.maintenance_interval). `clock` (epoch seconds) is injectable for tests."""

    def __init__(self, path, settings, clock=time.time, retry_interval=5.0, source=None, after_write=None,
                 version=""):
        """settings: a settings.Settings (retention_*, maintenance_interval, writer_backlog_rows);
        source: (kind, name) of a `sources` row to open at start and finish in close(frames);
        after_write: called with each list of rollups once committed (alerts.service.AlertRunner);
        version: the program's, noted with each write (storage/status.py)."""
        super().__init__(name="storage-writer", daemon=True)
        self.source, self.after_write = source, after_write
        self._source_id = self._frames = None
        self.path = path
        self.queue = queue.Queue()
        self.error = None
        self.ready = threading.Event()
        self.store = None
        self.clock = clock
        self.retry_interval = retry_interval
        self.policy = tiers.RetentionPolicy.from_settings(settings)
        self.maintenance_interval = settings.maintenance_interval
        self.backlog = Backlog(settings.writer_backlog_rows)
        self.health = health(path)
        self._reconnect = False
        self._retry_at = 0.0
        self._next_maintenance = 0.0      # time.monotonic() of the next housekeeping round
        # noted after every write for /health and /metrics (storage/status.py)
        self.agent = getattr(settings, "agent", "") or socket.gethostname() or "local"   # settings build it so
        self._status_since, self._writes = clock(), 0
        self.version = version
        self.interfaces = source[1] if source and source[0] == "live" else ""

    def submit(self, rollups):
        self.queue.put(("rollups", rollups))

    def submit_seconds(self, points):
        """Per-second interface points, written by this thread (see RollupStore.add_seconds)."""
        self.queue.put(("seconds", points))

    def submit_activity(self, hosts, processes, apps=()):
        """Per-second host, process and app points (see RollupStore.add_activity)."""
        self.queue.put(("activity", hosts, processes, apps))

    def submit_drops(self, minute, drops):
        self.queue.put(("drops", minute, drops))

    def submit_relabels(self, labels):
        self.queue.put(("relabel", labels))

    def close(self, frames=None):
        """Flushes everything submitted, then stops the thread (recording `frames` in the source
        row, if one was opened)."""
        self._frames = frames
        self.queue.put(None)
        self.join()
        if self.error:
            raise self.error

    def run(self):
        self._open()
        self.ready.set()
        stop = False
        while not stop:
            try:
                item = self.queue.get(timeout=self._wait())
            except queue.Empty:
                item = _TICK
            while True:
                if item is None:
                    stop = True
                elif item is not _TICK:
                    self._hold(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if self.error is None:
                self._write(force=stop)
                if not stop:
                    self._housekeep()
            else:
                self.backlog.clear()
        self._finish()

    # ---- writing ------------------------------------------------------------------------------

    def _open(self):
        try:     # the integrity check once, before the file is first trusted
            con = connect_checked(self.path) if self.store is None else connect(self.path)
        except (DatabaseError, sqlite3.Error) as e:
            code = getattr(e, "sqlite_errorcode", None)
            no_folder = not os.path.isdir(os.path.dirname(os.path.abspath(self.path)))
            if (code is not None and code & 0xFF in _STALLS and not (code & 0xFF == _SQLITE_CANTOPEN and no_folder)) \
                    or (getattr(e, "stall", False) and self.store is not None):   # a server gone, after the start
                self._stall(e)      # read-only or full file system: counts wait in memory
            else:
                self.error = e if isinstance(e, DatabaseError) else DatabaseError(f"{shown(self.path)}: {e}")
                log.error("storage: %s", self.error)
            return False
        if self.store is None:
            self.store = RollupStore(con, self.agent)
            if self.source:
                self._source_id = self.store.begin_source(*self.source, started=self.clock())
        else:
            self.store.con = con      # the flow-id cache holds committed rows only: still valid
        self._reconnect = False
        return True

    def _hold(self, item):
        if item[0] == "rollups":
            self.backlog.add_rollups(item[1])
        elif item[0] == "seconds":
            self.backlog.add_seconds(item[1])
        elif item[0] == "relabel":
            self.backlog.relabels.extend(item[1])
        elif item[0] == "activity":
            self.backlog.add_activity(item[1], item[2], item[3])
        else:
            self.backlog.add_drops(item[1], item[2])

    def _write(self, force=False):
        b = self.backlog
        stalled = self.health.stalled_since is not None
        if not b and not stalled:
            return
        if stalled and not force and time.monotonic() < self._retry_at:
            self.health.backlog_rows = b.rows
            return
        began, held = time.monotonic(), b.rows
        try:
            if self._reconnect or self.store is None:
                if self.store is not None and self.store.con is not None:
                    self.store.con.close()
                    self.store.con = None
                if not self._open():
                    return
            while b.rollups:        # in chunks, each removed from the backlog once committed
                n = rows = 0
                while n < len(b.rollups) and (n == 0 or rows < _CHUNK_ROWS):
                    rows += rows_of(b.rollups[n])
                    n += 1
                chunk = b.rollups[:n]
                self.store.apply(chunk)
                del b.rollups[:n]
                b.rows -= rows
                self._tell(chunk)
            if b.seconds:
                self.store.add_seconds(b.seconds)
                b.seconds = []
            if b.host_seconds or b.process_seconds or b.app_seconds:
                self.store.add_activity(b.host_seconds, b.process_seconds, b.app_seconds)
                b.host_seconds, b.process_seconds, b.app_seconds = [], [], []
            while b.drops:
                self.store.add_drops(*b.drops[0])
                b.drops.pop(0)
            if b.relabels:                  # after the rollups: the flows they name are written
                self.store.relabel(b.relabels)
                b.relabels = []
        except Exception as e:
            if is_stall(e):
                self._stall(e)
            else:
                self.error = e
                log.error("storage: writing to %s failed: %s", shown(self.path), e)
            return
        b.rows = 0
        if self.health.stalled_since is not None:
            self._resume()
        self._writes += 1
        try:
            status.note_write(self.store.con, self.agent, self._status_since, self.clock(),
                              (time.monotonic() - began) * 1000.0, self._writes, held, self.health.dropped_bytes,
                              self.version, self.interfaces)
        except Exception as e:       # counts are written: a status that could not be is told, not fatal
            log.warning("storage: could not note the writer's status: %s", e)

    def _tell(self, rollups):
        if self.after_write is None:
            return
        try:
            self.after_write(rollups)
        except Exception as e:        # alerting failing must not stop the writing
            log.error("storage: after-write hook failed, switched off: %s", e)
            self.after_write = None

    def _stall(self, error):
        self._reconnect = True
        self._retry_at = time.monotonic() + self.retry_interval
        h = self.health
        h.backlog_rows = self.backlog.rows
        if h.stalled_since is None:
            h.stalled_since, h.reason = self.clock(), self._explain(error)
            log.warning("storage: cannot write %s (%s); holding counts in memory (up to %d rows) "
                        "and retrying every %g s", shown(self.path), h.reason, self.backlog.max_rows, self.retry_interval)

    def _explain(self, error):
        """SQLite's words, plus what the file system says when SQLite's are vague (I/O error,
        cannot open): a full disk and a read-only mount look alike to it."""
        reason = str(error).removeprefix(f"{shown(self.path)}: ")
        if postgres.is_url(self.path):
            return reason             # the server's words: its disks are not this machine's
        try:
            fs = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            return reason
        if fs.f_flag & os.ST_RDONLY:
            return f"{reason}: the file system is read-only"
        if fs.f_bavail == 0:
            return f"{reason}: no space left on the file system"
        return reason

    def _resume(self):
        h = self.health
        now = self.clock()
        with h._lock:
            h.finished.append((h.stalled_since, now, h.reason))
        lost = self.backlog.dropped_bytes - h.dropped_bytes
        log.warning("storage: writing to %s again after %.0f s (%s); held counts written%s", shown(self.path),
                    now - h.stalled_since, h.reason,
                    f", except {lost} bytes dropped at the memory bound" if lost else "")
        h.dropped_bytes = self.backlog.dropped_bytes
        h.stalled_since, h.reason, h.backlog_rows = None, "", 0

    def _finish(self):
        if self._source_id is not None and self._frames is not None and not self.backlog and self.error is None:
            try:
                self.store.end_source(self._source_id, self._frames)
            except sqlite3.Error as e:
                log.error("storage: could not finish the source row: %s", e)
        if self.backlog and self.error is None:
            b = self.backlog
            self.error = DatabaseError(f"{shown(self.path)}: {b.rows + len(b.seconds) + len(b.drops)} rows of counts could "
                                       f"not be written ({self.health.reason or 'not writable'}) and are lost")
            log.error("storage: %s", self.error)
        if self.store is not None and self.store.con is not None:
            self.store.con.close()

    # ---- housekeeping ---------------------------------------------------------------------------

    def _wait(self):
        now = time.monotonic()
        if self.health.stalled_since is not None:
            return min(60.0, max(0.0, self._retry_at - now))
        return min(60.0, max(0.0, self._next_maintenance - now))

    def _housekeep(self):
        if self.health.stalled_since is not None or self.store is None or time.monotonic() < self._next_maintenance:
            return
        con = self.store.con
        try:
            with postgres.one_agent(con) as mine:
                done = not mine or retention.maintain(con, self.policy, self.clock())
            if done:
                retention.checkpoint(con)
        except Exception as e:        # a full disk shows here too; the next commit reports it
            log.error("storage: housekeeping of %s failed: %s", shown(self.path), e)
            done = True
        self._next_maintenance = time.monotonic() + (self.maintenance_interval if done else 0.0)

