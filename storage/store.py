"""Rollups become rows: one transaction per batch of rollups, through one connection. The
writer thread (storage/writer.py) and an import's writer process (collector/import_writer.py)
both write through a RollupStore."""
import time
from sys import intern

from storage import health, tiers
from storage.db import immediate
from storage.postgres import upsert_ids

_HOST_MAC = """
INSERT INTO host_macs (ip, mac, first_seen, last_seen) VALUES (?, ?, ?, ?)
ON CONFLICT (ip) DO UPDATE SET
    first_seen = CASE WHEN host_macs.mac = excluded.mac THEN min(host_macs.first_seen, excluded.first_seen)
                      WHEN excluded.last_seen >= host_macs.last_seen THEN excluded.first_seen ELSE host_macs.first_seen END,
    last_seen = max(host_macs.last_seen, excluded.last_seen),
    mac = CASE WHEN excluded.last_seen >= host_macs.last_seen THEN excluded.mac ELSE host_macs.mac END"""
_FLOW_UPSERT = """
INSERT INTO flows (proto, orig_h, orig_p, resp_h, resp_p, first_seen, last_seen, orig_bytes,
                   orig_packets, resp_bytes, resp_packets, tcp_flags, iface, closed,
                   orig_pid, orig_process, resp_pid, resp_process,
                   rtt_ms, rtt_min_ms, rtt_avg_ms, rtt_max_ms, data_segments, retransmits, out_of_order,
                   zero_windows, resets, agent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (proto, orig_h, orig_p, resp_h, resp_p, first_seen, agent) DO UPDATE SET
    last_seen = max(flows.last_seen, excluded.last_seen),
    orig_bytes = flows.orig_bytes + excluded.orig_bytes, orig_packets = flows.orig_packets + excluded.orig_packets,
    resp_bytes = flows.resp_bytes + excluded.resp_bytes, resp_packets = flows.resp_packets + excluded.resp_packets,
    tcp_flags = flows.tcp_flags | excluded.tcp_flags, closed = excluded.closed,
    orig_pid = coalesce(flows.orig_pid, excluded.orig_pid), orig_process = coalesce(flows.orig_process, excluded.orig_process),
    resp_pid = coalesce(flows.resp_pid, excluded.resp_pid), resp_process = coalesce(flows.resp_process, excluded.resp_process),
    rtt_ms = coalesce(excluded.rtt_ms, flows.rtt_ms), rtt_min_ms = coalesce(excluded.rtt_min_ms, flows.rtt_min_ms),
    rtt_avg_ms = coalesce(excluded.rtt_avg_ms, flows.rtt_avg_ms), rtt_max_ms = coalesce(excluded.rtt_max_ms, flows.rtt_max_ms),
    data_segments = flows.data_segments + excluded.data_segments, retransmits = flows.retransmits + excluded.retransmits,
    out_of_order = flows.out_of_order + excluded.out_of_order, zero_windows = flows.zero_windows + excluded.zero_windows,
    resets = flows.resets + excluded.resets
RETURNING id"""
_FLOW_ADD = """
UPDATE flows SET last_seen = max(last_seen, ?), orig_bytes = orig_bytes + ?, orig_packets = orig_packets + ?,
    resp_bytes = resp_bytes + ?, resp_packets = resp_packets + ?, tcp_flags = tcp_flags | ?, closed = ?,
    orig_pid = coalesce(orig_pid, ?), orig_process = coalesce(orig_process, ?),
    resp_pid = coalesce(resp_pid, ?), resp_process = coalesce(resp_process, ?),
    rtt_ms = coalesce(?, rtt_ms), rtt_min_ms = coalesce(?, rtt_min_ms), rtt_avg_ms = coalesce(?, rtt_avg_ms),
    rtt_max_ms = coalesce(?, rtt_max_ms), data_segments = data_segments + ?, retransmits = retransmits + ?,
    out_of_order = out_of_order + ?, zero_windows = zero_windows + ?, resets = resets + ?
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
WHERE proto = ? AND orig_h = ? AND orig_p = ? AND resp_h = ? AND resp_p = ? AND first_seen = ? AND agent = ?
ON CONFLICT (flow_id) DO UPDATE SET app = excluded.app, app_source = 'dpi',
    traffic_class = CASE WHEN flow_names.service = '' THEN excluded.traffic_class ELSE flow_names.traffic_class END
WHERE flow_names.app_source != 'dpi'"""
_PROCESS_UPSERT = """
INSERT INTO processes (pid, start_time, name, exe, cmdline, username, unit, agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (pid, start_time, agent) DO UPDATE SET name = excluded.name
RETURNING id"""
_SECONDS = """
INSERT INTO iface_seconds (second, iface, frames, bytes, out_frames, out_bytes, agent) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (second, iface, agent) DO UPDATE SET frames = iface_seconds.frames + excluded.frames, bytes = iface_seconds.bytes + excluded.bytes,
    out_frames = iface_seconds.out_frames + excluded.out_frames, out_bytes = iface_seconds.out_bytes + excluded.out_bytes"""
_HOST_SECONDS = """
INSERT INTO host_seconds (second, ip, tx_bytes, rx_bytes, agent) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (second, ip, agent) DO UPDATE SET tx_bytes = host_seconds.tx_bytes + excluded.tx_bytes, rx_bytes = host_seconds.rx_bytes + excluded.rx_bytes"""
_PROCESS_SECONDS = """
INSERT INTO process_seconds (second, process_id, tx_bytes, rx_bytes) VALUES (?, ?, ?, ?)
ON CONFLICT (second, process_id) DO UPDATE SET tx_bytes = process_seconds.tx_bytes + excluded.tx_bytes,
    rx_bytes = process_seconds.rx_bytes + excluded.rx_bytes"""
_APP_SECONDS = """
INSERT INTO app_seconds (second, app, service, traffic_class, bytes, agent) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (second, app, service, traffic_class, agent) DO UPDATE SET bytes = app_seconds.bytes + excluded.bytes"""

_SHARED_LABELS = 65536        # distinct label tuples shared at once (a flood of server names cannot grow it)


def _process_apps(rollup, process_ids, minute):
    """Rows (minute, process id, app, service, class, tx, rx, tx frames, rx frames): each flow side a
    process owns credits that process, as the attribution join charged it in this rollup (a pid
    names one process per rollup: the one in rollup.processes)."""
    by_pid = {key.pid: process_id for key, process_id in process_ids.items()}
    out = {}
    for f in rollup.flows:
        if not (f.orig_packets or f.resp_packets):
            continue                   # a correction's stub: its bytes moved with the process rows
        for _, pid, *counts in _sides(f):
            process_id = by_pid.get(pid) if pid is not None else None
            if process_id is not None:
                _add(out, (process_id, f.app, f.service, f.traffic_class), counts)
    return [(minute, *key, *c) for key, c in out.items()]


def _health(f):
    """A flow delta's TCP health columns, in the order the flow statements take them."""
    return (f.rtt_ms, f.rtt_min_ms, f.rtt_avg_ms, f.rtt_max_ms, f.data_segments, f.retransmits, f.out_of_order,
            f.zero_windows, f.resets)


def _sides(f):
    """Both sides of a flow delta: (address, pid, bytes sent, bytes received, frames sent, frames
    received), each side crediting what it sent as tx."""
    return ((f.orig_h, f.orig_pid, f.orig_bytes, f.resp_bytes, f.orig_packets, f.resp_packets),
            (f.resp_h, f.resp_pid, f.resp_bytes, f.orig_bytes, f.resp_packets, f.orig_packets))


def _add(table, key, counts):
    """Adds `counts` to table[key] (a list of counters), made on first use."""
    have = table.get(key)
    if have is None:
        table[key] = list(counts)
    else:
        for i, n in enumerate(counts):
            have[i] += n


class RollupStore:
    """Applies rollups to one connection. Used directly (import) or from WriterThread (live)."""

    def __init__(self, con, agent=""):
        self.con = con
        self.agent = agent        # the collector whose counts these are (setting agent)
        self._flow_ids = {}       # natural key -> flows.id, for flows still open
        self._labels = {}         # flows.id -> labels last written, for flows still open (a delta
                                  # carries its flow's labels every time; they are written when new)
        self._shared_labels = {}  # labels -> the one tuple of them that _labels holds
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
        shared = self._shared_labels
        # kept in `ids` while the flow is open (up to max_flows of them): its addresses shared
        # with every other open flow of the same hosts, not one copy per flow and message
        naturals = [(f.proto, intern(f.orig_h), f.orig_p, intern(f.resp_h), f.resp_p, f.first_seen)
                    for f in rollup.flows]
        # the flows new to this store, in one call: on PostgreSQL one COPY for many (pg_bulk)
        fresh = [k for k, natural in enumerate(naturals) if natural not in ids]
        rows = []
        for k in fresh:
            f = rollup.flows[k]
            rows.append(naturals[k] + (f.last_seen, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets,
                                       f.tcp_flags, f.iface, int(f.closed), f.orig_pid, f.orig_process,
                                       f.resp_pid, f.resp_process) + _health(f) + (self.agent,))
        created = dict(zip(fresh, upsert_ids(con, _FLOW_UPSERT, rows)))
        for k, f in enumerate(rollup.flows):
            natural = naturals[k]
            flow_id = created.get(k)
            if flow_id is not None:
                if not f.closed:
                    ids[natural] = flow_id
                    undo.append((natural, None))
            else:
                flow_id = ids[natural]
                known.append((f.last_seen, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets,
                              f.tcp_flags, int(f.closed),
                              f.orig_pid, f.orig_process, f.resp_pid, f.resp_process, *_health(f), flow_id))
                if f.closed:
                    del ids[natural]
                    undo.append((natural, flow_id))
            if f.orig_packets or f.resp_packets:
                minutes.append((minute, flow_id, f.orig_bytes, f.orig_packets, f.resp_bytes, f.resp_packets))
                _add(apps, (f.app, f.service, f.traffic_class),
                     (f.orig_bytes + f.resp_bytes, f.orig_packets + f.resp_packets))
                for ip, _, *counts in _sides(f):
                    _add(host_apps, (ip, f.app, f.service, f.traffic_class), counts)
            labels = (f.app, f.app_source, f.server_name, f.service, f.traffic_class)
            if (f.app or f.server_name or f.service or f.traffic_class not in ("", "other")) \
                    and written.get(flow_id) != labels:
                names.append((flow_id, *labels))
                if not f.closed:      # one tuple per distinct labels, shared by the open flows that carry them
                    if len(shared) >= _SHARED_LABELS:
                        shared.clear()
                    written[flow_id] = shared.setdefault(labels, labels)
            if f.closed:
                written.pop(flow_id, None)
        con.executemany(_FLOW_ADD, known)
        con.executemany(_FLOW_NAMES, names)
        agent = self.agent
        process_ids = {key: con.execute(_PROCESS_UPSERT, (*key, agent)).fetchone()[0] for key in rollup.processes}
        processes = [(minute, process_ids[key], *c) for key, c in rollup.processes.items()]
        process_apps = _process_apps(rollup, process_ids, minute)
        health_rows = health.rows(rollup, process_ids, minute)
        pending = {
            tiers.route(con, marks, "flow", minute, minutes, agent),
            tiers.route(con, marks, "host", minute,
                        [(minute, ip, *c) for ip, c in rollup.hosts.items() if c[2] or c[3]], agent),
            tiers.route(con, marks, "iface", minute,
                        [(minute, name, *c) for name, c in rollup.interfaces.items() if c[0]], agent),
            tiers.route(con, marks, "undecodable", minute,
                        [(minute, iface, reason, *c) for (iface, reason), c in rollup.undecodable.items()], agent),
            tiers.route(con, marks, "process", minute, processes, agent),
            tiers.route(con, marks, "attribution", minute,
                        [(minute, reason, *c) for reason, c in rollup.attribution.items()], agent),
            tiers.route(con, marks, "app", minute, [(minute, *key, *c) for key, c in apps.items()], agent),
            tiers.route(con, marks, "unnamed", minute, [(minute, reason, n) for reason, n in rollup.unnamed.items()], agent),
            tiers.route(con, marks, "host_app", minute, [(minute, *key, *c) for key, c in host_apps.items()], agent),
            tiers.route(con, marks, "process_app", minute, process_apps, agent),
            *(tiers.route(con, marks, family, minute, rows, agent) for family, rows in health_rows.items()),
        }
        tiers.mark_pending(con, pending)
        con.executemany(_HOST_MAC, [(ip, mac, minute, minute) for ip, mac in rollup.macs.items()])
        con.executemany(_HOST_NAME, [(ip, *seen) for ip, seen in rollup.names.items()])

    def relabel(self, labels):
        """Apps named late, by Wireshark (names/tshark.py): [(proto, orig_h, orig_p, resp_h, resp_p,
        first_seen, app, traffic_class)]. A flow's own reading ('dpi') is never overwritten; the app
        tier keeps what was counted when the bytes were written."""
        with immediate(self.con):
            self.con.executemany(_RELABEL, [(app, cls, *natural, self.agent) for *natural, app, cls in labels])

    def add_seconds(self, points):
        """Per-second interface points: [(second, iface, frames, bytes, out_frames, out_bytes)]."""
        with immediate(self.con):
            self.con.executemany(_SECONDS, [(*p, self.agent) for p in points])

    def add_activity(self, hosts, processes, apps=()):
        """Per-second points of the live view's now and peak: hosts [(second, ip, tx_bytes,
        rx_bytes)], processes [(second, ProcessKey, tx_bytes, rx_bytes)], apps [(second, app,
        service, traffic_class, bytes)]."""
        con, agent = self.con, self.agent
        with immediate(con):
            con.executemany(_HOST_SECONDS, [(*h, agent) for h in hosts])
            ids, rows = {}, []
            for second, key, tx, rx in processes:
                process_id = ids.get(key)
                if process_id is None:
                    process_id = ids[key] = con.execute(_PROCESS_UPSERT, (*key, agent)).fetchone()[0]
                rows.append((second, process_id, tx, rx))
            con.executemany(_PROCESS_SECONDS, rows)
            con.executemany(_APP_SECONDS, [(*a, agent) for a in apps])

    def add_drops(self, minute, drops):
        with immediate(self.con):
            rows = [(minute, iface, n) for iface, n in drops.items() if n]
            tiers.mark_pending(self.con, {tiers.route(self.con, tiers.watermarks(self.con), "drops", minute, rows,
                                                      self.agent)})

    def begin_source(self, kind, name, started=None):
        with immediate(self.con):
            return self.con.execute("INSERT INTO sources (kind, name, started) VALUES (?, ?, ?) RETURNING id",
                                    (kind, name, time.time() if started is None else started)).fetchone()[0]

    def end_source(self, source_id, frames, clamped=0, damage=None):
        with immediate(self.con):
            self.con.execute("UPDATE sources SET finished = ?, frames = ?, clamped = ?, damage = ? WHERE id = ?",
                             (time.time(), frames, clamped, damage, source_id))
