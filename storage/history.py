"""Traffic history: bytes per time bucket, one series per interface or for the busiest hosts,
process names or applications, plus "others": every subject beyond those summed. Conventions as
in storage/reads.py."""
from storage import tiers
from storage.reads import choose_tier, source

HISTORY_BY = ("interface", "host", "process", "app")

_HISTORY = {
    # by: (tier family, columns read: the series key (for processes its id), up, down)
    "interface": ("iface", "iface AS key, out_bytes AS up, bytes - out_bytes AS down"),
    "host": ("host", "ip AS key, tx_bytes AS up, rx_bytes AS down"),
    "process": ("process", "process_id, tx_bytes AS up, rx_bytes AS down"),
    # an application's bytes have no direction (both sides of its flows): all of them count as `up`
    # here and leave as `bytes`
    "app": ("app", "app AS key, bytes AS up, 0 AS down"),
}
UNDIRECTED = ("app",)


def traffic_history(con, by, since, until, step, now, limit=10, *, policy):
    """Bytes per `step`-second bucket in [since, until) (since aligned to step): one series per
    interface, or for the `limit` hosts / process names / apps with the most bytes in the range,
    and `others` (their sum per bucket beyond the first `limit`, with how many: `count`; null by
    interface). up = sent, down = received; an app has no direction: `bytes` instead of both.
    `step` grows to the tier's bucket when the range is older than every tier with finer buckets
    keeps."""
    family, columns = _HISTORY[by]
    tier = choose_tier(policy, family, since, now, step)
    step = max(step, tiers.SIZE[tier])
    lo = since // step * step
    sub, args = source(con, family, tier, lo, until, columns)
    if by == "process":
        sub = (f"SELECT s.bucket, p.name AS key, s.up, s.down FROM ({sub}) s "
               f"JOIN processes p ON p.id = s.process_id")
    rest = 0
    if by == "interface":
        sql = f"SELECT bucket / {step} * {step} AS b, key, sum(up), sum(down) FROM ({sub}) GROUP BY b, key"
    else:
        # a NULL key is every subject beyond the top `limit` (keys are never NULL themselves)
        sql = (f"WITH src AS ({sub}), keys AS (SELECT key, sum(up + down) AS total FROM src GROUP BY key), "
               f"top AS (SELECT key FROM keys ORDER BY total DESC, key LIMIT ?) "
               f"SELECT bucket / {step} * {step} AS b, CASE WHEN key IN (SELECT key FROM top) THEN key END AS k, "
               f"sum(up), sum(down), (SELECT count(*) FROM keys) - (SELECT count(*) FROM top) "
               f"FROM src GROUP BY b, k")
        args.append(limit)
    buckets = list(range(lo, until, step))
    index = {b: i for i, b in enumerate(buckets)}
    series = {}
    others = {"up": [0] * len(buckets), "down": [0] * len(buckets)}
    for b, key, up, down, *count in con.execute(sql, args):
        if count:
            rest = count[0]
        s = others if key is None else series.setdefault(key, {"key": key, "up": [0] * len(buckets),
                                                                "down": [0] * len(buckets)})
        i = index.get(b)
        if i is not None:
            s["up"][i] += up
            s["down"][i] += down
    for s in (*series.values(), others):
        s["total"] = sum(s["up"]) + sum(s["down"])
        if by in UNDIRECTED:
            s["bytes"] = s.pop("up")
            del s["down"]
    ordered = sorted(series.values(), key=lambda s: (-s["total"], str(s["key"])))
    return {"step": step, "resolution": tiers.SIZE[tier], "buckets": buckets, "series": ordered,
            "others": None if by == "interface" else {"count": rest, **others}}
