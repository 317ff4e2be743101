"""Traffic history: bytes per time bucket, one series per interface or for the busiest hosts,
process names or applications, plus "others": every subject beyond those summed. Conventions as
in storage/reads.py."""
from storage import tiers
from storage.reads import choose_tier, consistent, source, source_parts
from storage.usage import coarse_source

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


@consistent
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
    if by == "interface":
        sub, args = source(con, family, tier, lo, until, columns)
        rows, rest = con.execute(f"SELECT bucket / {step} * {step} AS b, key, sum(up), sum(down) FROM ({sub}) "
                                 f"GROUP BY b, key", args).fetchall(), 0
    else:
        rows, rest = _top_and_others(con, by, family, tier, lo, until, step, columns, limit, policy, now)
    buckets = list(range(lo, until, step))
    index = {b: i for i, b in enumerate(buckets)}
    series = {}
    others = {"up": [0] * len(buckets), "down": [0] * len(buckets)}
    for b, key, up, down in rows:
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


# where a source is cut to some keys (`{}`: their placeholders)
_KEYS_WHERE = {"host": "AND ip IN ({})", "app": "AND app IN ({})",
               "process": "AND process_id IN (SELECT id FROM processes WHERE name IN ({}))"}


def _top_and_others(con, by, family, tier, lo, until, step, columns, limit, policy, now):
    """([(bucket, key, up, down)], how many keys beyond the top): the `limit` keys with the most
    bytes, ranked from the next coarser tier's whole buckets and the edges (storage/usage.py
    coarse_source); their buckets read alone; a NULL key for the rest, each bucket's total for
    every key less the top keys' (a sum needs no grouping by key, the costly part)."""
    ranked = coarse_source(con, family, tier, lo, until, columns, policy=policy, now=now)
    found = con.execute(f"SELECT key, sum(up + down) AS total, count(*) OVER () FROM ({_keyed(ranked[0], by)}) "
                        f"GROUP BY key ORDER BY total DESC, key LIMIT ?", [*ranked[1], limit]).fetchall()
    if not found:
        return [], 0
    keys = [k for k, _, _ in found]
    sub, args = source(con, family, tier, lo, until, columns, _KEYS_WHERE[by].format(",".join("?" * len(keys))), keys)
    top = con.execute(f"SELECT bucket / {step} * {step} AS b, key, sum(up), sum(down) FROM ({_keyed(sub, by)}) "
                      f"GROUP BY b, key", args).fetchall()
    others = {}
    for sub, args in source_parts(con, family, tier, lo, until, columns):     # one table each: no sorting
        for bucket, up, down in con.execute(f"SELECT bucket, sum(up), sum(down) FROM ({sub}) GROUP BY bucket", args):
            b = others.setdefault(bucket // step * step, [0, 0])
            b[0] += up
            b[1] += down
    for b, _, up, down in top:
        others[b][0] -= up
        others[b][1] -= down
    return top + [(b, None, up, down) for b, (up, down) in others.items() if up or down], found[0][2] - len(keys)


def _keyed(sub, by):
    """A source's rows with `key`: a process's is its name."""
    if by != "process":
        return sub
    return f"SELECT s.bucket, p.name AS key, s.up, s.down FROM ({sub}) s JOIN processes p ON p.id = s.process_id"
