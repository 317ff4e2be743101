"""TCP health per flow: handshake round trip, running RTT samples, retransmissions, out-of-order
segments, zero windows and resets, read from the segments as they pass. Pure: no I/O, no clock
(time is the packets' own); never raises on any sequence of segments.

The counters follow Wireshark's `tcp.analysis` (packet-tcp.c, tcp_analyze_sequence_number, as in
tshark 4.0), so a flow's numbers are the ones tshark shows for the same packets:

  - rtt: `tcp.analysis.initial_rtt`, from the most recent bare SYN to the first segment with ACK
    and without SYN after it, in either direction; no SYN seen: None, never 0.
  - retransmits: segments tshark flags `tcp.analysis.retransmission`, which includes its fast
    and spurious kinds (a segment that does not advance its side's highest sequence number and
    is not out of order, or whose data the other side had already acknowledged).
  - out_of_order: `tcp.analysis.out_of_order` (behind the highest sequence number, within the
    handshake RTT, 3 ms without one, of the segment that set it).
  - zero_windows: `tcp.analysis.zero_window` (window 0 on a segment without SYN, FIN or RST).
  - resets: segments with RST.
A bare SYN whose sequence number is not its side's first starts a new connection on the same
ports, as tshark starts a new tcp.stream: the analysis starts over, the counts go on.

Running RTT samples (where NetTally differs from tshark's `tcp.analysis.ack_rtt`, which times
every acknowledged segment): each side times one segment at a time, from a segment that
advances its sequence number to the first ACK from the other side that covers it, and drops
the timing when a segment is sent again (Karn's rule, as TCP stacks do). Samples are kept per
side as count, sum, min and max; `rtts` reports the side whose data crosses the far part of
the path from the capture point (the larger minimum): at an endpoint, the other side's samples
are only this host's own ACK delay.

State per flow: two `Half` objects (one per sending side) of a few numbers each, and the two
tuples that pair them; no per-segment lists. `see` is on the hot path (every TCP segment).
"""
import os

M = 0xFFFFFFFF
HALF = 0x80000000
OOO_DEFAULT = 0.003          # tshark's out-of-order window without a handshake RTT (3 ms)
FAST_RETRANSMIT_WINDOW = 0.02  # a fast retransmission follows the last duplicate ACK within 20 ms
_KEEPALIVE, _ZERO_WINDOW_PROBE = 1, 2


class Half:
    """One sending side's sequence state and counters. Counters (data_segments ... resets) are
    deltas since the last `take`; RTT sample statistics are kept for the flow's life. The
    handshake's times (syn_ts, stream_rtt, rtt) are the connection's: both halves hold them, and
    whatever changes them writes both (one object less per flow)."""
    __slots__ = ("syn_ts", "stream_rtt", "rtt", "steady", "base", "nextseq", "nextseq_ts", "maxseq", "lastack", "lastack_ts",
                 "window", "dupacks", "last", "timed", "timed_ts",
                 "samples", "sample_sum", "sample_min", "sample_max",
                 "data_segments", "retransmits", "out_of_order", "zero_windows", "resets")

    def __init__(self):
        self.syn_ts = None          # time of the most recent bare SYN of the current connection
        self.stream_rtt = None      # initial RTT of the current connection (seconds), the out-of-order window
        self.rtt = None             # the flow's first initial RTT (seconds): what it reports
        self.samples = self.data_segments = self.retransmits = self.out_of_order = self.zero_windows = self.resets = 0
        self.sample_sum = self.sample_min = self.sample_max = 0.0
        self.steady = False
        self.base = None
        self.nextseq = self.maxseq = self.lastack = self.window = self.dupacks = self.last = 0
        self.nextseq_ts = self.lastack_ts = self.timed_ts = 0.0
        self.timed = -1


def _restart(h):
    """Sequence state as before the first segment (0 is 'not known yet', as in tshark)."""
    h.steady = False            # see() may take its short ways: both bases and nextseq and maxseq known, no
                                # handshake RTT pending, no duplicate ACKs counted, no keep-alive or probe last
    h.base = None               # the side's initial sequence number (first seq - 1 without a SYN)
    h.nextseq = 0               # highest sequence number sent + 1
    h.nextseq_ts = 0.0          # when it was set
    h.maxseq = 0                # highest contiguous sequence number that may be acknowledged
    h.lastack = 0               # the side's latest acknowledgement number
    h.lastack_ts = 0.0
    h.window = 0
    h.dupacks = 0               # duplicate ACKs in a row (-1: after an ACK of unseen data)
    h.last = 0                  # the latest segment was a keep-alive / zero window probe
    h.timed = -1                # the sequence number whose acknowledgement ends an RTT sample; -1 none
    h.timed_ts = 0.0


def pair():
    """A new TCP flow's state, as each side sends: ((first sender's half, the other's), (the
    other's, the first sender's)). Tuples, so the halves never point at each other: a flow that
    leaves is freed at once, without waiting for the cyclic garbage collector."""
    a, b = Half(), Half()
    return (a, b), (b, a)


def _see(h, p, ts, flags, seq, ack, win, seglen):
    """`see`, every case (`p`: the other side's half)."""
    if seglen < 0:                      # a TCP header longer than its IP packet: tshark does not analyse it
        return
    if flags & 0x16 != 0x10:                      # SYN, RST, or no ACK: the rare cases
        if flags & 0x12 == 0x02:
            if h.base is not None and seq != h.base:      # a new connection on the same ports
                _restart(h)
                _restart(p)
                h.stream_rtt = p.stream_rtt = None
            h.syn_ts = p.syn_ts = ts
            h.steady = p.steady = False
        if flags & 4:
            h.resets += 1
    if flags & 0x12 == 0x10:                      # tshark: a segment with ACK and without SYN
        if h.stream_rtt is None and h.syn_ts is not None:
            dt = ts - h.syn_ts
            if dt > 0:
                h.stream_rtt = p.stream_rtt = dt
                if h.rtt is None:
                    h.rtt = p.rtt = dt
    if h.base is None:
        h.base = seq if flags & 2 else (seq - 1) & M
    if flags & 0x10 and p.base is None:
        p.base = (ack - 1) & M

    nextseq = h.nextseq
    special = 0
    if seglen == 1 and seq == nextseq and p.window == 0:
        special = _ZERO_WINDOW_PROBE
    else:
        if win == 0 and not flags & 7:
            h.zero_windows += 1
        if seglen <= 1 and seq == (nextseq - 1) & M and not flags & 7:
            special = _KEEPALIVE
        if not seglen and win and win == h.window and seq == nextseq and ack == h.lastack and not flags & 7 \
                and not p.last & _KEEPALIVE:       # a keep-alive's ACK repeats the last ACK: not a duplicate
            h.dupacks = 1 if h.dupacks == -1 else h.dupacks + 1
    lastack = h.lastack
    if ack != lastack:
        h.dupacks = 0
    if flags & 0x10:
        maxseq = p.maxseq
        if maxseq and (maxseq - ack) & M >= HALF:        # acknowledges data never seen
            p.steady = False
            if maxseq > p.nextseq:
                p.maxseq = p.nextseq
            else:
                p.dupacks = -1
        if p.timed >= 0 and (ack - p.timed) & M < HALF:   # covers the segment the other side timed
            sample = ts - p.timed_ts
            p.timed = -1
            if sample >= 0:
                if p.samples:
                    if sample < p.sample_min:
                        p.sample_min = sample
                    elif sample > p.sample_max:
                        p.sample_max = sample
                else:
                    p.sample_min = p.sample_max = sample
                p.samples += 1
                p.sample_sum += sample

    syn_fin = flags & 3
    if seglen or syn_fin:
        if seglen:
            h.data_segments += 1
        if special != _KEEPALIVE:
            behind = nextseq and (seq - nextseq) & M >= HALF
            if seglen > 1 and (nextseq - 1) & M == seq:
                behind = False
            plast = p.lastack
            end = (seq + seglen) & M
            if seglen and plast and (end == plast or (end - plast) & M >= HALF):
                h.retransmits += 1                          # spurious: already acknowledged
                h.timed = -1
            elif behind:
                if p.dupacks >= 2 and plast == seq and 0 <= ts - p.lastack_ts < FAST_RETRANSMIT_WINDOW:
                    h.retransmits += 1                      # fast retransmission
                elif 0 <= ts - h.nextseq_ts < (h.stream_rtt or OOO_DEFAULT) \
                        and nextseq != (end + (1 if syn_fin else 0)) & M:
                    h.out_of_order += 1
                else:
                    h.retransmits += 1
                h.timed = -1
    nseq = (seq + seglen + 1) & M if syn_fin else (seq + seglen) & M
    if (not nextseq or (nextseq - nseq) & M >= HALF) and special != _ZERO_WINDOW_PROBE:
        h.nextseq = nseq
        h.nextseq_ts = ts
        if (seglen or syn_fin) and h.timed < 0:
            h.timed = nseq
            h.timed_ts = ts
    if (not h.maxseq or seq == h.maxseq) and special != _ZERO_WINDOW_PROBE:
        h.maxseq = h.nextseq
    h.window = win
    h.lastack = ack
    h.lastack_ts = ts
    h.last = special
    h.steady = p.base is not None and (h.stream_rtt is not None or h.syn_ts is None) and not special \
        and not h.dupacks and h.nextseq != 0 and h.maxseq != 0


def see(hp, ts, flags, seq, ack, win, seglen):
    """One segment sent by the side whose `pair()` element is `hp`: TCP flags, sequence and acknowledgement numbers, window
    field (unscaled) and payload length (from the IP length, not what was captured).

    The per-packet cost matters (every TCP segment of a capture): the two segments a transfer
    is made of, the next data segment and a new ACK, take a short way here that leaves the
    state exactly as `_see`, which follows tshark step by step, would (tests/test_tcp_health.py
    checks the two agree on random segment sequences)."""
    h, p = hp
    if flags & 0x17 != 0x10 or not win or seq != h.nextseq or not h.steady:
        if h.base is not None or not _first(h, p, ts, flags, seq, ack, win, seglen):
            _see(h, p, ts, flags, seq, ack, win, seglen)
        return
    # steady: dupacks and last are 0, nextseq and maxseq known (see _restart)
    if seglen > 1:
        plast = p.lastack
        end = (seq + seglen) & M
        if not end or plast and (end == plast or (end - plast) & M >= HALF):
            _see(h, p, ts, flags, seq, ack, win, seglen)      # spurious retransmission (or nextseq 0)
            return
        h.data_segments += 1
        h.nextseq = end
        h.nextseq_ts = ts
        if h.timed < 0:
            h.timed = end
            h.timed_ts = ts
        if seq == h.maxseq:
            h.maxseq = end
    elif seglen or (ack == h.lastack and win == h.window):     # a byte (probe, keep-alive) or a duplicate ACK
        _see(h, p, ts, flags, seq, ack, win, seglen)
        return
    maxseq = p.maxseq
    if maxseq and (maxseq - ack) & M >= HALF:
        p.steady = False
        if maxseq > p.nextseq:
            p.maxseq = p.nextseq
        else:
            p.dupacks = -1
    if p.timed >= 0 and (ack - p.timed) & M < HALF:
        sample = ts - p.timed_ts
        p.timed = -1
        if sample >= 0:
            if p.samples:
                if sample < p.sample_min:
                    p.sample_min = sample
                elif sample > p.sample_max:
                    p.sample_max = sample
            else:
                p.sample_min = p.sample_max = sample
            p.samples += 1
            p.sample_sum += sample
    h.window = win
    h.lastack = ack
    h.lastack_ts = ts


def _first(h, p, ts, flags, seq, ack, win, seglen):
    """A side's first segment when it is a bare SYN or a data segment (ACK, more than a byte, an
    open window): what `_see` does in those cases, in fewer steps (a short flow's SYN and the
    other side's first segment are a tenth of all segments). False, with nothing changed, for
    any other segment. `h` is fresh: its sequence state is _restart's."""
    if flags & 0x17 == 0x02 and not seglen:
        nseq = (seq + 1) & M
        h.syn_ts = p.syn_ts = ts
        p.steady = False
        h.steady = p.base is not None and h.stream_rtt is not None and nseq != 0
        h.base = seq
        h.nextseq = h.timed = h.maxseq = nseq
        h.nextseq_ts = h.timed_ts = ts
    elif flags & 0x17 == 0x10 and seglen > 1 and win:
        plast = p.lastack
        end = (seq + seglen) & M
        if not end or plast and (end == plast or (end - plast) & M >= HALF):
            return False
        if h.stream_rtt is None and h.syn_ts is not None:
            dt = ts - h.syn_ts
            if dt > 0:
                h.stream_rtt = p.stream_rtt = dt
                if h.rtt is None:
                    h.rtt = p.rtt = dt
        h.base = (seq - 1) & M
        if p.base is None:
            p.base = (ack - 1) & M
        maxseq = p.maxseq
        if maxseq and (maxseq - ack) & M >= HALF:
            p.steady = False
            if maxseq > p.nextseq:
                p.maxseq = p.nextseq
            else:
                p.dupacks = -1
        if p.timed >= 0 and (ack - p.timed) & M < HALF:
            _sample(p, ts - p.timed_ts)
        h.data_segments += 1
        h.nextseq = h.timed = h.maxseq = end
        h.nextseq_ts = h.timed_ts = ts
        h.steady = h.stream_rtt is not None or h.syn_ts is None
    else:
        return False
    h.window = win
    h.lastack = ack
    h.lastack_ts = ts
    return True


def _sample(p, sample):
    """An RTT sample of side p's data (its timing ends)."""
    p.timed = -1
    if sample >= 0:
        if p.samples:
            if sample < p.sample_min:
                p.sample_min = sample
            elif sample > p.sample_max:
                p.sample_max = sample
        else:
            p.sample_min = p.sample_max = sample
        p.samples += 1
        p.sample_sum += sample


def take(a, b):
    """Both sides' counters since the last take, summed, and reset: (data_segments,
    retransmits, out_of_order, zero_windows, resets)."""
    out = (a.data_segments + b.data_segments, a.retransmits + b.retransmits, a.out_of_order + b.out_of_order,
           a.zero_windows + b.zero_windows, a.resets + b.resets)
    for h in (a, b):
        h.data_segments = h.retransmits = h.out_of_order = h.zero_windows = h.resets = 0
    return out


def fields(hp):
    """The flow's records.FlowDelta health fields in their order (rtt_ms ... resets), its
    counters taken (reset) by this; `hp`: a pair() element."""
    return rtts(*hp) + take(*hp)


def rtts(a, b):
    """(rtt_ms, rtt_min_ms, rtt_avg_ms, rtt_max_ms) of the flow, None where nothing was measured:
    the handshake RTT, and the running samples of the side with the larger minimum."""
    rtt = a.rtt
    h = a if a.samples and (not b.samples or a.sample_min >= b.sample_min) else b
    if not h.samples:
        return (None if rtt is None else rtt * 1000.0), None, None, None
    return ((None if rtt is None else rtt * 1000.0), h.sample_min * 1000.0,
            h.sample_sum / h.samples * 1000.0, h.sample_max * 1000.0)


# The compiled `Half` and `see` (capture/_tcp_health.c, built by `make`'s `pip install -e .`) replace
# these where they are built: the same steps on C numbers, about a tenth of the cost per segment.
# The Python ones stay the reference the tests hold the compiled ones to, and the fallback.
PyHalf, py_see, py_every_step = Half, see, _see
try:
    from capture import _tcp_health as compiled
except ImportError:         # not built (a clone run without `make`): the Python analysis, same numbers
    compiled = None
if compiled is not None and not os.environ.get("NETTALLY_PURE_PYTHON"):
    Half, see = compiled.Half, compiled.see
