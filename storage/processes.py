"""Processes: the processes page and API (per process or per name), the processes export, and
the cross-checks of attribution (per-process totals from the flows, coverage figures).
Conventions as in storage/reads.py."""
from records import ATTRIBUTED
from storage import agents, coverage, tiers
from storage.reads import consistent, dict_rows, finest, source, span
from storage.search import process_match
from storage.usage import RANKED, coarse_source, per_subject, rank, seconds_args, usage_rows

# "now" and "current" are one key: the rate of the last seconds (storage/usage.py)
PROCESS_SORTS = {"bytes": "s_tx + s_rx", "tx": "s_tx", "rx": "s_rx", "now": "recent", "current": "recent",
                 "peak": "peak_rate",
                 "name": "name", "pid": "pid", "last_seen": "last_b"}
PROCESS_GROUPS = ("instance", "name")


@consistent
def process_usage(con, since, until, now, sort="bytes", descending=True, limit=100, offset=0, group="instance", *,
                  policy, q=None):
    """{total, resolution, rows} as hosts.host_usage, for processes: one row per process (pid +
    start time) with group='instance', per process name with group='name' (pid then null).
    `q`: only the processes it matches (storage/search.py process_match)."""
    tier, lo, hi = span(policy, "process", since, until, now)
    size = tiers.SIZE[tier]
    key = "p.id" if group == "instance" else "p.name"
    found, fargs = "", []
    if q is not None:
        match, fargs = process_match(con, q, tier, lo, hi)
        found = f"WHERE {match}"
    mine, second_args = agents.condition(alias="p")
    per_second = (f"SELECT s.second, {key} AS subject, sum(s.tx_bytes + s.rx_bytes) AS b FROM process_seconds s "
                  f"JOIN processes p ON p.id = s.process_id WHERE s.second >= ?{mine} GROUP BY s.second, subject")
    extra = "max(name) AS name, max(pid) AS pid,"
    pid = "p.pid" if group == "instance" else "NULL"
    # a page by a key totals give: ranked cheaply first, then only its processes read in full (usage.py)
    where, wargs = "", []
    coarse = None
    if limit is not None and sort in RANKED:
        coarse = coarse_source(con, "process", tier, lo, hi, "process_id, tx_bytes, rx_bytes", policy=policy, now=now)
    if coarse is not None:
        rows = (f"SELECT {key} AS subject, p.name AS name, {pid} AS pid, s.tx_bytes AS tx, s.rx_bytes AS rx "
                f"FROM ({coarse[0]}) s JOIN processes p ON p.id = s.process_id {found}")
        total, page = rank(con, rows, coarse[1] + fargs, per_second, second_args, now, PROCESS_SORTS[sort], descending,
                           limit, offset, extra)
        if not page:
            return {"total": total, "resolution": size, "rows": []}
        marks = ",".join("?" * len(page))
        where = (f"AND process_id IN ({marks})" if group == "instance" else
                 f"AND process_id IN (SELECT id FROM processes WHERE name IN ({marks}))")
        wargs, limit, offset = page, None, 0
    sub, args = source(con, "process", tier, lo, hi, "process_id, tx_bytes, rx_bytes, tx_packets, rx_packets",
                       where, wargs)
    args += fargs
    per = (f"SELECT s.bucket, {key} AS subject, p.name AS name, {pid} AS pid, "
           f"sum(s.tx_bytes) AS tx, sum(s.rx_bytes) AS rx, sum(s.tx_packets) AS txp, sum(s.rx_packets) AS rxp "
           f"FROM ({sub}) s JOIN processes p ON p.id = s.process_id {found} GROUP BY s.bucket, subject")
    secs, first = seconds_args(now, lo, hi)
    sql = per_subject(con, per=per, per_second=per_second, extra=extra)
    counted, rows = usage_rows(con, sql, args + secs + [first, *second_args], size, now, descending, PROCESS_SORTS[sort],
                               limit, offset)
    if coarse is None:      # else the ranking's total, and the page's rows in its order already
        total = counted
    details = {}
    if group == "instance" and rows:
        ids = [r["subject"] for r in rows]
        details = {r["id"]: r for r in dict_rows(con, f"""SELECT id, exe, cmdline, username, unit, start_time
                                                      FROM processes WHERE id IN ({','.join('?' * len(ids))})""", ids)}
    out = []
    for r in rows:
        d = details.get(r["subject"], {})
        out.append({"pid": r.pop("pid"), "process": r.pop("name"), "exe": d.get("exe"), "cmdline": d.get("cmdline"),
                    "username": d.get("username"), "unit": d.get("unit"), "start_time": d.get("start_time"),
                    **{k: v for k, v in r.items() if k != "subject"}})
    return {"total": total, "resolution": size, "rows": out}


# ---- the processes export and the cross-checks of attribution: totals over a range, from the
# finest tier holding each bucket

_TOTALS = """
SELECT p.pid, p.name AS process, sum(m.tx_bytes) AS tx_bytes, sum(m.rx_bytes) AS rx_bytes,
       sum(m.tx_packets) AS tx_packets, sum(m.rx_packets) AS rx_packets,
       p.start_time, p.username, p.unit, p.exe, p.cmdline,
       min(m.bucket) AS first_bucket, max(m.bucket) AS last_bucket
FROM ({source}) m JOIN processes p ON p.id = m.process_id
GROUP BY p.id
HAVING sum(m.tx_packets) + sum(m.rx_packets) > 0
ORDER BY sum(m.tx_bytes) + sum(m.rx_bytes) DESC, p.pid, p.start_time"""

# Each side of a flow whose process is known, as that process sees it: tx is what the side sent.
_FLOW_SIDES_ALL = """
SELECT pid, process, sum(tx_bytes) AS tx_bytes, sum(rx_bytes) AS rx_bytes,
       sum(tx_packets) AS tx_packets, sum(rx_packets) AS rx_packets FROM (
    SELECT orig_pid AS pid, orig_process AS process, orig_bytes AS tx_bytes, resp_bytes AS rx_bytes,
           orig_packets AS tx_packets, resp_packets AS rx_packets FROM flows WHERE orig_pid IS NOT NULL
    UNION ALL
    SELECT resp_pid, resp_process, resp_bytes, orig_bytes, resp_packets, orig_packets
    FROM flows WHERE resp_pid IS NOT NULL)
GROUP BY pid, process ORDER BY pid, process"""

_FLOW_SIDES_BETWEEN = """
SELECT pid, process, sum(tx_bytes) AS tx_bytes, sum(rx_bytes) AS rx_bytes,
       sum(tx_packets) AS tx_packets, sum(rx_packets) AS rx_packets FROM (
    SELECT f.orig_pid AS pid, f.orig_process AS process, m.orig_bytes AS tx_bytes, m.resp_bytes AS rx_bytes,
           m.orig_packets AS tx_packets, m.resp_packets AS rx_packets
    FROM ({source}) m JOIN flows f ON f.id = m.flow_id
    WHERE f.orig_pid IS NOT NULL
    UNION ALL
    SELECT f.resp_pid, f.resp_process, m.resp_bytes, m.orig_bytes, m.resp_packets, m.orig_packets
    FROM ({source}) m JOIN flows f ON f.id = m.flow_id
    WHERE f.resp_pid IS NOT NULL)
GROUP BY pid, process ORDER BY pid, process"""


def process_totals(con, since=None, until=None):
    """Per process (pid + start time): bytes and frames it sent (tx) and received (rx), busiest
    first, with its name, user, systemd unit or container, executable and command line."""
    sub, params = finest(con, "process", since, until)
    return dict_rows(con, _TOTALS.format(source=sub), params)


def attribution_coverage(con, since=None, until=None):
    """How much of this host's own traffic was charged to processes, and why the rest was not.

    Bytes count once per local side of a flow (a flow between two local processes counts twice,
    once for each), so `attributed` equals the sum of tx_bytes + rx_bytes over processes.
    Returns {"attributed": {bytes, packets}, "local_bytes": attributed + unattributed local
    bytes, "coverage": attributed / local_bytes or None, "reasons": {reason: {bytes, packets}}}
    where reasons include no_local_endpoint (traffic not of this host, not part of local_bytes)."""
    c = coverage.read(con, *finest(con, "attribution", since, until))
    by_reason = {reason: {"bytes": b, "packets": p} for reason, (b, p) in c.reasons.items() if b or p}
    attributed = by_reason.pop(ATTRIBUTED, {"bytes": 0, "packets": 0})
    return {"attributed": attributed, "local_bytes": c.own, "coverage": c.ratio, "reasons": by_reason}


def flow_totals_by_process(con, since=None, until=None):
    """Per (pid, process name) the sum over the flows charged to it, each side as that process
    sees it: the cross-check of process_totals (they agree by construction of attribution/)."""
    if since is None and until is None:
        return dict_rows(con, _FLOW_SIDES_ALL)
    sub, params = finest(con, "flow", since, until)
    return dict_rows(con, _FLOW_SIDES_BETWEEN.format(source=sub), params + params)


_FLOWS = """
SELECT id, proto, orig_h, orig_p, resp_h, resp_p, orig_bytes, resp_bytes, orig_packets, resp_packets,
       first_seen, last_seen, tcp_flags, iface, closed, orig_pid, orig_process, resp_pid, resp_process
FROM flows ORDER BY first_seen, id"""


def flows_with_processes(con):
    """Every flow with the processes owning its sides (orig_pid/resp_pid None where the side is
    not on this host or was not attributed)."""
    return dict_rows(con, _FLOWS)
