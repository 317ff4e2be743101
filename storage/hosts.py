"""Hosts (IP addresses): the hosts page and API, one host's detail, and the hosts export.
Conventions as in storage/reads.py."""
from storage import agents, tiers
from storage.addresses import macs_of, names_of
from storage.flows import FlowFilter, flow_search
from storage.reads import choose_tier, consistent, dict_rows, finest, source, span
from storage.search import host_match
from storage.usage import RANKED, coarse_source, per_subject, rank, seconds_args, usage_rows

# "now" and "current" are one key: the rate of the last seconds (storage/usage.py)
HOST_SORTS = {"bytes": "s_tx + s_rx", "tx": "s_tx", "rx": "s_rx", "now": "recent", "current": "recent",
              "peak": "peak_rate",
              "avg": "(s_tx + s_rx) * 1.0 / (last_b - first_b + {size})", "first_seen": "first_b",
              "last_seen": "last_b", "ip": "subject"}


@consistent
def host_usage(con, since, until, now, sort="bytes", descending=True, limit=100, offset=0, ip=None, *, policy,
               q=None):
    """{total, resolution, rows}: hosts (one page) with totals and rates in bit/s. current: the
    last seconds; peak: the highest 1-second rate where seconds are kept, else the busiest
    bucket, the row's `resolution` and `peak_at` saying which (storage/usage.py); avg: over the
    buckets from the host's first to its last active one in the range. The answer's
    `resolution` is the tier's bucket. `q`: only the hosts it matches (storage/search.py
    host_match)."""
    tier, lo, hi = span(policy, "host", since, until, now)
    size = tiers.SIZE[tier]
    where, wargs = ("AND ip = ?", [ip]) if ip is not None else ("", [])
    found, fargs = where, wargs
    if q is not None:
        match, margs = host_match(con, q, tier, lo, hi)
        found, fargs = f"{where} AND {match}", wargs + margs
    # a page by a key totals give: ranked cheaply first, then only its hosts read in full (usage.py)
    mine, agent_args = agents.condition()
    per_second = (f"SELECT second, ip AS subject, sum(tx_bytes + rx_bytes) AS b FROM host_seconds "
                  f"WHERE second >= ? {where}{mine} GROUP BY second, ip")
    second_args = wargs + agent_args
    coarse = None
    if limit is not None and sort in RANKED:
        coarse = coarse_source(con, "host", tier, lo, hi, "ip, tx_bytes, rx_bytes", found, fargs, policy=policy, now=now)
    if coarse is not None:
        total, page = rank(con, f"SELECT ip AS subject, tx_bytes AS tx, rx_bytes AS rx FROM ({coarse[0]})",
                           coarse[1], per_second, second_args, now, HOST_SORTS[sort], descending, limit, offset)
        if not page:
            return {"total": total, "resolution": size, "rows": []}
        found, fargs, limit, offset = f"{found} AND ip IN ({','.join('?' * len(page))})", fargs + page, None, 0
    sub, args = source(con, "host", tier, lo, hi, "ip, tx_bytes, rx_bytes, tx_packets, rx_packets", found, fargs)
    # a bucket's rows summed: several agents' rows of one (minute, ip), a pending hour's minutes
    per = (f"SELECT bucket, ip AS subject, sum(tx_bytes) AS tx, sum(rx_bytes) AS rx, sum(tx_packets) AS txp, "
           f"sum(rx_packets) AS rxp FROM ({sub}) GROUP BY bucket, ip")
    # per_second: a range of the primary key (second, ip): the seconds kept, a few minutes' worth
    secs, first = seconds_args(now, lo, hi)
    sql = per_subject(con, per=per, per_second=per_second, extra="")
    counted, rows = usage_rows(con, sql, args + secs + [first, *second_args], size, now, descending, HOST_SORTS[sort],
                               limit, offset)
    if coarse is None:      # else the ranking's total, and the page's rows in its order already
        total = counted
    if tier != "minute" and rows:       # last seen to the minute where minutes are still kept
        ips = [r["subject"] for r in rows]
        latest = dict(con.execute(f"SELECT ip, max(minute) FROM host_minutes WHERE ip IN ({','.join('?' * len(ips))}) "
                                  f"AND minute >= ? AND minute < ?{mine} GROUP BY ip", (*ips, lo, hi, *agent_args)).fetchall())
        for r in rows:
            r["last_seen"] = latest.get(r["subject"], r["last_seen"])
    ips = [r["subject"] for r in rows]
    macs, names = macs_of(con, ips), names_of(con, ips)
    rows = [{"ip": r["subject"], "name": names.get(r["subject"]), "mac": macs.get(r["subject"]),
             **{k: v for k, v in r.items() if k != "subject"}} for r in rows]
    return {"total": total, "resolution": size, "rows": rows}


def host_detail(con, ip, since, until, now, step, policy):
    """One host: totals and rates (as host_usage), bytes per bucket, top peers and latest flows;
    None when it has no traffic in the range."""
    usage = host_usage(con, since, until, now, limit=1, ip=ip, policy=policy)
    if not usage["rows"]:
        return None
    tier = choose_tier(policy, "host", since, now, step)
    step = max(step, tiers.SIZE[tier])
    lo = int(since // step * step)
    sub, args = source(con, "host", tier, lo, until, "tx_bytes, rx_bytes", "AND ip = ?", [ip])
    history = con.execute(f"SELECT bucket / {step} * {step} AS b, sum(tx_bytes), sum(rx_bytes) FROM ({sub}) "
                          f"GROUP BY b ORDER BY b", args).fetchall()
    mine, agent_args = agents.condition()
    peers = dict_rows(con, f"""
        SELECT peer, sum(sent) AS tx_bytes, sum(received) AS rx_bytes, count(*) AS flows FROM (
            SELECT resp_h AS peer, orig_bytes AS sent, resp_bytes AS received FROM flows
            WHERE orig_h = ? AND last_seen >= ? AND first_seen < ?{mine}
            UNION ALL
            SELECT orig_h, resp_bytes, orig_bytes FROM flows
            WHERE resp_h = ? AND orig_h != ? AND last_seen >= ? AND first_seen < ?{mine})
        GROUP BY peer ORDER BY sum(sent) + sum(received) DESC, peer LIMIT 20""",
                      [ip, since, until, *agent_args, ip, ip, since, until, *agent_args])
    _, flows = flow_search(con, FlowFilter(since=since, until=until, host=ip), limit=20)
    # the row's resolution: of its peak (1 where a second of the kept ones is it), as in the list
    return {"resolution": usage["resolution"], **usage["rows"][0],
            "history": {"step": step, "buckets": [h[0] for h in history],
                        "tx": [h[1] for h in history], "rx": [h[2] for h in history]},
            "peers": _named(con, peers, "peer"), "flows": flows}


# ---- the hosts export -----------------------------------------------------------------------------

_HOSTS = """
SELECT ip, sum(tx_bytes) AS tx_bytes, sum(rx_bytes) AS rx_bytes,
       sum(tx_packets) AS tx_packets, sum(rx_packets) AS rx_packets,
       min(bucket) AS first_bucket, max(bucket) AS last_bucket
FROM ({source}) GROUP BY ip ORDER BY sum(tx_bytes) + sum(rx_bytes) DESC, ip"""


def top_hosts(con, since=None, until=None):
    """Per address: bytes and frames sent (tx) and received (rx) in [since, until), busiest first,
    with the name and MAC learnt for it (None where none)."""
    sub, params = finest(con, "host", since, until)
    rows = dict_rows(con, _HOSTS.format(source=sub), params)
    macs = macs_of(con, [r["ip"] for r in rows])
    for r in _named(con, rows, "ip"):
        r["mac"] = macs.get(r["ip"])
    return rows


def _named(con, rows, column):
    """`rows` with `name` (of the address in `column`) set; the same list."""
    names = names_of(con, [r[column] for r in rows])
    for r in rows:
        r["name"] = names.get(r[column])
    return rows
