"""The per-subject usage list the hosts and processes pages share: totals and rates of each
subject (an address, a process) over a range, one page of them, sorted by a whitelisted key."""
from storage import tiers
from storage.reads import dict_rows, rate

PER_SUBJECT = """
WITH per AS ({per}),
agg AS (SELECT subject, {extra} sum(tx) AS s_tx, sum(rx) AS s_rx, sum(txp) AS s_txp, sum(rxp) AS s_rxp,
               min(bucket) AS first_b, max(bucket) AS last_b, max(tx + rx) AS peak FROM per GROUP BY subject),
lately AS MATERIALIZED ({lately})
SELECT agg.*, coalesce(l.recent, 0) AS recent, count(*) OVER () AS total_rows
FROM agg LEFT JOIN lately l ON l.subject = agg.subject
ORDER BY {{order}}, agg.subject {{page}}"""


def recent_start(now):
    """Start of the window behind a 'current' rate from minute data: the previous minute and the
    current one so far (60 to 120 s of data, never an empty current minute alone)."""
    return tiers.floor(now, "minute") - 60


def usage_rows(con, sql, args, size, now, descending, sort_sql, limit, offset):
    """Runs a per-subject aggregate (see hosts.host_usage) and turns it into API rows."""
    order = f"{sort_sql.format(size=size)} {'DESC' if descending else 'ASC'}"
    page = "" if limit is None else "LIMIT ? OFFSET ?"
    rows = dict_rows(con, sql.format(order=order, page=page), args + ([] if limit is None else [limit, offset]))
    total = rows[0]["total_rows"] if rows else None
    if total is None:
        total = 0 if not offset else len(dict_rows(con, sql.format(order="1", page=""), args))
    recent_seconds = now - recent_start(now)
    out = []
    for r in rows:
        nbytes = r["s_tx"] + r["s_rx"]
        out.append({"subject": r["subject"], "tx_bytes": r["s_tx"], "rx_bytes": r["s_rx"],
                    "tx_packets": r["s_txp"], "rx_packets": r["s_rxp"], "bytes": nbytes,
                    "current_bps": rate(r["recent"], recent_seconds),
                    "avg_bps": rate(nbytes, r["last_b"] - r["first_b"] + size), "peak_bps": rate(r["peak"], size),
                    "first_seen": r["first_b"], "last_seen": r["last_b"],
                    **{k: r[k] for k in ("pid", "name") if k in r}})
    return total, out
