"""What a forecast is made from: one subject's bytes per hour, from the hour tier (pending hours
summed from their minutes, as every read does: storage/reads.py). Subjects: `all` (every
interface), `iface:NAME`, `host:ADDRESS`, `class:NAME` (a traffic class, docs/NAMES.md)."""
from storage import tiers
from storage.db import immediate
from storage.reads import consistent, source
from storage.span import data_span

# kind: (tier family, the bytes column, the filter of one subject)
SUBJECTS = {
    "all": ("iface", "bytes", ""),
    "iface": ("iface", "bytes", "AND iface = ?"),
    "host": ("host", "tx_bytes + rx_bytes", "AND ip = ?"),
    "class": ("app", "bytes", "AND traffic_class = ?"),
}


def parse_subject(text):
    """(kind, key) of `all`, `iface:NAME`, `host:ADDRESS` or `class:NAME`; ValueError (one line) else."""
    kind, _, key = text.partition(":")
    if kind not in SUBJECTS or (kind == "all") != (key == "") or len(key) > 256:
        raise ValueError(f"subject {text[:80]!r}: use all, iface:NAME, host:ADDRESS or class:NAME")
    return kind, key


def history_end(con, now, live_window):
    """The whole hour a forecast's history ends at: the one of `now`, or without live capture
    within `live_window` seconds (an imported capture) the data's last whole hour, as the
    dashboard's ranges end where the data does: the hours since are not quiet ones."""
    span = data_span(con, now, live_window)
    if not span["live"] and span["last"] is not None:
        now = min(now, span["last"])
    return int(now // 3600 * 3600)


@consistent
def hourly_bytes(con, kind, key, until):
    """(start, [(hour, bytes)]) of the subject's hours before `until` that the hour tier (or its
    pending minutes) holds, from the first hour it holds any traffic of this family; start None
    when there is none."""
    family, column, where = SUBJECTS[kind]
    hour_table, minute_table = tiers.table(tiers.FAMILIES[family], "hour"), tiers.table(tiers.FAMILIES[family], "minute")
    first = con.execute(f"SELECT min(b) FROM (SELECT min(hour) AS b FROM {hour_table} "
                        f"UNION ALL SELECT min(minute) / 3600 * 3600 FROM {minute_table})").fetchone()[0]
    if first is None or first >= until:
        return None, []
    args = [key] if where else []
    sub, sub_args = source(con, family, "hour", first, until, f"{column} AS b", where, args)
    rows = con.execute(f"SELECT bucket, sum(b) FROM ({sub}) GROUP BY bucket ORDER BY bucket", sub_args).fetchall()
    return first, rows


# ---- stored forecasts (schema 13): made off the request path by web/forecasts.py ----------------

TOP_HOSTS = 20          # hosts forecast at each refresh: the busiest of the last week


def subjects(con, until, top_hosts=TOP_HOSTS):
    """What a refresh forecasts: `all`, every interface, every traffic class, and the `top_hosts`
    busiest hosts of the week before `until` (from the hour tier and its pending minutes)."""
    found = ["all"]
    for kind, family, column in (("iface", "iface", "iface"), ("class", "app", "traffic_class")):
        sub, args = source(con, family, "hour", until - 7 * 86400, until, f"{column} AS k")
        found += [f"{kind}:{k}" for (k,) in con.execute(f"SELECT DISTINCT k FROM ({sub}) ORDER BY k", args) if k]
    sub, args = source(con, "host", "hour", until - 7 * 86400, until, "ip, tx_bytes + rx_bytes AS b")
    found += [f"host:{ip}" for (ip,) in con.execute(
        f"SELECT ip FROM ({sub}) GROUP BY ip ORDER BY sum(b) DESC, ip LIMIT ?", [*args, top_hosts])]
    return found


def save(con, forecasts):
    """Replaces the stored forecasts [(subject, horizon, agent, made, history_hours, needed_hours,
    points JSON)] in one transaction."""
    with immediate(con):
        con.executemany("INSERT INTO forecasts (subject, horizon, agent, made, history_hours, needed_hours, points) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subject, horizon, agent) DO UPDATE SET "
                        "made = excluded.made, history_hours = excluded.history_hours, "
                        "needed_hours = excluded.needed_hours, points = excluded.points", forecasts)


def stored(con, subject, horizon, agent=""):
    """{made, history_hours, needed_hours, points (JSON text)} of the stored forecast, or None."""
    row = con.execute("SELECT made, history_hours, needed_hours, points FROM forecasts "
                      "WHERE subject = ? AND horizon = ? AND agent = ?", (subject, horizon, agent)).fetchone()
    return None if row is None else dict(zip(("made", "history_hours", "needed_hours", "points"), row))
