"""Traffic history: bytes per time bucket, one series per interface or for the busiest hosts or
process names. Conventions as in storage/reads.py."""
from storage import tiers
from storage.reads import choose_tier, source

HISTORY_BY = ("interface", "host", "process")

_HISTORY = {
    # by: (tier family, columns read: the series key (for processes its id), up, down)
    "interface": ("iface", "iface AS key, out_bytes AS up, bytes - out_bytes AS down"),
    "host": ("host", "ip AS key, tx_bytes AS up, rx_bytes AS down"),
    "process": ("process", "process_id, tx_bytes AS up, rx_bytes AS down"),
}


def traffic_history(con, by, since, until, step, now, limit=10, *, policy):
    """Bytes per `step`-second bucket in [since, until) (since aligned to step): one series per
    interface, or for the `limit` hosts / process names with the most bytes in the range.
    up = sent, down = received. `step` grows to the tier's bucket when the range is older than
    every tier with finer buckets keeps."""
    family, columns = _HISTORY[by]
    tier = choose_tier(policy, family, since, now, step)
    step = max(step, tiers.SIZE[tier])
    lo = since // step * step
    sub, args = source(con, family, tier, lo, until, columns)
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
