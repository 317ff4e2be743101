"""How every read query reads the rollup tiers (the one way), and the helpers the read modules
(hosts, flows, processes, history, interfaces, traffic_types, coverage, alert_log) share.

Tiers. Counts live in minute, hour and day tables (storage/tiers.py); each tier is kept for its
own time (storage/retention.py). A row source comes from one of two plans over the same SQL:
- `source`: one tier chosen for the range (`choose_tier`, `span`), exact at any moment: a coarse
  bucket whose finer data changed since it was last built (pending in tier_pending, or holding a
  pending finer bucket) is read from the finer tier instead. Ranges older than the minute tier's
  retention are thus rounded to whole hours (older than the hour tier's: days); the dashboard's
  answers say their `resolution` in seconds.
- `finest`: each bucket from the finest tier that still holds it (minutes where minutes are
  kept, hours below the minute tier's retention watermark, days below the hour tier's): the
  exports and totals, which have no resolution to choose.

Conventions: times are epoch seconds; ranges are [since, until) and select whole buckets (a
bucket counts when its start lies in the range); rates are bits per second. Sort keys and
directions arrive checked against the modules' whitelists: no caller text ever becomes SQL.
"""
import functools
import math

from storage import agents, tiers

FAR_PAST, FAR_FUTURE = -(2 ** 62), 2 ** 62
_FINER = {"hour": "minute", "day": "hour"}


def consistent(read):
    """`read(con, ...)` sees one state of the database through all its statements (one read
    transaction; in WAL mode it costs nothing and holds no writer back). Re-entrant: inside
    another such read it joins that one."""
    @functools.wraps(read)
    def in_one_snapshot(con, *args, **kwargs):
        if con.in_transaction:
            return read(con, *args, **kwargs)
        con.execute("BEGIN")
        try:
            return read(con, *args, **kwargs)
        finally:
            con.execute("COMMIT")
    return in_one_snapshot


def dict_rows(con, sql, params=()):
    """Rows of `sql` as dicts. The row factory is set on a cursor, never on the connection, which
    other readers (tiers.watermarks) share."""
    cursor = con.cursor()
    cursor.row_factory = _dict_row
    return cursor.execute(sql, params).fetchall()


def _dict_row(cursor, row):
    return {d[0]: v for d, v in zip(cursor.description, row)}


def rate(nbytes, seconds):
    return round(nbytes * 8 / seconds, 1) if seconds > 0 else 0.0


def choose_tier(policy, family, since, now, step=None):
    """With `step`: the coarsest tier whose buckets divide `step` and that still holds `since`;
    otherwise (or without a step) the finest tier that holds `since`; days for all time."""
    def holds(tier):
        return since is not None and since >= now - policy.keep(family, tier)
    if step is not None:
        for tier in reversed(tiers.TIERS):
            if step % tiers.SIZE[tier] == 0 and holds(tier):
                return tier
    for tier in tiers.TIERS:
        if holds(tier):
            return tier
    return "day"


def span(policy, family, since, until, now):
    """(tier, lo, hi) for a list over a range: minutes up to 2 days, hours up to 14 days, days
    beyond (fewer rows to read; peaks are then of the busiest minute, hour or day), or the
    finest tier still holding `since`. since is rounded down to the tier's bucket."""
    hi = FAR_FUTURE if until is None else int(until)
    step = None
    if since is not None:
        length = hi - since
        step = 60 if length <= 2 * 86400 else 3600 if length <= 14 * 86400 else 86400
    tier = choose_tier(policy, family, since, now, step)
    return tier, FAR_PAST if since is None else tiers.floor(since, tier), hi


def _dirty(con, family):
    """Buckets of `family` whose own tier row is stale: pending hours, and days that are pending or
    hold one. A bucket below the family's finer watermark is not: its finer rows are pruned, the
    coarse row is all there is (tiers.rebuild leaves it be). Families keep their finer tiers for
    different times (interface minutes outlive the others), so one family's pending hour may be
    another's final one."""
    marks = tiers.watermarks(con)
    minute_floor = marks.get((family, "minute"), FAR_PAST)
    hour_floor = marks.get((family, "hour"), FAR_PAST)
    hours = {b for (b,) in con.execute("SELECT bucket FROM tier_pending WHERE tier = 'hour'") if b >= minute_floor}
    days = {b for (b,) in con.execute("SELECT bucket FROM tier_pending WHERE tier = 'day'") if b >= hour_floor}
    return {"hour": hours, "day": days | {tiers.floor(h, "day") for h in hours if h >= hour_floor}}


def _pieces(tier, lo, hi, dirty):
    """[(tier to read, lo, hi)] that give [lo, hi) exactly at `tier` granularity."""
    if tier == "minute":
        return [("minute", lo, hi)]
    size, out, cursor = tiers.SIZE[tier], [], lo
    for b in sorted(x for x in dirty[tier] if x + size > lo and x < hi):
        start, end = max(b, lo), min(b + size, hi)
        if start > cursor:
            out.append((tier, cursor, start))
        out += _pieces(_FINER[tier], start, end, dirty)
        cursor = end
    if cursor < hi:
        out.append((tier, cursor, hi))
    return out


def _part(family, tier, size, columns, where=""):
    """The SELECT of `tier`'s rows of `family` in [?, ?), with `bucket` at `size` seconds."""
    bucket = tier if size == tiers.SIZE[tier] else f"{tier} / {size} * {size}"
    return (f"SELECT {bucket} AS bucket, {columns} FROM {tiers.table(family, tier)} "
            f"WHERE {tier} >= ? AND {tier} < ? {where}")


def source(con, family, tier, lo, hi, columns, where="", where_args=()):
    """(SQL, args) of a row source with `bucket` (at `tier` size) and `columns` of `family` for
    [lo, hi), exact (see the module doc). `where` filters every part (it should use an index)."""
    return joined(source_parts(con, family, tier, lo, hi, columns, where, where_args))


def joined(parts):
    """(SQL, args) of source parts [(SQL, args)] read as one source."""
    return " UNION ALL ".join(sql for sql, _ in parts), [a for _, args in parts for a in args]


def source_parts(con, family, tier, lo, hi, columns, where="", where_args=()):
    """`source` as its parts, [(SQL, args)], each of one table: a query of its own over one part
    can follow that table's primary key (a GROUP BY bucket then needs no sorting)."""
    fam, size = tiers.FAMILIES[family], tiers.SIZE[tier]
    mine, agent_args = agents.condition(fam.agent)
    return [(_part(fam, src, size, columns, where + mine), [a, b, *where_args, *agent_args])
            for src, a, b in _pieces(tier, lo, hi, _dirty(con, family) if tier != "minute" else None)]


def _range(since, until):
    """[since, until) as SQLite integers: since rounded down to its minute; both held inside
    FAR_PAST..FAR_FUTURE (a time like 1e30 or inf would not fit a 64-bit INTEGER)."""
    for t in (since, until):
        if t is not None and t != t:
            raise ValueError("time is not a number")
    since = FAR_PAST if since is None else min(max(since, FAR_PAST), FAR_FUTURE)
    until = FAR_FUTURE if until is None else min(max(until, FAR_PAST), FAR_FUTURE)
    return int(since // 60 * 60), math.ceil(until)


def finest(con, family_name, since, until):
    """(SQL, args) of a row source yielding `bucket, *keys, *sums` of one family over [since,
    until) (None: open), each bucket at the size of the finest tier that still holds it (see the
    module doc). since is rounded down to its minute."""
    family = tiers.FAMILIES[family_name]
    since, until = _range(since, until)
    marks = tiers.watermarks(con)
    minute_floor = marks.get((family_name, "minute"), FAR_PAST)
    hour_floor = min(marks.get((family_name, "hour"), FAR_PAST), minute_floor)
    spans = (("minute", max(since, minute_floor), until),
             ("hour", max(since, hour_floor), min(until, minute_floor)),
             ("day", since, min(until, hour_floor)))
    columns = ", ".join(family.keys + family.sums)
    mine, agent_args = agents.condition(family.agent)
    parts, args = [], []
    for tier, start, end in spans:
        if start < end:
            parts.append(_part(family, tier, tiers.SIZE[tier], columns, mine))
            args += [start, end, *agent_args]
    if not parts:                       # an empty range: a subquery with the right columns, no rows
        parts.append(f"SELECT minute AS bucket, {columns} FROM {family.tables[0]} WHERE 0")
    return " UNION ALL ".join(parts), args
