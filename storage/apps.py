"""Applications, services and traffic classes: bytes by what the traffic was, for /api/apps and
the overview's class chart. Conventions as in storage/reads.py.

Without a filter the answer comes from the app tier, for a host from the host_app tier, for a
process name from the process_app tier (all exact per bucket; a host's or process's bytes sent
and received). For a host and a process at once it comes from the flow records active in the
range that touch both: their whole-record counters, as the flows page counts.
"""
from storage import tiers
from storage.reads import FAR_FUTURE, FAR_PAST, finest, source, span

_GROUPS = {"app": ("app",), "service": ("service",), "class": ("traffic_class",),
           "all": ("app", "service", "traffic_class")}


def app_usage(con, since, until, now, by="all", host=None, process=None, limit=100, *, policy):
    """{resolution, total_bytes, rows: [{app, service, class, bytes, packets, share}]}, busiest
    first; `by` groups by app, service, class or all three. `share` is of the range's total."""
    keys = _GROUPS[by]
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
    rows = con.execute(f"SELECT {cols}, sum(bytes) AS b, sum(packets) AS p FROM ({sub}) GROUP BY {cols} "
                       f"ORDER BY b DESC, {cols}", args).fetchall()
    total = sum(r[len(keys)] for r in rows) or 0
    out = []
    for r in rows[:limit]:
        row = {"traffic_class" if k == "traffic_class" else k: v for k, v in zip(keys, r)}
        if "traffic_class" in row:
            row["class"] = row.pop("traffic_class")
        nbytes, packets = r[len(keys)], r[len(keys) + 1]
        row.update(bytes=nbytes, packets=packets, share=round(nbytes / total, 4) if total else 0.0)
        out.append(row)
    return {"resolution": resolution, "total_bytes": total, "rows": out,
            "unreadable": unnamed_reasons(con, since, until)}


def _flows_of(since, until, host, process):
    """The flow records of `process` on `host` active in the range."""
    clauses = ["f.last_seen >= ?", "f.first_seen < ?"]
    args = [FAR_PAST if since is None else since, FAR_FUTURE if until is None else until]
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
