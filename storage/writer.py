"""The single writer: rollups from the flow table become rows, one transaction per batch.

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
import sqlite3
import threading
import time

from storage import retention, tiers
from storage.backlog import Backlog, rows_of
from storage.db import DatabaseError, connect, connect_checked, immediate

log = logging.getLogger("nettally.storage")

_HOST_MAC = """
INSERT INTO host_macs (ip, mac, first_seen, last_seen) VALUES (?, ?, ?, ?)
ON CONFLICT (ip) DO UPDATE SET
    first_seen = CASE WHEN mac = excluded.mac THEN min(first_seen, excluded.first_seen)
                      WHEN excluded.last_seen >= last_seen THEN excluded.first_seen ELSE first_seen END,
    last_seen = max(last_seen, excluded.last_seen),
    mac = CASE WHEN excluded.last_seen >= last_seen THEN excluded.mac ELSE mac END"""
_FLOW_UPSERT = """
INSERT INTO flows (proto, orig_h, orig_p, resp_h, resp_p, first_seen, last_seen, orig_bytes,
                   orig_packets, resp_bytes, resp_packets, tcp_flags, iface, closed,
                   orig_pid, orig_process, resp_pid, resp_process)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (proto, orig_h, orig_p, resp_h, resp_p, first_seen) DO UPDATE SET
    last_seen = max(last_seen, excluded.last_seen),
    orig_bytes = orig_bytes + excluded.orig_bytes, orig_packets = orig_packets + excluded.orig_packets,
    resp_bytes = resp_bytes + excluded.resp_bytes, resp_packets = resp_packets + excluded.resp_packets,
    tcp_flags = tcp_flags | excluded.tcp_flags, closed = excluded.closed,
    orig_pid = coalesce(orig_pid, excluded.orig_pid), orig_process = coalesce(orig_process, excluded.orig_process),
    resp_pid = coalesce(resp_pid, excluded.resp_pid), resp_process = coalesce(resp_process, excluded.resp_process)
RETURNING id"""
_FLOW_ADD = """
UPDATE flows SET last_seen = max(last_seen, ?), orig_bytes = orig_bytes + ?, orig_packets = orig_packets + ?,
    resp_bytes = resp_bytes + ?, resp_packets = resp_packets + ?, tcp_flags = tcp_flags | ?, closed = ?,
    orig_pid = coalesce(orig_pid, ?), orig_process = coalesce(orig_process, ?),
    resp_pid = coalesce(resp_pid, ?), resp_process = coalesce(resp_process, ?)
WHERE id = ?"""
_FLOW_NAMES = """
INSERT INTO flow_names (flow_id, app, app_source, server_name, service, traffic_class) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (flow_id) DO UPDATE SET app = excluded.app, app_source = excluded.app_source,
    server_name = excluded.server_name, service = excluded.service, traffic_class = excluded.traffic_class"""
_HOST_NAME = """
INSERT INTO host_names (ip, name, source, seen) VALUES (?, ?, ?, ?)
ON CONFLICT (ip) DO UPDATE SET name = excluded.name, source = excluded.source, seen = excluded.seen
WHERE excluded.seen >= host_names.seen"""
_RELABEL = """
INSERT INTO flow_names (flow_id, app, app_source, traffic_class)
SELECT id, ?, 'dpi', ? FROM flows
WHERE proto = ? AND orig_h = ? AND orig_p = ? AND resp_h = ? AND resp_p = ? AND first_seen = ?
ON CONFLICT (flow_id) DO UPDATE SET app = excluded.app, app_source = 'dpi',
    traffic_class = CASE WHEN service = '' THEN excluded.traffic_class ELSE traffic_class END
WHERE flow_names.app_source != 'dpi'"""
_PROCESS_UPSERT = """
INSERT INTO processes (pid, start_time, name, exe, cmdline, username, unit) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (pid, start_time) DO UPDATE SET name = excluded.name
RETURNING id"""
_SECONDS = """
INSERT INTO iface_seconds (second, iface, frames, bytes, out_frames, out_bytes) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (second, iface) DO UPDATE SET frames = frames + excluded.frames, bytes = bytes + excluded.bytes,
    out_frames = out_frames + excluded.out_frames, out_bytes = out_bytes + excluded.out_bytes"""

def _process_apps(rollup, process_ids, minute):
    """Rows (minute, process id, app, service, class, tx, rx, tx frames, rx frames): each flow side a
    process owns credits that process, as the attribution join charged it in this rollup (a pid
    names one process per rollup: the one in rollup.processes)."""
    by_pid = {key.pid: process_id for key, process_id in process_ids.items()}
    out = {}
    for f in rollup.flows:
        if not (f.orig_packets or f.resp_packets):
            continue                   # a correction's stub: its bytes moved with the process rows
        for pid, tx, rx, txp, rxp in ((f.orig_pid, f.orig_bytes, f.resp_bytes, f.orig_packets, f.resp_packets),
                                      (f.resp_pid, f.resp_bytes, f.orig_bytes, f.resp_packets, f.orig_packets)):
            process_id = by_pid.get(pid) if pid is not None else None
            if process_id is None:
                continue
            key = (process_id, f.app, f.service, f.traffic_class)
            c = out.get(key)
            if c is None:
                c = out[key] = [0, 0, 0, 0]
            c[0] += tx
            c[1] += rx
            c[2] += txp
            c[3] += rxp
    return [(minute, *key, *c) for key, c in out.items()]


# SQLite result codes that mean "cannot write now, may later": the batch waits in memory.
_SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 5, 8, 10, 13, 14
_STALLS = {_SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN}


def is_stall(error):
    """True for errors that say the database cannot be written now (full, read-only, I/O)."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _STALLS


class RollupStore:
    """Applies rollups to one connection. Used directly (import) or from WriterThread (live)."""

    def __init__(self, con):
        self.con = con
        self._flow_ids = {}       # natural key -> flows.id, for flows still open
        self._labels = {}         # flows.id -> labels last written, for flows still open (a delta
                                  # carries its flow's labels every time; they are written when new)
        self.span = None          # (first bucket, end of last bucket) of the rollups applied

    def apply(self, rollups):
        """All of `rollups` in one transaction, or nothing (the exception says why)."""
        undo = []                 # flow-id cache changes, reverted if the transaction is not committed
        try:
            with immediate(self.con):
                marks = tiers.watermarks(self.con)
                for rollup in rollups:
                    self._apply(rollup, marks, undo)
        except BaseException:
            self._labels.clear()          # a cache only: labels are written again, idempotently
            for natural, old in reversed(undo):
                if old is None:
                    self._flow_ids.pop(natural, None)
                else:
                    self._flow_ids[natural] = old
            raise
        for rollup in rollups:
            first, end = rollup.bucket, rollup.bucket + tiers.MINUTE
            self.span = (first, end) if self.span is None else (min(self.span[0], first), max(self.span[1], end))

    def _apply(self, rollup, marks, undo):
        con, ids, minute = self.con, self._flow_ids, rollup.bucket
        known, minutes, names, apps, host_apps, written = [], [], [], {}, {}, self._labels
        for f in rollup.flows:
            natural = (f.proto, f.orig_h, f.orig_p, f.resp_h, f.resp_p, f.first_seen)
            flow_id = ids.get(natural)
            if flow_id is None:
                flow_id = con.execute(_FLOW_UPSERT, natural + (
                    f.last_seen, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets,
                    f.tcp_flags, f.iface, int(f.closed),
                    f.orig_pid, f.orig_process, f.resp_pid, f.resp_process)).fetchone()[0]
                if not f.closed:
                    ids[natural] = flow_id
                    undo.append((natural, None))
            else:
                known.append((f.last_seen, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets,
                              f.tcp_flags, int(f.closed),
                              f.orig_pid, f.orig_process, f.resp_pid, f.resp_process, flow_id))
                if f.closed:
                    del ids[natural]
                    undo.append((natural, flow_id))
            if f.orig_packets or f.resp_packets:
                minutes.append((minute, flow_id, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets))
                app = apps.get((f.app, f.service, f.traffic_class))
                if app is None:
                    app = apps[(f.app, f.service, f.traffic_class)] = [0, 0]
                app[0] += f.orig_bytes + f.resp_bytes
                app[1] += f.orig_packets + f.resp_packets
                for ip, tx, rx, txp, rxp in ((f.orig_h, f.orig_bytes, f.resp_bytes, f.orig_packets, f.resp_packets),
                                             (f.resp_h, f.resp_bytes, f.orig_bytes, f.resp_packets, f.orig_packets)):
                    key = (ip, f.app, f.service, f.traffic_class)
                    host_app = host_apps.get(key)
                    if host_app is None:
                        host_app = host_apps[key] = [0, 0, 0, 0]
                    host_app[0] += tx
                    host_app[1] += rx
                    host_app[2] += txp
                    host_app[3] += rxp
            labels = (f.app, f.app_source, f.server_name, f.service, f.traffic_class)
            if (f.app or f.server_name or f.service or f.traffic_class not in ("", "other")) \
                    and written.get(flow_id) != labels:
                names.append((flow_id, *labels))
                written[flow_id] = labels
            if f.closed:
                written.pop(flow_id, None)
        con.executemany(_FLOW_ADD, known)
        con.executemany(_FLOW_NAMES, names)
        process_ids = {key: con.execute(_PROCESS_UPSERT, tuple(key)).fetchone()[0] for key in rollup.processes}
        processes = [(minute, process_ids[key], *c) for key, c in rollup.processes.items()]
        process_apps = _process_apps(rollup, process_ids, minute)
        pending = {
            tiers.route(con, marks, "flow", minute, minutes),
            tiers.route(con, marks, "host", minute,
                        [(minute, ip, *c) for ip, c in rollup.hosts.items() if c[2] or c[3]]),
            tiers.route(con, marks, "iface", minute,
                        [(minute, name, *c) for name, c in rollup.interfaces.items() if c[0]]),
            tiers.route(con, marks, "undecodable", minute,
                        [(minute, iface, reason, *c) for (iface, reason), c in rollup.undecodable.items()]),
            tiers.route(con, marks, "process", minute, processes),
            tiers.route(con, marks, "attribution", minute,
                        [(minute, reason, *c) for reason, c in rollup.attribution.items()]),
            tiers.route(con, marks, "app", minute, [(minute, *key, *c) for key, c in apps.items()]),
            tiers.route(con, marks, "unnamed", minute, [(minute, reason, n) for reason, n in rollup.unnamed.items()]),
            tiers.route(con, marks, "host_app", minute, [(minute, *key, *c) for key, c in host_apps.items()]),
            tiers.route(con, marks, "process_app", minute, process_apps),
        }
        tiers.mark_pending(con, pending)
        con.executemany(_HOST_MAC, [(ip, mac, minute, minute) for ip, mac in rollup.macs.items()])
        con.executemany(_HOST_NAME, [(ip, *seen) for ip, seen in rollup.names.items()])

    def relabel(self, labels):
        """Apps named late, by Wireshark (names/tshark.py): [(proto, orig_h, orig_p, resp_h, resp_p,
        first_seen, app, traffic_class)]. A flow's own reading ('dpi') is never overwritten; the app
        tier keeps what was counted when the bytes were written."""
        with immediate(self.con):
            self.con.executemany(_RELABEL, [(app, cls, *natural) for *natural, app, cls in labels])

    def add_seconds(self, points):
        """Per-second interface points: [(second, iface, frames, bytes, out_frames, out_bytes)]."""
        with immediate(self.con):
            self.con.executemany(_SECONDS, points)

    def add_drops(self, minute, drops):
        with immediate(self.con):
            rows = [(minute, iface, n) for iface, n in drops.items() if n]
            tiers.mark_pending(self.con, {tiers.route(self.con, tiers.watermarks(self.con), "drops", minute, rows)})

    def begin_source(self, kind, name, started=None):
        with immediate(self.con):
            return self.con.execute("INSERT INTO sources (kind, name, started) VALUES (?, ?, ?)",
                                    (kind, name, time.time() if started is None else started)).lastrowid

    def end_source(self, source_id, frames, clamped=0, damage=None):
        with immediate(self.con):
            self.con.execute("UPDATE sources SET finished = ?, frames = ?, clamped = ?, damage = ? WHERE id = ?",
                             (time.time(), frames, clamped, damage, source_id))


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
    key = os.path.abspath(path)
    with _HEALTH_LOCK:
        return _HEALTH.setdefault(key, Health(key))


_TICK = object()
_CHUNK_ROWS = 50_000          # rows per transaction when a backlog is written after a stall


class WriterThread(threading.Thread):
    """The one thread that writes: takes rollups from a queue and commits whatever has queued
    up since the last commit in a single transaction; between batches it builds tiers, prunes and
    checkpoints (settings.maintenance_interval). `clock` (epoch seconds) is injectable for tests."""

    def __init__(self, path, settings, clock=time.time, retry_interval=5.0, source=None, after_write=None):
        """settings: a settings.Settings (retention_*, maintenance_interval, writer_backlog_rows);
        source: (kind, name) of a `sources` row to open at start and finish in close(frames);
        after_write: called with each list of rollups once committed (alerts.service.AlertRunner)."""
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

    def submit(self, rollups):
        self.queue.put(("rollups", rollups))

    def submit_seconds(self, points):
        """Per-second interface points, written by this thread (see RollupStore.add_seconds)."""
        self.queue.put(("seconds", points))

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
            if code is not None and code & 0xFF in _STALLS and not (code & 0xFF == _SQLITE_CANTOPEN and no_folder):
                self._stall(e)      # read-only or full file system: counts wait in memory
            else:
                self.error = e if isinstance(e, DatabaseError) else DatabaseError(f"{self.path}: {e}")
                log.error("storage: %s", self.error)
            return False
        if self.store is None:
            self.store = RollupStore(con)
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
                log.error("storage: writing to %s failed: %s", self.path, e)
            return
        b.rows = 0
        if self.health.stalled_since is not None:
            self._resume()

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
                        "and retrying every %g s", self.path, h.reason, self.backlog.max_rows, self.retry_interval)

    def _explain(self, error):
        """SQLite's words, plus what the file system says when SQLite's are vague (I/O error,
        cannot open): a full disk and a read-only mount look alike to it."""
        reason = str(error).removeprefix(f"{self.path}: ")
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
        log.warning("storage: writing to %s again after %.0f s (%s); held counts written%s", self.path,
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
            self.error = DatabaseError(f"{self.path}: {b.rows + len(b.seconds) + len(b.drops)} rows of counts could "
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
            done = retention.maintain(con, self.policy, self.clock())
            if done:
                retention.checkpoint(con)
        except Exception as e:        # a full disk shows here too; the next commit reports it
            log.error("storage: housekeeping of %s failed: %s", self.path, e)
            done = True
        self._next_maintenance = time.monotonic() + (self.maintenance_interval if done else 0.0)

