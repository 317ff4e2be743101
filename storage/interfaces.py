"""Interfaces: the live view's per-second points, current usage (rates, totals, drops and
attribution coverage), the interfaces page, and interface totals for the exports and tests.
Conventions as in storage/reads.py; on an interface "up" is what this host sent (out_bytes),
"down" the rest."""
from records import IFACE_FIELDS
from storage import agents, tiers
from storage.coverage import attribution_coverage
from storage.reads import FAR_FUTURE, FAR_PAST, dict_rows, finest, rate, source, span

RATE_WINDOW = 5          # seconds of iface_seconds behind a "current" interface rate
COVERAGE_WINDOW = 3600   # seconds of attribution counts behind the coverage figure


def live_seconds_by_agent(con, since_second):
    """Per-second interface points from `since_second` on, of every agent at once (the live
    stream's one poller picks or adds them per client): [(second, agent, iface, up_bytes, down_bytes)]."""
    return con.execute("""
        SELECT second, agent, iface, out_bytes, bytes - out_bytes FROM iface_seconds
        WHERE second >= ? ORDER BY second, iface, agent""",
                       (int(since_second),)).fetchall()


def interface_rates(con, now):
    """{iface: (up bit/s, down bit/s)} over the last RATE_WINDOW whole seconds."""
    end = int(now)
    mine, agent_args = agents.condition()
    return {iface: (rate(up, RATE_WINDOW), rate(down, RATE_WINDOW)) for iface, up, down in con.execute(f"""
        SELECT iface, sum(out_bytes), sum(bytes - out_bytes) FROM iface_seconds
        WHERE second >= ? AND second < ?{mine} GROUP BY iface""", (end - RATE_WINDOW, end, *agent_args))}


def current_usage(con, now, policy):
    """Per interface: current rates, totals over everything kept and kernel drops; attribution
    coverage over the last COVERAGE_WINDOW seconds."""
    rates = interface_rates(con, now)
    sub, args = source(con, "iface", "day", FAR_PAST, FAR_FUTURE, "iface, bytes, out_bytes, frames")
    totals = {r["iface"]: r for r in dict_rows(con, f"""
        SELECT iface, sum(out_bytes) AS up_bytes, sum(bytes - out_bytes) AS down_bytes, sum(bytes) AS bytes,
               sum(frames) AS frames, min(bucket) AS first_seen FROM ({sub}) GROUP BY iface""", args)}
    sub, args = source(con, "drops", "day", FAR_PAST, FAR_FUTURE, "iface, frames")
    drops = dict(con.execute(f"SELECT iface, sum(frames) FROM ({sub}) GROUP BY iface", args).fetchall())
    tier, lo, hi = span(policy, "drops", now - 3600, now + 60, now)
    sub, args = source(con, "drops", tier, lo, hi, "frames")
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


def interface_usage(con, since, until, now, policy):
    """Each interface: totals in the range (IP, non-IP, undecodable by reason), kernel drops and
    current rates."""
    tier, lo, hi = span(policy, "iface", since, until, now)
    sub, args = source(con, "iface", tier, lo, hi, tiers.FAMILIES["iface"].keys[0] + ", " + ", ".join(IFACE_FIELDS))
    rows = dict_rows(con, f"""
        SELECT iface, sum(frames) AS frames, sum(bytes) AS bytes, sum(out_bytes) AS up_bytes,
               sum(bytes - out_bytes) AS down_bytes, sum(ip_bytes) AS ip_bytes, sum(non_ip_frames) AS non_ip_frames,
               sum(non_ip_bytes) AS non_ip_bytes, sum(undecodable_frames) AS undecodable_frames,
               sum(undecodable_bytes) AS undecodable_bytes, min(bucket) AS first_seen, max(bucket) AS last_seen
        FROM ({sub}) GROUP BY iface ORDER BY iface""", args)
    sub, args = source(con, "drops", tier, lo, hi, "iface, frames")
    drops = dict(con.execute(f"SELECT iface, sum(frames) FROM ({sub}) GROUP BY iface", args).fetchall())
    sub, args = source(con, "undecodable", tier, lo, hi, "iface, reason, frames, bytes")
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


# ---- totals over a range, from the finest tier holding each bucket (exports, tests) ----------------

def interface_totals(con, since=None, until=None):
    sub, params = finest(con, "iface", since, until)
    sums = ", ".join(f"sum({c}) AS {c}" for c in IFACE_FIELDS)
    return dict_rows(con, f"SELECT iface, {sums} FROM ({sub}) GROUP BY iface ORDER BY iface", params)


def undecodable_reasons(con, since=None, until=None):
    sub, params = finest(con, "undecodable", since, until)
    return dict_rows(con, f"""
        SELECT iface, reason, sum(frames) AS frames, sum(bytes) AS bytes FROM ({sub})
        GROUP BY iface, reason ORDER BY frames DESC""", params)
