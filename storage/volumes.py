"""Traffic volumes per day and per month (vnStat's daily and monthly tables) by interface, host,
process name or application, and the 95th-percentile rate of each interface as a carrier bills
it. Conventions as in storage/reads.py; days and months are UTC."""
import datetime
import math

from storage import tiers
from storage.reads import dict_rows, rate, source

VOLUME_BY = ("iface", "host", "process", "app")
PERIODS = ("day", "month")
P95_STEP = 300             # seconds of each rate sample: 5-minute averages, as billed

# by: (family, SQL of subject, sent, received over the source `s`, join)
_BY = {
    "iface": ("iface", "s.iface", "s.out_bytes", "s.bytes - s.out_bytes", ""),
    "host": ("host", "s.ip", "s.tx_bytes", "s.rx_bytes", ""),
    "process": ("process", "p.name", "s.tx_bytes", "s.rx_bytes", "JOIN processes p ON p.id = s.process_id"),
    # an application's bytes have no direction (both sides of its flows)
    "app": ("app", "CASE WHEN s.app = '' THEN 'unknown' ELSE s.app END", "NULL", "NULL", ""),
}
_COLUMNS = {"iface": "iface, bytes, out_bytes", "host": "ip, tx_bytes, rx_bytes",
            "process": "process_id, tx_bytes, rx_bytes", "app": "app, bytes"}


def _period_sql(period):
    if period == "day":
        return "s.bucket"
    return "CAST(strftime('%s', s.bucket, 'unixepoch', 'start of month') AS INTEGER)"


def period_start(t, period):
    """The UTC day or month holding epoch second `t`."""
    day = tiers.floor(t, "day")
    if period == "day":
        return day
    d = datetime.datetime.fromtimestamp(day, datetime.timezone.utc)
    return int(d.replace(day=1).timestamp())


def volumes(con, by, period, since, until, limit=10):
    """{rows: [{period, subject, tx_bytes, rx_bytes, bytes}]}: per UTC day or month from since's
    period to until (exclusive), for the `limit` subjects with the most bytes over the range,
    oldest period first, then most bytes first. From the day tier, read exactly (a day still
    pending from its hours and minutes); tx/rx are null for applications."""
    family, subject, tx, rx, join = _BY[by]
    lo, hi = period_start(since, period), math.ceil(until)
    sub, args = source(con, family, "day", lo, hi, _COLUMNS[by])
    total = "s.bytes" if by == "app" else f"{tx} + {rx}"
    rows = dict_rows(con, f"""
        WITH per AS (SELECT {_period_sql(period)} AS period, {subject} AS subject, sum({tx}) AS tx_bytes,
                            sum({rx}) AS rx_bytes, sum({total}) AS bytes
                     FROM ({sub}) s {join} GROUP BY period, subject),
             top AS (SELECT subject FROM per GROUP BY subject ORDER BY sum(bytes) DESC, subject LIMIT ?)
        SELECT per.* FROM per JOIN top USING (subject) ORDER BY period, bytes DESC, subject""", args + [limit])
    return {"rows": rows}


def interface_percentiles(con, period, since, until, policy, now, volume_rows=()):
    """Per UTC day or month and interface: the 95th percentile of the 5-minute average rates,
    in (received), out (sent) and the higher of the two (what most carriers bill), in bit/s.
    Samples are the 5-minute slots from the interface's first to its last slot with traffic in
    the period (slots in between without traffic count as 0 bit/s); only interface minutes feed
    them, kept `retention_iface_minutes` days: an older period has fewer samples or none, and says
    so in `samples` beside `expected` (the slots of the whole period, up to now). A period and
    interface of `volume_rows` without any sample left has a row with null rates, 0 samples."""
    lo, hi = period_start(since, period), math.ceil(until)
    held = max(lo, tiers.floor(now - policy.keep("iface", "minute"), "minute"))
    sub, args = source(con, "iface", "minute", held, hi, "iface, bytes, out_bytes")
    slots = con.execute(f"""
        SELECT bucket / {P95_STEP} * {P95_STEP} AS slot, iface, sum(bytes - out_bytes), sum(out_bytes)
        FROM ({sub}) GROUP BY slot, iface ORDER BY iface, slot""", args).fetchall()
    per = {}
    for slot, iface, down, up in slots:
        per.setdefault((period_start(slot, period), iface), {})[slot] = (down, up)
    out = []
    for (start, iface), by_slot in sorted(per.items()):
        first, last = min(by_slot), max(by_slot)
        samples = [by_slot.get(t, (0, 0)) for t in range(first, last + P95_STEP, P95_STEP)]
        end = min(_period_end(start, period), max(now, last + P95_STEP))
        down = _p95([d for d, _ in samples])
        up = _p95([u for _, u in samples])
        out.append({"period": start, "iface": iface, "in_bps": rate(down, P95_STEP), "out_bps": rate(up, P95_STEP),
                    "bps": rate(max(down, up), P95_STEP), "samples": len(samples),
                    "expected": max(0, math.ceil((end - start) / P95_STEP)), "resolution": P95_STEP,
                    "first_sample": first, "last_sample": last})
    for start, iface in sorted({(r["period"], r["subject"]) for r in volume_rows} - set(per)):
        end = min(_period_end(start, period), now)
        out.append({"period": start, "iface": iface, "in_bps": None, "out_bps": None, "bps": None, "samples": 0,
                    "expected": max(0, math.ceil((end - start) / P95_STEP)), "resolution": P95_STEP,
                    "first_sample": None, "last_sample": None})
    return sorted(out, key=lambda r: (r["period"], r["iface"]))


def _period_end(start, period):
    if period == "day":
        return start + tiers.DAY
    return period_start(start + 32 * tiers.DAY, "month")


def _p95(values):
    """The 95th percentile as billed: sorted, the top 5% of samples dropped, the highest left
    (the sample at rank ceil(0.95 n))."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
