"""Attribution coverage: the share of this host's own bytes charged to a process, and why the
rest was not. The rule is written once, here (ATTRIBUTED_BYTES, OWN_BYTES); the dashboard
(`attribution_coverage`), the export side (storage.processes) and the coverage alert rule
(storage.alert_log) all sum it, each over its own range."""
from typing import NamedTuple

from records import ATTRIBUTED, NO_LOCAL_ENDPOINT
from storage.reads import source, span

# Of one attribution row (reason, bytes): the bytes charged to a process, and the bytes of this
# host's own traffic. Traffic with no local side (forwarded, broadcast, mirrored) is not this
# host's: it is in neither.
ATTRIBUTED_BYTES = f"CASE WHEN reason = '{ATTRIBUTED}' THEN bytes ELSE 0 END"
OWN_BYTES = f"CASE WHEN reason = '{NO_LOCAL_ENDPOINT}' THEN 0 ELSE bytes END"


class Coverage(NamedTuple):
    attributed: int      # bytes charged to a process
    own: int             # bytes of this host's own traffic, attributed or not
    reasons: dict        # reason (ATTRIBUTED included) -> (bytes, packets), by reason name

    @property
    def ratio(self):
        return self.attributed / self.own if self.own else None


def read(con, sub, args):
    """Coverage over an attribution row source `sub` (storage.reads; columns reason, bytes, packets)."""
    attributed = own = 0
    reasons = {}
    for reason, nbytes, npackets, a, b in con.execute(
            f"SELECT reason, sum(bytes), sum(packets), sum({ATTRIBUTED_BYTES}), sum({OWN_BYTES}) FROM ({sub}) "
            f"GROUP BY reason ORDER BY reason", args):
        reasons[reason] = (nbytes, npackets)
        attributed += a
        own += b
    return Coverage(attributed, own, reasons)


def attribution_coverage(con, since, until, now, policy):
    """Share of this host's own bytes charged to a process, with the reasons for the rest (bytes
    per reason; no_local_endpoint is listed but is not part of the share)."""
    tier, lo, hi = span(policy, "attribution", since, until, now)
    c = read(con, *source(con, "attribution", tier, lo, hi, "reason, bytes, packets"))
    return {"since": lo, "attributed_bytes": c.attributed, "unattributed_bytes": c.own - c.attributed,
            "ratio": round(c.ratio, 4) if c.own else None,
            "reasons": {reason: nbytes for reason, (nbytes, _) in c.reasons.items() if reason != ATTRIBUTED}}
