"""The frame decoder: raw link-layer bytes -> the outermost IP header and its ports.

Pure and allocation-light: `struct` on the frame's bytes, no scapy layers. `decode` returns
  - a `Packet` for a frame that carries IP (the OUTERMOST IP header: tunnels are not opened),
  - None for a frame without IP (ARP, LLDP, 802.11 management...),
  - a short reason string for a frame that cannot be decoded (counted under that reason).
It never raises on any input (tests feed it random bytes).
"""
import struct

import records as r
from records import Packet

_U16 = struct.Struct("!H").unpack_from
_U32LE = struct.Struct("<I").unpack_from
_IPV4 = struct.Struct("!BxHHHxB2x4s4s").unpack_from      # vihl, total len, id, flags+offset, proto, src, dst
_IPV6 = struct.Struct("!4xHB1x16s16s").unpack_from       # payload len, next header, src, dst
_PORTS = struct.Struct("!HH").unpack_from
_FRAG6 = struct.Struct("!B1xHI").unpack_from              # next header, offset+flags, identification
_SEQ_ACK_WIN = struct.Struct("!II2xH").unpack_from        # TCP sequence, acknowledgement, window (after the ports)

VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200, 0x9300))
MPLS_TYPES = frozenset((0x8847, 0x8848))
ETH_IPV4, ETH_IPV6, ETH_PPPOE_SESSION = 0x0800, 0x86DD, 0x8864
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
# IPv6 extension headers walked through to reach the transport header. AH (51) is not among
# them: like IPv4's protocol field it names the packet's protocol (as tshark reports it).
_IPV6_EXT = frozenset((0, 43, 60))
_IPV6_FRAGMENT = 44
_SNAP = b"\xaa\xaa\x03\x00\x00\x00"
_BSD_AF_INET6 = frozenset((24, 28, 30))   # NetBSD/OpenBSD, FreeBSD, Darwin


def decode(linktype: int, data: bytes) -> Packet | None | str:
    try:
        return _LINK.get(linktype, _non_ip)(data)
    except (struct.error, IndexError):
        return "truncated"


def _non_ip(data):
    return None


def _ethernet(data, off=0):
    if len(data) < off + 14:
        return "ethernet_truncated"
    return _by_ethertype(data, off + 14, _U16(data, off + 12)[0])


def _by_ethertype(data, off, etype):
    """Follows VLAN tags, MPLS label stacks, PPPoE and LLC/SNAP down to IP."""
    while etype in VLAN_TYPES:
        if len(data) < off + 4:
            return "vlan_truncated"
        etype = _U16(data, off + 2)[0]
        off += 4
    if etype == ETH_IPV4:
        return ipv4(data, off)
    if etype == ETH_IPV6:
        return ipv6(data, off)
    if etype in MPLS_TYPES:
        return _mpls(data, off)
    if etype == ETH_PPPOE_SESSION:
        if len(data) < off + 8:
            return "pppoe_truncated"
        return _ppp_protocol(data, off + 8, _U16(data, off + 6)[0])
    if etype < 0x0600:   # an 802.3 length: an LLC frame, IP only behind a SNAP header
        if data[off:off + 6] == _SNAP and len(data) >= off + 8:
            return _by_ethertype(data, off + 8, _U16(data, off + 6)[0])
    return None


def _mpls(data, off):
    while True:
        if len(data) < off + 4:
            return "mpls_truncated"
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            break
    if len(data) <= off:
        return "mpls_truncated"
    version = data[off] >> 4
    if version == 4:
        return ipv4(data, off)
    if version == 6:
        return ipv6(data, off)
    return None   # pseudowire or other payload: not IP at this level


def _ppp_protocol(data, off, proto):
    if proto == PPP_IPV4:
        return ipv4(data, off)
    if proto == PPP_IPV6:
        return ipv6(data, off)
    return None


def _ppp(data):
    off = 2 if data[:2] == b"\xff\x03" else 0
    if data[off] & 1:    # protocol field compressed to one byte
        return _ppp_protocol(data, off + 1, data[off])
    return _ppp_protocol(data, off + 2, _U16(data, off)[0])


def _raw(data, off=0):
    if len(data) <= off:
        return "raw_ip_truncated"
    version = data[off] >> 4
    if version == 4:
        return ipv4(data, off)
    if version == 6:
        return ipv6(data, off)
    return "raw_ip_bad_version"


def _bsd_loopback(data):
    if len(data) < 4:
        return "loopback_truncated"
    family = data[0] or data[3]     # host byte order of the capturing machine: either end
    if family == 2:
        return ipv4(data, 4)
    if family in _BSD_AF_INET6:
        return ipv6(data, 4)
    return None


def _linux_sll(data):
    if len(data) < 16:
        return "sll_truncated"
    if _U16(data, 2)[0] == 824:    # ARPHRD_NETLINK: the protocol field is a netlink family
        return None
    return _by_ethertype(data, 16, _U16(data, 14)[0])


def _linux_sll2(data):
    if len(data) < 20:
        return "sll2_truncated"
    if _U16(data, 8)[0] == 824:
        return None
    return _by_ethertype(data, 20, _U16(data, 0)[0])


def _ieee802_11(data, off=0, pad=False):
    """Data frames carry LLC/SNAP after the MAC header; everything else is not IP. `pad`: the
    radiotap header said the MAC header is padded to a multiple of 4 bytes."""
    if len(data) < off + 24:
        return "wlan_truncated"
    fc0, fc1 = data[off], data[off + 1]
    if (fc0 >> 2) & 3 != 2 or fc1 & 0x40 or fc0 & 0x40:   # not data, protected, or a null-data frame
        return None
    hdr = 24
    if fc1 & 3 == 3:
        hdr += 6          # four-address (WDS) frame
    if fc0 & 0x80:
        hdr += 2          # QoS control
        if fc1 & 0x80:
            hdr += 4      # HT control
    if pad:
        hdr = (hdr + 3) & ~3
    start = off + hdr
    if data[start:start + 6] != _SNAP or len(data) < start + 8:
        return None
    return _by_ethertype(data, start + 8, _U16(data, start + 6)[0])


def _radiotap(data):
    if len(data) < 4:
        return "radiotap_truncated"
    length = data[2] | data[3] << 8
    return _ieee802_11(data, length, _radiotap_data_pad(data, length))


def _radiotap_data_pad(data, length):
    """True when the radiotap Flags field has DATAPAD (0x20): some drivers pad the 802.11
    header to 32 bits, and the LLC header starts after that padding."""
    if length < 8 or len(data) < 8:
        return False
    first = present = _U32LE(data, 4)[0]
    p = 4
    while present & 0x80000000:        # more presence words follow
        p += 4
        if p + 4 > length:
            return False
        present = _U32LE(data, p)[0]
    if not first & 2:                  # no Flags field
        return False
    p += 4
    if first & 1:                      # TSFT comes first: 8 bytes, aligned to 8 from the header start
        p = ((p + 7) & ~7) + 8
    return p < length and bool(data[p] & 0x20)


def ipv4(data, off):
    if len(data) < off + 20:
        return "ipv4_truncated"
    vihl, total, ident, frag, proto, src, dst = _IPV4(data, off)
    if vihl >> 4 != 4:
        return "ipv4_bad_version"
    ihl = (vihl & 15) * 4
    if ihl < 20:
        return "ipv4_bad_header_length"
    if 0 < total < ihl:           # 0 is TSO / BIG TCP: the length is the frame's
        return "ipv4_bad_total_length"
    offset = (frag & 0x1FFF) * 8
    more = frag & 0x2000
    fragment = (ident, offset, bool(more)) if offset or more else None
    if offset:
        return Packet(src, dst, proto, 0, 0, 0, fragment)   # ports come from the first fragment
    end = off + total if total else len(data)
    return _transport(data, off + ihl, min(end, len(data)), src, dst, proto, fragment, end)


def ipv6(data, off):
    if len(data) < off + 40:
        return "ipv6_truncated"
    if data[off] >> 4 != 6:
        return "ipv6_bad_version"
    plen, nh, src, dst = _IPV6(data, off)
    p = off + 40
    declared = p + plen if plen else len(data)
    end = min(declared, len(data))                          # 0: jumbogram / BIG TCP
    while nh in _IPV6_EXT:
        if end < p + 2:
            return Packet(src, dst, nh, 0, 0, 0, None)
        nh, p = data[p], p + (data[p + 1] + 1) * 8
    if nh == _IPV6_FRAGMENT:
        if end < p + 8:
            return Packet(src, dst, nh, 0, 0, 0, None)
        nh, offflags, ident = _FRAG6(data, p)
        offset = offflags & 0xFFF8
        fragment = (ident, offset, bool(offflags & 1))
        if offset:
            return Packet(src, dst, nh, 0, 0, 0, fragment)
        return _transport(data, p + 8, end, src, dst, nh, fragment, declared)
    return _transport(data, p, end, src, dst, nh, None, declared)


def _transport(data, p, end, src, dst, proto, fragment, declared):
    """`end`: where the IP payload ends in what was captured; `declared`: where the IP header
    says it ends (a TCP segment's length for its analysis, whatever the snap length cut)."""
    if proto in r.PORTED_PROTOS and end >= p + 4:
        sport, dport = _PORTS(data, p)
        if proto == 6:
            if end < p + 14:
                return Packet(src, dst, proto, sport, dport, 0, fragment)
            start = p + (data[p + 12] >> 4) * 4
            tcp = None
            # the analysis (capture/tcp_health.py) needs seq, ack and window, a sane header length,
            # and a whole segment: like tshark, fragments are not analysed (tshark reassembles them)
            if end >= p + 16 and start >= p + 20 and declared >= start and fragment is None:
                tcp = _SEQ_ACK_WIN(data, p + 4) + (declared - start,)
            return Packet(src, dst, proto, sport, dport, data[p + 13], fragment, start, max(start, end), tcp)
        start = p + 8 if proto == 17 else p
        return Packet(src, dst, proto, sport, dport, 0, fragment, min(start, end), end)
    return Packet(src, dst, proto, 0, 0, 0, fragment)


_LINK = {
    r.LINKTYPE_ETHERNET: _ethernet,
    r.LINKTYPE_LINUX_SLL: _linux_sll,
    r.LINKTYPE_LINUX_SLL2: _linux_sll2,
    r.LINKTYPE_RAW: _raw,
    r.LINKTYPE_RAW_BSD_12: _raw,
    r.LINKTYPE_RAW_BSD_14: _raw,
    r.LINKTYPE_IPV4: _raw,     # like tshark, a version-6 header here is read as IPv6
    r.LINKTYPE_IPV6: lambda data: ipv6(data, 0),
    r.LINKTYPE_NULL: _bsd_loopback,
    r.LINKTYPE_LOOP: _bsd_loopback,
    r.LINKTYPE_PPP: _ppp,
    r.LINKTYPE_IEEE802_11: _ieee802_11,
    r.LINKTYPE_IEEE802_11_RADIOTAP: _radiotap,
}
