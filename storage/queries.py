"""Read queries, named for what they answer. Time ranges are [since, until) in epoch seconds and
select whole minute buckets: a bucket counts when it overlaps the range (its start lies in
[since rounded down to the minute, until))."""
import math

_HOSTS = """
SELECT ip, sum(tx_bytes) AS tx_bytes, sum(rx_bytes) AS rx_bytes,
       sum(tx_packets) AS tx_packets, sum(rx_packets) AS rx_packets,
       min(minute) AS first_minute, max(minute) AS last_minute
FROM host_minutes WHERE minute >= ? AND minute < ?
GROUP BY ip ORDER BY tx_bytes + rx_bytes DESC, ip"""

_FLOWS_ALL = """
SELECT id, proto, orig_h, orig_p, resp_h, resp_p, orig_bytes, resp_bytes, orig_packets, resp_packets,
       first_seen, last_seen, orig_pid, orig_process, resp_pid, resp_process, tcp_flags, iface
FROM flows ORDER BY first_seen, id"""

_FLOWS_BETWEEN = """
SELECT f.id, f.proto, f.orig_h, f.orig_p, f.resp_h, f.resp_p,
       sum(m.orig_bytes) AS orig_bytes, sum(m.resp_bytes) AS resp_bytes,
       sum(m.orig_packets) AS orig_packets, sum(m.resp_packets) AS resp_packets,
       f.first_seen, f.last_seen, f.orig_pid, f.orig_process, f.resp_pid, f.resp_process, f.tcp_flags, f.iface
FROM flow_minutes m JOIN flows f ON f.id = m.flow_id
WHERE m.minute >= ? AND m.minute < ?
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


def top_hosts(con, since=None, until=None):
    con.row_factory = _dict_row
    return con.execute(_HOSTS, _range(since, until)).fetchall()


def flows_between(con, since=None, until=None):
    con.row_factory = _dict_row
    if since is None and until is None:
        return con.execute(_FLOWS_ALL).fetchall()
    return con.execute(_FLOWS_BETWEEN, _range(since, until)).fetchall()


def interface_totals(con, since=None, until=None):
    con.row_factory = _dict_row
    return con.execute("""
        SELECT iface, sum(frames) AS frames, sum(bytes) AS bytes, sum(ip_frames) AS ip_frames,
               sum(ip_bytes) AS ip_bytes, sum(non_ip_frames) AS non_ip_frames, sum(non_ip_bytes) AS non_ip_bytes,
               sum(undecodable_frames) AS undecodable_frames, sum(undecodable_bytes) AS undecodable_bytes,
               sum(out_frames) AS out_frames, sum(out_bytes) AS out_bytes
        FROM iface_minutes WHERE minute >= ? AND minute < ? GROUP BY iface ORDER BY iface""",
                       _range(since, until)).fetchall()


def undecodable_reasons(con, since=None, until=None):
    con.row_factory = _dict_row
    return con.execute("""
        SELECT iface, reason, sum(frames) AS frames, sum(bytes) AS bytes FROM undecodable
        WHERE minute >= ? AND minute < ? GROUP BY iface, reason ORDER BY frames DESC""",
                       _range(since, until)).fetchall()


def _dict_row(cursor, row):
    return {d[0]: v for d, v in zip(cursor.description, row)}
