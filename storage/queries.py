"""Read queries, named for what they answer. Time ranges are [since, until) in epoch seconds and
select whole buckets: a bucket counts when its start lies in [since rounded down to the minute,
until). Counts come from the finest rollup tier that still holds each bucket (minutes for the
last 48 h by default, then hours, then days: storage/tiers.py), so a range reaching past the
minute retention reads hour or day buckets there."""
import math

from storage import tiers

_HOSTS = """
SELECT ip, sum(tx_bytes) AS tx_bytes, sum(rx_bytes) AS rx_bytes,
       sum(tx_packets) AS tx_packets, sum(rx_packets) AS rx_packets,
       min(bucket) AS first_bucket, max(bucket) AS last_bucket
FROM ({source}) GROUP BY ip ORDER BY tx_bytes + rx_bytes DESC, ip"""

_FLOWS_ALL = """
SELECT id, proto, orig_h, orig_p, resp_h, resp_p, orig_bytes, resp_bytes, orig_packets, resp_packets,
       first_seen, last_seen, orig_pid, orig_process, resp_pid, resp_process, tcp_flags, iface
FROM flows ORDER BY first_seen, id"""

_FLOWS_BETWEEN = """
SELECT f.id, f.proto, f.orig_h, f.orig_p, f.resp_h, f.resp_p,
       sum(m.orig_bytes) AS orig_bytes, sum(m.resp_bytes) AS resp_bytes,
       sum(m.orig_packets) AS orig_packets, sum(m.resp_packets) AS resp_packets,
       f.first_seen, f.last_seen, f.orig_pid, f.orig_process, f.resp_pid, f.resp_process, f.tcp_flags, f.iface
FROM ({source}) m JOIN flows f ON f.id = m.flow_id
GROUP BY f.id ORDER BY f.first_seen, f.id"""

FAR_PAST, FAR_FUTURE = -(2 ** 62), 2 ** 62


def _range(since, until):
    """[since, until) as SQLite integers: since rounded down to its minute; both held inside
    FAR_PAST..FAR_FUTURE (a time like 1e30 or inf would not fit a 64-bit INTEGER)."""
    for t in (since, until):
        if t is not None and t != t:
            raise ValueError("time is not a number")
    since = FAR_PAST if since is None else min(max(since, FAR_PAST), FAR_FUTURE)
    until = FAR_FUTURE if until is None else min(max(until, FAR_PAST), FAR_FUTURE)
    return int(since // 60 * 60), math.ceil(until)


def tiered(con, family_name, since, until):
    """SQL (and its parameters) of a subquery yielding `bucket, *keys, *sums` rows of one rollup
    family over [since, until): minute rows where minutes are kept, hour rows below the minute
    tier's retention watermark, day rows below the hour tier's."""
    family = tiers.FAMILIES[family_name]
    since, until = _range(since, until)
    marks = tiers.watermarks(con)
    minute_floor = marks.get((family_name, "minute"), FAR_PAST)
    hour_floor = min(marks.get((family_name, "hour"), FAR_PAST), minute_floor)
    spans = (("minute", max(since, minute_floor), until),
             ("hour", max(since, hour_floor), min(until, minute_floor)),
             ("day", since, min(until, hour_floor)))
    columns = ", ".join(family.keys + family.sums)
    parts, params = [], []
    for tier, start, end in spans:
        if start < end:
            parts.append(f"SELECT {tier} AS bucket, {columns} FROM {tiers.table(family, tier)} "
                         f"WHERE {tier} >= ? AND {tier} < ?")
            params += [start, end]
    if not parts:                       # an empty range: a subquery with the right columns, no rows
        parts.append(f"SELECT minute AS bucket, {columns} FROM {family.tables[0]} WHERE 0")
    return " UNION ALL ".join(parts), params


def top_hosts(con, since=None, until=None):
    source, params = tiered(con, "host", since, until)
    return dict_rows(con, _HOSTS.format(source=source), params)


def flows_between(con, since=None, until=None):
    if since is None and until is None:
        return dict_rows(con, _FLOWS_ALL)
    source, params = tiered(con, "flow", since, until)
    return dict_rows(con, _FLOWS_BETWEEN.format(source=source), params)


def interface_totals(con, since=None, until=None):
    source, params = tiered(con, "iface", since, until)
    sums = ", ".join(f"sum({c}) AS {c}" for c in tiers.IFACE_COUNTERS)
    return dict_rows(con, f"SELECT iface, {sums} FROM ({source}) GROUP BY iface ORDER BY iface", params)


def undecodable_reasons(con, since=None, until=None):
    source, params = tiered(con, "undecodable", since, until)
    return dict_rows(con, f"""
        SELECT iface, reason, sum(frames) AS frames, sum(bytes) AS bytes FROM ({source})
        GROUP BY iface, reason ORDER BY frames DESC""", params)


def dict_rows(con, sql, params=()):
    """Rows of `sql` as dicts. The row factory is set on a cursor, never on the connection, which
    other readers (tiers.watermarks) share."""
    cursor = con.cursor()
    cursor.row_factory = _dict_row
    return cursor.execute(sql, params).fetchall()


def _dict_row(cursor, row):
    return {d[0]: v for d, v in zip(cursor.description, row)}
