"""The alert log and all alert SQL: what rules measure (per-bucket sources, read through
storage/reads.py), the alerts table (open, peak, close, acknowledge, list, export) and rules saved
through the API. Schema: storage/alerts.sql."""
import json
import os
import sqlite3
from datetime import datetime, timezone

from storage import coverage, health, postgres
from storage.db import SCHEMA_VERSION, DatabaseError, connect, immediate
from storage.reads import source
from storage.tiers import floor

# What a rule kind and scope reads: per bucket, columns (s: subject, a, b) of a tier family.
# bytes/rate: a, b = tx bytes, rx bytes; drops: dropped frames, captured frames; coverage:
# attributed bytes, all bytes of this host's own traffic (storage/coverage.py).
_TRAFFIC = {
    "host": ("host", "ip AS s, tx_bytes AS a, rx_bytes AS b"),
    "process": ("process", "process_id, tx_bytes AS a, rx_bytes AS b"),
    "interface": ("iface", "iface AS s, out_bytes AS a, bytes - out_bytes AS b"),
    "all": ("iface", "'all' AS s, out_bytes AS a, bytes - out_bytes AS b"),
}
# rtt: a, b = the flows' RTTs summed in ms (each at its histogram bin's middle), flows with an RTT;
# retransmits: retransmitted segments, data segments.
_HEALTH = {"host": ("host_health", "ip AS s"), "process": ("process_health", "process_id"),
           "all": ("app_health", "'all' AS s")}
_RTT_MS = (" + ".join(f"{column} * {health.bin_value(k)}" for k, column in enumerate(health.HIST))
           + " AS a, rtt_flows AS b")
_SECONDS = {   # sub-minute rate rules read the 1-second interface points
    "interface": "SELECT second AS bucket, iface AS s, out_bytes AS a, bytes - out_bytes AS b FROM iface_seconds "
                 "WHERE second >= ? AND second < ?",
    "all": "SELECT second AS bucket, 'all' AS s, out_bytes AS a, bytes - out_bytes AS b FROM iface_seconds "
           "WHERE second >= ? AND second < ?",
}


def _measure(con, kind, scope, start, end, seconds=False):
    """(SQL, args): rows (bucket, s, a, b) of what a rule of `kind` and `scope` reads, for the
    minutes (with `seconds`: the seconds) in [start, end)."""
    start, end = int(start), int(end)
    if kind in ("bytes", "rate"):
        if seconds:
            return _SECONDS[scope], [start, end]
        family, columns = _TRAFFIC[scope]
        sub, args = source(con, family, "minute", start, end, columns)
        if scope == "process":
            sub = (f"SELECT m.bucket, p.name AS s, m.a, m.b FROM ({sub}) m "
                   f"JOIN processes p ON p.id = m.process_id")
        return sub, args
    if kind == "drops":
        subject = "iface" if scope == "interface" else "'all'"
        dropped, args = source(con, "drops", "minute", start, end, f"{subject} AS s, frames AS a, 0 AS b")
        captured, more = source(con, "iface", "minute", start, end, f"{subject}, 0, frames")
        return f"{dropped} UNION ALL {captured}", args + more
    if kind == "coverage":
        return source(con, "attribution", "minute", start, end,
                      f"'all' AS s, {coverage.ATTRIBUTED_BYTES} AS a, {coverage.OWN_BYTES} AS b")
    if kind in ("rtt", "retransmits"):          # TCP health (storage/health.py); 'all' reads each flow once
        family, subject = _HEALTH[scope]
        values = _RTT_MS if kind == "rtt" else "retransmits AS a, data_segments AS b"
        sub, args = source(con, family, "minute", start, end, f"{subject}, {values}")
        if scope == "process":
            sub = f"SELECT m.bucket, p.name AS s, m.a, m.b FROM ({sub}) m JOIN processes p ON p.id = m.process_id"
        return sub, args
    raise ValueError(f"no measure source for {kind} rules")


def window_totals(con, kind, scope, start, end, seconds=False):
    """{subject: (v1, v2)} summed over buckets in [start, end)."""
    sub, args = _measure(con, kind, scope, start, end, seconds)
    sql = f"SELECT s, sum(a), sum(b) FROM ({sub}) GROUP BY s"
    return {s: (a, b) for s, a, b in con.execute(sql, args)}


def samples(con, kind, scope, start, end):
    """(minute, subject, v1, v2) for minutes in [start, end), oldest first."""
    sub, args = _measure(con, kind, scope, start, end)
    sql = f"SELECT bucket, s, sum(a), sum(b) FROM ({sub}) GROUP BY bucket, s ORDER BY bucket"
    return con.execute(sql, args)


# ---- new devices --------------------------------------------------------------------------------

def seen_before(con, ips, minute):
    """The addresses of `ips` with traffic in any tier before `minute`."""
    seen = set()
    for ip in ips:
        if (con.execute("SELECT 1 FROM host_minutes WHERE ip = ? AND minute < ? LIMIT 1", (ip, minute)).fetchone()
                or con.execute("SELECT 1 FROM host_hours WHERE ip = ? AND hour < ? LIMIT 1",
                               (ip, floor(minute, "hour"))).fetchone()
                or con.execute("SELECT 1 FROM host_days WHERE ip = ? AND day < ? LIMIT 1",
                               (ip, floor(minute, "day"))).fetchone()):
            seen.add(ip)
    return seen


def first_minutes(con, start, end):
    """[(ip, first minute with traffic)] for addresses seen in [start, end), by first minute."""
    sub, args = source(con, "host", "minute", int(start), int(end), "ip")
    return con.execute(f"SELECT ip, min(bucket) AS first FROM ({sub}) GROUP BY ip ORDER BY first, ip", args).fetchall()


def first_live_start(con):
    """When live capture first started on this database (its oldest live source), None if never."""
    return con.execute("SELECT min(started) FROM sources WHERE kind = 'live'").fetchone()[0]


def earliest_traffic(con):
    """Start of the oldest bucket holding host traffic in any tier, None on an empty database."""
    times = [con.execute(f"SELECT min({c}) FROM {t}").fetchone()[0]
             for t, c in (("host_minutes", "minute"), ("host_hours", "hour"), ("host_days", "day"))]
    times = [t for t in times if t is not None]
    return min(times) if times else None


# ---- the alerts table ---------------------------------------------------------------------------

_COLUMNS = ("id", "rule", "kind", "scope", "subject", "origin", "state", "opened", "closed", "value", "peak",
            "threshold", "unit", "window", "message", "acked", "acked_by", "severity")
SEVERITIES = ("info", "warning", "critical")     # as alerts/rules.py, least urgent first (storage imports no alerts)
# A read-only reader (run.py serve, export) may meet a database from before schema 6, which the
# collector has not updated yet: its alerts read with their kind's severity, as the update gives them.
_SEVERITY_BEFORE_6 = ("CASE kind WHEN 'storage' THEN 'critical' WHEN 'new_device' THEN 'info' "
                      "WHEN 'coverage' THEN 'info' ELSE 'warning' END")


def _select(con):
    """The column list of the alerts table for SELECT (see _SEVERITY_BEFORE_6)."""
    if any(row[1] == "severity" for row in con.execute("PRAGMA table_info(alerts)")):
        return ", ".join(_COLUMNS)
    return ", ".join(_COLUMNS[:-1]) + f", {_SEVERITY_BEFORE_6} AS severity"


def open_alert(con, rule, kind, scope, subject, origin, opened, value, threshold, unit, window, message,
               severity="warning"):
    """Inserts an open alert; if one is already open for (rule, subject, origin) returns its id."""
    with immediate(con):
        row = con.execute("SELECT id FROM alerts WHERE rule = ? AND subject = ? AND origin = ? AND state = 'open'",
                          (rule, subject, origin)).fetchone()
        if row:
            return row[0]
        return con.execute(
            "INSERT INTO alerts (rule, kind, scope, subject, origin, state, opened, value, peak, threshold, unit, "
            "window, message, severity) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (rule, kind, scope, subject, origin, opened, value, value, threshold, unit, window, message,
             severity)).fetchone()[0]


def update_peak(con, rule, subject, origin, peak):
    with immediate(con):
        con.execute("UPDATE alerts SET peak = ? WHERE rule = ? AND subject = ? AND origin = ? AND state = 'open'",
                    (peak, rule, subject, origin))


def close_alert(con, rule, subject, origin, closed):
    """Closes the open alert of (rule, subject, origin); returns its id, None if none was open."""
    with immediate(con):
        row = con.execute("SELECT id FROM alerts WHERE rule = ? AND subject = ? AND origin = ? AND state = 'open'",
                          (rule, subject, origin)).fetchone()
        if row:
            con.execute("UPDATE alerts SET state = 'closed', closed = ? WHERE id = ?", (max(closed, 0), row[0]))
        return row[0] if row else None


def open_alerts(con, origin="live"):
    return [_as_dict(r) for r in con.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM alerts WHERE state = 'open' AND origin = ? ORDER BY id", (origin,))]


def acknowledge(con, alert_id, now, by=""):
    """Marks an alert acknowledged (wall time `now`). An instant alert (a new device) has no level
    to fall back from: acknowledging it also closes it. Returns False for an unknown id."""
    with immediate(con):
        changed = con.execute("UPDATE alerts SET acked = ?, acked_by = ? WHERE id = ? AND acked IS NULL",
                              (now, by, alert_id)).rowcount
        con.execute("UPDATE alerts SET state = 'closed', closed = ? WHERE id = ? AND state = 'open' "
                    "AND kind = 'new_device'", (now, alert_id))
        return bool(changed) or con.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is not None


def alert_list(con, state=None, since=None, until=None, limit=1000, severity=None):
    """Alerts newest first as dicts (columns of alerts.sql). state: 'open', 'closed' or None for
    all; [since, until) selects alerts that were open at some time in the range; severity: None,
    or the severities (a collection of SEVERITIES) to keep."""
    where, args = [], []
    if state is not None:
        where.append("state = ?")
        args.append(state)
    columns = _select(con)
    if severity is not None:
        expression = "severity" if columns == ", ".join(_COLUMNS) else _SEVERITY_BEFORE_6
        where.append(f"{expression} IN ({', '.join('?' * len(severity))})" if severity else "1 = 0")
        args.extend(severity)
    if since is not None:
        where.append("(closed IS NULL OR closed >= ?)")
        args.append(since)
    if until is not None:
        where.append("opened < ?")
        args.append(until)
    sql = f"SELECT {columns} FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
    try:
        sql += " ORDER BY opened DESC, id DESC" + (" LIMIT ?" if limit >= 0 else "")   # -1: all
        return [_as_dict(r) for r in con.execute(sql, args + [limit] if limit >= 0 else args)]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):       # a database from before alerts existed (schema 1)
            return []
        raise


def alert_by_id(con, alert_id):
    """One alert as a dict (columns of alerts.sql), None for an unknown id."""
    row = con.execute(f"SELECT {_select(con)} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    return _as_dict(row) if row else None


def alert_snapshot(con, limit=20):
    """What the dashboard's live stream says about alerts: the newest alert id (None: none yet),
    how many are open, and the `limit` newest open ones (dicts, newest first). Small indexed reads:
    the stream's poller runs this every second."""
    try:
        latest = con.execute("SELECT max(id) FROM alerts").fetchone()[0]
        count = con.execute("SELECT count(*) FROM alerts WHERE state = 'open'").fetchone()[0]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {"latest": None, "open_count": 0, "open": []}
        raise
    rows = alert_list(con, state="open", limit=limit) if count else []
    return {"latest": latest, "open_count": count, "open": rows}


ALERT_FIELDS = (
    ("id", "alert number"),
    ("rule", "name of the rule that fired (docs/ALERTS.md)"),
    ("kind", "bytes, rate, new_device, drops, coverage or storage"),
    ("scope", "host, process, interface or all"),
    ("subject", "the address, process name or interface the alert is about ('all' for everything)"),
    ("state", "open or closed"),
    ("opened", "when the limit was crossed, ISO 8601 UTC (packet time; an imported capture's own time)"),
    ("closed", "when the value fell back past the hysteresis margin, ISO 8601 UTC; empty while open"),
    ("value", "the measured value when the limit was crossed, in `unit`"),
    ("peak", "the worst value while open (highest; lowest for coverage)"),
    ("threshold", "the rule's limit, in `unit`"),
    ("unit", "bytes, bit/s, share (0..1) or empty"),
    ("window_seconds", "seconds the value is measured over"),
    ("origin", "live, or import when the rules ran over an imported capture"),
    ("acknowledged", "when an administrator acknowledged it, ISO 8601 UTC; empty if not"),
    ("acknowledged_by", "who acknowledged it"),
    ("message", "one line saying what happened"),
    ("severity", "the rule's severity: info, warning or critical"),
)


def alert_rows_for_export(con, since=None, until=None, state=None, limit=-1, severity=None):
    """Alerts open at some time in [since, until), oldest first, with the ALERT_FIELDS keys;
    `state`, `limit` (the newest N; -1: all) and `severity` as for alert_list."""
    rows = []
    for a in reversed(alert_list(con, state=state, since=since, until=until, limit=limit, severity=severity)):
        rows.append({"id": a["id"], "rule": a["rule"], "kind": a["kind"], "scope": a["scope"],
                     "subject": a["subject"], "state": a["state"], "opened": _iso(a["opened"]),
                     "closed": _iso(a["closed"]), "value": a["value"], "peak": a["peak"],
                     "threshold": a["threshold"], "unit": a["unit"], "window_seconds": a["window"],
                     "origin": a["origin"], "acknowledged": _iso(a["acked"]), "acknowledged_by": a["acked_by"],
                     "message": a["message"], "severity": a["severity"]})
    return rows


def _iso(ts):
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _as_dict(row):
    return dict(zip(_COLUMNS, row))


# ---- rules saved through the API ----------------------------------------------------------------

def changes_connection(path, wait=5.0):
    """The read-write connection of the web side's alert changes (web/changes.py). It never
    creates or migrates the database (the collector does): DatabaseError if the file is missing
    or its schema is not this version's. A change waits up to `wait` seconds for the collector's
    writer to let go of the write lock, then gives up (sqlite3.OperationalError "database is
    locked"), so a request is never held long. Reads once, so its -wal and -shm are open before
    the web process gives up root."""
    if postgres.is_url(path):     # the server waits for locks; the schema is the collector's to make
        return connect(path, migrate=False)
    from urllib.request import pathname2url   # here: urllib.request (http, ssl, email) costs an import 20 ms
    uri = f"file:{pathname2url(os.path.abspath(path))}?mode=rw"
    try:
        con = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.DatabaseError as e:
        raise DatabaseError(f"{path}: {e}") from None
    try:
        con.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise DatabaseError(f"{path}: schema version {version}, not {SCHEMA_VERSION} (the collector updates it)")
        alert_snapshot(con)
    except (sqlite3.DatabaseError, DatabaseError):
        con.close()
        raise
    return con


def rule_overrides(con):
    """Rule dicts saved through the API, oldest change first."""
    try:
        return [json.loads(body) for (body,) in con.execute("SELECT body FROM alert_rules ORDER BY changed, name")]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


def save_rule(con, rule_dict, now):
    """Stores a rule (validated by alerts.config.validate_rule first) over the file's and defaults."""
    with immediate(con):
        con.execute("INSERT INTO alert_rules (name, body, changed) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                    "SET body = excluded.body, changed = excluded.changed",
                    (rule_dict["name"], json.dumps(rule_dict, sort_keys=True), now))


def forget_rule(con, name):
    """Drops the API's version of a rule: the file's or built-in one applies again."""
    with immediate(con):
        return con.execute("DELETE FROM alert_rules WHERE name = ?", (name,)).rowcount > 0



# ---- delivery status (e-mail, webhook) ----------------------------------------------------------

DELIVERY_COUNTS = ("delivered", "failed", "retries", "dropped", "filtered", "waiting")


def save_delivery_status(con, channel, target, counts, last_error, last_error_at, started, now):
    """Writes one channel's counts (DELIVERY_COUNTS keys) since the collector `started`."""
    with immediate(con):
        con.execute(
            "INSERT INTO alert_delivery (channel, target, delivered, failed, retries, dropped, filtered, waiting, "
            "last_error, last_error_at, started, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (channel) DO UPDATE SET target = excluded.target, delivered = excluded.delivered, "
            "failed = excluded.failed, retries = excluded.retries, dropped = excluded.dropped, "
            "filtered = excluded.filtered, waiting = excluded.waiting, last_error = excluded.last_error, "
            "last_error_at = excluded.last_error_at, started = excluded.started, updated = excluded.updated",
            (channel, target, *(int(counts[k]) for k in DELIVERY_COUNTS), last_error, last_error_at, started, now))


def clear_delivery_status(con):
    """Forgets the counts of a collector run before (a channel no longer configured included)."""
    with immediate(con):
        con.execute("DELETE FROM alert_delivery")


def delivery_status(con):
    """[{channel, target, delivered, failed, retries, dropped, filtered, waiting, last_error,
    last_error_at, started, updated}] by channel; [] before the collector wrote any."""
    columns = ("channel", "target", *DELIVERY_COUNTS, "last_error", "last_error_at", "started", "updated")
    try:
        rows = con.execute(f"SELECT {', '.join(columns)} FROM alert_delivery ORDER BY channel").fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):       # a database from before schema 6
            return []
        raise
    return [dict(zip(columns, r)) for r in rows]
