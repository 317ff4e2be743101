"""Rollup tiers: minute rows (written by storage/writer.py) roll up into hour rows, hour rows into
day rows, and web queries read whichever tier fits the range asked.

How a coarser bucket is kept equal to the sum of the finer data it came from, crash or not:
- The writer writes minute rows and, in the same transaction, marks their hour "pending".
- `build_pending` rebuilds a pending hour from its minutes (delete + insert-select) and marks its
  day pending, in one transaction; days are rebuilt from hours the same way. Rebuilding is
  idempotent, so a crash anywhere at most repeats a rebuild.
- Retention (storage/retention.py) prunes a finer tier only below its watermark, which it raises
  after building every pending bucket below it. Data arriving later for a bucket below the
  watermark (an old capture imported, say) cannot be rebuilt from pruned rows, so the writer adds
  it straight to the coarser tier instead (`route`).
"""
from typing import NamedTuple

from storage.db import immediate

MINUTE, HOUR, DAY = 60, 3600, 86400
TIERS = ("minute", "hour", "day")
SIZE = {"minute": MINUTE, "hour": HOUR, "day": DAY}
_COARSER = {"minute": "hour", "hour": "day"}


class Family(NamedTuple):
    name: str
    tables: tuple     # table per tier, in TIERS order
    keys: tuple       # key columns besides the bucket
    sums: tuple       # counter columns, in the order the writer passes them


_PAIR = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")
IFACE_COUNTERS = ("frames", "bytes", "ip_frames", "ip_bytes", "non_ip_frames", "non_ip_bytes",
                  "undecodable_frames", "undecodable_bytes", "out_frames", "out_bytes")
FAMILIES = {f.name: f for f in (
    Family("host", ("host_minutes", "host_hours", "host_days"), ("ip",), _PAIR),
    Family("flow", ("flow_minutes", "flow_hours", "flow_days"), ("flow_id",),
           ("orig_bytes", "orig_packets", "resp_bytes", "resp_packets")),
    Family("iface", ("iface_minutes", "iface_hours", "iface_days"), ("iface",), IFACE_COUNTERS),
    Family("process", ("process_minutes", "process_hours", "process_days"), ("process_id",), _PAIR),
    Family("attribution", ("attribution_minutes", "attribution_hours", "attribution_days"), ("reason",),
           ("bytes", "packets")),
    Family("undecodable", ("undecodable", "undecodable_hours", "undecodable_days"), ("iface", "reason"),
           ("frames", "bytes")),
    Family("drops", ("capture_drops", "capture_drops_hours", "capture_drops_days"), ("iface",), ("frames",)),
)}


def floor(t, tier):
    size = SIZE[tier]
    return int(t // size * size)


class RetentionPolicy(NamedTuple):
    """How long each tier keeps its buckets, in seconds."""
    seconds: float = 900.0               # 1-second interface points
    minute: float = 48 * 3600.0
    hour: float = 90 * 86400.0
    day: float = 730 * 86400.0
    flows: float = 90 * 86400.0          # flow records and every flow tier, whatever the tier says

    @classmethod
    def from_settings(cls, settings):
        return cls(seconds=settings.retention_seconds, minute=settings.retention_minutes * 3600.0,
                   hour=settings.retention_hours * 86400.0, day=settings.retention_days * 86400.0,
                   flows=settings.retention_flows * 86400.0)

    def keep(self, family, tier):
        age = getattr(self, tier)
        return min(age, self.flows) if family == "flow" else age

    def cutoff(self, family, tier, now):
        """Buckets of `tier` starting before this are pruned (aligned, see module doc)."""
        align = {"minute": "hour", "hour": "day", "day": "day"}[tier]
        return floor(now - self.keep(family, tier), align)


def table(family, tier):
    return family.tables[TIERS.index(tier)]


def upsert_sql(family, tier):
    """Adds rows (bucket, *keys, *sums) to `tier`'s table of `family`."""
    cols = (tier,) + family.keys + family.sums
    return (f"INSERT INTO {table(family, tier)} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join((tier,) + family.keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in family.sums))


_UPSERTS = {(f.name, t): upsert_sql(f, t) for f in FAMILIES.values() for t in TIERS}


def watermarks(con):
    """{(family, tier): pruned_before} for the finer tiers retention has pruned."""
    return {(f, t): b for f, t, b in con.execute("SELECT family, tier, pruned_before FROM tier_watermarks")}


def route(con, marks, family_name, bucket, rows):
    """Writes minute `rows` [(minute, *keys, *sums)] of one family and bucket into the finest tier
    still holding that bucket. Returns the coarser (tier, bucket) that is now pending, or None.
    `marks`: watermarks(), read in the same transaction."""
    if not rows:
        return None
    tier = "minute"
    while tier != "day" and bucket < marks.get((family_name, tier), -2 ** 62):
        tier = _COARSER[tier]
    if tier != "minute":
        coarse = floor(bucket, tier)
        rows = [(coarse,) + tuple(r[1:]) for r in rows]
    con.executemany(_UPSERTS[(family_name, tier)], rows)
    if tier == "day":
        return None
    up = _COARSER[tier]
    return up, floor(bucket, up)


def mark_pending(con, marks):
    """Records coarser buckets (tier, bucket) to rebuild; None entries are ignored."""
    con.executemany("INSERT OR IGNORE INTO tier_pending (tier, bucket) VALUES (?, ?)", [m for m in marks if m])


def rebuild(con, tier, bucket, marks):
    """Replaces every family's rows of coarser bucket `bucket` ('hour' or 'day') by the sum of the
    finer rows, where the finer tier still holds all of them; marks the next bucket pending.
    Runs inside the caller's transaction."""
    finer = "minute" if tier == "hour" else "hour"
    end = bucket + SIZE[tier]
    for family in FAMILIES.values():
        if bucket < marks.get((family.name, finer), -2 ** 62):
            continue       # finer rows partly pruned: this bucket only grows by late additions
        keys = ", ".join(family.keys)
        sums = ", ".join(f"sum({c})" for c in family.sums)
        con.execute(f"DELETE FROM {table(family, tier)} WHERE {tier} = ?", (bucket,))
        con.execute(f"INSERT INTO {table(family, tier)} ({tier}, {keys}, {', '.join(family.sums)}) "
                    f"SELECT ?, {keys}, {sums} FROM {table(family, finer)} "
                    f"WHERE {finer} >= ? AND {finer} < ? GROUP BY {keys}", (bucket, bucket, end))
    con.execute("DELETE FROM tier_pending WHERE tier = ? AND bucket = ?", (tier, bucket))
    if tier == "hour":
        con.execute("INSERT OR IGNORE INTO tier_pending (tier, bucket) VALUES ('day', ?)", (floor(bucket, "day"),))


def pending(con, tier, before=None):
    sql = "SELECT bucket FROM tier_pending WHERE tier = ?" + (" AND bucket < ?" if before is not None else "")
    args = (tier,) if before is None else (tier, before)
    return [b for (b,) in con.execute(sql + " ORDER BY bucket", args)]


def build_pending(con, deadline=None, clock=None):
    """Rebuilds pending hours, then pending days, one bucket per transaction. Stops early when
    clock() passes deadline; returns True when everything pending was built."""
    for tier in ("hour", "day"):
        for bucket in pending(con, tier):
            with immediate(con):
                rebuild(con, tier, bucket, watermarks(con))
            if deadline is not None and clock() > deadline:     # after one: every call makes progress
                return not pending(con, "hour") and not pending(con, "day")
    return True


# ---- reading the tiers ----------------------------------------------------------------------------

_SCOPES = {
    # scope: (family, subject column, bytes expression, tx expression)
    "host": ("host", "t.ip", "t.tx_bytes + t.rx_bytes", "t.tx_bytes"),
    "process": ("process", "t.process_id", "t.tx_bytes + t.rx_bytes", "t.tx_bytes"),
    "interface": ("iface", "t.iface", "t.bytes", "t.out_bytes"),
    "all": ("iface", "'all'", "t.bytes", "t.out_bytes"),
}


def tier_for(since, now, policy=None, until=None, max_points=1500):
    """The finest tier that still holds `since` (by the retention policy) and covers
    [since, until) in at most `max_points` buckets."""
    policy = policy or RetentionPolicy()
    until = now if until is None else until
    for tier in TIERS:
        holds = since >= now - policy.keep("host", tier) or tier == "day"
        if holds and (until - since) / SIZE[tier] <= max_points:
            return tier
    return "day"


def rates(con, scope, now, window=3600, policy=None, limit=None):
    """Per subject of `scope` (host, process, interface, all): bytes, average and peak rate over
    the `window` seconds of complete buckets before `now`, and the rate in the last complete
    bucket. Rates are bit/s; `resolution` is the bucket size in seconds the peak and current
    rates are averaged over (60: a peak 1-minute rate). Interfaces (and 'all') use the 1-second
    points when the window lies within their retention: their peak is then a peak 1-second rate.
    Sorted by bytes, largest first."""
    policy = policy or RetentionPolicy()
    family, subject, bytes_sql, _ = _SCOPES[scope]
    if scope in ("interface", "all") and window <= policy.seconds:
        tab, col, size = "iface_seconds", "second", 1
    else:
        tier = tier_for(now - window, now, policy, max_points=10 ** 9)
        tab, col, size = table(FAMILIES[family], tier), tier, SIZE[tier]
    end = int(now // size * size)
    start = end - (int(window) // size) * size
    rows = con.execute(
        f"SELECT subject, sum(b), max(b), bucket FROM (SELECT {subject} AS subject, {col} AS bucket, "
        f"sum({bytes_sql}) AS b FROM {tab} t WHERE {col} >= ? AND {col} < ? GROUP BY 1, 2) "
        f"GROUP BY subject ORDER BY 2 DESC, 1" + (" LIMIT ?" if limit else ""),
        (start, end) + ((limit,) if limit else ())).fetchall()
    current = dict(con.execute(
        f"SELECT {subject}, sum({bytes_sql}) FROM {tab} t WHERE {col} = ? GROUP BY 1", (end - size,)).fetchall())
    span = max(end - start, size)
    out = [{"subject": s, "bytes": total, "average_bps": total * 8 / span, "peak_bps": peak * 8 / size,
            "peak_at": at, "current_bps": (current.get(s) or 0) * 8 / size, "window": end - start,
            "resolution": size, "since": start, "until": end} for s, total, peak, at in rows]
    if scope == "process":
        names = {i: (pid, name) for i, pid, name in con.execute("SELECT id, pid, name FROM processes")}
        for r in out:
            r["pid"], r["process"] = names.get(r["subject"], (None, None))
    return out


def host_rates(con, now, window=3600, policy=None, limit=None):
    """rates() of hosts; each row also carries `ip`."""
    rows = rates(con, "host", now, window, policy, limit)
    for r in rows:
        r["ip"] = r["subject"]
    return rows


def process_rates(con, now, window=3600, policy=None, limit=None):
    """rates() of processes (one row per pid and start time), with `pid` and `process` (name)."""
    return rates(con, "process", now, window, policy, limit)


def interface_rates(con, now, window=3600, policy=None):
    return rates(con, "interface", now, window, policy)


def history(con, since, until, now, scope="all", subject=None, policy=None, max_points=1500):
    """Traffic per bucket in [since, until) from the finest tier that holds it: {tier,
    bucket_seconds, points: [{t, bytes, tx_bytes}]} where tx_bytes is what `subject` sent (for
    'all' and interfaces: what this host sent). Buckets without traffic are absent."""
    family, subject_sql, bytes_sql, tx_sql = _SCOPES[scope]
    tier = tier_for(since, now, policy, until, max_points)
    size = SIZE[tier]
    where, args = f"{tier} >= ? AND {tier} < ?", [floor(since, tier), until]
    if subject is not None and scope != "all":
        where += f" AND {subject_sql} = ?"
        args.append(subject)
    rows = con.execute(f"SELECT {tier}, sum({bytes_sql}), sum({tx_sql}) FROM {table(FAMILIES[family], tier)} t "
                       f"WHERE {where} GROUP BY 1 ORDER BY 1", args).fetchall()
    return {"tier": tier, "bucket_seconds": size,
            "points": [{"t": t, "bytes": b, "tx_bytes": tx} for t, b, tx in rows]}
