"""The frame decoder against scapy-built frames of every encapsulation, with exact results, and
random bytes for every link type (it must never raise)."""
import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import (AH, ARP, GRE, ICMP, IP, LLC, SNAP, TCP, UDP, Dot1Q, Dot11, Dot11Beacon, Dot11Elt,
                       Dot11QoS, Ether, ICMPv6DestUnreach, ICMPv6EchoRequest, IPOption_NOP, IPOption_RR, IPv6,
                       IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Jumbo,
                       PPP, PPPoE, RadioTap, Raw)
from scapy.contrib.mpls import MPLS
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD
from scapy.layers.sctp import SCTP
from scapy.layers.vxlan import VXLAN

import records as r
from capture.decode import decode as decode_frame
from records import Packet

E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
TCP4 = IP(src=A4, dst=B4) / TCP(sport=40000, dport=443, flags="S")
UDP6 = IPv6(src=A6, dst=B6) / UDP(sport=5353, dport=53)
SNAP_IP4 = LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=0x0800)
SNAP_IP6 = LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=0x86DD)
LINKTYPES = (0, 1, 9, 12, 14, 101, 105, 108, 113, 127, 228, 229, 276)


def raw(a):
    return ipaddress.ip_address(a).packed


def pkt(src, dst, proto, sport=0, dport=0, flags=0, frag=None):
    return Packet(raw(src), raw(dst), proto, sport, dport, flags, frag)


def decode(linktype, data):
    """The header fields the cases below name; the payload span has its own test."""
    out = decode_frame(linktype, data)
    return out._replace(start=0, end=0, tcp=None) if isinstance(out, Packet) else out


SYN4 = pkt(A4, B4, 6, 40000, 443, 0x02)
DNS6 = pkt(A6, B6, 17, 5353, 53)


def dot11(subtype=0, fc=1, **kw):
    return Dot11(type=2, subtype=subtype, FCfield=fc, addr1="02:00:00:00:00:01", addr2="02:00:00:00:00:02",
                 addr3="02:00:00:00:00:03", **kw)


# ---- link layers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame, want", [
    (E / TCP4, SYN4),
    (E / UDP6, DNS6),
    (E / Dot1Q(vlan=10) / TCP4, SYN4),
    (Ether(type=0x88A8) / Dot1Q(vlan=10) / Dot1Q(vlan=20) / TCP4, SYN4),
    (Ether(type=0x9100) / Dot1Q(vlan=10) / Dot1Q(vlan=20) / UDP6, DNS6),
    (E / Dot1AD(vlan=7) / Dot1Q(vlan=8) / Dot1Q(vlan=9) / TCP4, SYN4),        # three tags
    (E / MPLS(label=100, s=1) / TCP4, SYN4),
    (E / MPLS(label=100, s=0) / MPLS(label=200, s=0) / MPLS(label=300, s=1) / UDP6, DNS6),
    (E / PPPoE(sessionid=7) / PPP(proto=0x0021) / TCP4, SYN4),
    (E / PPPoE(sessionid=7) / PPP(proto=0x0057) / UDP6, DNS6),
    (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=len(SNAP_IP4 / TCP4)) / SNAP_IP4 / TCP4, SYN4),
    (E / ARP(), None),
    (Ether(type=0x88CC) / Raw(b"\x02\x07\x04" + b"\x00" * 40), None),                      # LLDP
    (Ether(type=38) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\x00" * 35), None),         # STP over 802.3
    (E / MPLS(label=100, s=1) / Raw(b"\x00\x00\x00\x00" + b"\x00" * 40), None),           # pseudowire control word
], ids=lambda v: v.summary() if hasattr(v, "summary") else None)
def test_ethernet_encapsulations(frame, want):
    assert decode(r.LINKTYPE_ETHERNET, bytes(frame)) == want


def test_legacy_qinq_tags_0x9200_0x9300_are_followed():
    # tshark (4.0) does not know these vendor tags; the decoder counts what is behind them
    for tpid in (0x9200, 0x9300):
        assert decode(1, bytes(Ether(type=tpid) / Dot1Q(vlan=3) / TCP4)) == SYN4


@pytest.mark.parametrize("linktype, frame, want", [
    (113, CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=0x0800) / TCP4, SYN4),
    (113, CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, proto=0x86DD) / UDP6, DNS6),
    (113, CookedLinux(lladdrtype=1, proto=0x8100) / Dot1Q(vlan=5, type=0x0800) / TCP4, SYN4),
    (113, CookedLinux(lladdrtype=1, proto=0x0806) / ARP(), None),
    (113, CookedLinux(lladdrtype=824, proto=0x0800) / Raw(bytes(TCP4)), None),          # netlink: family, not ethertype
    (276, CookedLinuxV2(proto=0x0800, lladdrtype=1, lladdrlen=6) / TCP4, SYN4),
    (276, CookedLinuxV2(proto=0x86DD, lladdrtype=1, lladdrlen=6) / UDP6, DNS6),
    (276, CookedLinuxV2(proto=0x0806, lladdrtype=1, lladdrlen=6) / ARP(), None),
    (276, CookedLinuxV2(proto=0x0800, lladdrtype=824) / Raw(bytes(TCP4)), None),
    (101, TCP4, SYN4), (101, UDP6, DNS6), (101, Raw(b"\x50" + b"\x00" * 39), "raw_ip_bad_version"),
    (12, TCP4, SYN4), (12, UDP6, DNS6), (14, TCP4, SYN4), (14, UDP6, DNS6),
    (228, TCP4, SYN4), (228, UDP6, DNS6),     # like tshark: a version-6 header on LINKTYPE_IPV4 is IPv6
    (229, UDP6, DNS6), (229, TCP4, "ipv6_bad_version"), (229, bytes(TCP4)[:39], "ipv6_truncated"),
    (0, struct.pack("<I", 2) + bytes(TCP4), SYN4),                   # little-endian capturing host
    (0, struct.pack(">I", 2) + bytes(TCP4), SYN4),                   # big-endian capturing host
    (0, struct.pack("<I", 24) + bytes(UDP6), DNS6),                  # NetBSD / OpenBSD AF_INET6
    (0, struct.pack("<I", 28) + bytes(UDP6), DNS6),                  # FreeBSD
    (0, struct.pack(">I", 30) + bytes(UDP6), DNS6),                  # Darwin
    (0, struct.pack("<I", 7) + bytes(TCP4), None),                   # another family: not IP
    (108, struct.pack(">I", 2) + bytes(TCP4), SYN4),
    (108, struct.pack(">I", 24) + bytes(UDP6), DNS6),
    (108, struct.pack(">I", 30) + bytes(UDP6), DNS6),
    (9, b"\xff\x03\x00\x21" + bytes(TCP4), SYN4),
    (9, b"\x00\x21" + bytes(TCP4), SYN4),                            # address/control compressed
    (9, b"\xff\x03\x21" + bytes(TCP4), SYN4),                        # protocol field compressed
    (9, b"\xff\x03\x00\x57" + bytes(UDP6), DNS6),
    (9, b"\xff\x03\xc0\x21\x01\x01\x00\x04", None),                  # LCP
], ids=lambda v: str(v) if isinstance(v, int) else None)
def test_other_link_types(linktype, frame, want):
    assert decode(linktype, bytes(frame)) == want


@pytest.mark.parametrize("frame, want", [
    (dot11() / SNAP_IP4 / TCP4, SYN4),                                                # to-DS data
    (dot11(subtype=8) / Dot11QoS() / SNAP_IP6 / UDP6, DNS6),                          # QoS data
    (dot11(subtype=8, fc=0x81) / Dot11QoS() / Raw(b"\x00" * 4) / SNAP_IP4 / TCP4, SYN4),  # QoS + HT control
    (dot11(fc=3, addr4="02:00:00:00:00:04") / SNAP_IP4 / TCP4, SYN4),                # four addresses (WDS)
    (Dot11(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2="02:00:00:00:00:02", addr3="02:00:00:00:00:02")
     / Dot11Beacon() / Dot11Elt(ID=0, info=b"lab"), None),                          # management
    (dot11(subtype=4), None),                                                         # null data
    (dot11(fc=0x41) / Raw(b"\x00" * 40), None),                                       # protected
    (dot11() / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\x00" * 20), None),          # LLC without SNAP
], ids=lambda v: v.summary() if hasattr(v, "summary") else None)
def test_802_11_with_and_without_radiotap(frame, want):
    assert decode(r.LINKTYPE_IEEE802_11, bytes(frame)) == want
    assert decode(r.LINKTYPE_IEEE802_11_RADIOTAP, bytes(RadioTap() / frame)) == want
    tsft_rate = RadioTap(present="TSFT+Rate", Rate=2, mac_timestamp=5)
    assert decode(r.LINKTYPE_IEEE802_11_RADIOTAP, bytes(tsft_rate / frame)) == want


def test_radiotap_data_padding_after_the_mac_header():
    qos = dot11(subtype=8) / Dot11QoS()          # 26-byte header, padded to 28 when DATAPAD is set
    datapad = RadioTap(present="TSFT+Flags+Rate", Flags=0x20, Rate=2, mac_timestamp=5)
    padded = datapad / qos / b"\x00\x00" / SNAP_IP4 / TCP4
    assert decode(127, bytes(padded)) == SYN4
    no_tsft = RadioTap(present="Flags", Flags=0x20) / qos / b"\x00\x00" / SNAP_IP4 / TCP4
    assert decode(127, bytes(no_tsft)) == SYN4
    unpadded = RadioTap(present="TSFT+Flags+Rate", Flags=0, Rate=2, mac_timestamp=5) / qos / SNAP_IP4 / TCP4
    assert decode(127, bytes(unpadded)) == SYN4
    fcs = RadioTap(present="Flags", Flags=0x10) / dot11() / SNAP_IP4 / TCP4 / (b"\x00" * 4)
    assert decode(127, bytes(fcs)) == SYN4


# ---- IP and transport -----------------------------------------------------------------------------

def test_ipv4_with_options_and_fragments():
    opts = IP(src=A4, dst=B4, options=[IPOption_RR(), IPOption_NOP()]) / UDP(sport=11, dport=12)
    assert decode(1, bytes(E / opts)) == pkt(A4, B4, 17, 11, 12)
    first = IP(src=A4, dst=B4, id=77, flags="MF") / UDP(sport=21, dport=22) / Raw(b"a" * 32)
    assert decode(1, bytes(E / first)) == pkt(A4, B4, 17, 21, 22, frag=(77, 0, True))
    later = IP(src=A4, dst=B4, id=77, frag=5, proto=17) / Raw(b"b" * 32)
    assert decode(1, bytes(E / later)) == pkt(A4, B4, 17, 0, 0, frag=(77, 40, False))
    middle = IP(src=A4, dst=B4, id=77, frag=2, flags="MF", proto=6) / Raw(b"c" * 8)
    assert decode(1, bytes(E / middle)) == pkt(A4, B4, 6, 0, 0, frag=(77, 16, True))


def test_ipv6_extension_headers():
    def v6(*layers):
        out = IPv6(src=A6, dst=B6)
        for layer in layers:
            out = out / layer
        return decode(1, bytes(E / out))
    assert v6(IPv6ExtHdrHopByHop(), UDP(sport=1, dport=2)) == pkt(A6, B6, 17, 1, 2)
    assert v6(IPv6ExtHdrRouting(), TCP(sport=3, dport=4, flags="SA")) == pkt(A6, B6, 6, 3, 4, 0x12)
    assert v6(IPv6ExtHdrDestOpt(), UDP(sport=5, dport=6)) == pkt(A6, B6, 17, 5, 6)
    chain = (IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(), IPv6ExtHdrDestOpt(), IPv6ExtHdrFragment(m=1, id=9))
    assert v6(*chain, TCP(sport=7, dport=8, flags="A")) == pkt(A6, B6, 6, 7, 8, 0x10, (9, 0, True))
    assert v6(IPv6ExtHdrFragment(offset=3, id=9, nh=6), Raw(b"x" * 24)) == pkt(A6, B6, 6, 0, 0, 0, (9, 24, False))
    # a destination-options header after the fragment header: the fragment carries protocol 60
    assert v6(IPv6ExtHdrFragment(m=1, id=10), IPv6ExtHdrDestOpt(), UDP()) == pkt(A6, B6, 60, 0, 0, 0, (10, 0, True))
    # AH names the protocol, as IPv4's protocol field would (tshark reports it so too)
    assert v6(AH(nh=6), TCP(sport=9, dport=10)) == pkt(A6, B6, 51)
    assert v6(IPv6ExtHdrHopByHop(), AH(nh=6), TCP()) == pkt(A6, B6, 51)
    assert v6(IPv6ExtHdrHopByHop(), ICMPv6EchoRequest()) == pkt(A6, B6, 58)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6, nh=0) / b"\x06")) == pkt(A6, B6, 0)   # chain cut short


def test_ports_and_protocols():
    assert decode(1, bytes(E / IP(src=A4, dst=B4) / SCTP(sport=3868, dport=3869))) == pkt(A4, B4, 132, 3868, 3869)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6) / SCTP(sport=36412, dport=2905))) == pkt(A6, B6, 132, 36412, 2905)
    assert decode(1, bytes(E / IP(src=A4, dst=B4) / ICMP())) == pkt(A4, B4, 1)
    assert decode(1, bytes(E / IP(src=A4, dst=B4, proto=89) / Raw(b"o" * 30))) == pkt(A4, B4, 89)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6, nh=253) / Raw(b"o" * 30))) == pkt(A6, B6, 253)
    # TCP flags: only when the flags byte was captured
    frame = bytes(E / IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="FA"))
    assert decode(1, frame) == pkt(A4, B4, 6, 1, 2, 0x11)
    assert decode(1, frame[:14 + 20 + 4]) == pkt(A4, B4, 6, 1, 2, 0)
    assert decode(1, frame[:14 + 20 + 3]) == pkt(A4, B4, 6, 0, 0, 0)


def test_tunnels_and_icmp_errors_count_for_the_outer_header():
    inner = IP(src="192.168.0.1", dst="192.168.0.2") / TCP(sport=4000, dport=443)
    assert decode(1, bytes(E / IP(src=A4, dst=B4) / GRE() / inner)) == pkt(A4, B4, 47)
    assert decode(1, bytes(E / IP(src=A4, dst=B4) / GRE(proto=0x6558) / Ether() / inner)) == pkt(A4, B4, 47)
    vxlan = E / IP(src=A4, dst=B4) / UDP(sport=40000, dport=4789) / VXLAN(vni=5) / Ether() / inner
    assert decode(1, bytes(vxlan)) == pkt(A4, B4, 17, 40000, 4789)
    assert decode(1, bytes(E / IP(src=A4, dst=B4) / inner)) == pkt(A4, B4, 4)
    assert decode(1, bytes(E / IP(src=A4, dst=B4) / UDP6)) == pkt(A4, B4, 41)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6) / inner)) == pkt(A6, B6, 4)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6) / UDP6)) == pkt(A6, B6, 41)
    quoted = IP(src=B4, dst="10.9.9.9") / UDP(sport=53, dport=33000)
    assert decode(1, bytes(E / IP(src=A4, dst=B4) / ICMP(type=3, code=3) / quoted)) == pkt(A4, B4, 1)
    quoted6 = IPv6(src=B6, dst="2001:db8::9") / TCP(sport=1, dport=2)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6) / ICMPv6DestUnreach() / quoted6)) == pkt(A6, B6, 58)


def test_jumbograms_and_big_tcp():
    seg = TCP(sport=1, dport=2, flags="A") / Raw(b"z" * 100)
    assert decode(1, bytes(E / IP(src=A4, dst=B4, len=0) / seg)) == pkt(A4, B4, 6, 1, 2, 0x10)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6, plen=0) / seg)) == pkt(A6, B6, 6, 1, 2, 0x10)
    jumbo = IPv6(src=A6, dst=B6, plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)]) / seg
    assert decode(1, bytes(E / jumbo)) == pkt(A6, B6, 6, 1, 2, 0x10)
    assert decode(1, bytes(E / IPv6(src=A6, dst=B6, plen=0) / UDP(sport=7, dport=8))) == pkt(A6, B6, 17, 7, 8)


@pytest.mark.parametrize("linktype, frame, reason", [
    (1, b"\x00" * 13, "ethernet_truncated"),
    (1, bytes(Ether(type=0x8100)) + b"\x00\x01", "vlan_truncated"),
    (1, bytes(Ether(type=0x8847)) + b"\x00\x00", "mpls_truncated"),
    (1, bytes(Ether(type=0x8847)) + b"\x00\x00\x01\x40", "mpls_truncated"),
    (1, bytes(Ether(type=0x8864)) + b"\x11\x00\x00\x07", "pppoe_truncated"),
    (1, bytes(E / TCP4)[:14 + 19], "ipv4_truncated"),
    (1, bytes(Ether(type=0x0800)) + b"\x65" + b"\x00" * 19, "ipv4_bad_version"),
    (1, bytes(Ether(type=0x0800)) + b"\x44" + b"\x00" * 19, "ipv4_bad_header_length"),
    (1, bytes(Ether(type=0x0800)) + bytes(IP(src=A4, dst=B4, len=10)), "ipv4_bad_total_length"),
    (1, bytes(E / UDP6)[:14 + 39], "ipv6_truncated"),
    (1, bytes(Ether(type=0x86DD)) + b"\x40" + b"\x00" * 39, "ipv6_bad_version"),
    (113, b"\x00" * 15, "sll_truncated"),
    (276, b"\x00" * 19, "sll2_truncated"),
    (101, b"", "raw_ip_truncated"),
    (0, b"\x02\x00", "loopback_truncated"),
    (105, bytes(dot11())[:23], "wlan_truncated"),
    (127, b"\x00\x00\x08", "radiotap_truncated"),
    (127, bytes(RadioTap() / dot11())[:20], "wlan_truncated"),
    (9, b"\xff\x03", "truncated"),
])
def test_undecodable_frames_get_a_reason(linktype, frame, reason):
    assert decode(linktype, frame) == reason


def test_unknown_link_type_is_not_ip():
    assert decode(4242, bytes(TCP4)) is None


# ---- never raises -----------------------------------------------------------------------------------

def _check(result):
    assert result is None or isinstance(result, (Packet, str))
    if isinstance(result, Packet):
        assert len(result.src) in (4, 16) and len(result.src) == len(result.dst)
        assert 0 <= result.proto <= 255 and 0 <= result.sport <= 65535 and 0 <= result.dport <= 65535


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(LINKTYPES + (4242,)), st.binary(max_size=200))
def test_random_bytes_never_raise(linktype, data):
    _check(decode(linktype, data))


SEEDS = [bytes(E / Dot1Q(vlan=2) / MPLS(s=1) / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment()
               / TCP()),
         bytes(E / PPPoE() / PPP(proto=0x21) / IP(options=[IPOption_NOP()] * 4) / UDP()),
         bytes(RadioTap(present="TSFT+Flags", Flags=0x20) / dot11(subtype=8) / Dot11QoS() / b"\0\0" / SNAP_IP4 / TCP4),
         bytes(CookedLinuxV2(proto=0x86DD) / IPv6(src=A6, dst=B6) / IPv6ExtHdrRouting() / SCTP())]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SEEDS))), st.sampled_from(LINKTYPES),
       st.lists(st.tuples(st.integers(0, 140), st.integers(0, 255)), max_size=6), st.integers(0, 150))
def test_mutated_frames_never_raise(seed, linktype, changes, cut):
    frame = bytearray(SEEDS[seed])
    for at, value in changes:
        if at < len(frame):
            frame[at] = value
    _check(decode(linktype, bytes(frame[:cut])))
    _check(decode(linktype, bytes(frame)))


@pytest.mark.parametrize("frame, payload", [
    (E / IP(src=A4, dst=B4) / TCP(sport=1, dport=2, options=[("MSS", 1460), ("NOP", None)]) / b"GET / HTTP/1.1\r\n",
     b"GET / HTTP/1.1\r\n"),
    (E / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / UDP(sport=5, dport=53) / b"q",
     b"q"),
    (E / IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / b"abc" / Raw(b"\x00" * 0), b"abc"),
    (E / IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="S"), b""),
])
def test_payload_span_is_the_transport_payload(frame, payload):
    data = bytes(frame)
    out = decode_frame(1, data)
    assert data[out.start:out.end] == payload


def test_payload_span_stops_at_the_ip_length_not_the_frame():
    data = bytes(E / IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / b"abc") + b"\x00" * 20   # Ethernet padding
    out = decode_frame(1, data)
    assert data[out.start:out.end] == b"abc"
    cut = decode_frame(1, data[:14 + 20 + 8 + 1])                                           # snaplen cut
    assert data[cut.start:cut.end] == b"a"
