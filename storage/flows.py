"""Flow records: the flows page and API (filter, sort, page), the flows CSV (streamed), and the
flows export over a time range. Conventions as in storage/reads.py."""
from typing import NamedTuple

from storage import agents
from storage.addresses import names_of
from storage.export import flow_row
from storage.reads import FAR_FUTURE, FAR_PAST, dict_rows, finest
from storage.search import contains as _like, flow_match

FLOW_SORTS = {"last_seen": "last_seen", "first_seen": "first_seen", "bytes": "orig_bytes + resp_bytes",
              "packets": "orig_packets + resp_packets", "orig_bytes": "orig_bytes",
              "resp_bytes": "resp_bytes", "proto": "proto", "orig_h": "orig_h", "resp_h": "resp_h",
              "orig_p": "orig_p", "resp_p": "resp_p", "rtt_ms": "rtt_ms", "rtt_avg_ms": "rtt_avg_ms",
              "retransmits": "retransmits"}


class FlowFilter(NamedTuple):
    since: float | None = None
    until: float | None = None
    host: str | None = None          # canonical IP text, either side
    port: int | None = None          # either side
    proto: int | None = None
    process: str | None = None       # substring of either side's process name, or a pid
    iface: str | None = None
    app: str | None = None           # exact application (tls, dns...)
    traffic_class: str | None = None
    name: str | None = None          # substring of the server name or of either side's host name
    q: str | None = None             # the search box: storage/search.py flow_match


EVERY_FLOW = FlowFilter()        # no filter


_FLOW_COLUMNS = """id, proto, orig_h, orig_p, resp_h, resp_p, orig_bytes, resp_bytes, orig_packets,
    resp_packets, first_seen, last_seen, tcp_flags, iface, orig_pid, orig_process, resp_pid, resp_process,
    n.app, n.app_source, n.server_name, n.service, n.traffic_class,
    rtt_ms, rtt_min_ms, rtt_avg_ms, rtt_max_ms, data_segments, retransmits, out_of_order, zero_windows, resets"""
_NAMED = "flows LEFT JOIN flow_names n ON n.flow_id = flows.id"


def _flow_where(f):
    clauses = ["last_seen >= ?", "first_seen < ?"]
    args = [FAR_PAST if f.since is None else f.since, FAR_FUTURE if f.until is None else f.until]
    mine, agent_args = agents.clause()
    if mine:
        clauses.append(mine)
        args += agent_args
    if f.host is not None:
        clauses.append("(orig_h = ? OR resp_h = ?)")
        args += [f.host, f.host]
    if f.port is not None:
        clauses.append("(orig_p = ? OR resp_p = ?)")
        args += [f.port, f.port]
    for value, column in ((f.proto, "proto"), (f.iface, "iface"), (f.app, "n.app"),
                          (f.traffic_class, "n.traffic_class")):
        if value is not None:                  # exact matches
            clauses.append(f"{column} = ?")
            args.append(value)
    if f.name is not None:
        pattern = _like(f.name)
        clauses.append("(n.server_name LIKE ? ESCAPE '\\' OR orig_h IN (SELECT ip FROM host_names WHERE name LIKE ? "
                       "ESCAPE '\\') OR resp_h IN (SELECT ip FROM host_names WHERE name LIKE ? ESCAPE '\\'))")
        args += [pattern, pattern, pattern]
    if f.process is not None:
        pattern = _like(f.process)
        match = "orig_process LIKE ? ESCAPE '\\' OR resp_process LIKE ? ESCAPE '\\'"
        args += [pattern, pattern]
        if f.process.isascii() and f.process.isdigit() and len(f.process) <= 10:   # a pid
            match += " OR orig_pid = ? OR resp_pid = ?"
            args += [int(f.process), int(f.process)]
        clauses.append(f"({match})")
    if f.q is not None:
        match, margs = flow_match(f.q)
        clauses.append(match)
        args += margs
    return " AND ".join(clauses), args


def flow_search(con, flt=EVERY_FLOW, sort="last_seen", descending=True, limit=100, offset=0):
    """(number of matching flow records, one page as export rows plus `id`, `bytes` and both
    sides' names, `orig_name` and `resp_name`). A record
    matches a time range when it was active in it; its counters are the whole record's."""
    where, args = _flow_where(flt)
    count = con.execute(f"SELECT count(*) FROM {_NAMED} WHERE {where}", args).fetchone()[0]
    rows = list(iter_flows(con, flt, sort, descending, limit, offset))
    names = names_of(con, [r[f"{side}_h"] for r in rows for side in ("orig", "resp")])
    for r in rows:              # both sides by name, for the page's rows only
        r["orig_name"], r["resp_name"] = names.get(r["orig_h"]), names.get(r["resp_h"])
    return count, rows


def iter_flows(con, flt=EVERY_FLOW, sort="last_seen", descending=True, limit=None, offset=0):
    """The matching flow records as export rows (plus `id` and `bytes`), one at a time from the
    cursor: a CSV of a million flows never sits in memory whole."""
    where, args = _flow_where(flt)
    direction = "DESC" if descending else "ASC"
    page = "" if limit is None else "LIMIT ? OFFSET ?"
    cur = con.execute(f"SELECT {_FLOW_COLUMNS} FROM {_NAMED} WHERE {where} "
                      f"ORDER BY {FLOW_SORTS[sort]} {direction}, id {direction} {page}",
                      args + ([] if limit is None else [limit, offset]))
    names = [d[0] for d in cur.description]
    for values in cur:
        r = dict(zip(names, values))
        row = flow_row(r)
        row["id"], row["bytes"] = r["id"], r["orig_bytes"] + r["resp_bytes"]
        yield row


# ---- the flows export: counters of the range, from the per-flow tiers -----------------------------

_FLOWS_ALL = """
SELECT id, proto, orig_h, orig_p, resp_h, resp_p, orig_bytes, resp_bytes, orig_packets, resp_packets,
       first_seen, last_seen, orig_pid, orig_process, resp_pid, resp_process, tcp_flags, iface,
       n.app, n.app_source, n.server_name, n.service, n.traffic_class,
       rtt_ms, rtt_min_ms, rtt_avg_ms, rtt_max_ms, data_segments, retransmits, out_of_order, zero_windows, resets
FROM flows LEFT JOIN flow_names n ON n.flow_id = flows.id WHERE 1 = 1 {mine} ORDER BY first_seen, id"""

_FLOWS_BETWEEN = """
SELECT f.id, f.proto, f.orig_h, f.orig_p, f.resp_h, f.resp_p,
       sum(m.orig_bytes) AS orig_bytes, sum(m.resp_bytes) AS resp_bytes,
       sum(m.orig_packets) AS orig_packets, sum(m.resp_packets) AS resp_packets,
       f.first_seen, f.last_seen, f.orig_pid, f.orig_process, f.resp_pid, f.resp_process, f.tcp_flags, f.iface,
       n.app, n.app_source, n.server_name, n.service, n.traffic_class,
       f.rtt_ms, f.rtt_min_ms, f.rtt_avg_ms, f.rtt_max_ms, f.data_segments, f.retransmits, f.out_of_order, f.zero_windows, f.resets
FROM ({source}) m JOIN flows f ON f.id = m.flow_id LEFT JOIN flow_names n ON n.flow_id = f.id
GROUP BY f.id, n.flow_id ORDER BY f.first_seen, f.id"""


def flows_between(con, since=None, until=None):
    """Flow records with the bytes and frames they carried in [since, until) (whole records when
    the range is open on both sides), oldest first."""
    if since is None and until is None:
        mine, agent_args = agents.condition()
        return dict_rows(con, _FLOWS_ALL.format(mine=mine), agent_args)
    source, params = finest(con, "flow", since, until)
    return dict_rows(con, _FLOWS_BETWEEN.format(source=source), params)
