"""Read queries for the dashboard and the JSON API, named for what they answer.

Tiers. Counts live in minute, hour and day tables (storage/tiers.py); each tier is kept for its
own time (storage/retention.py). A query picks one tier for its range (`choose_tier`) and reads
it through `_source`, which is exact at any moment: a coarse bucket whose finer data changed
since it was last built (pending in tier_pending, or holding a pending finer bucket) is read from
the finer tier instead. Ranges older than the minute tier's retention are thus rounded to whole
hours (older than the hour tier's: days); every answer says its `resolution` in seconds.

Conventions: times are epoch seconds; ranges are [since, until) and select whole buckets (a
bucket counts when its start lies in the range); rates are bits per second; on an interface "up"
is what this host sent (out_bytes), "down" the rest. Sort keys and directions arrive checked
against the whitelists below: no caller text ever becomes SQL.
"""
import sqlite3
from typing import NamedTuple

from storage import tiers
from storage.export import flow_row
from storage.tiers import RetentionPolicy

RATE_WINDOW = 5          # seconds of iface_seconds behind a "current" interface rate
COVERAGE_WINDOW = 3600   # seconds of attribution counts behind the coverage figure
FAR_PAST, FAR_FUTURE = -(2 ** 62), 2 ** 62
_FINER = {"hour": "minute", "day": "hour"}

HOST_SORTS = {"bytes": "s_tx + s_rx", "tx": "s_tx", "rx": "s_rx", "current": "recent", "peak": "peak",
              "avg": "(s_tx + s_rx) * 1.0 / (last_b - first_b + {size})", "first_seen": "first_b",
              "last_seen": "last_b", "ip": "subject"}
PROCESS_SORTS = {"bytes": "s_tx + s_rx", "tx": "s_tx", "rx": "s_rx", "current": "recent", "peak": "peak",
                 "name": "name", "pid": "pid", "last_seen": "last_b"}
FLOW_SORTS = {"last_seen": "last_seen", "first_seen": "first_seen", "bytes": "orig_bytes + resp_bytes",
              "packets": "orig_packets + resp_packets", "orig_bytes": "orig_bytes",
              "resp_bytes": "resp_bytes", "proto": "proto", "orig_h": "orig_h", "resp_h": "resp_h",
              "orig_p": "orig_p", "resp_p": "resp_p"}
HISTORY_BY = ("interface", "host", "process")
PROCESS_GROUPS = ("instance", "name")

# Service ports the traffic-type pie names; everything else is "<proto> other".
SERVICES = {(6, 20): "ftp-data", (6, 21): "ftp", (6, 22): "ssh", (6, 23): "telnet", (6, 25): "smtp",
            (17, 53): "dns", (6, 53): "dns", (17, 67): "dhcp", (17, 68): "dhcp", (6, 80): "http",
            (17, 123): "ntp", (6, 110): "pop3", (6, 143): "imap", (17, 137): "netbios",
            (17, 161): "snmp", (6, 389): "ldap", (6, 443): "https", (17, 443): "quic",
            (6, 445): "smb", (17, 514): "syslog", (6, 587): "smtp", (6, 853): "dns-over-tls",
            (6, 993): "imaps", (6, 995): "pop3s", (17, 1900): "ssdp", (6, 3306): "mysql",
            (6, 3389): "rdp", (6, 5432): "postgresql", (17, 5353): "mdns", (6, 6379): "redis",
            (6, 8080): "http-alt", (6, 8443): "https-alt", (17, 51820): "wireguard"}
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


class FlowFilter(NamedTuple):
    since: float | None = None
    until: float | None = None
    host: str | None = None          # canonical IP text, either side
    port: int | None = None          # either side
    proto: int | None = None
    process: str | None = None       # substring of either side's process name, or a pid
    iface: str | None = None


def _rows(con, sql, args=()):
    cur = con.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _rate(nbytes, seconds):
    return round(nbytes * 8 / seconds, 1) if seconds > 0 else 0.0


# ---- reading the tiers ----------------------------------------------------------------------

def choose_tier(policy, family, since, now, step=None):
    """With `step`: the coarsest tier whose buckets divide `step` and that still holds `since`;
    otherwise (or without a step) the finest tier that holds `since`; days for all time."""
    def holds(tier):
        return since is not None and since >= now - policy.keep(family, tier)
    if step is not None:
        for tier in reversed(tiers.TIERS):
            if step % tiers.SIZE[tier] == 0 and holds(tier):
                return tier
    for tier in tiers.TIERS:
        if holds(tier):
            return tier
    return "day"


def _dirty(con):
    """Buckets whose own tier row is stale: pending hours, and days that are pending or hold one."""
    hours = {b for (b,) in con.execute("SELECT bucket FROM tier_pending WHERE tier = 'hour'")}
    days = {b for (b,) in con.execute("SELECT bucket FROM tier_pending WHERE tier = 'day'")}
    return {"hour": hours, "day": days | {tiers.floor(h, "day") for h in hours}}


def _pieces(tier, lo, hi, dirty):
    """[(tier to read, lo, hi)] that give [lo, hi) exactly at `tier` granularity."""
    if tier == "minute":
        return [("minute", lo, hi)]
    size, out, cursor = tiers.SIZE[tier], [], lo
    for b in sorted(x for x in dirty[tier] if x + size > lo and x < hi):
        start, end = max(b, lo), min(b + size, hi)
        if start > cursor:
            out.append((tier, cursor, start))
        out += _pieces(_FINER[tier], start, end, dirty)
        cursor = end
    if cursor < hi:
        out.append((tier, cursor, hi))
    return out


def _source(con, family, tier, lo, hi, columns, where="", where_args=()):
    """(SQL, args) of a row source with `bucket` (at `tier` size) and `columns` of `family` for
    [lo, hi), exact (see the module doc). `where` filters every part (it should use an index)."""
    fam, size = tiers.FAMILIES[family], tiers.SIZE[tier]
    parts, args = [], []
    for src, a, b in _pieces(tier, lo, hi, _dirty(con) if tier != "minute" else None):
        bucket = src if src == tier else f"{src} / {size} * {size}"
        parts.append(f"SELECT {bucket} AS bucket, {columns} FROM {tiers.table(fam, src)} "
                     f"WHERE {src} >= ? AND {src} < ? {where}")
        args += [a, b, *where_args]
    return " UNION ALL ".join(parts), args


def _span(policy, family, since, until, now):
    """(tier, lo, hi) for a list over a range: minutes up to 2 days, hours up to 14 days, days
    beyond (fewer rows to read; peaks are then of the busiest minute, hour or day), or the
    finest tier still holding `since`. since is rounded down to the tier's bucket."""
    hi = FAR_FUTURE if until is None else int(until)
    step = None
    if since is not None:
        span = hi - since
        step = 60 if span <= 2 * 86400 else 3600 if span <= 14 * 86400 else 86400
    tier = choose_tier(policy, family, since, now, step)
    return tier, FAR_PAST if since is None else tiers.floor(since, tier), hi


# ---- live view and current usage ------------------------------------------------------------

def live_seconds(con, since_second):
    """Per-second interface points from `since_second` on: [(second, iface, up_bytes, down_bytes)]."""
    return con.execute("""
        SELECT second, iface, out_bytes, bytes - out_bytes FROM iface_seconds
        WHERE second >= ? ORDER BY second, iface""", (int(since_second),)).fetchall()


def interface_rates(con, now):
    """{iface: (up bit/s, down bit/s)} over the last RATE_WINDOW whole seconds."""
    end = int(now)
    return {iface: (_rate(up, RATE_WINDOW), _rate(down, RATE_WINDOW)) for iface, up, down in con.execute("""
        SELECT iface, sum(out_bytes), sum(bytes - out_bytes) FROM iface_seconds
        WHERE second >= ? AND second < ? GROUP BY iface""", (end - RATE_WINDOW, end))}


def current_usage(con, now, policy=RetentionPolicy()):
    """Per interface: current rates, totals over everything kept and kernel drops; attribution
    coverage over the last COVERAGE_WINDOW seconds."""
    rates = interface_rates(con, now)
    sub, args = _source(con, "iface", "day", FAR_PAST, FAR_FUTURE, "iface, bytes, out_bytes, frames")
    totals = {r["iface"]: r for r in _rows(con, f"""
        SELECT iface, sum(out_bytes) AS up_bytes, sum(bytes - out_bytes) AS down_bytes, sum(bytes) AS bytes,
               sum(frames) AS frames, min(bucket) AS first_seen FROM ({sub}) GROUP BY iface""", args)}
    sub, args = _source(con, "drops", "day", FAR_PAST, FAR_FUTURE, "iface, frames")
    drops = dict(con.execute(f"SELECT iface, sum(frames) FROM ({sub}) GROUP BY iface", args).fetchall())
    tier, lo, hi = _span(policy, "drops", now - 3600, now + 60, now)
    sub, args = _source(con, "drops", tier, lo, hi, "frames")
    recent_drops = con.execute(f"SELECT coalesce(sum(frames), 0) FROM ({sub})", args).fetchone()[0]
    interfaces = []
    for iface in sorted(set(rates) | set(totals) | set(drops)):
        up, down = rates.get(iface, (0.0, 0.0))
        t = totals.get(iface, {})
        interfaces.append({"iface": iface, "up_bps": up, "down_bps": down, "up_bytes": t.get("up_bytes", 0),
                           "down_bytes": t.get("down_bytes", 0), "bytes": t.get("bytes", 0),
                           "frames": t.get("frames", 0), "drops": drops.get(iface, 0)})
    total = {k: sum(i[k] for i in interfaces)
             for k in ("up_bps", "down_bps", "up_bytes", "down_bytes", "bytes", "frames")}
    firsts = [t["first_seen"] for t in totals.values() if t["first_seen"] is not None]
    total["counted_since"] = min(firsts, default=None)      # start of the oldest day kept
    return {"now": now, "rate_window": RATE_WINDOW, "interfaces": interfaces, "total": total,
            "drops": {"frames": sum(drops.values()), "last_hour": recent_drops},
            "coverage": attribution_coverage(con, now - COVERAGE_WINDOW, now + 60, now, policy)}


def attribution_coverage(con, since, until, now, policy=RetentionPolicy()):
    """Share of this host's own bytes charged to a process, with the reasons for the rest."""
    tier, lo, hi = _span(policy, "attribution", since, until, now)
    sub, args = _source(con, "attribution", tier, lo, hi, "reason, bytes")
    reasons = dict(con.execute(f"SELECT reason, sum(bytes) FROM ({sub}) GROUP BY reason ORDER BY reason",
                               args).fetchall())
    attributed = reasons.pop("attributed", 0)
    # traffic with no local side (forwarded, broadcast, mirrored) is not this host's: not in coverage
    unattributed = sum(b for reason, b in reasons.items() if reason != "no_local_endpoint")
    whole = attributed + unattributed
    return {"since": lo, "attributed_bytes": attributed, "unattributed_bytes": unattributed,
            "ratio": round(attributed / whole, 4) if whole else None, "reasons": reasons}


# ---- history --------------------------------------------------------------------------------

_HISTORY = {
    # by: (tier family, columns read: the series key (for processes its id), up, down)
    "interface": ("iface", "iface AS key, out_bytes AS up, bytes - out_bytes AS down"),
    "host": ("host", "ip AS key, tx_bytes AS up, rx_bytes AS down"),
    "process": ("process", "process_id, tx_bytes AS up, rx_bytes AS down"),
}


def traffic_history(con, by, since, until, step, now, limit=10, policy=RetentionPolicy()):
    """Bytes per `step`-second bucket in [since, until) (since aligned to step): one series per
    interface, or for the `limit` hosts / process names with the most bytes in the range.
    up = sent, down = received. `step` grows to the tier's bucket when the range is older than
    every tier with finer buckets keeps."""
    family, columns = _HISTORY[by]
    tier = choose_tier(policy, family, since, now, step)
    step = max(step, tiers.SIZE[tier])
    lo = since // step * step
    sub, args = _source(con, family, tier, lo, until, columns)
    if by == "process":
        sub = (f"SELECT s.bucket, p.name AS key, s.up, s.down FROM ({sub}) s "
               f"JOIN processes p ON p.id = s.process_id")
    if by != "interface":
        sub = (f"WITH src AS ({sub}), top AS (SELECT key FROM src GROUP BY key "
               f"ORDER BY sum(up + down) DESC, key LIMIT ?) "
               f"SELECT * FROM src WHERE key IN (SELECT key FROM top)")
        args.append(limit)
    rows = con.execute(f"SELECT bucket / {step} * {step} AS b, key, sum(up), sum(down) FROM ({sub}) GROUP BY b, key",
                       args).fetchall()
    buckets = list(range(lo, until, step))
    index = {b: i for i, b in enumerate(buckets)}
    series = {}
    for b, key, up, down in rows:
        s = series.setdefault(key, {"key": key, "up": [0] * len(buckets), "down": [0] * len(buckets)})
        i = index.get(b)
        if i is not None:
            s["up"][i] += up
            s["down"][i] += down
    for s in series.values():
        s["total"] = sum(s["up"]) + sum(s["down"])
    ordered = sorted(series.values(), key=lambda s: (-s["total"], str(s["key"])))
    return {"step": step, "resolution": tiers.SIZE[tier], "buckets": buckets, "series": ordered}


# ---- hosts and processes --------------------------------------------------------------------

def _recent_start(now):
    """Start of the window behind a 'current' rate from minute data: the previous minute and the
    current one so far (60 to 120 s of data, never an empty current minute alone)."""
    return tiers.floor(now, "minute") - 60


def _usage(con, sql, args, size, now, descending, sort_sql, limit, offset):
    """Runs a per-subject aggregate (see host_usage) and turns it into API rows."""
    order = f"{sort_sql.format(size=size)} {'DESC' if descending else 'ASC'}"
    page = "" if limit is None else "LIMIT ? OFFSET ?"
    rows = _rows(con, sql.format(order=order, page=page), args + ([] if limit is None else [limit, offset]))
    total = rows[0]["total_rows"] if rows else None
    if total is None:
        total = 0 if not offset else len(_rows(con, sql.format(order="1", page=""), args))
    recent_seconds = now - _recent_start(now)
    out = []
    for r in rows:
        nbytes = r["s_tx"] + r["s_rx"]
        out.append({"subject": r["subject"], "tx_bytes": r["s_tx"], "rx_bytes": r["s_rx"],
                    "tx_packets": r["s_txp"], "rx_packets": r["s_rxp"], "bytes": nbytes,
                    "current_bps": _rate(r["recent"], recent_seconds),
                    "avg_bps": _rate(nbytes, r["last_b"] - r["first_b"] + size), "peak_bps": _rate(r["peak"], size),
                    "first_seen": r["first_b"], "last_seen": r["last_b"],
                    **{k: r[k] for k in ("pid", "name") if k in r}})
    return total, out


_PER_SUBJECT = """
WITH per AS ({per}),
agg AS (SELECT subject, {extra} sum(tx) AS s_tx, sum(rx) AS s_rx, sum(txp) AS s_txp, sum(rxp) AS s_rxp,
               min(bucket) AS first_b, max(bucket) AS last_b, max(tx + rx) AS peak FROM per GROUP BY subject),
lately AS MATERIALIZED ({lately})
SELECT agg.*, coalesce(l.recent, 0) AS recent, count(*) OVER () AS total_rows
FROM agg LEFT JOIN lately l ON l.subject = agg.subject
ORDER BY {{order}}, agg.subject {{page}}"""


def host_usage(con, since, until, now, sort="bytes", descending=True, limit=100, offset=0, ip=None,
               policy=RetentionPolicy()):
    """{total, resolution, rows}: hosts (one page) with totals and rates in bit/s. current: over
    the previous and the current minute; avg: over the buckets from the host's first to its last
    active one in the range; peak: its busiest bucket (`resolution` seconds)."""
    tier, lo, hi = _span(policy, "host", since, until, now)
    size = tiers.SIZE[tier]
    where, wargs = ("AND ip = ?", [ip]) if ip is not None else ("", [])
    sub, args = _source(con, "host", tier, lo, hi, "ip, tx_bytes, rx_bytes, tx_packets, rx_packets", where, wargs)
    if tier == "minute":        # one row per (minute, ip) already
        per = (f"SELECT bucket, ip AS subject, tx_bytes AS tx, rx_bytes AS rx, tx_packets AS txp, "
               f"rx_packets AS rxp FROM ({sub})")
    else:                       # a pending hour comes as minute rows: sum them into its bucket first
        per = (f"SELECT bucket, ip AS subject, sum(tx_bytes) AS tx, sum(rx_bytes) AS rx, sum(tx_packets) AS txp, "
               f"sum(rx_packets) AS rxp FROM ({sub}) GROUP BY bucket, ip")
    # GROUP BY +ip: read a range of the primary key (minute, ip), not the whole (ip, minute) index
    lately = (f"SELECT ip AS subject, sum(tx_bytes + rx_bytes) AS recent FROM host_minutes "
              f"WHERE minute >= ? {where} GROUP BY +ip")
    sql = _PER_SUBJECT.format(per=per, lately=lately, extra="")
    total, rows = _usage(con, sql, args + [_recent_start(now), *wargs], size, now, descending, HOST_SORTS[sort],
                         limit, offset)
    if tier != "minute" and rows:       # last seen to the minute where minutes are still kept
        ips = [r["subject"] for r in rows]
        latest = dict(con.execute(f"SELECT ip, max(minute) FROM host_minutes WHERE ip IN ({','.join('?' * len(ips))}) "
                                  f"AND minute >= ? AND minute < ? GROUP BY ip", (*ips, lo, hi)).fetchall())
        for r in rows:
            r["last_seen"] = latest.get(r["subject"], r["last_seen"])
    macs = _macs_of(con, [r["subject"] for r in rows])
    rows = [{"ip": r["subject"], "mac": macs.get(r["subject"]), **{k: v for k, v in r.items() if k != "subject"}}
            for r in rows]
    return {"total": total, "resolution": size, "rows": rows}


def _macs_of(con, ips):
    """ip -> MAC for the addresses whose ARP announcements were seen (IPv4 on Ethernet)."""
    if not ips:
        return {}
    try:
        return dict(con.execute(f"SELECT ip, mac FROM host_macs WHERE ip IN ({','.join('?' * len(ips))})",
                                ips).fetchall())
    except sqlite3.OperationalError:      # a database from before schema 3, read but never migrated here
        return {}


def host_detail(con, ip, since, until, now, step, policy=RetentionPolicy()):
    """One host: totals and rates (as host_usage), bytes per bucket, top peers and latest flows;
    None when it has no traffic in the range."""
    usage = host_usage(con, since, until, now, limit=1, ip=ip, policy=policy)
    if not usage["rows"]:
        return None
    tier = choose_tier(policy, "host", since, now, step)
    step = max(step, tiers.SIZE[tier])
    lo = int(since // step * step)
    sub, args = _source(con, "host", tier, lo, until, "tx_bytes, rx_bytes", "AND ip = ?", [ip])
    history = con.execute(f"SELECT bucket / {step} * {step} AS b, sum(tx_bytes), sum(rx_bytes) FROM ({sub}) "
                          f"GROUP BY b ORDER BY b", args).fetchall()
    peers = _rows(con, """
        SELECT peer, sum(sent) AS tx_bytes, sum(received) AS rx_bytes, count(*) AS flows FROM (
            SELECT resp_h AS peer, orig_bytes AS sent, resp_bytes AS received FROM flows
            WHERE orig_h = :ip AND last_seen >= :lo AND first_seen < :hi
            UNION ALL
            SELECT orig_h, resp_bytes, orig_bytes FROM flows
            WHERE resp_h = :ip AND orig_h != :ip AND last_seen >= :lo AND first_seen < :hi)
        GROUP BY peer ORDER BY tx_bytes + rx_bytes DESC, peer LIMIT 20""", {"ip": ip, "lo": since, "hi": until})
    _, flows = flow_search(con, FlowFilter(since=since, until=until, host=ip), limit=20)
    return {**usage["rows"][0], "resolution": usage["resolution"],
            "history": {"step": step, "buckets": [h[0] for h in history],
                        "tx": [h[1] for h in history], "rx": [h[2] for h in history]},
            "peers": peers, "flows": flows}


def process_usage(con, since, until, now, sort="bytes", descending=True, limit=100, offset=0, group="instance",
                  policy=RetentionPolicy()):
    """{total, resolution, rows} as host_usage, for processes: one row per process (pid + start
    time) with group='instance', per process name with group='name' (pid then null)."""
    tier, lo, hi = _span(policy, "process", since, until, now)
    size = tiers.SIZE[tier]
    key = "p.id" if group == "instance" else "p.name"
    sub, args = _source(con, "process", tier, lo, hi, "process_id, tx_bytes, rx_bytes, tx_packets, rx_packets")
    per = (f"SELECT s.bucket, {key} AS subject, p.name AS name, {'p.pid' if group == 'instance' else 'NULL'} AS pid, "
           f"sum(s.tx_bytes) AS tx, sum(s.rx_bytes) AS rx, sum(s.tx_packets) AS txp, sum(s.rx_packets) AS rxp "
           f"FROM ({sub}) s JOIN processes p ON p.id = s.process_id GROUP BY s.bucket, subject")
    lately = (f"SELECT {key} AS subject, sum(m.tx_bytes + m.rx_bytes) AS recent FROM process_minutes m "
              f"JOIN processes p ON p.id = m.process_id WHERE m.minute >= ? GROUP BY +{key}")
    sql = _PER_SUBJECT.format(per=per, lately=lately, extra="max(name) AS name, max(pid) AS pid,")
    total, rows = _usage(con, sql, args + [_recent_start(now)], size, now, descending, PROCESS_SORTS[sort],
                         limit, offset)
    details = {}
    if group == "instance" and rows:
        ids = [r["subject"] for r in rows]
        details = {r["id"]: r for r in _rows(con, f"""SELECT id, exe, cmdline, username, unit, start_time
                                                      FROM processes WHERE id IN ({','.join('?' * len(ids))})""", ids)}
    out = []
    for r in rows:
        d = details.get(r["subject"], {})
        out.append({"pid": r.pop("pid"), "process": r.pop("name"), "exe": d.get("exe"), "cmdline": d.get("cmdline"),
                    "username": d.get("username"), "unit": d.get("unit"), "start_time": d.get("start_time"),
                    **{k: v for k, v in r.items() if k != "subject"}})
    return {"total": total, "resolution": size, "rows": out}


# ---- flows ----------------------------------------------------------------------------------

_FLOW_COLUMNS = """id, proto, orig_h, orig_p, resp_h, resp_p, orig_bytes, resp_bytes, orig_packets,
    resp_packets, first_seen, last_seen, tcp_flags, iface, orig_pid, orig_process, resp_pid, resp_process"""


def _flow_where(f):
    clauses = ["last_seen >= ?", "first_seen < ?"]
    args = [FAR_PAST if f.since is None else f.since, FAR_FUTURE if f.until is None else f.until]
    if f.host is not None:
        clauses.append("(orig_h = ? OR resp_h = ?)")
        args += [f.host, f.host]
    if f.port is not None:
        clauses.append("(orig_p = ? OR resp_p = ?)")
        args += [f.port, f.port]
    if f.proto is not None:
        clauses.append("proto = ?")
        args.append(f.proto)
    if f.iface is not None:
        clauses.append("iface = ?")
        args.append(f.iface)
    if f.process is not None:
        pattern = "%" + f.process.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        match = "orig_process LIKE ? ESCAPE '\\' OR resp_process LIKE ? ESCAPE '\\'"
        args += [pattern, pattern]
        if f.process.isascii() and f.process.isdigit() and len(f.process) <= 10:   # a pid
            match += " OR orig_pid = ? OR resp_pid = ?"
            args += [int(f.process), int(f.process)]
        clauses.append(f"({match})")
    return " AND ".join(clauses), args


def flow_search(con, flt=FlowFilter(), sort="last_seen", descending=True, limit=100, offset=0):
    """(number of matching flow records, one page as export rows plus `id` and `bytes`). A record
    matches a time range when it was active in it; its counters are the whole record's."""
    where, args = _flow_where(flt)
    count = con.execute(f"SELECT count(*) FROM flows WHERE {where}", args).fetchone()[0]
    return count, list(iter_flows(con, flt, sort, descending, limit, offset))


def iter_flows(con, flt=FlowFilter(), sort="last_seen", descending=True, limit=None, offset=0):
    """The matching flow records as export rows (plus `id` and `bytes`), one at a time from the
    cursor: a CSV of a million flows never sits in memory whole."""
    where, args = _flow_where(flt)
    direction = "DESC" if descending else "ASC"
    page = "" if limit is None else "LIMIT ? OFFSET ?"
    cur = con.execute(f"SELECT {_FLOW_COLUMNS} FROM flows WHERE {where} "
                      f"ORDER BY {FLOW_SORTS[sort]} {direction}, id {direction} {page}",
                      args + ([] if limit is None else [limit, offset]))
    names = [d[0] for d in cur.description]
    for values in cur:
        r = dict(zip(names, values))
        row = flow_row(r)
        row["id"], row["bytes"] = r["id"], r["orig_bytes"] + r["resp_bytes"]
        yield row


# ---- interfaces and traffic types -------------------------------------------------------------

def interface_usage(con, since, until, now, policy=RetentionPolicy()):
    """Each interface: totals in the range (IP, non-IP, undecodable by reason), kernel drops and
    current rates."""
    tier, lo, hi = _span(policy, "iface", since, until, now)
    sub, args = _source(con, "iface", tier, lo, hi, tiers.FAMILIES["iface"].keys[0] + ", " +
                        ", ".join(tiers.IFACE_COUNTERS))
    rows = _rows(con, f"""
        SELECT iface, sum(frames) AS frames, sum(bytes) AS bytes, sum(out_bytes) AS up_bytes,
               sum(bytes - out_bytes) AS down_bytes, sum(ip_bytes) AS ip_bytes, sum(non_ip_frames) AS non_ip_frames,
               sum(non_ip_bytes) AS non_ip_bytes, sum(undecodable_frames) AS undecodable_frames,
               sum(undecodable_bytes) AS undecodable_bytes, min(bucket) AS first_seen, max(bucket) AS last_seen
        FROM ({sub}) GROUP BY iface ORDER BY iface""", args)
    sub, args = _source(con, "drops", tier, lo, hi, "iface, frames")
    drops = dict(con.execute(f"SELECT iface, sum(frames) FROM ({sub}) GROUP BY iface", args).fetchall())
    sub, args = _source(con, "undecodable", tier, lo, hi, "iface, reason, frames, bytes")
    reasons = {}
    for iface, reason, frames, nbytes in con.execute(
            f"SELECT iface, reason, sum(frames), sum(bytes) FROM ({sub}) GROUP BY iface, reason ORDER BY iface, reason",
            args):
        reasons.setdefault(iface, {})[reason] = {"frames": frames, "bytes": nbytes}
    rates = interface_rates(con, now)
    for r in rows:
        r["drops"] = drops.get(r["iface"], 0)
        r["undecodable_reasons"] = reasons.get(r["iface"], {})
        r["up_bps"], r["down_bps"] = rates.get(r["iface"], (0.0, 0.0))
    return {"resolution": tiers.SIZE[tier], "rows": rows}


def traffic_by_class(con, since, until, now, top=8, policy=RetentionPolicy()):
    """Bytes by protocol and service port in the range, the `top` largest classes named and the
    rest summed as 'other'. The service port is the responder's, unless only the originator's
    port is a well-known one (< 1024)."""
    tier, lo, hi = _span(policy, "flow", since, until, now)
    sub, args = _source(con, "flow", tier, lo, hi, "flow_id, orig_bytes, resp_bytes")
    groups = con.execute(f"""
        SELECT f.proto,
               CASE WHEN f.resp_p >= 1024 AND f.orig_p BETWEEN 1 AND 1023 THEN f.orig_p ELSE f.resp_p END AS port,
               sum(m.orig_bytes + m.resp_bytes) FROM ({sub}) m JOIN flows f ON f.id = m.flow_id
        GROUP BY f.proto, port""", args).fetchall()
    classes = {}
    for proto, port, nbytes in groups:
        name = _PROTO_NAMES.get(proto, str(proto))
        service = SERVICES.get((proto, port))
        label = f"{service} ({name}/{port})" if service else f"{name} other" if proto in (6, 17, 132) else name
        classes[label] = classes.get(label, 0) + nbytes
    ordered = sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))
    out = [{"class": label, "bytes": n} for label, n in ordered[:top]]
    rest = sum(n for _, n in ordered[top:])
    if rest:
        out.append({"class": "other", "bytes": rest})
    return {"resolution": tiers.SIZE[tier], "rows": out}
