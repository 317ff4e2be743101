"""What the writer holds in memory while the database cannot be written (disk full, read-only):
rollups merged by bucket, within a bound on rows.

When the bound is reached the backlog first merges rollups of the same minute, then folds
minutes into their hour (the hour tier stays exact; the minute view of that hour shows it all in
its first minute), and only then drops the oldest buckets, counting what it dropped.
"""
from records import FlowDelta, Rollup


def rows_of(rollup):
    """Database rows a rollup turns into: the measure of the bound."""
    return (len(rollup.flows) + len(rollup.hosts) + len(rollup.interfaces) + len(rollup.undecodable)
            + len(rollup.processes) + len(rollup.attribution) + len(rollup.names))


def merge(rollups, bucket_size=None):
    """Rollups with equal buckets (after flooring to `bucket_size` seconds, if given) merged into
    one, oldest first. Counters add up; a flow is the same flow when its natural key is."""
    by_bucket = {}
    for r in rollups:
        bucket = r.bucket if bucket_size is None else r.bucket // bucket_size * bucket_size
        into = by_bucket.get(bucket)
        if into is None:
            into = by_bucket[bucket] = ({}, {}, {}, {}, {}, {}, {}, {}, {})
        flows, *tables, macs, names, unnamed = into
        for f in r.flows:
            key = f[:6]
            old = flows.get(key)
            flows[key] = f if old is None else _merge_flow(old, f)
        for table, source in zip(tables, (r.hosts, r.interfaces, r.undecodable, r.processes, r.attribution)):
            for key, counts in source.items():
                have = table.get(key)
                table[key] = list(counts) if have is None else [a + b for a, b in zip(have, counts)]
        macs.update(r.macs)            # the later announcement wins, as in storage
        names.update(r.names)
        for reason, n in r.unnamed.items():
            unnamed[reason] = unnamed.get(reason, 0) + n
    # the tuple's order is Rollup's: hosts ... attribution, then macs, names, unnamed
    return [Rollup(bucket, list(flows.values()), *rest) for bucket, (flows, *rest) in sorted(by_bucket.items())]


def _merge_flow(a, b):
    return FlowDelta(*a[:6], max(a.last_seen, b.last_seen), a.orig_bytes + b.orig_bytes,
                     a.orig_packets + b.orig_packets, a.resp_bytes + b.resp_bytes,
                     a.resp_packets + b.resp_packets, a.tcp_flags | b.tcp_flags, a.iface, a.closed or b.closed,
                     a.orig_pid if a.orig_pid is not None else b.orig_pid, a.orig_process or b.orig_process,
                     a.resp_pid if a.resp_pid is not None else b.resp_pid, a.resp_process or b.resp_process,
                     b.app or a.app, b.app_source if b.app else a.app_source, b.server_name or a.server_name,
                     b.service or a.service, b.traffic_class or a.traffic_class)._replace(
        # TCP health: the RTTs are the flow's latest, the counts add
        **{k: getattr(b, k) if getattr(b, k) is not None else getattr(a, k) for k in _HEALTH_RTTS},
        **{k: getattr(a, k) + getattr(b, k) for k in _HEALTH_COUNTS})


_HEALTH_RTTS = ("rtt_ms", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms")
_HEALTH_COUNTS = ("data_segments", "retransmits", "out_of_order", "zero_windows", "resets")


class Backlog:
    """Rollups, per-second points and drop counts waiting for the database, at most `max_rows`
    rows of rollups (plus as many per-second points, the first thing given up)."""

    def __init__(self, max_rows):
        self.max_rows = max_rows
        self.rollups, self.seconds, self.drops = [], [], []
        self.host_seconds, self.process_seconds, self.app_seconds = [], [], []   # records.Activity rows, bounded like seconds
        self.relabels = []        # late app names (at most a few hundred a minute: not bounded apart)
        self.rows = 0
        self.dropped_frames = self.dropped_bytes = self.dropped_seconds = 0

    def __bool__(self):
        return bool(self.rollups or self.seconds or self.drops or self.relabels or self.host_seconds
                    or self.process_seconds or self.app_seconds)

    def add_rollups(self, rollups):
        self.rollups.extend(rollups)
        self.rows += sum(rows_of(r) for r in rollups)
        if self.rows > self.max_rows:
            self._shrink()

    def add_seconds(self, points):
        self.seconds.extend(points)
        excess = len(self.seconds) - self.max_rows
        if excess > 0:          # the live view's points: the least valuable, dropped oldest first
            del self.seconds[:excess]
            self.dropped_seconds += excess

    def add_activity(self, hosts, processes, apps=()):
        for held, rows in ((self.host_seconds, hosts), (self.process_seconds, processes), (self.app_seconds, apps)):
            held.extend(rows)
            excess = len(held) - self.max_rows
            if excess > 0:
                del held[:excess]
                self.dropped_seconds += excess

    def add_drops(self, minute, drops):
        self.drops.append((minute, drops))

    def clear(self):
        self.rollups, self.seconds, self.drops = [], [], []
        self.host_seconds, self.process_seconds, self.app_seconds = [], [], []
        self.rows = 0

    def _shrink(self):
        for size in (None, 3600):
            self.rollups = merge(self.rollups, size)
            self.rows = sum(rows_of(r) for r in self.rollups)
            if self.rows <= self.max_rows:
                return
        while self.rows > self.max_rows and len(self.rollups) > 1:
            oldest = self.rollups.pop(0)
            self.rows -= rows_of(oldest)
            self.dropped_frames += sum(c[0] for c in oldest.interfaces.values())
            self.dropped_bytes += sum(c[1] for c in oldest.interfaces.values())
