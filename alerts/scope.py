"""What an import touched, so that its alert rules judge that and nothing else: its hosts, its
interfaces and its own time span, with outlying timestamps left out (and counted).

A capture's frames sit close together in time; a frame a decade off (a bad clock, a damaged
record) would stretch the span over other data. Frames are grouped by hour into runs split by
gaps of more than GAP; the run holding the most frames (the earliest of equals) is the capture,
the frames of the other runs are outliers. Pure: fed rollups, asked at the end.
"""
from records import IFACE_FIELDS

GAP = 86_400                 # seconds between hours with frames that split a capture in two runs
MAX_SUBJECTS = 100_000
CLAMP_HOUR = 253_402_297_200  # the last hour of 9999, where the reader clamps timestamps beyond it       # hosts tracked; beyond it every host in the span is judged
_FRAMES = IFACE_FIELDS.index("frames")


class ImportScope:
    def __init__(self, max_subjects=MAX_SUBJECTS):
        self.hours = {}              # hour -> [frames, first bucket, end of last bucket]
        self.hosts, self.interfaces = set(), set()
        self.max_subjects = max_subjects
        self.too_many_hosts = False

    def add(self, rollups):
        for rollup in rollups:
            frames = sum(c[_FRAMES] for c in rollup.interfaces.values())
            hour = rollup.bucket - rollup.bucket % 3600
            h = self.hours.get(hour)
            if h is None:
                self.hours[hour] = [frames, rollup.bucket, rollup.bucket + 60]
            else:
                h[0] += frames
                h[1], h[2] = min(h[1], rollup.bucket), max(h[2], rollup.bucket + 60)
            self.interfaces.update(rollup.interfaces)
            if not self.too_many_hosts:
                self.hosts.update(rollup.hosts)
                if len(self.hosts) > self.max_subjects:
                    self.too_many_hosts, self.hosts = True, set()

    def merge(self, other):
        """Adds another file's scope (an import of several files is judged as one)."""
        for hour, (frames, first, end) in other.hours.items():
            h = self.hours.setdefault(hour, [0, first, end])
            h[0] += frames
            h[1], h[2] = min(h[1], first), max(h[2], end)
        self.interfaces |= other.interfaces
        self.too_many_hosts |= other.too_many_hosts
        self.hosts = set() if self.too_many_hosts else self.hosts | other.hosts
        if len(self.hosts) > self.max_subjects:
            self.too_many_hosts, self.hosts = True, set()

    def span(self):
        """(start, end, outlier frames) of the capture's own run of hours; None when empty."""
        if not self.hours:
            return None
        runs, run, last = [], [], None
        for hour in sorted(self.hours):
            if last is not None and hour - last > GAP:
                runs.append(run)
                run = []
            run.append(hour)
            last = hour
        runs.append(run)
        total = sum(h[0] for h in self.hours.values())
        # a run at the clamp ends (timestamps outside 1970-9999, clamped by the reader) is a
        # broken clock, not the capture, unless nothing else is there
        main = max(runs, key=lambda r: (not all(h < 3600 or h >= CLAMP_HOUR for h in r),
                                        sum(self.hours[h][0] for h in r), -r[0]))
        kept = sum(self.hours[h][0] for h in main)
        return min(self.hours[h][1] for h in main), max(self.hours[h][2] for h in main), total - kept

    def subjects(self):
        """{scope: subjects the rules may judge}; a scope left out is not limited."""
        limits = {"interface": self.interfaces, "process": set()}   # an import attributes nothing
        if not self.too_many_hosts:
            limits["host"] = self.hosts
        return limits
