"""The time the database's data covers, and whether a live capture is feeding it: what the API
anchors its default ranges on (a capture imported from years ago is shown at its own time).
Conventions as in storage/reads.py."""
from storage import tiers

_FAMILIES = ("iface", "host")     # every frame counts on an interface; hosts as a fallback


def data_span(con, now, live_window):
    """{first, last, live}: the start of the oldest bucket kept and the end of the newest (epoch
    seconds, None when empty), each at the finest tier that still holds it, and whether live
    capture data exists within `live_window` seconds before `now` (is_live). Every bound is a
    min()/max() on a primary key's first column: a few index probes whatever the size."""
    for name in _FAMILIES:
        family = tiers.FAMILIES[name]
        bounds = [(tier, *con.execute(f"SELECT min({tier}), max({tier}) FROM {table}").fetchone())
                  for tier, table in zip(reversed(tiers.TIERS), reversed(family.tables))]   # day, hour, minute
        bounds = [b for b in bounds if b[1] is not None]
        if bounds:
            return {"first": _refine(bounds, first=True), "last": _refine(bounds, first=False),
                    "live": is_live(con, now, live_window)}
    return {"first": None, "last": None, "live": is_live(con, now, live_window)}


def _refine(bounds, first):
    """The first bucket's start (or the last bucket's end), from the coarsest tier to the finest:
    a finer bound inside the coarser bucket is more exact (a day row starts at midnight though its
    first minute was 22:13), and so is one beyond it (finer rows not rolled up yet); a finer bound
    short of it means the finer rows there were pruned, and the coarser bound stands."""
    edge = size = None
    for tier, lo, hi in bounds:
        value = lo if first else hi + tiers.SIZE[tier]
        if edge is None or (value < edge + size if first else value > edge - size):
            edge = value
        size = tiers.SIZE[tier]
    return edge


def is_live(con, now, window):
    """True when a live capture wrote 1-second points within `window` seconds of `now`, or a live
    run is going on (its sources row not finished: an idle link writes no points)."""
    if con.execute("SELECT 1 FROM iface_seconds WHERE second >= ? LIMIT 1", (int(now - window),)).fetchone():
        return True
    return con.execute("SELECT 1 FROM sources WHERE kind = 'live' AND finished IS NULL LIMIT 1").fetchone() is not None


def anchored_policy(con, policy, now, anchor):
    """`policy` as seen from `anchor` (the end of the data, when no live capture feeds it): each
    tier's age stretched by now - anchor, so a range before the anchor is read from the tier
    that keeps its time; but never below a watermark, where retention has pruned the finer rows
    already (interface minutes, kept longer, by their own)."""
    gap = max(0.0, now - anchor)
    marks = tiers.watermarks(con)

    def age(kept, tier, families):
        start = anchor - kept
        for family in families:
            start = max(start, marks.get((family, tier), start))
        return min(max(0.0, now - start), kept + gap)
    others = [f for f in tiers.FAMILIES if f != "iface"]
    ages = {tier: age(getattr(policy, tier), tier, others if tier == "minute" else tiers.FAMILIES)
            for tier in tiers.TIERS}
    return policy._replace(**ages, flows=policy.flows + gap,
                           iface_minute=age(policy.keep("iface", "minute"), "minute", ["iface"]))
