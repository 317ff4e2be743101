"""The Attributor: what the collector calls (collector/live.py).

    a = Attributor(settings)
    a.observe(new_flows)   # [(proto, addr_a, port_a, addr_b, port_b, ts)] within ~50 ms of a flow's
                           # first packet: unknown sockets are looked up now (rate-limited)
    a.tick()               # about every second: periodic table read, grace-window re-checks
    rollups = a.attribute(rollups)   # pids, processes and coverage filled in
    a.close()              # stops the kernel event reader

Each side of a flow is decided once: a process, or a reason. A reason that may still turn into
a process (the socket was not found yet) is held open for GRACE seconds; if the owner turns up
in that window, the bytes counted so far move from the reason to the process through correction
rollups for their original buckets (added to what attribute() returns). After that the
decision is final, so a flow row carries a pid exactly when all its bytes are in that process's
totals.
"""
import atexit
import sys
import time

from attribution import join
from attribution.cache import OwnerCache
from attribution.table import ATTRIBUTABLE
from records import NO_PERMISSION, OTHER_NETNS, SOCKET_CLOSED, UNKNOWN
from records import Rollup
from records import ProcessKey

MODES = ("auto", "proc", "psutil", "off")
GRACE = 10.0                # seconds an unattributed side may still find its owner
ADDRESSES_EVERY = 10.0      # seconds between reads of the host's addresses (own and other namespaces)
ADDRESSES_SOONEST = 1.0     # ... or this soon when flows show an address we have not placed
# Another namespace is found through a process in it: its addresses are kept this long after the
# last sighting, so a moment without processes there (one job ended, the next not started) does
# not turn its traffic into another host's.
OTHER_NS_MEMORY = 600.0
_RETRYABLE = frozenset((SOCKET_CLOSED, UNKNOWN, NO_PERMISSION))


class Pending:
    """A local side without an owner yet: what it was charged to, per (bucket, reason)."""
    __slots__ = ("deadline", "charged", "stub")

    def __init__(self, deadline):
        self.deadline = deadline
        self.charged = {}       # (bucket, reason) -> [tx_bytes, rx_bytes, tx_packets, rx_packets]
        self.stub = None        # the flow's latest delta with zero counts, to carry the pid later


class Attributor:
    def __init__(self, settings, cache=None, addresses=None, clock=time.time, events=None):
        """`cache`, `addresses` (() -> (own set, other-namespace set)) and `clock` are for tests;
        by default they come from the platform (Linux fast path or psutil)."""
        self.mode = getattr(settings, "attribution", "auto") or "auto"
        if self.mode not in MODES:
            raise ValueError(f"attribution must be one of {', '.join(MODES)}, not {self.mode!r}")
        self.clock = clock
        self.events = events
        self.how = "off"
        self._closers = []
        self.own, self.other_ns = set(), set()
        self._placed = set()    # addresses known to be neither own nor another namespace's
        self._other_seen = {}   # address of another namespace -> when last seen there
        self._heard = {}        # netns -> (its addresses, when), from the event thread (see _platform)
        self._addresses_at = float("-inf")
        if self.mode != "off" and cache is None:
            cache, addresses = self._platform(clock)
        self.cache = cache
        self._addresses = addresses
        self.sides = {}         # flow natural key -> [orig state, resp state]
        self.pending = {}       # flow natural key -> {side: Pending}
        self.corrections = []   # correction rollups waiting for the next attribute()
        self.max_memo = 2 * max(getattr(settings, "max_flows", 500_000), 1000)

    def describe(self):
        return self.how

    # ---- the collector's calls -------------------------------------------------------------------

    def observe(self, new_flows):
        if self.cache is None:
            return
        now = self.clock()
        self._refresh_addresses(now, {a for f in new_flows for a in (f[1], f[3])})
        self.cache.sync()
        own, cache, slack = self.own, self.cache, self._slack()
        for proto, a, ap, b, bp, ts in new_flows:
            if proto not in ATTRIBUTABLE:
                continue
            if (a in own and cache.find(proto, a, ap, b, bp, ts - slack) is None) or \
                    (b in own and cache.find(proto, b, bp, a, ap, ts - slack) is None):
                cache.maybe_refresh(now, urgent=True)
                return

    def tick(self):
        if self.cache is None:
            return
        now = self.clock()
        self._refresh_addresses(now)
        self.cache.sync()
        self.cache.maybe_refresh(now)
        self._recheck(now)
        self.cache.expire(now)

    def attribute(self, rollups):
        if self.cache is None:
            return rollups
        now = self.clock()
        self._refresh_addresses(now, {a for r in rollups for d in r.flows for a in (d.orig_h, d.resp_h)})
        self.cache.sync()
        if self._misses(rollups):
            self.cache.maybe_refresh(now, urgent=True)
        # Corrections found since the last call go first: their flow stubs carry an older state of
        # the flow (closed, last_seen) that this call's deltas then bring up to date.
        earlier, self.corrections = self.corrections, []
        out = [join.charge(r, [self._decide(d, r.bucket, now) for d in r.flows]) for r in rollups]
        self._bound_memory()
        out = earlier + out + self.corrections
        self.corrections = []
        return out

    def close(self):
        for close in self._closers:
            try:
                close()
            except Exception:
                pass
        self._closers = []

    # ---- deciding a side -------------------------------------------------------------------------

    def _decide(self, delta, bucket, now):
        key = (delta.proto, delta.orig_h, delta.orig_p, delta.resp_h, delta.resp_p, delta.first_seen)
        states = self.sides.get(key)
        if states is None:
            states = self._first_look(delta, key, now)
        decisions = []
        for side in (0, 1):
            state = states[side]
            if state is Pending:
                state = self._retry(key, side, states, delta, bucket, now)
            decisions.append(state)
        if delta.closed and key not in self.pending:
            self.sides.pop(key, None)
        return decisions

    def _first_look(self, delta, key, now):
        places = join.side_places(delta, self.own, self.other_ns)
        states = [None, None]
        for side in (0, 1):
            if places[side] == join.OTHER:
                states[side] = OTHER_NETNS
            elif places[side] == join.LOCAL:
                if delta.proto not in ATTRIBUTABLE:
                    states[side] = UNKNOWN
                    continue
                found = self._find(delta, side)
                if found is not None:
                    states[side] = found
                else:
                    states[side] = Pending
                    self.pending.setdefault(key, {})[side] = Pending(now + GRACE)
        if states != [None, None]:      # traffic of other hosts is placed again each time: cheap
            self.sides[key] = states
        return states

    def _retry(self, key, side, states, delta, bucket, now):
        """A side still open: its owner now, or this delta charged to the current reason."""
        waiting = self.pending[key][side]
        # the latest state of the flow (last_seen, closed) is what a correction must carry
        waiting.stub = delta._replace(orig_bytes=0, orig_packets=0, resp_bytes=0, resp_packets=0, tcp_flags=0,
                                      data_segments=0, retransmits=0, out_of_order=0, zero_windows=0, resets=0)
        found = self._find(delta, side)
        if found is not None:
            self._resolve(key, side, states, found)
            return found
        reason = self._reason(delta, side)
        if delta.orig_packets or delta.resp_packets:
            counters = waiting.charged.setdefault((bucket, reason), [0, 0, 0, 0])
            for i, v in enumerate(join.side_counters(delta, side)):
                counters[i] += v
        if now >= waiting.deadline or reason not in _RETRYABLE:
            self._finalise(key, side, states, reason)
        return reason

    def _resolve(self, key, side, states, process):
        """The owner of an open side turned up: earlier bytes move from their reasons to it."""
        waiting = self.pending[key].pop(side)
        if not self.pending[key]:
            del self.pending[key]
        states[side] = process
        if not waiting.charged:
            return
        name = "orig" if side == 0 else "resp"
        stub = waiting.stub._replace(**{f"{name}_pid": process.pid, f"{name}_process": process.name})
        other = states[1 - side]
        if isinstance(other, ProcessKey):
            other_name = "resp" if side == 0 else "orig"
            stub = stub._replace(**{f"{other_name}_pid": other.pid, f"{other_name}_process": other.name})
        by_bucket = {}
        for (bucket, reason), counters in waiting.charged.items():
            by_bucket.setdefault(bucket, []).append((process, reason, counters, stub))
        for bucket, moves in sorted(by_bucket.items()):
            self.corrections.append(join.moved(Rollup, bucket, moves))

    def _finalise(self, key, side, states, reason):
        self.pending[key].pop(side, None)
        if not self.pending[key]:
            del self.pending[key]
        states[side] = reason

    def _recheck(self, now):
        """Open sides of flows that sent nothing new: found now, or final past their deadline."""
        for key in list(self.pending):
            states, closed = self.sides.get(key), False
            for side, waiting in list(self.pending[key].items()):
                if waiting.stub is None:
                    continue
                closed = closed or waiting.stub.closed
                found = self._find(waiting.stub, side)
                if found is not None:
                    self._resolve(key, side, states, found)
                elif now >= waiting.deadline:
                    self._finalise(key, side, states, self._reason(waiting.stub, side))
            if closed and key not in self.pending:
                self.sides.pop(key, None)

    def _find(self, delta, side):
        proto, laddr, lport, raddr, rport = join.endpoint(delta, side)
        return self.cache.find(proto, laddr, lport, raddr, rport, delta.first_seen - self._slack())

    def _reason(self, delta, side):
        proto, laddr, lport, raddr, rport = join.endpoint(delta, side)
        return self.cache.reason(proto, laddr, lport, raddr, rport, delta.first_seen,
                                 delta.first_seen - self._slack())

    def _misses(self, rollups):
        """Whether a new local side in these rollups has no owner in the cache yet."""
        own = self.own
        for r in rollups:
            for d in r.flows:
                if d.proto in ATTRIBUTABLE and (d.proto, d.orig_h, d.orig_p, d.resp_h, d.resp_p,
                                                d.first_seen) not in self.sides:
                    for side, addr in ((0, d.orig_h), (1, d.resp_h)):
                        if addr in own and self._find(d, side) is None:
                            return True
        return False

    def _slack(self):
        """How long before a flow's first packet a socket may have been last seen and still be
        taken as its owner: two table reads and a second."""
        return 2 * self.cache.interval + 1.0

    def _refresh_addresses(self, now, seen=()):
        """Reads the host's addresses every ADDRESSES_EVERY seconds, and sooner (at most every
        ADDRESSES_SOONEST) when `seen` holds an address we have not placed yet: a namespace or
        an address may have appeared since (a container started, DHCP)."""
        if self._addresses is None:
            return
        for addresses, when in list(self._heard.values()):
            self._other_seen.update(dict.fromkeys(addresses, when))
        self.other_ns = set(self._other_seen) - self.own
        age = now - self._addresses_at
        if age < ADDRESSES_EVERY:
            if age < ADDRESSES_SOONEST or not any(self._unplaced(a) for a in seen):
                return
        else:
            self._placed = set()
        self._addresses_at = now
        own, other = self._addresses()
        seen_other = self._other_seen
        seen_other.update(dict.fromkeys(other, now))
        for addr in [a for a, t in seen_other.items() if now - t > OTHER_NS_MEMORY]:
            del seen_other[addr]
        for ns in [n for n, (_, t) in list(self._heard.items()) if now - t > OTHER_NS_MEMORY]:
            self._heard.pop(ns, None)
        self.own = set(own)
        self.other_ns = set(seen_other) - self.own
        if len(self._placed) > 100_000:
            self._placed = set()
        self._placed.update(a for a in seen if self._unplaced(a))

    def _unplaced(self, addr):
        return addr not in self.own and addr not in self.other_ns and addr not in self._placed

    def _bound_memory(self):
        """Flow decisions live as long as the capture's flow table keeps the flow; this is only a
        backstop should a close never arrive: the oldest half of settled flows goes."""
        if len(self.sides) <= self.max_memo:
            return
        settled = [k for k in self.sides if k not in self.pending]
        for k in settled[:len(settled) // 2]:
            del self.sides[k]

    # ---- platform ------------------------------------------------------------------------------

    def _platform(self, clock):
        from attribution import sockets
        linux = sys.platform.startswith("linux") and self.mode in ("auto", "proc")
        netns = source = forget = None
        other_namespaces = None
        if linux:
            try:
                from attribution import linux as fast
                table_source = fast.LinuxSockets()
                self._closers.append(table_source.close)
                source, forget, netns = table_source.snapshot, table_source.forget, fast.namespace()
                other_namespaces = fast.other_namespace_addresses
                self.how = "Linux sock_diag socket table"
            except OSError as e:
                self.how = f"psutil socket table (sock_diag unavailable: {e.strerror or e})"
        if source is None:
            source = sockets.socket_table
            if self.how == "off":
                self.how = "psutil socket table"
        events = self.events
        if events is None and linux and self.mode == "auto" and netns is not None:
            from attribution.events import KernelSocketEvents
            from attribution.linux import namespace

            heard = self._heard

            def resolve(tgid):
                """On the event thread, while the process surely exists: its identity, its
                namespace, and that namespace's addresses if it is another one not read lately."""
                process = sockets.process_key(tgid)
                if process is None:
                    return None
                ns = namespace(tgid)
                if ns is not None and ns != netns:
                    last = heard.get(ns)
                    if last is None or clock() - last[1] > ADDRESSES_EVERY:
                        heard[ns] = (fast.namespace_addresses(tgid), clock())
                return process, ns
            events = KernelSocketEvents(resolve, clock)
            why = events.start()
            if why is None:
                self._closers.append(events.close)
                atexit.register(self.close)
                self.how += " + kernel socket events"
            else:
                events = None
                self.how += f" (no kernel socket events: {why})"
        self.events = events
        cache = OwnerCache(source, sockets.process_key, sockets.start_time, events=events, netns=netns,
                           forget=forget, clock=clock)

        def addresses():
            return sockets.host_addresses(), (other_namespaces() if other_namespaces else set())
        return cache, addresses
