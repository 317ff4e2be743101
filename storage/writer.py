"""The single writer: rollups from the flow table become rows, one transaction per batch.

Every rollup is applied inside one transaction, so a crash loses at most the batches not yet
committed and never applies one twice. Flow rows are keyed by their natural key (5-tuple and
first-seen time), so a restarted writer adds to the same rows instead of duplicating them.
"""
import queue
import threading
import time

from storage.db import connect

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
_FLOW_MINUTE = """
INSERT INTO flow_minutes (minute, flow_id, orig_bytes, orig_packets, resp_bytes, resp_packets)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (minute, flow_id) DO UPDATE SET
    orig_bytes = orig_bytes + excluded.orig_bytes, orig_packets = orig_packets + excluded.orig_packets,
    resp_bytes = resp_bytes + excluded.resp_bytes, resp_packets = resp_packets + excluded.resp_packets"""
_HOST_MINUTE = """
INSERT INTO host_minutes (minute, ip, tx_bytes, rx_bytes, tx_packets, rx_packets) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (minute, ip) DO UPDATE SET
    tx_bytes = tx_bytes + excluded.tx_bytes, rx_bytes = rx_bytes + excluded.rx_bytes,
    tx_packets = tx_packets + excluded.tx_packets, rx_packets = rx_packets + excluded.rx_packets"""
_IFACE_COLUMNS = ("frames", "bytes", "ip_frames", "ip_bytes", "non_ip_frames", "non_ip_bytes",
                  "undecodable_frames", "undecodable_bytes", "out_frames", "out_bytes")
_IFACE_MINUTE = (
    f"INSERT INTO iface_minutes (minute, iface, {', '.join(_IFACE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(_IFACE_COLUMNS) + 2))}) ON CONFLICT (minute, iface) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _IFACE_COLUMNS))
_UNDECODABLE = """
INSERT INTO undecodable (minute, iface, reason, frames, bytes) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (minute, iface, reason) DO UPDATE SET
    frames = frames + excluded.frames, bytes = bytes + excluded.bytes"""
_PROCESS_UPSERT = """
INSERT INTO processes (pid, start_time, name, exe, cmdline, username, unit) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (pid, start_time) DO UPDATE SET name = excluded.name
RETURNING id"""
_PROCESS_MINUTE = """
INSERT INTO process_minutes (minute, process_id, tx_bytes, rx_bytes, tx_packets, rx_packets) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (minute, process_id) DO UPDATE SET
    tx_bytes = tx_bytes + excluded.tx_bytes, rx_bytes = rx_bytes + excluded.rx_bytes,
    tx_packets = tx_packets + excluded.tx_packets, rx_packets = rx_packets + excluded.rx_packets"""
_ATTRIBUTION = """
INSERT INTO attribution_minutes (minute, reason, bytes, packets) VALUES (?, ?, ?, ?)
ON CONFLICT (minute, reason) DO UPDATE SET bytes = bytes + excluded.bytes, packets = packets + excluded.packets"""
_SECONDS = """
INSERT INTO iface_seconds (second, iface, frames, bytes, out_frames, out_bytes) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (second, iface) DO UPDATE SET frames = frames + excluded.frames, bytes = bytes + excluded.bytes,
    out_frames = out_frames + excluded.out_frames, out_bytes = out_bytes + excluded.out_bytes"""
_DROPS = """
INSERT INTO capture_drops (minute, iface, frames) VALUES (?, ?, ?)
ON CONFLICT (minute, iface) DO UPDATE SET frames = frames + excluded.frames"""


class RollupStore:
    """Applies rollups to one connection. Used directly (import) or from WriterThread (live)."""

    def __init__(self, con):
        self.con = con
        self._flow_ids = {}       # natural key -> flows.id, for flows still open

    def apply(self, rollups):
        with self.con:
            for rollup in rollups:
                self._apply(rollup)

    def _apply(self, rollup):
        con, ids, minute = self.con, self._flow_ids, rollup.bucket
        known, minutes = [], []
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
            else:
                known.append((f.last_seen, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets,
                              f.tcp_flags, int(f.closed),
                              f.orig_pid, f.orig_process, f.resp_pid, f.resp_process, flow_id))
                if f.closed:
                    del ids[natural]
            if f.orig_packets or f.resp_packets:
                minutes.append((minute, flow_id, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets))
        con.executemany(_FLOW_ADD, known)
        con.executemany(_FLOW_MINUTE, minutes)
        con.executemany(_HOST_MINUTE, [(minute, ip, *c) for ip, c in rollup.hosts.items() if c[2] or c[3]])
        con.executemany(_IFACE_MINUTE, [(minute, name, *c) for name, c in rollup.interfaces.items() if c[0]])
        con.executemany(_UNDECODABLE, [(minute, iface, reason, *c)
                                       for (iface, reason), c in rollup.undecodable.items()])
        for key, c in rollup.processes.items():
            process_id = con.execute(_PROCESS_UPSERT, tuple(key)).fetchone()[0]
            con.execute(_PROCESS_MINUTE, (minute, process_id, *c))
        con.executemany(_ATTRIBUTION, [(minute, reason, *c) for reason, c in rollup.attribution.items()])

    def add_seconds(self, points):
        """Per-second interface points: [(second, iface, frames, bytes, out_frames, out_bytes)]."""
        with self.con:
            self.con.executemany(_SECONDS, points)

    def add_drops(self, minute, drops):
        with self.con:
            self.con.executemany(_DROPS, [(minute, iface, n) for iface, n in drops.items() if n])

    def begin_source(self, kind, name, started=None):
        with self.con:
            return self.con.execute("INSERT INTO sources (kind, name, started) VALUES (?, ?, ?)",
                                    (kind, name, time.time() if started is None else started)).lastrowid

    def end_source(self, source_id, frames, clamped=0, damage=None):
        with self.con:
            self.con.execute("UPDATE sources SET finished = ?, frames = ?, clamped = ?, damage = ? WHERE id = ?",
                             (time.time(), frames, clamped, damage, source_id))


class WriterThread(threading.Thread):
    """The one thread that writes: takes rollups from a queue and commits whatever has queued
    up since the last commit in a single transaction."""

    def __init__(self, path):
        super().__init__(name="storage-writer", daemon=True)
        self.path = path
        self.queue = queue.Queue()
        self.error = None
        self.ready = threading.Event()
        self.store = None

    def submit(self, rollups):
        self.queue.put(rollups)

    def close(self):
        """Flushes everything submitted, then stops the thread."""
        self.queue.put(None)
        self.join()
        if self.error:
            raise self.error

    def run(self):
        con = connect(self.path)
        self.store = RollupStore(con)
        self.ready.set()
        stop = False
        while not stop:
            batch = []
            item = self.queue.get()
            while True:
                if item is None:
                    stop = True
                else:
                    batch.extend(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if batch and self.error is None:
                try:
                    self.store.apply(batch)
                except Exception as e:   # reported by close(); capture goes on counting
                    self.error = e
        con.close()
