"""The flow table: frames in, per-flow / per-host / per-interface rollups out. Pure: no clock,
no I/O; time is the packets' own.

Hot-path layout. Each flow has two *direction* counter lists, one per sending side, each stored in
`_dirs` under the 5-tuple as that side sends it, so a packet costs one dict lookup and four list
writes whichever way it goes:

    direction = [bytes, packets, last_ts, tcp_flags, flow, peek, tcp_health, second, bytes_before]

Counters hold what arrived since the last drain; `drain()` turns them into a `Rollup` (deltas
for one time bucket) and resets them. Host counters are derived from flow deltas at drain time
rather than per packet: each flow credits its orig host tx / resp host rx and vice versa.

Per-second points (per_second=True, live only): the per-packet bucket check ends at the next
second instead of the next minute, so a new second costs no extra compare; the first packet of a
direction in a second marks it (`second` is that second's mark, one identity check per packet)
and notes its byte count then; at the second's end the marked directions' growth becomes host
and flow-side points (take_seconds()).
"""
import os
import struct

from capture import arp, deltas, second_points
from capture.decode import decode
from capture.flow_names import SAMPLE_FLOWS, _WANT, Naming
from capture.tcp_health import see as tcp_see
from capture.tcp_later import LATER as _TCP_LATER, segment as _tcp_later
from records import IFACE_FIELDS, Packet, Rollup, ip_text
from settings import DEFAULTS

# FlowTable.ingest's steady path, compiled (capture/_steady.c, built by `make`); this module's
# loop does the same work without it, and is what NETTALLY_PURE_PYTHON=1 asks for.
try:
    from capture._steady import count as _steady_count
except ImportError:
    _steady_count = None
if os.environ.get("NETTALLY_PURE_PYTHON"):
    _steady_count = None

_ETH_IPV4 = struct.Struct("!12xHBxHHHxB2x4s4sHHIIxBH")       # 50 bytes: Ethernet, IPv4 (no options), ports,
_ETH_IPV6 = struct.Struct("!12xHB3xHBx16s16sHHIIxBH")        # 70: Ethernet, IPv6; TCP seq, ack, flags, window
_ETH_IPV4_UNPACK, _ETH_IPV6_UNPACK = _ETH_IPV4.unpack_from, _ETH_IPV6.unpack_from
_LINKTYPE_ETHERNET = 1
_TCP_SYN_ONLY = 0x02
_FRAGMENT_MEMORY = 65536      # first-fragment port records kept for later fragments
MAX_MACS = 65536              # ARP senders learnt per bucket (nor can a flood of ARP)
ROLLUP_FLOWS = 4096           # flows per rollup handed on by take(): a closed bucket or an eviction goes
                              # out in pieces, so whoever handles one at a time (the import's writer,
                              # over a pipe) holds a piece, not max_flows deltas at once


class Flow:
    __slots__ = ("key", "first_seen", "orig", "resp", "iface", "flushed", "app", "server_name", "problem")

    def __init__(self, key, ts, iface, read_payload=True, tcp_health=True):
        self.key = key              # (proto, orig addr, orig port, resp addr, resp port), raw addresses
        self.first_seen = ts
        self.iface = iface
        self.flushed = False        # some of it has left in a rollup: its orientation is fixed
        # direction[5]: the flow's Peek while its payload is still read (shared by both
        # directions), _WANT before its first payload, None once named or given up
        want = _WANT if read_payload and (key[0] == 6 or key[0] == 17) else None
        # direction[6]: the sending side's TCP health state (capture/tcp_health.py: a tuple), None for
        # other protocols; before the flow's second segment, capture/tcp_later.py's
        a = b = _TCP_LATER if tcp_health and key[0] == 6 else None
        # direction[7], [8]: the mark of the last second it sent in, and its bytes before that second
        self.orig = [0, 0, ts, 0, self, want, a, None, 0]
        self.resp = [0, 0, ts, 0, self, want, b, None, 0]
        self.app = self.server_name = self.problem = ""

    @property
    def last_seen(self):
        return max(self.orig[2], self.resp[2])


class FlowTable(Naming):
    def __init__(self, bucket_seconds=60, idle_timeout=DEFAULTS.idle_timeout, active_timeout=DEFAULTS.active_timeout,
                 max_flows=DEFAULTS.max_flows, read_payload=DEFAULTS.names, list_new_flows=True,
                 tcp_health=DEFAULTS.tcp_health, per_second=False):
        """`list_new_flows`: keep new flows for take_new_flows() (live attribution); an import,
        which never takes them, says False. `per_second`: per-second host and flow-side points
        for take_seconds() (the live view's now and peak; an import needs none). Every structure
        here is bounded by max_flows (or a constant): flows, their directions, new flows not yet
        taken, evicted flows (they leave at once in a rollup of their own, see _evict), per-bucket
        MACs, names and samples."""
        self.bucket_seconds = bucket_seconds
        self.read_payload = read_payload   # names and apps from first payloads (capture/peek.py)
        self.tcp_health = tcp_health       # RTT, retransmissions... of TCP flows (capture/tcp_health.py)
        self._sample_slots = SAMPLE_FLOWS
        self._samples = []                 # [Sample] of flows that ended their reading unnamed
        self._linktype = 1                 # of the frames being ingested (samples carry it)
        self.idle_timeout = idle_timeout
        self.active_timeout = active_timeout
        self.max_flows = max_flows
        self._dirs = {}
        self._flows = set()
        self._frag_ports = {}
        self._bucket_start = None
        self._bucket_floor = float("inf")      # float twin of _bucket_start for the per-packet compare
        self._bucket_end = float("-inf")
        self._edge = float("-inf")             # what ingest compares: the bucket's end, or the second's
        self.per_second = per_second
        self._mark = None                      # the open second's mark (a new object each second; None: off)
        self._second = None                    # the open second
        self._second_end = float("-inf")
        self._touched = []                     # (key, direction) that sent in the open second
        self._points = []                      # (second, hosts, flows) closed, for take_seconds()
        self._ready = []                   # rollups of closed buckets and evicted flows, for take()
        self._hand_on = None               # or, after stream_to(), who takes each of them as it is made
        self.list_new_flows = list_new_flows
        self.new_flows = []                # (proto, a, a_port, b, b_port, ts) raw, since take_new_flows()
        self.unlisted_flows = 0            # new flows beyond max_flows between two take_new_flows()
        self._ifaces = {}
        self._undecodable = {}
        self._macs = {}                    # raw IPv4 -> raw MAC, learnt since the last drain
        self._names = {}                   # address text -> (name, source, ts), learnt since the last drain
        self._problems = {}                # reason -> flows whose payload could not be read (dns_..., tls_...)
        self.evicted_flows = 0

    def __len__(self):
        return len(self._flows)

    def held(self):
        """What the table holds now, by structure (each bounded by max_flows or a constant):
        what tests and benchmarks check the memory bound against."""
        return {"flows": len(self._flows), "directions": len(self._dirs), "new_flows": len(self.new_flows),
                "ready_flows": sum(len(r.flows) for r in self._ready), "fragments": len(self._frag_ports),
                "macs": len(self._macs), "names": len(self._names), "samples": len(self._samples)}

    # ---- ingest ---------------------------------------------------------------------------------

    def ingest(self, iface, linktype, frames):
        """Counts frames: an iterable of (ts, wire_len, data, outbound) from one interface. A list
        of Ethernet frames goes through the compiled steady path (capture/_steady.c) where it is
        built: it counts the frames of flows already held, and this loop each frame it stops at."""
        if _steady_count is None or linktype != _LINKTYPE_ETHERNET or frames.__class__ is not list:
            return self._ingest_each(iface, linktype, frames)
        self._counters(iface)                   # as the loop: an interface is known from its first batch
        self._linktype = linktype
        i, total = 0, len(frames)
        while i < total:
            i, frames_n, bytes_n, out_frames, out_bytes = _steady_count(
                frames, i, self._dirs, self._mark, self._touched, self._bucket_floor, self._edge, tcp_see)
            if frames_n:
                _add(self._counters(iface), frames_n, bytes_n, frames_n, bytes_n, out_frames, out_bytes)
            if i < total:
                self._ingest_each(iface, linktype, frames[i:i + 1])    # one: runs of 4-16 measured slower
                i += 1

    def _counters(self, iface):
        """The open bucket's counters of `iface` (a closed bucket took the ones before)."""
        counters = self._ifaces.get(iface)
        if counters is None:
            counters = self._ifaces[iface] = [0] * len(IFACE_FIELDS)
        return counters

    def _ingest_each(self, iface, linktype, frames):
        counters = self._counters(iface)
        self._linktype = linktype
        get = self._dirs.get
        new_flow = self._new_flow
        bucket_start, bucket_end = self._bucket_floor, self._edge
        mark, touched = self._mark, self._touched
        ethernet = linktype == _LINKTYPE_ETHERNET
        frames_n = bytes_n = ip_frames = ip_bytes = out_frames = out_bytes = 0
        for ts, n, data, outbound in frames:
            if not bucket_start <= ts < bucket_end:      # a new minute (or second), or time stepped back
                if bucket_start <= ts < self._bucket_end:
                    self._roll_second(ts)
                else:
                    _add(counters, frames_n, bytes_n, ip_frames, ip_bytes, out_frames, out_bytes)
                    frames_n = bytes_n = ip_frames = ip_bytes = out_frames = out_bytes = 0
                    self._roll_bucket(ts)
                    # the drained counters went out with the closed bucket: count on in fresh ones
                    counters = self._counters(iface)
                bucket_start, bucket_end = self._bucket_floor, self._edge
                mark, touched = self._mark, self._touched
            frames_n += 1
            bytes_n += n
            if outbound:
                out_frames += 1
                out_bytes += n
            # Fast path: Ethernet with at most one 802.1Q tag, IPv4 without options or IPv6 without
            # extension headers, unfragmented TCP/UDP with the ports captured. Everything else goes
            # through decode(). A tag moves what follows by 4 bytes: the same layouts apply at +4.
            if ethernet:
                size = len(data)
                off = 0
                if size >= 18 and data[12] == 0x81 and data[13] == 0:
                    off = 4
                    size -= 4
                if size >= 50 and data[12 + off] == 8 and data[13 + off] == 0:
                    _, vihl, total, _, frag, proto, src, dst, sport, dport, seq, ack, flags, win = \
                        _ETH_IPV4_UNPACK(data, off)
                    if vihl == 0x45 and not frag & 0x3FFF and (
                            (proto == 6 and total >= 34) or (proto == 17 and total >= 24)):
                        key = (proto, src, sport, dst, dport)
                        c = get(key) or new_flow(key, ts, iface)
                        if c[7] is not mark:
                            c[7] = mark
                            c[8] = c[0]
                            touched.append((key, c))
                        c[0] += n
                        c[1] += 1
                        c[2] = ts
                        if proto == 6:
                            c[3] |= flags
                            if flags & 0x12 == _TCP_SYN_ONLY:
                                self._syn_seen(c)
                            if c[6] is not None:
                                if c[6].__class__ is tuple:
                                    tcp_see(c[6], ts, flags, seq, ack, win, total - 20 - (data[46 + off] >> 4) * 4)
                                else:
                                    _tcp_later(c, ts, flags, seq, ack, win, total - 20 - (data[46 + off] >> 4) * 4)
                            if c[5] is not None:
                                self._peek(c, data, 34 + off + (data[46 + off] >> 4) * 4,
                                           min(14 + off + total, len(data)), ts)
                        elif c[5] is not None:
                            self._peek(c, data, 42 + off, min(14 + off + total, len(data)), ts)
                        ip_frames += 1
                        ip_bytes += n
                        continue
                elif size >= 70 and data[12 + off] == 0x86 and data[13 + off] == 0xDD:
                    _, version, plen, proto, src, dst, sport, dport, seq, ack, flags, win = _ETH_IPV6_UNPACK(data, off)
                    if version >> 4 == 6 and ((proto == 6 and plen >= 14) or (proto == 17 and plen >= 4)):
                        key = (proto, src, sport, dst, dport)
                        c = get(key) or new_flow(key, ts, iface)
                        if c[7] is not mark:
                            c[7] = mark
                            c[8] = c[0]
                            touched.append((key, c))
                        c[0] += n
                        c[1] += 1
                        c[2] = ts
                        if proto == 6:
                            c[3] |= flags
                            if flags & 0x12 == _TCP_SYN_ONLY:
                                self._syn_seen(c)
                            if c[6] is not None:
                                if c[6].__class__ is tuple:
                                    tcp_see(c[6], ts, flags, seq, ack, win, plen - (data[66 + off] >> 4) * 4)
                                else:
                                    _tcp_later(c, ts, flags, seq, ack, win, plen - (data[66 + off] >> 4) * 4)
                            if c[5] is not None:
                                self._peek(c, data, 54 + off + (data[66 + off] >> 4) * 4,
                                           min(54 + off + plen, len(data)), ts)
                        elif c[5] is not None:
                            self._peek(c, data, 62 + off, min(54 + off + plen, len(data)), ts)
                        ip_frames += 1
                        ip_bytes += n
                        continue
            pkt = decode(linktype, data)
            if pkt.__class__ is Packet:
                self._count_packet(pkt, ts, n, iface, data)
                ip_frames += 1
                ip_bytes += n
            elif pkt is None:
                counters[4] += 1
                counters[5] += n
                if ethernet:
                    self._learn_mac(data)
            else:
                counters[6] += 1
                counters[7] += n
                reason = self._undecodable.setdefault((iface, pkt), [0, 0])
                reason[0] += 1
                reason[1] += n
        _add(counters, frames_n, bytes_n, ip_frames, ip_bytes, out_frames, out_bytes)

    def _learn_mac(self, data):
        """IPv4 address -> MAC of an ARP frame's sender (capture/arp.py), at most MAX_MACS a bucket."""
        learnt = arp.sender(data)
        if learnt is not None:
            ip, mac = learnt
            if len(self._macs) >= MAX_MACS and ip not in self._macs:
                self._problems["macs_over_bucket_limit"] = self._problems.get("macs_over_bucket_limit", 0) + 1
                return
            self._macs[ip] = mac

    def _count_packet(self, pkt, ts, n, iface, data):
        src, dst, proto, sport, dport, flags, frag, start, end, tcp = pkt
        if frag is not None:
            ident, offset, _ = frag
            memo = (src, dst, proto, ident)
            if offset:
                sport, dport = self._frag_ports.get(memo, (0, 0))
            elif proto == 6 or proto == 17 or proto == 132:
                if len(self._frag_ports) >= _FRAGMENT_MEMORY:
                    del self._frag_ports[next(iter(self._frag_ports))]
                self._frag_ports[memo] = (sport, dport)
        key = (proto, src, sport, dst, dport)
        c = self._dirs.get(key) or self._new_flow(key, ts, iface)
        if c[7] is not self._mark:
            c[7] = self._mark
            c[8] = c[0]
            self._touched.append((key, c))
        c[0] += n
        c[1] += 1
        c[2] = ts
        if flags:
            c[3] |= flags
            if flags & 0x12 == _TCP_SYN_ONLY:
                self._syn_seen(c)
        if tcp is not None and c[6] is not None:
            if c[6].__class__ is tuple:
                tcp_see(c[6], ts, flags, *tcp)
            else:
                _tcp_later(c, ts, flags, *tcp)
        if c[5] is not None and end > start:
            self._peek(c, data, start, end, ts)

    def _new_flow(self, key, ts, iface):
        if len(self._flows) >= self.max_flows:
            self._evict()
        flow = Flow(key, ts, iface, self.read_payload, self.tcp_health)
        self._flows.add(flow)
        if self.list_new_flows:
            if len(self.new_flows) < self.max_flows:
                self.new_flows.append(key + (ts,))
            else:       # nobody took them for a while: attribution finds these in its table at drain time
                self.unlisted_flows += 1
        self._dirs[key] = flow.orig
        reverse = (key[0], key[3], key[4], key[1], key[2])
        if reverse != key:          # a socket talking to itself has one direction only
            self._dirs[reverse] = flow.resp
        return flow.orig

    def _syn_seen(self, direction):
        """A bare SYN names the originator: if it came from the side we called resp, swap."""
        flow = direction[4]
        if direction is flow.resp and not flow.flushed:
            flow.orig, flow.resp = flow.resp, flow.orig
            k = flow.key
            flow.key = (k[0], k[3], k[4], k[1], k[2])

    def _evict(self):
        """Memory bound: the least recently active tenth leaves the table at once, closed, in a
        rollup of the current bucket of its own (for take()): evicted flows never pile up
        waiting for their bucket to close, whose drain then holds at most max_flows flows."""
        by_age = sorted(self._flows, key=lambda f: f.last_seen)
        evicted = by_age[:max(1, len(by_age) // 10)]
        del by_age
        for first in range(0, len(evicted), ROLLUP_FLOWS):
            hosts, out = {}, []
            for flow in evicted[first:first + ROLLUP_FLOWS]:
                self._remove(flow)
                out.append(deltas.take(flow, True, hosts, self.read_payload))
            self._out(deltas.flows_only(self._bucket_start, out, hosts))
        self.evicted_flows += len(evicted)

    def _remove(self, flow):
        peek = flow.orig[5]
        if peek is not None and peek is not _WANT:
            self._end_peek(flow, peek)
        self._flows.discard(flow)
        k = flow.key
        self._dirs.pop(k, None)
        self._dirs.pop((k[0], k[3], k[4], k[1], k[2]), None)
        # a flow and its directions point at each other: without this, a flow that left would
        # wait for the cyclic garbage collector, and memory would grow with the flows seen
        flow.orig[4] = flow.resp[4] = None

    # ---- drain ----------------------------------------------------------------------------------

    def _roll_bucket(self, ts):
        if self._bucket_start is not None:
            for piece in self._drain(self._bucket_end, False, ROLLUP_FLOWS):
                self._out(piece)
        start = int(ts // self.bucket_seconds * self.bucket_seconds)
        self._bucket_start = start
        self._bucket_floor = float(start)
        self._bucket_end = float(start + self.bucket_seconds)   # compared with every packet's float time
        self._edge = self._bucket_end
        if self.per_second:
            self._roll_second(ts)

    # ---- per-second points (live) ------------------------------------------------------------------

    def _roll_second(self, ts):
        """The open second's points go to take_seconds(); the second of `ts` opens with a new
        mark, so every direction is marked again on its first packet in it."""
        self._close_second()
        self._second = int(ts // 1)
        self._mark = [self._second]
        self._second_end = float(self._second + 1)
        self._edge = min(self._second_end, self._bucket_end)

    def _close_second(self):
        touched, self._touched = self._touched, []
        point = second_points.points(self._second, touched) if touched else None
        if point is not None:
            self._points.append(point)

    def take_seconds(self, now=None):
        """Per-second points closed since the last call: [(second, host points [(second, ip, tx,
        rx)], flow-side points [(second, proto, src, sport, dst, dport, bytes)])], text addresses,
        what records.Activity carries. `now` (packet-time clock): the open second is closed too
        once it has ended, so an idle link does not hold its last second back (a packet of it read
        later is counted in a later point of the same second)."""
        if now is not None and now >= self._second_end and self._touched:
            self._close_second()
            self._mark = [self._second]
        points, self._points = self._points, []
        return points

    def take_new_flows(self):
        """Flows created since the last call, as (proto, a, a_port, b, b_port, ts) with text
        addresses: attribution looks their sockets up at once, before short connections vanish."""
        new, self.new_flows = self.new_flows, []
        return [(p, ip_text(a), ap, ip_text(b), bp, ts) for p, a, ap, b, bp, ts in new]

    def stream_to(self, hand_on):
        """For an import, where nobody takes new flows and the rollups go to one sink: new flows
        are not kept, and each rollup (a piece of a closed bucket, of an eviction, of close())
        goes to `hand_on(rollup)` as soon as it is made, during ingest, instead of waiting for
        take(). The table then never holds more than one piece of deltas."""
        self.list_new_flows = False
        self.new_flows = []
        self._hand_on = hand_on
        for rollup in self.take():
            hand_on(rollup)

    def _out(self, rollup):
        if self._hand_on is None:
            self._ready.append(rollup)
        else:
            self._hand_on(rollup)

    def take(self):
        """Rollups of buckets that closed during ingest (a later packet crossed their end)."""
        ready, self._ready = self._ready, []
        return ready

    def drain(self, now, close_all=False):
        """Deltas of the current bucket since the last drain. Flows idle longer than the idle
        timeout (by `now`, packet time) or older than the active timeout leave the table."""
        rollup, = self._drain(now, close_all, None)
        return rollup

    def close(self):
        """Every flow ends: the open bucket's last deltas go to take() (or stream_to's taker) in
        pieces of at most ROLLUP_FLOWS flows, what drain(now, close_all=True) returns as one."""
        for piece in self._drain(0.0, True, ROLLUP_FLOWS):
            self._out(piece)

    def _drain(self, now, close_all, piece):
        """drain() as rollups of at most `piece` flows each (None: one rollup), each with the
        hosts of its own flows, made one at a time; the last carries the bucket's other counters."""
        bucket = self._bucket_start if self._bucket_start is not None else int(now)
        flows, hosts = [], {}
        for flow in list(self._flows):
            orig, resp = flow.orig, flow.resp
            last = orig[2] if orig[2] > resp[2] else resp[2]
            idle = close_all or now - last > self.idle_timeout
            active_cut = not idle and now - flow.first_seen > self.active_timeout
            if orig[1] or resp[1] or idle:
                if len(flows) == piece:
                    yield deltas.flows_only(bucket, flows, hosts)
                    flows, hosts = [], {}
                flows.append(deltas.take(flow, idle or active_cut, hosts, self.read_payload))
            if idle:
                self._remove(flow)
            elif active_cut:
                # the record ends here; the flow continues as a new record with the same sides
                flow.first_seen = now
        ifaces, self._ifaces = self._ifaces, {}
        undecodable, self._undecodable = self._undecodable, {}
        macs, self._macs = self._macs, {}
        macs = {ip_text(ip): ":".join(f"{b:02x}" for b in mac) for ip, mac in macs.items()}
        names, self._names = self._names, {}
        problems, self._problems = self._problems, {}
        samples, self._samples = self._samples, []
        yield Rollup(bucket, flows, hosts, ifaces, undecodable, {}, {}, macs, names, problems,   # not the shared
                     samples)                                                                    # defaults


def _add(counters, frames_n, bytes_n, ip_frames, ip_bytes, out_frames, out_bytes):
    counters[0] += frames_n
    counters[1] += bytes_n
    counters[2] += ip_frames
    counters[3] += ip_bytes
    counters[8] += out_frames
    counters[9] += out_bytes

