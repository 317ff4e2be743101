"""TCP health per host, process and app: rows for the health tiers (from the flow deltas of a
rollup) and /api/health's read. Conventions as in storage/reads.py; definitions in docs/HEALTH.md.

Percentiles do not add up across buckets, so a bucket keeps the RTTs as a histogram, which does:
each TCP flow active in a minute with an RTT counts once in that minute (its running RTT average,
else its handshake RTT) in one of BINS log-scale bins, and hours and days are the bins summed
(storage/tiers.py, like every counter). p50 and p95 are read from the summed bins: the geometric
middle of the bin holding the percentile, within 13% of the exact value.
"""
import math

from storage import tiers
from storage.reads import source, span

BINS = 48
BIN_BASE_MS = 0.05           # bin k holds [0.05 * 2^(k/3), 0.05 * 2^((k+1)/3)) ms; 0 and 47 are open
_PER_OCTAVE = 3
COUNTS = ("tcp_flows", "data_segments", "retransmits", "out_of_order", "zero_windows", "resets", "rtt_flows")
HIST = tuple(f"rtt_h{i:02d}" for i in range(BINS))
SUMS = COUNTS + HIST
HEALTH_BY = {"host": "host_health", "process": "process_health", "app": "app_health"}
SORTS = {"retransmit_rate": "retransmit_rate", "rtt_p95_ms": "rtt_p95_ms", "rtt_p50_ms": "rtt_p50_ms",
         "retransmits": "retransmits", "data_segments": "data_segments", "tcp_flows": "tcp_flows"}


def rtt_bin(ms):
    if ms <= BIN_BASE_MS:
        return 0
    return min(BINS - 1, int(math.log2(ms / BIN_BASE_MS) * _PER_OCTAVE))


def bin_value(k):
    """The value a percentile falling in bin k is reported as (its geometric middle)."""
    return round(BIN_BASE_MS * 2 ** ((k + 0.5) / _PER_OCTAVE), 3)


def percentile(hist, q):
    """The q-quantile (0..1) of a histogram [count per bin], None when empty."""
    total = sum(hist)
    if not total:
        return None
    need = q * total
    seen = 0
    for k, n in enumerate(hist):
        seen += n
        if n and seen >= need:
            return bin_value(k)
    return bin_value(BINS - 1)


def _row(counts, flow):
    """Adds one TCP flow delta to a row of SUMS."""
    counts[0] += 1
    counts[1] += flow.data_segments
    counts[2] += flow.retransmits
    counts[3] += flow.out_of_order
    counts[4] += flow.zero_windows
    counts[5] += flow.resets
    rtt = flow.rtt_avg_ms if flow.rtt_avg_ms is not None else flow.rtt_ms
    if rtt is not None:
        counts[6] += 1
        counts[7 + rtt_bin(rtt)] += 1


def rows(rollup, process_ids, minute):
    """{family: [(minute, *keys, *SUMS)]} of a rollup's TCP flow deltas that carried packets:
    per host (both ends), per process (each side a process owns, as the attribution join charged
    it: a pid names one process per rollup) and per (app, service)."""
    by_pid = {key.pid: process_id for key, process_id in process_ids.items()}
    out = {"host_health": {}, "process_health": {}, "app_health": {}}
    for f in rollup.flows:
        if f.proto != 6 or not (f.orig_packets or f.resp_packets):
            continue
        keys = [("host_health", (f.orig_h,)), ("app_health", (f.app, f.service))]
        if f.resp_h != f.orig_h:
            keys.append(("host_health", (f.resp_h,)))
        pids = {f.orig_pid, f.resp_pid} - {None}
        for pid in pids:
            process_id = by_pid.get(pid)
            if process_id is not None:
                keys.append(("process_health", (process_id,)))
        for family, key in keys:
            counts = out[family].get(key)
            if counts is None:
                counts = out[family][key] = [0] * len(SUMS)
            _row(counts, f)
    return {family: [(minute, *key, *counts) for key, counts in table.items()] for family, table in out.items()}


def health(con, since, until, now, by="host", sort="retransmit_rate", limit=100, min_segments=0, *, policy):
    """{resolution, by, rows: [{key..., tcp_flows, data_segments, retransmits, retransmit_rate,
    out_of_order, zero_windows, resets, rtt_flows, rtt_p50_ms, rtt_p95_ms}]} over [since, until),
    `by` host (ip), process (name) or app (app, service); sorted descending by `sort` (None
    last); only rows with at least `min_segments` data segments (a rate of 1 in 2 says little)."""
    family = HEALTH_BY[by]
    tier, lo, hi = span(policy, family, since, until, now)
    sums = ", ".join(f"sum({c})" for c in SUMS)
    if by == "host":
        sub, args = source(con, family, tier, lo, hi, "ip, " + ", ".join(SUMS))
        keys, select, group = ("ip",), "ip", "ip"
    elif by == "process":
        sub, args = source(con, family, tier, lo, hi, "process_id, " + ", ".join(SUMS))
        sub = f"SELECT p.name AS process, s.* FROM ({sub}) s JOIN processes p ON p.id = s.process_id"
        keys, select, group = ("process",), "process", "process"
    else:
        sub, args = source(con, family, tier, lo, hi, "app, service, " + ", ".join(SUMS))
        keys, select, group = ("app", "service"), "app, service", "app, service"
    out = []
    for r in con.execute(f"SELECT {select}, {sums} FROM ({sub}) GROUP BY {group} HAVING sum(data_segments) >= ?",
                         args + [min_segments]):
        row = dict(zip(keys, r))
        counts = r[len(keys):]
        row.update(zip(COUNTS, counts[:len(COUNTS)]))
        hist = counts[len(COUNTS):]
        row["retransmit_rate"] = round(row["retransmits"] / row["data_segments"], 6) if row["data_segments"] else None
        row["rtt_p50_ms"] = percentile(hist, 0.5)
        row["rtt_p95_ms"] = percentile(hist, 0.95)
        out.append(row)
    key = SORTS[sort]
    out.sort(key=lambda x: (x[key] is not None, x[key] or 0, x["data_segments"]), reverse=True)
    return {"resolution": tiers.SIZE[tier], "by": by, "rows": out[:limit]}
