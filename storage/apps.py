"""Applications, services and traffic classes: bytes by what the traffic was, for /api/apps and
the overview's class chart. Conventions as in storage/reads.py.

Without a filter the answer comes from the app tier, for a host from the host_app tier, for a
process name from the process_app tier (all exact per bucket; a host's or process's bytes sent
and received). For a host and a process at once it comes from the flow records active in the
range that touch both: their whole-record counters, as the flows page counts.

Rates as the hosts list has them (storage/usage.py): without a filter, `current_bps` is the last
whole seconds of app_seconds (the live capture's 1-second points) and `peak_bps` the highest
1-second rate where the range meets the seconds kept, else the busiest bucket, with `resolution`
and `peak_at` saying which. There are no per-second points per host or process: with a filter
`current_bps` is None and the peak is the busiest bucket (None from the flow records).
"""
from storage import agents, tiers
from storage.postgres import at_max
from storage.reads import FAR_FUTURE, FAR_PAST, finest, rate, source, span
from storage.usage import NOW_SECONDS, seconds_args

_GROUPS = {"app": ("app",), "service": ("service",), "class": ("traffic_class",),
           "all": ("app", "service", "traffic_class")}


# sort key -> the row field it ranks by ("now" and "current" are one key, as for hosts)
APP_SORTS = {"bytes": "bytes", "now": "current_bps", "current": "current_bps", "peak": "peak_bps"}


def app_usage(con, since, until, now, by="all", host=None, process=None, limit=100, sort="bytes", descending=True,
              *, policy):
    """{resolution, total_bytes, rows: [{app, service, class, bytes, packets, share, current_bps,
    peak_bps, resolution, peak_at}], unreadable}, ranked by `sort` (APP_SORTS), ties busiest
    first; `by` groups by app, service, class or all three. `share` is of the range's total."""
    keys = _GROUPS[by]
    lo = hi = None
    if host is not None and process is not None:
        sub, args = _flows_of(since, until, host, process)
        resolution = None
    else:
        family = "app" if host is None and process is None else "host_app" if process is None else "process_app"
        tier, lo, hi = span(policy, family, since, until, now)
        resolution = tiers.SIZE[tier]
        if family == "app":
            sub, args = source(con, "app", tier, lo, hi, "app, service, traffic_class, bytes, packets")
        else:                   # a host's or a process's own bytes and frames, both ways
            where, wargs = (("AND ip = ?", [host]) if family == "host_app" else
                            ("AND process_id IN (SELECT id FROM processes WHERE name = ?)", [process]))
            sub, args = source(con, family, tier, lo, hi, "app, service, traffic_class, tx_bytes + rx_bytes "
                               "AS bytes, tx_packets + rx_packets AS packets", where, wargs)
    cols = ", ".join(keys)
    bucket = "NULL" if resolution is None else "bucket"
    # per bucket first: a pending hour comes as minute rows (storage/reads.py source)
    rows = con.execute(f"WITH per AS MATERIALIZED (SELECT {bucket} AS bucket, {cols}, sum(bytes) AS b, "
                       f"sum(packets) AS p FROM ({sub}) GROUP BY 1, {cols}) "
                       f"SELECT {cols}, sum(b) AS b, sum(p), max(b), {at_max(con, 'b', 'bucket')} FROM per GROUP BY {cols} "
                       f"ORDER BY sum(b) DESC, {cols}", args).fetchall()
    seconds = _seconds(con, keys, now, lo, hi) if host is None and process is None else None
    n = len(keys)
    total = sum(r[n] for r in rows) or 0
    out = []
    for r in rows:
        row = {"traffic_class" if k == "traffic_class" else k: v for k, v in zip(keys, r)}
        if "traffic_class" in row:
            row["class"] = row.pop("traffic_class")
        nbytes, packets, top, top_at = r[n:]
        row.update(bytes=nbytes, packets=packets, share=round(nbytes / total, 4) if total else 0.0)
        recent, peak1, peak1_at = seconds.get(r[:n], (0, None, None)) if seconds is not None else (None, None, None)
        if peak1 is not None and peak1 >= top / resolution:
            peak, size, peak_at = rate(peak1, 1), 1, peak1_at
        elif resolution is not None:
            peak, size, peak_at = rate(top, resolution), resolution, top_at
        else:
            peak = size = peak_at = None
        row.update(current_bps=None if recent is None else rate(recent, NOW_SECONDS), peak_bps=peak,
                   resolution=size, peak_at=peak_at)
        out.append(row)
    field = APP_SORTS[sort]             # a stable sort: ties stay busiest first
    out.sort(key=lambda row: -1 if row[field] is None else row[field], reverse=descending)
    return {"resolution": resolution, "total_bytes": total, "rows": out[:limit],
            "unreadable": unnamed_reasons(con, since, until)}


def _seconds(con, keys, now, lo, hi):
    """{group keys: (bytes in the now window, highest 1-second bytes in [lo, hi), its second)}
    from app_seconds, grouped as the answer is."""
    cols = ", ".join(keys)
    secs, first = seconds_args(now, lo, hi)
    mine, agent_args = agents.condition()
    sql = (f"SELECT {cols}, sum(now_b), max(range_b), {at_max(con, 'range_b', 'second')} "
           f"FROM (SELECT second, {cols}, CASE WHEN second >= ? AND second < ? THEN b ELSE 0 END AS now_b, "
           f"CASE WHEN second >= ? AND second < ? THEN b END AS range_b "
           f"FROM (SELECT second, {cols}, sum(bytes) AS b FROM app_seconds WHERE second >= ?{mine} "
           f"GROUP BY second, {cols})) GROUP BY {cols}")
    n = len(keys)
    return {tuple(r[:n]): tuple(r[n:]) for r in con.execute(sql, secs + [first, *agent_args])}


def _flows_of(since, until, host, process):
    """The flow records of `process` on `host` active in the range."""
    clauses = ["f.last_seen >= ?", "f.first_seen < ?"]
    args = [FAR_PAST if since is None else since, FAR_FUTURE if until is None else until]
    mine, agent_args = agents.clause(alias="f")
    if mine:
        clauses.append(mine)
        args += agent_args
    if host is not None:
        clauses.append("(f.orig_h = ? OR f.resp_h = ?)")
        args += [host, host]
    if process is not None:
        clauses.append("(f.orig_process = ? OR f.resp_process = ?)")
        args += [process, process]
    sql = ("SELECT coalesce(n.app, '') AS app, coalesce(n.service, '') AS service, "
           "coalesce(nullif(n.traffic_class, ''), 'other') AS traffic_class, "
           "f.orig_bytes + f.resp_bytes AS bytes, f.orig_packets + f.resp_packets AS packets "
           f"FROM flows f LEFT JOIN flow_names n ON n.flow_id = f.id WHERE {' AND '.join(clauses)}")
    return sql, args


def unnamed_reasons(con, since=None, until=None):
    """{reason: flows} whose payload could not be read in [since, until) (dns_compression_loop,
    tls_truncated_handshake, ...), from the unnamed tier."""
    sub, args = finest(con, "unnamed", since, until)
    return dict(con.execute(f"SELECT reason, sum(flows) FROM ({sub}) GROUP BY reason ORDER BY reason", args))
