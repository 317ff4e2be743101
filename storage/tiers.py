"""Rollup tiers: minute rows (written by storage/writer.py) roll up into hour rows, hour rows into
day rows, and queries read them through storage/reads.py.

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

from records import IFACE_FIELDS
from storage.db import immediate

MINUTE, HOUR, DAY = 60, 3600, 86400
TIERS = ("minute", "hour", "day")
SIZE = {"minute": MINUTE, "hour": HOUR, "day": DAY}
COARSER = {"minute": "hour", "hour": "day"}


class Family(NamedTuple):
    name: str
    tables: tuple     # table per tier, in TIERS order
    keys: tuple       # key columns besides the bucket (and the agent)
    sums: tuple       # counter columns, in the order the writer passes them
    agent: str = "column"   # where a row's agent is (schema 12): its own `agent` column, or its
                            # "flow"'s or "process"'s (the row's key names one, which holds it)

    @property
    def grouped(self):
        """The key columns rows are grouped and upserted by: the keys and the agent's column."""
        return self.keys + ("agent",) if self.agent == "column" else self.keys


_PAIR = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")
_HEALTH = ("tcp_flows", "data_segments", "retransmits", "out_of_order", "zero_windows", "resets", "rtt_flows",
           *(f"rtt_h{i:02d}" for i in range(48)))          # storage/health.py SUMS
FAMILIES = {f.name: f for f in (
    Family("host", ("host_minutes", "host_hours", "host_days"), ("ip",), _PAIR),
    Family("flow", ("flow_minutes", "flow_hours", "flow_days"), ("flow_id",),
           ("orig_bytes", "orig_packets", "resp_bytes", "resp_packets"), "flow"),
    Family("iface", ("iface_minutes", "iface_hours", "iface_days"), ("iface",), IFACE_FIELDS),
    Family("process", ("process_minutes", "process_hours", "process_days"), ("process_id",), _PAIR, "process"),
    Family("attribution", ("attribution_minutes", "attribution_hours", "attribution_days"), ("reason",),
           ("bytes", "packets")),
    Family("undecodable", ("undecodable", "undecodable_hours", "undecodable_days"), ("iface", "reason"),
           ("frames", "bytes")),
    Family("drops", ("capture_drops", "capture_drops_hours", "capture_drops_days"), ("iface",), ("frames",)),
    Family("app", ("app_minutes", "app_hours", "app_days"), ("app", "service", "traffic_class"), ("bytes", "packets")),
    Family("unnamed", ("unnamed_minutes", "unnamed_hours", "unnamed_days"), ("reason",), ("flows",)),
    Family("host_app", ("host_app_minutes", "host_app_hours", "host_app_days"),
           ("ip", "app", "service", "traffic_class"), _PAIR),
    Family("process_app", ("process_app_minutes", "process_app_hours", "process_app_days"),
           ("process_id", "app", "service", "traffic_class"), _PAIR, "process"),
    # TCP health (storage/health.py): counts and an RTT histogram, all of which add up
    Family("host_health", ("host_health_minutes", "host_health_hours", "host_health_days"), ("ip",), _HEALTH),
    Family("process_health", ("process_health_minutes", "process_health_hours", "process_health_days"),
           ("process_id",), _HEALTH, "process"),
    Family("app_health", ("app_health_minutes", "app_health_hours", "app_health_days"), ("app", "service"), _HEALTH),
)}


def floor(t, tier):
    size = SIZE[tier]
    return int(t // size * size)


class RetentionPolicy(NamedTuple):
    """How long each tier keeps its buckets, in seconds. The defaults are the settings' (the
    retention_* fields of settings.Settings): build it with `from_settings`."""
    seconds: float                       # 1-second interface points
    minute: float
    hour: float
    day: float
    flows: float                         # flow records and every flow tier, whatever the tier says
    iface_minute: float = 0.0            # interface minutes (few rows), kept at least `minute`:
                                         # a billing month's 95th percentile (storage/volumes.py)

    @classmethod
    def from_settings(cls, settings):
        return cls(seconds=settings.retention_seconds, minute=settings.retention_minutes * 3600.0,
                   hour=settings.retention_hours * 86400.0, day=settings.retention_days * 86400.0,
                   flows=settings.retention_flows * 86400.0, iface_minute=settings.retention_iface_minutes * 86400.0)

    def keep(self, family, tier):
        age = getattr(self, tier)
        if family == "iface" and tier == "minute":
            return max(age, self.iface_minute)
        return min(age, self.flows) if family == "flow" else age

    def cutoff(self, family, tier, now):
        """Buckets of `tier` starting before this are pruned (aligned, see module doc)."""
        align = {"minute": "hour", "hour": "day", "day": "day"}[tier]
        return floor(now - self.keep(family, tier), align)


def table(family, tier):
    return family.tables[TIERS.index(tier)]


def upsert_sql(family, tier):
    """Adds rows (bucket, *keys[, agent], *sums) to `tier`'s table of `family`."""
    cols = (tier,) + family.grouped + family.sums
    return (f"INSERT INTO {table(family, tier)} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join((tier,) + family.grouped)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table(family, tier)}.{c} + excluded.{c}" for c in family.sums))


_UPSERTS = {(f.name, t): upsert_sql(f, t) for f in FAMILIES.values() for t in TIERS}


def watermarks(con):
    """{(family, tier): pruned_before} for the finer tiers retention has pruned."""
    return {(f, t): b for f, t, b in con.execute("SELECT family, tier, pruned_before FROM tier_watermarks")}


def route(con, marks, family_name, bucket, rows, agent=""):
    """Writes minute `rows` [(minute, *keys, *sums)] of one family and bucket, counted by `agent`,
    into the finest tier still holding that bucket. Returns the coarser (tier, bucket) that is now
    pending, or None. `marks`: watermarks(), read in the same transaction."""
    if not rows:
        return None
    tier, family = "minute", FAMILIES[family_name]
    while tier != "day" and bucket < marks.get((family_name, tier), -2 ** 62):
        tier = COARSER[tier]
    if tier != "minute" or family.agent == "column":
        at, k = floor(bucket, tier), 1 + len(family.keys)
        rows = [(at, *r[1:k], agent, *r[k:]) for r in rows] if family.agent == "column" else \
            [(at,) + tuple(r[1:]) for r in rows]
    con.executemany(_UPSERTS[(family_name, tier)], rows)
    if tier == "day":
        return None
    up = COARSER[tier]
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
        keys = ", ".join(family.grouped)
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
            with immediate(con, exclusive=True):
                rebuild(con, tier, bucket, watermarks(con))
            if deadline is not None and clock() > deadline:     # after one: every call makes progress
                return not pending(con, "hour") and not pending(con, "day")
    return True
