"""A TCP flow's health state (capture/tcp_health.py) made at its second segment, not its first: the
one-segment flows of a SYN flood or a port scan then cost none (about 800 bytes each otherwise).

Until then a direction's health slot (the flow table's direction[6]) is LATER, or, for the side
that sent the flow's first segment, that segment packed (bytes): the slot moves with its side if
the flow table swaps the sides. The second segment makes the state, replays the first and is
seen. A delta taken while the flow still has one segment is measured on a state made for the
moment; the kept segment is then marked reported, so the state made later does not count it again.
"""
import struct

from capture.tcp_health import fields as tcp_fields, pair as tcp_pair, see as tcp_see, take as tcp_take

LATER = True
_SEGMENT = struct.Struct("<dHIIHiB")   # ts, flags, seq, ack, window, payload length, and 1 once reported
_PACK, _UNPACK = _SEGMENT.pack, _SEGMENT.unpack


def _first_sender(flow):
    """The direction holding the flow's kept first segment, or None before it."""
    if flow.orig[6] is not LATER:
        return flow.orig
    return flow.resp if flow.resp[6] is not LATER else None


def segment(c, *segment):
    """A segment sent by direction `c` of a flow whose state is not made yet."""
    flow = c[4]
    first_c = _first_sender(flow)
    if first_c is None:           # packed: 64 bytes instead of ~250 in a tuple of Python numbers
        c[6] = _PACK(*segment, 0)
        return
    *first, reported = _UNPACK(first_c[6])
    flow.orig[6], flow.resp[6] = tcp_pair()
    tcp_see(first_c[6], *first)
    if reported:                  # its counters left with an earlier delta (fields())
        tcp_take(*flow.orig[6])
    tcp_see(c[6], *segment)


def fields(flow):
    """The flow's health fields for its delta (counters since the last delta), () for a flow
    without TCP health."""
    hp = flow.orig[6]
    if hp is None:
        return ()
    if hp.__class__ is tuple:
        return tcp_fields(hp)
    a, b = tcp_pair()
    first_c = _first_sender(flow)
    if first_c is not None:
        *first, reported = _UNPACK(first_c[6])
        tcp_see(a if first_c is flow.orig else b, *first)
        if reported:
            tcp_take(*a)
        first_c[6] = _PACK(*first, 1)
    return tcp_fields(a)
