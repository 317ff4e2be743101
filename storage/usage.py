"""The per-subject usage list the hosts and processes pages share: totals and rates of each
subject (an address, a process) over a range, one page of them, sorted by a whitelisted key.

Rates (bit/s). `current_bps` ("now") is the last NOW_SECONDS whole seconds of the live capture's
per-second points (host_seconds, process_seconds), ending NOW_LAG seconds before now: the newest
second may still be on its way. `peak_bps` is the highest rate in the range: at 1 second where
the range meets the seconds still kept (retention_seconds, live capture only), at the tier's
bucket size before; whichever is higher, with `resolution` (its bucket in seconds) and `peak_at`
(that bucket's start) saying which. An import has no seconds: its peak is its busiest bucket.

A page sorted by a key that totals alone give (bytes, tx, rx, now, a name) is found first by
`rank`: one sum per subject, from the next coarser tier's whole buckets inside the range and the
tier's own rows at its edges only (a day's list: 24 hour rows a host instead of 1,440 minute
rows); PER_SUBJECT then reads every bucket of that page's subjects alone, from the indexes that
carry the counters (schema 10), and orders them by the same key. Keys that need every bucket (peak, avg,
first/last seen) take PER_SUBJECT over all subjects.
"""
from storage import tiers
from storage.postgres import at_max
from storage.reads import dict_rows, joined, rate, source, source_parts

NOW_SECONDS = 5
NOW_LAG = 1

# {per}: (bucket, subject, tx, rx, txp, rxp) of the tier; {per_second}: (second, subject, b), one
# row per subject and second, bytes both ways
def per_subject(con, **parts):
    """PER_SUBJECT with its parts, and its busiest-bucket columns in the connection's dialect."""
    return PER_SUBJECT.format(**parts, peak_b=at_max(con, "tx + rx", "bucket"),
                              peak1_at=at_max(con, "range_b", "second"))


PER_SUBJECT = """
WITH per AS MATERIALIZED ({per}),
agg AS (SELECT subject, {extra} sum(tx) AS s_tx, sum(rx) AS s_rx, sum(txp) AS s_txp, sum(rxp) AS s_rxp,
               min(bucket) AS first_b, max(bucket) AS last_b FROM per GROUP BY subject),
tops AS (SELECT subject, max(tx + rx) AS peak, {peak_b} AS peak_b FROM per GROUP BY subject),
secs AS MATERIALIZED (
    SELECT subject, sum(now_b) AS recent, max(range_b) AS peak1, {peak1_at} AS peak1_at
    FROM (SELECT subject, second, CASE WHEN second >= ? AND second < ? THEN b ELSE 0 END AS now_b,
                 CASE WHEN second >= ? AND second < ? THEN b END AS range_b FROM ({per_second})) GROUP BY subject)
SELECT * FROM (
    SELECT agg.*, t.peak, t.peak_b, coalesce(s.recent, 0) AS recent, s.peak1, s.peak1_at,
           max(coalesce(s.peak1, 0) * 1.0, t.peak * 1.0 / {{size}}) AS peak_rate, count(*) OVER () AS total_rows
    FROM agg JOIN tops t ON t.subject = agg.subject LEFT JOIN secs s ON s.subject = agg.subject)
ORDER BY {{order}}, subject {{page}}"""


# the ranking: one row per subject with the sorts' inputs; {rows}: (subject, tx, rx[, name, pid])
RANK = """
WITH tot AS (SELECT subject, {extra} sum(tx) AS s_tx, sum(rx) AS s_rx FROM ({rows}) GROUP BY subject),
secs AS (SELECT subject, sum(b) AS recent FROM ({per_second}) WHERE second < ? GROUP BY subject)
SELECT tot.*, coalesce(secs.recent, 0) AS recent, count(*) OVER () AS total_rows
FROM tot LEFT JOIN secs ON secs.subject = tot.subject ORDER BY {order}, subject LIMIT ? OFFSET ?"""
RANKED = {"bytes", "tx", "rx", "now", "current", "ip", "name", "pid"}


def coarse_source(con, family, tier, lo, hi, columns, where="", where_args=(), *, policy, now):
    """(SQL, args) of rows of `family` whose sums are exact for [lo, hi) (as reads.source's) but
    whose buckets are not of one size: the whole buckets of the next coarser tier inside the
    range, and still kept by it (`policy` may keep a coarser tier for less time than a finer
    one), at that tier; the rest at `tier`. For totals only. reads.source's rows where no whole
    coarser bucket fits in the range (or `tier` is the coarsest)."""
    coarser = tiers.COARSER.get(tier)
    size = tiers.SIZE[coarser] if coarser else 0
    if size:
        kept = max(lo, policy.cutoff(family, coarser, now))
        c_lo, c_hi = -(-kept // size) * size, hi // size * size
    else:
        c_lo = c_hi = 0
    if c_lo >= c_hi:
        return source(con, family, tier, lo, hi, columns, where, where_args)
    pieces = [(coarser, c_lo, c_hi)] + [(tier, a, b) for a, b in ((lo, c_lo), (c_hi, hi)) if a < b]
    return joined([part for t, a, b in pieces for part in source_parts(con, family, t, a, b, columns, where,
                                                                        where_args)])


def rank(con, rows, args, per_second, second_args, now, sort_sql, descending, limit, offset, extra=""):
    """(total, [subject]) of one page by a RANKED key: `rows` (SQL, from coarse_source) with
    `args`; `per_second` (SQL of (second, subject, b)) with `second_args` after its first second."""
    first, end = now_window(now)
    order = f"{sort_sql} {'DESC' if descending else 'ASC'}"
    found = dict_rows(con, RANK.format(rows=rows, per_second=per_second, extra=extra, order=order),
                      [*args, first, *second_args, end, limit, offset])
    total = found[0]["total_rows"] if found else None
    if total is None:
        total = 0 if not offset else dict_rows(con, f"SELECT count(DISTINCT subject) AS n FROM ({rows})", args)[0]["n"]
    return total, [r["subject"] for r in found]


def now_window(now):
    """[first, end) seconds behind current_bps."""
    end = int(now) - NOW_LAG
    return end - NOW_SECONDS, end


def seconds_args(now, lo, hi):
    """Arguments of PER_SUBJECT's secs part (before those of {per_second}) and the first second
    {per_second} must read from."""
    first, end = now_window(now)
    return [first, end, lo, hi], min(first, lo)


def usage_rows(con, sql, args, size, now, descending, sort_sql, limit, offset):
    """Runs a per-subject aggregate (see hosts.host_usage) and turns it into API rows."""
    order = f"{sort_sql.format(size=size)} {'DESC' if descending else 'ASC'}"
    page = "" if limit is None else "LIMIT ? OFFSET ?"
    rows = dict_rows(con, sql.format(order=order, page=page, size=size), args + ([] if limit is None else [limit, offset]))
    total = rows[0]["total_rows"] if rows else None
    if total is None:
        total = 0 if not offset else len(dict_rows(con, sql.format(order="1", page="", size=size), args))
    out = []
    for r in rows:
        nbytes = r["s_tx"] + r["s_rx"]
        if r["peak1"] is not None and r["peak1"] >= r["peak"] / size:
            peak, resolution, peak_at = rate(r["peak1"], 1), 1, r["peak1_at"]
        else:
            peak, resolution, peak_at = rate(r["peak"], size), size, r["peak_b"]
        out.append({"subject": r["subject"], "tx_bytes": r["s_tx"], "rx_bytes": r["s_rx"],
                    "tx_packets": r["s_txp"], "rx_packets": r["s_rxp"], "bytes": nbytes,
                    "current_bps": rate(r["recent"], NOW_SECONDS),
                    "avg_bps": rate(nbytes, r["last_b"] - r["first_b"] + size), "peak_bps": peak,
                    "peak_at": peak_at, "resolution": resolution,
                    "first_seen": r["first_b"], "last_seen": r["last_b"],
                    **{k: r[k] for k in ("pid", "name") if k in r}})
    return total, out

