"""Alert rules and their evaluation. Pure: values in, events out; no clock, no SQL.

A rule measures one number per subject (a host's bytes in the last hour, an interface's drop
share...) and compares it with its threshold. `Tracker` keeps which subjects have an open alert:
one per rule and subject (de-duplication); it opens when the value crosses the threshold and
closes only when the value falls back past the threshold by the hysteresis margin, so a value
hovering at the limit does not flap.
"""
import ipaddress
from dataclasses import dataclass, field
from typing import NamedTuple

KINDS = ("bytes", "rate", "new_device", "drops", "coverage", "rtt", "retransmits")
SCOPES = ("host", "process", "interface", "all")
DIRECTIONS = ("both", "tx", "rx")
SEVERITIES = ("info", "warning", "critical")      # least to most urgent (e-mail's smtp_min_severity compares)
UNITS = {"bytes": "bytes", "rate": "bit/s", "new_device": "", "drops": "share", "coverage": "share",
         "storage": "", "rtt": "ms", "retransmits": "share"}
SCOPES_OF = {"bytes": SCOPES, "rate": SCOPES, "new_device": ("host",), "drops": ("interface", "all"),
             "coverage": ("all",), "rtt": ("host", "process", "all"), "retransmits": ("host", "process", "all")}
# Shares need enough traffic to mean something: 3 drops among 5 frames is not a 60 % loss.
MIN_FRAMES_FOR_DROPS = 1000
MIN_BYTES_FOR_COVERAGE = 1_000_000
MIN_SEGMENTS_FOR_RETRANSMITS = 100     # TCP health (docs/HEALTH.md): 2 retransmissions among 5 segments say little


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str                  # one of KINDS
    scope: str = "host"        # one of SCOPES_OF[kind]
    threshold: float = 0.0     # bytes; bit/s; share 0..1 (drops above it, coverage below it); unused for new_device
    window: int = 3600         # seconds measured over (new_device: history needed before anything counts as new)
    direction: str = "both"    # bytes, rate: count what the subject sent (tx), received (rx) or both
    match: tuple = ()          # subjects the rule is limited to: addresses or CIDR networks for hosts,
                               # names for processes and interfaces; empty: every subject
    hysteresis: float = 0.1    # closes when the value is back below threshold*(1-h) (coverage: above *(1+h))
    enabled: bool = True
    severity: str = "warning"  # one of SEVERITIES; alerts/config.py gives each kind its default
    networks: tuple = field(default=(), compare=False, repr=False)   # parsed `match` for hosts

    def __post_init__(self):
        if self.scope == "host":
            nets = []
            for m in self.match:
                nets.append(ipaddress.ip_network(m, strict=False))
            object.__setattr__(self, "networks", tuple(nets))

    @property
    def unit(self):
        return UNITS[self.kind]

    @property
    def below(self):
        """True when crossing means falling under the threshold."""
        return self.kind == "coverage"

    @property
    def instant(self):
        """An event rather than a level: stays open until acknowledged."""
        return self.kind == "new_device"

    def matches(self, subject):
        if not self.match:
            return True
        if self.scope == "host":
            try:
                address = ipaddress.ip_address(subject)
            except ValueError:
                return False
            return any(address in net for net in self.networks)
        return subject in self.match

    def crossed(self, value):
        return value is not None and (value < self.threshold if self.below else value >= self.threshold)

    def cleared(self, value):
        if value is None:
            return True
        if self.below:
            return value >= self.threshold * (1 + self.hysteresis)
        return value < self.threshold * (1 - self.hysteresis)

    def worse(self, value, than):
        return value < than if self.below else value > than


def measure(rule, values, span):
    """The rule's number from summed `values` over `span` seconds, or None when there is too
    little traffic to tell. values: bytes/rate (tx_bytes, rx_bytes); drops (dropped, captured
    frames); coverage (attributed bytes, all bytes)."""
    if rule.kind in ("bytes", "rate"):
        tx, rx = values
        total = tx if rule.direction == "tx" else rx if rule.direction == "rx" else tx + rx
        return total if rule.kind == "bytes" else total * 8 / max(span, 1)
    if rule.kind == "drops":
        dropped, captured = values
        seen = dropped + captured
        return dropped / seen if seen >= MIN_FRAMES_FOR_DROPS else None
    if rule.kind == "coverage":
        attributed, total = values
        return attributed / total if total >= MIN_BYTES_FOR_COVERAGE else None
    if rule.kind == "rtt":                 # (sum of the flows' RTTs in ms, flows with an RTT): their mean
        total_ms, flows = values
        return total_ms / flows if flows else None
    if rule.kind == "retransmits":         # (retransmitted segments, data segments): the rate
        retransmitted, segments = values
        return retransmitted / segments if segments >= MIN_SEGMENTS_FOR_RETRANSMITS else None
    raise ValueError(f"rule kind {rule.kind!r} has no measure")


class Event(NamedTuple):
    action: str          # 'opened', 'closed', or 'peak' (an open alert got worse: stored, not announced)
    rule: Rule
    subject: str
    time: float
    value: float | None


class Tracker:
    """One rule's open alerts: {subject: peak}. `check` turns measured values into events."""

    def __init__(self, rule, open_peaks=None):
        self.rule = rule
        self.open = dict(open_peaks or {})

    def check(self, now, values):
        """values: {subject: value or None} measured at `now`. Subjects absent from `values` are
        taken as back to normal (no traffic). Instant rules only open."""
        rule, events = self.rule, []
        for subject, value in values.items():
            if not rule.matches(subject):
                continue
            peak = self.open.get(subject)
            if peak is None:
                if rule.instant or rule.crossed(value):
                    self.open[subject] = value
                    events.append(Event("opened", rule, subject, now, value))
            elif value is not None and not rule.instant and rule.worse(value, peak):
                self.open[subject] = value
                events.append(Event("peak", rule, subject, now, value))
        if not rule.instant:
            for subject in [s for s in self.open if rule.cleared(values.get(s))]:
                del self.open[subject]
                events.append(Event("closed", rule, subject, now, values.get(subject)))
        return events

    def close_all(self, now):
        events = [Event("closed", self.rule, s, now, None) for s in self.open]
        self.open.clear()
        return events


class SlidingWindow:
    """Per-subject sums of value tuples over the last `seconds`, kept in bins of `bin` seconds.
    A bin counts while its start is within the window ([now - seconds, now])."""

    def __init__(self, seconds, bin_seconds, width):
        self.seconds, self.bin, self.width = seconds, bin_seconds, width
        self.bins = {}            # bin start -> {subject: [sums]}
        self.totals = {}          # subject -> [sums]
        self.changed = set()      # subjects whose totals moved since the caller last cleared it

    def add(self, t, subject, values):
        start = int(t // self.bin * self.bin)
        into = self.bins.setdefault(start, {})
        have = into.get(subject)
        if have is None:
            have = into[subject] = [0] * self.width
        total = self.totals.get(subject)
        if total is None:
            total = self.totals[subject] = [0] * self.width
        for i, v in enumerate(values):
            have[i] += v
            total[i] += v
        self.changed.add(subject)

    def advance(self, now):
        for start in [b for b in self.bins if b < now - self.seconds]:
            for subject, values in self.bins.pop(start).items():
                self.changed.add(subject)
                total = self.totals[subject]
                for i, v in enumerate(values):
                    total[i] -= v
                if not any(total):
                    del self.totals[subject]

    def span(self, now):
        """Seconds the bins in the window cover up to `now` (the oldest may start after now - seconds)."""
        first = -(-(now - self.seconds) // self.bin) * self.bin
        return now - first
