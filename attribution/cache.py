"""Who owns which socket, kept current cheaply.

Three sources feed one map (socket key -> (ProcessKey, last seen)):
  - the socket table, read every `interval` (about 1 s) and at once when a new flow's socket is
    unknown (rate-limited so reading a large table never takes more than a fifth of the time);
  - kernel socket events (events.py), which name the owner of a socket that lived between reads;
  - memory: a socket stays known for `memory` seconds after it was last seen, because a flow is
    first attributed up to a flush interval (plus the grace window) after its socket has closed.

Processes are identified by pid and start time: an entry is a ProcessKey, and a pid whose start
time changed is read again as a new process.
"""
import time

from attribution.join import find_owner
from attribution.table import candidate_keys
from records import NO_PERMISSION, OTHER_NETNS, SOCKET_CLOSED, UNKNOWN

MIN_GAP = 0.05          # seconds between two refreshes asked for by misses, at the least
COST_SHARE = 5          # ... and at least this many times the last refresh's cost
EXPIRE_EVERY = 10.0


class OwnerCache:
    """`table()` -> table.SocketTable; `process_key(pid)` -> ProcessKey or None; `start_time(pid)`
    -> float or None; `events` has drain() -> [(key, ProcessKey, netns, time)] (optional);
    `forget(pids)` tells the table source that processes have gone (optional)."""

    def __init__(self, table, process_key, start_time, events=None, netns=None, forget=None,
                 clock=time.time, interval=1.0, memory=60.0):
        self.table, self.process_key, self.start_time = table, process_key, start_time
        self.events, self.netns, self.forget = events, netns, forget
        self.clock, self.interval, self.memory = clock, interval, memory
        self.owners = {}            # key -> (ProcessKey, last seen)
        self.other_ns = {}          # key -> last seen: sockets of processes in other network namespaces
        self.unowned = {}           # key -> reason, from the latest table
        self.denied = False
        self.last_refresh = None    # clock time at which the latest table read began
        self.refresh_cost = 0.0     # seconds the latest read took
        self.refreshes = 0
        self.failures = 0
        self.last_error = None
        self._last_try = float("-inf")
        self._expired_at = clock()
        self._by_pid = {}           # pid -> ProcessKey of its current incarnation
        self._identity = {}         # (pid, start time) -> the one ProcessKey object for it

    # ---- keeping current -----------------------------------------------------------------------

    def sync(self):
        """Takes in the kernel events that arrived since the last call."""
        if self.events is None:
            return
        owners, other = self.owners, self.other_ns
        for key, process, netns, seen in self.events.drain():
            if self.netns is not None and netns is not None and netns != self.netns:
                other[key] = seen
                continue
            process = self._identity.setdefault((process.pid, process.start_time), process)
            old = owners.get(key)
            if old is None or old[1] <= seen:
                owners[key] = (process, seen)

    def due(self, now):
        return self.last_refresh is None or now - self.last_refresh >= self.interval

    def maybe_refresh(self, now, urgent=False):
        """Reads the table if the interval has passed, or now if `urgent` (a miss) and the rate
        limit allows. True if it read."""
        if self.due(now) or (urgent and now - self._last_try >= max(MIN_GAP, COST_SHARE * self.refresh_cost)):
            self.refresh(now)
            return True
        return False

    def refresh(self, now=None, again=False):
        now = self.clock() if now is None else now
        self._last_try = now
        began = time.perf_counter()
        try:
            table = self.table()
        except OSError as e:        # the kernel refused this read: keep the last table, try again later
            self.failures += 1
            self.last_error = f"{e.strerror or e}"
            self.sync()
            return
        processes, gone, reborn = {}, [], []
        for pid in set(table.owners.values()):
            known = self._by_pid.get(pid)
            process = self._current(pid)
            if process is None:
                gone.append(pid)
            else:
                processes[pid] = process
                if known is not None and known.start_time != process.start_time:
                    reborn.append(pid)
        if reborn and self.forget is not None and not again:
            # A pid was reused. A source that remembers who held each socket (the Linux inode
            # map) may still name the old holder's number for a socket a child inherited: make
            # it look again, and read the table once more before charging anyone.
            self.forget(gone + reborn)
            return self.refresh(now, again=True)
        owners = self.owners
        for key, pid in table.owners.items():
            process = processes.get(pid)
            if process is not None:
                owners[key] = (process, now)
        if gone and self.forget is not None:
            self.forget(gone)
        self.unowned = table.unowned
        self.denied = table.denied
        self.last_refresh = now
        self.refreshes += 1
        self.refresh_cost = time.perf_counter() - began
        self.sync()

    def expire(self, now):
        """Forgets sockets not seen for `memory` seconds (runs at most every EXPIRE_EVERY)."""
        if now - self._expired_at < EXPIRE_EVERY:
            return
        self._expired_at = now
        horizon = now - self.memory
        self.owners = {k: v for k, v in self.owners.items() if v[1] >= horizon}
        self.other_ns = {k: t for k, t in self.other_ns.items() if t >= horizon}
        live = {v[0].pid for v in self.owners.values()}
        self._by_pid = {p: k for p, k in self._by_pid.items() if p in live}
        self._identity = {(k.pid, k.start_time): k for k in self._by_pid.values()}

    def _current(self, pid):
        """The ProcessKey of pid's current incarnation, read again when its start time changed."""
        known = self._by_pid.get(pid)
        start = self.start_time(pid)
        if start is None:
            return None
        if known is not None and known.start_time == start:
            return known
        process = self.process_key(pid)
        if process is None:
            return None
        process = self._identity.setdefault((process.pid, process.start_time), process)
        self._by_pid[pid] = process
        return process

    # ---- answers -------------------------------------------------------------------------------

    def find(self, proto, laddr, lport, raddr, rport, not_before):
        """ProcessKey owning the local endpoint, from a socket seen alive at or after `not_before`."""
        owners = self.owners

        def alive_since(key):
            entry = owners.get(key)
            return entry[0] if entry is not None and entry[1] >= not_before else None
        return find_owner(alive_since, proto, laddr, lport, raddr, rport)

    def reason(self, proto, laddr, lport, raddr, rport, first_seen, not_before):
        """Why the local endpoint has no owner: the best evidence we hold."""
        keys = candidate_keys(proto, laddr, lport, raddr, rport)
        for key in keys:
            seen = self.other_ns.get(key)
            if seen is not None and seen >= not_before:
                return OTHER_NETNS
        for key in keys:
            why = self.unowned.get(key)
            if why is not None:
                return why
        if self.denied:
            return NO_PERMISSION
        if self.last_refresh is not None and self.last_refresh >= first_seen:
            return SOCKET_CLOSED
        return UNKNOWN
