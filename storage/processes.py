"""Read queries about processes and attribution coverage. Time ranges as in storage.queries:
[since, until) in epoch seconds, selecting whole minute buckets."""
from storage.queries import dict_rows, tiered

_TOTALS = """
SELECT p.pid, p.name AS process, sum(m.tx_bytes) AS tx_bytes, sum(m.rx_bytes) AS rx_bytes,
       sum(m.tx_packets) AS tx_packets, sum(m.rx_packets) AS rx_packets,
       p.start_time, p.username, p.unit, p.exe, p.cmdline,
       min(m.bucket) AS first_bucket, max(m.bucket) AS last_bucket
FROM ({source}) m JOIN processes p ON p.id = m.process_id
GROUP BY p.id
HAVING sum(m.tx_packets) + sum(m.rx_packets) > 0
ORDER BY sum(m.tx_bytes) + sum(m.rx_bytes) DESC, p.pid, p.start_time"""

_COVERAGE = """
SELECT reason, sum(bytes) AS bytes, sum(packets) AS packets FROM ({source})
GROUP BY reason ORDER BY reason"""

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

ATTRIBUTED, NO_LOCAL_ENDPOINT = "attributed", "no_local_endpoint"


def process_totals(con, since=None, until=None):
    """Per process (pid + start time): bytes and frames it sent (tx) and received (rx), busiest
    first, with its name, user, systemd unit or container, executable and command line."""
    source, params = tiered(con, "process", since, until)
    return dict_rows(con, _TOTALS.format(source=source), params)


def attribution_coverage(con, since=None, until=None):
    """How much of this host's own traffic was charged to processes, and why the rest was not.

    Bytes count once per local side of a flow (a flow between two local processes counts twice,
    once for each), so `attributed` equals the sum of tx_bytes + rx_bytes over processes.
    Returns {"attributed": {bytes, packets}, "local_bytes": attributed + unattributed local
    bytes, "coverage": attributed / local_bytes or None, "reasons": {reason: {bytes, packets}}}
    where reasons include no_local_endpoint (traffic not of this host, not part of local_bytes)."""
    source, params = tiered(con, "attribution", since, until)
    rows = dict_rows(con, _COVERAGE.format(source=source), params)
    by_reason = {r["reason"]: {"bytes": r["bytes"], "packets": r["packets"]} for r in rows
                 if r["bytes"] or r["packets"]}
    attributed = by_reason.pop(ATTRIBUTED, {"bytes": 0, "packets": 0})
    local = attributed["bytes"] + sum(v["bytes"] for k, v in by_reason.items() if k != NO_LOCAL_ENDPOINT)
    return {"attributed": attributed, "local_bytes": local,
            "coverage": attributed["bytes"] / local if local else None, "reasons": by_reason}


def flow_totals_by_process(con, since=None, until=None):
    """Per (pid, process name) the sum over the flows charged to it, each side as that process
    sees it: the cross-check of process_totals (they agree by construction of attribution/)."""
    if since is None and until is None:
        return dict_rows(con, _FLOW_SIDES_ALL)
    source, params = tiered(con, "flow", since, until)
    return dict_rows(con, _FLOW_SIDES_BETWEEN.format(source=source), params + params)


_FLOWS = """
SELECT id, proto, orig_h, orig_p, resp_h, resp_p, orig_bytes, resp_bytes, orig_packets, resp_packets,
       first_seen, last_seen, tcp_flags, iface, closed, orig_pid, orig_process, resp_pid, resp_process
FROM flows ORDER BY first_seen, id"""


def flows_with_processes(con):
    """Every flow with the processes owning its sides (orig_pid/resp_pid None where the side is
    not on this host or was not attributed)."""
    return dict_rows(con, _FLOWS)
