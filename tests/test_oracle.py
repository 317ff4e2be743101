"""Captures of every encapsulation, built with scapy (one file per link type), imported with
`run.py import`, exported with `run.py export`, and checked twice: against the numbers each case
must give (written out here by hand) and against tshark decoding the same file (tests/oracle.py;
skipped, saying why, where tshark is absent). Also every capture in ../shared/captures, when that
folder exists (a fresh clone has none)."""
import ipaddress
import re
import struct
from pathlib import Path
from typing import NamedTuple

import pytest
from scapy.all import (AH, ARP, ESP, GRE, ICMP, IP, LLC, SNAP, TCP, UDP, Dot1Q, Dot11, Dot11Beacon, Dot11Elt,
                       Dot11QoS, Ether, ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPOption_NOP,
                       IPOption_RR, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                       IPv6ExtHdrRouting, Jumbo, PPP, PPPoE, RadioTap, Raw)
from scapy.contrib.mpls import MPLS
from scapy.layers.l2 import CookedLinux, CookedLinuxV2
from scapy.layers.sctp import SCTP
from scapy.layers.vxlan import VXLAN

import captures
import oracle
from common import cli
from records import MAX_WIRE_LEN, proto_number
from storage.interfaces import interface_totals, undecodable_reasons
from storage.db import connect

needs_tshark = pytest.mark.skipif(not oracle.available(),
                                  reason="tshark is not installed (make test installs it as root on Debian)")
pytestmark = pytest.mark.system        # tshark as the oracle, real captures
SHARED = Path(__file__).resolve().parents[2] / "shared" / "captures"
T0 = 1_700_000_040.0          # a minute boundary: every case of a file lands in one bucket


class Case(NamedTuple):
    name: str
    frame: bytes
    flow: tuple | None = None       # (proto, src, sport, dst, dport) the frame counts for; None: not IP
    wire: int | None = None         # orig_len when it is not the captured length
    reason: str | None = None       # undecodable: the reason it is counted under
    syn: bool = False               # a bare TCP SYN (names the flow's originator)
    tshark_ports: bool = True       # False where tshark 4.0 cannot read these ports (see below)


def ip_case(name, frame, flow, wire=None, syn=False, tshark_ports=True):
    return Case(name, bytes(frame), flow, wire, None, syn, tshark_ports)


def non_ip(name, frame, wire=None):
    return Case(name, bytes(frame), wire=wire)


def bad(name, frame, reason):
    return Case(name, bytes(frame), reason=reason)


E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def a(n):
    return f"10.1.{n}.1"


def b(n):
    return f"10.1.{n}.2"


def a6(n):
    return f"2001:db8:{n:x}::1"


def b6(n):
    return f"2001:db8:{n:x}::2"


def snap(code):
    return LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=code)


def tcp4(n, sport=40000, dport=443, flags="A"):
    return IP(src=a(n), dst=b(n)) / TCP(sport=sport, dport=dport, flags=flags)


def udp6(n, sport=5353, dport=53):
    return IPv6(src=a6(n), dst=b6(n)) / UDP(sport=sport, dport=dport)


def ethernet_cases():
    inner = IP(src="192.168.0.1", dst="192.168.0.2") / TCP(sport=4000, dport=443)
    seg = TCP(sport=1, dport=2, flags="A") / Raw(b"z" * 120)
    frag_first = IP(src=a(9), dst=b(9), id=100, flags="MF") / UDP(sport=7000, dport=7001) / Raw(b"a" * 32)
    frag_mid = IP(src=a(9), dst=b(9), id=100, flags="MF", frag=5, proto=17) / Raw(b"b" * 32)
    frag_last = IP(src=a(9), dst=b(9), id=100, frag=9, proto=17) / Raw(b"c" * 10)
    tcp_frag = IP(src=a(9), dst=b(9), id=103, flags="MF", options=[IPOption_NOP()] * 4) / TCP(sport=31, dport=32)
    tcp_frag2 = IP(src=a(9), dst=b(9), id=103, frag=3, proto=6, options=[IPOption_NOP()] * 4) / Raw(b"d" * 16)
    v6frag = IPv6(src=a6(10), dst=b6(10))
    big4 = bytes(E / IP(src=a(15), dst=b(15), len=0) / seg)
    jumbo = bytes(E / IPv6(src=a6(15), dst=b6(15), plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)]) / seg)
    big6 = bytes(E / IPv6(src=a6(16), dst=b6(16), plen=0) / seg)
    full = bytes(E / tcp4(17, 5000, 80) / Raw(b"p" * 1460))
    return [
        # TCP orientation: the server's packet is seen first, then the client's SYN names the originator
        ip_case("tcp from server first", E / IP(src=b(1), dst=a(1)) / TCP(sport=80, dport=40000, flags="A"),
                (6, b(1), 80, a(1), 40000)),
        ip_case("tcp syn", E / IP(src=a(1), dst=b(1)) / TCP(sport=40000, dport=80, flags="S"),
                (6, a(1), 40000, b(1), 80), syn=True),
        ip_case("tcp ack", E / IP(src=a(1), dst=b(1)) / TCP(sport=40000, dport=80, flags="A") / Raw(b"x" * 100),
                (6, a(1), 40000, b(1), 80)),
        ip_case("802.1Q", E / Dot1Q(vlan=10) / IP(src=a(2), dst=b(2)) / UDP(sport=5000, dport=53),
                (17, a(2), 5000, b(2), 53)),
        ip_case("QinQ 0x88a8", Ether(type=0x88A8) / Dot1Q(vlan=10) / Dot1Q(vlan=20) / tcp4(3),
                (6, a(3), 40000, b(3), 443)),
        ip_case("QinQ 0x9100", Ether(type=0x9100) / Dot1Q(vlan=10) / Dot1Q(vlan=20) / udp6(3),
                (17, a6(3), 5353, b6(3), 53)),
        ip_case("MPLS 2 labels", E / MPLS(label=16, s=0) / MPLS(label=17, s=1) / tcp4(4),
                (6, a(4), 40000, b(4), 443)),
        ip_case("MPLS 3 labels IPv6", E / MPLS(s=0) / MPLS(s=0) / MPLS(s=1) / udp6(4), (17, a6(4), 5353, b6(4), 53)),
        ip_case("PPPoE IPv4", E / PPPoE(sessionid=5) / PPP(proto=0x21) / tcp4(5), (6, a(5), 40000, b(5), 443)),
        ip_case("PPPoE IPv6", E / PPPoE(sessionid=5) / PPP(proto=0x57) / udp6(5), (17, a6(5), 5353, b6(5), 53)),
        ip_case("802.3 LLC/SNAP", Ether(type=len(snap(0x800) / tcp4(6))) / snap(0x800) / tcp4(6),
                (6, a(6), 40000, b(6), 443)),
        ip_case("IPv4 options",
                E / IP(src=a(7), dst=b(7), options=[IPOption_RR(), IPOption_NOP()]) / UDP(sport=11, dport=12),
                (17, a(7), 11, b(7), 12)),
        # fragments: later ones inherit the first's ports; without a first one seen before: ports 0
        ip_case("fragment, first", E / frag_first, (17, a(9), 7000, b(9), 7001)),
        ip_case("fragment, middle", E / frag_mid, (17, a(9), 7000, b(9), 7001)),
        ip_case("fragment, last", E / frag_last, (17, a(9), 7000, b(9), 7001)),
        ip_case("fragment without a first", E / IP(src=a(9), dst=b(9), id=101, frag=5, proto=17) / Raw(b"e" * 8),
                (17, a(9), 0, b(9), 0)),
        ip_case("fragment before its first", E / IP(src=a(9), dst=b(9), id=102, frag=5, proto=17) / Raw(b"f" * 8),
                (17, a(9), 0, b(9), 0)),
        ip_case("first after its fragment",
                E / IP(src=a(9), dst=b(9), id=102, flags="MF") / UDP(sport=8000, dport=8001),
                (17, a(9), 8000, b(9), 8001)),
        ip_case("TCP fragment with options", E / tcp_frag, (6, a(9), 31, b(9), 32)),
        ip_case("TCP fragment 2", E / tcp_frag2, (6, a(9), 31, b(9), 32)),
        ip_case("IPv6 hop-by-hop", E / IPv6(src=a6(10), dst=b6(10)) / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2),
                (17, a6(10), 1, b6(10), 2)),
        ip_case("IPv6 routing", E / IPv6(src=a6(10), dst=b6(10)) / IPv6ExtHdrRouting() / TCP(sport=3, dport=4),
                (6, a6(10), 3, b6(10), 4)),
        ip_case("IPv6 destination options",
                E / IPv6(src=a6(10), dst=b6(10)) / IPv6ExtHdrDestOpt() / UDP(sport=5, dport=6),
                (17, a6(10), 5, b6(10), 6)),
        ip_case("IPv6 chain + first fragment",
                E / v6frag / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrFragment(m=1, id=99) / TCP(sport=41, dport=42) / Raw(b"g" * 16),
                (6, a6(10), 41, b6(10), 42)),
        ip_case("IPv6 later fragment", E / v6frag / IPv6ExtHdrFragment(offset=5, id=99, nh=6) / Raw(b"h" * 24),
                (6, a6(10), 41, b6(10), 42)),
        ip_case("IPv6 fragment without a first",
                E / v6frag / IPv6ExtHdrFragment(offset=5, id=98, nh=17) / Raw(b"i" * 8),
                (17, a6(10), 0, b6(10), 0)),
        ip_case("IPv6 fragment + dest options",
                E / v6frag / IPv6ExtHdrFragment(m=1, id=97) / IPv6ExtHdrDestOpt() / UDP(),
                (60, a6(10), 0, b6(10), 0)),
        ip_case("IPv6 AH", E / IPv6(src=a6(11), dst=b6(11)) / AH(nh=6) / TCP(sport=9, dport=10),
                (51, a6(11), 0, b6(11), 0)),
        ip_case("SCTP", E / IP(src=a(11), dst=b(11)) / SCTP(sport=3868, dport=3869), (132, a(11), 3868, b(11), 3869)),
        ip_case("SCTP IPv6", E / IPv6(src=a6(11), dst=b6(11)) / SCTP(sport=2905, dport=2906),
                (132, a6(11), 2905, b6(11), 2906)),
        ip_case("ICMP echo", E / IP(src=a(12), dst=b(12)) / ICMP(type=8), (1, a(12), 0, b(12), 0)),
        ip_case("ICMP echo reply", E / IP(src=b(12), dst=a(12)) / ICMP(type=0), (1, b(12), 0, a(12), 0)),
        ip_case("ICMP error", E / IP(src="10.1.12.254", dst=a(12)) / ICMP(type=3, code=3)
                / IP(src=a(12), dst="10.9.9.9") / UDP(sport=53, dport=33000), (1, "10.1.12.254", 0, a(12), 0)),
        ip_case("ICMPv6 echo", E / IPv6(src=a6(12), dst=b6(12)) / ICMPv6EchoRequest(), (58, a6(12), 0, b6(12), 0)),
        ip_case("ICMPv6 reply", E / IPv6(src=b6(12), dst=a6(12)) / ICMPv6EchoReply(), (58, b6(12), 0, a6(12), 0)),
        ip_case("ICMPv6 error", E / IPv6(src=b6(12), dst=a6(12)) / ICMPv6DestUnreach()
                / IPv6(src=a6(12), dst="2001:db8::9") / TCP(sport=1, dport=2), (58, b6(12), 0, a6(12), 0)),
        ip_case("GRE", E / IP(src=a(13), dst=b(13)) / GRE() / inner, (47, a(13), 0, b(13), 0)),
        ip_case("GRE TEB", E / IP(src=b(13), dst=a(13)) / GRE(proto=0x6558) / Ether() / inner,
                (47, b(13), 0, a(13), 0)),
        ip_case("VXLAN", E / IP(src=a(14), dst=b(14)) / UDP(sport=40000, dport=4789) / VXLAN(vni=5) / Ether() / inner,
                (17, a(14), 40000, b(14), 4789)),
        ip_case("IP-in-IP", E / IP(src=a(14), dst=b(14)) / inner, (4, a(14), 0, b(14), 0)),
        ip_case("6in4", E / IP(src=a(14), dst=b(14)) / udp6(14), (41, a(14), 0, b(14), 0)),
        ip_case("4in6", E / IPv6(src=a6(14), dst=b6(14)) / inner, (4, a6(14), 0, b6(14), 0)),
        ip_case("6in6", E / IPv6(src=a6(14), dst=b6(14)) / udp6(14), (41, a6(14), 0, b6(14), 0)),
        ip_case("OSPF", E / IP(src=a(14), dst=b(14), proto=89) / Raw(b"o" * 30), (89, a(14), 0, b(14), 0)),
        ip_case("ESP", E / IP(src=a(14), dst=b(14)) / ESP(spi=1) / Raw(b"o" * 30), (50, a(14), 0, b(14), 0)),
        ip_case("protocol 253", E / IP(src=a(14), dst=b(14), proto=253) / Raw(b"o" * 30), (253, a(14), 0, b(14), 0)),
        ip_case("IPv6 protocol 253", E / IPv6(src=a6(14), dst=b6(14), nh=253) / Raw(b"o" * 30),
                (253, a6(14), 0, b6(14), 0)),
        # frames longer than the capture holds: counted by the record's original length
        ip_case("BIG TCP IPv4, total length 0", big4, (6, a(15), 1, b(15), 2), wire=70000),
        ip_case("IPv6 jumbogram", jumbo, (6, a6(15), 1, b6(15), 2), wire=70062),
        # tshark 4.0 reads no TCP header behind an IPv6 payload length of 0 without a jumbo option
        # (BIG TCP as Linux captures it); the counting rules read it from the frame
        ip_case("BIG TCP IPv6, payload length 0", big6, (6, a6(16), 1, b6(16), 2), wire=65600, tshark_ports=False),
        ip_case("snaplen cut", full[:96], (6, a(17), 5000, b(17), 80), wire=len(full)),
        ip_case("snaplen cut inside the ports", full[:14 + 20 + 2], (6, a(17), 0, b(17), 0), wire=len(full)),
        ip_case("record claiming 300000 bytes", full[:120], (6, a(17), 5000, b(17), 80), wire=300000),
        ip_case("socket to itself", E / IP(src=a(18), dst=a(18)) / UDP(sport=9, dport=9), (17, a(18), 9, a(18), 9)),
        ip_case("host to itself", E / IP(src=a(18), dst=a(18)) / UDP(sport=1, dport=2), (17, a(18), 1, a(18), 2)),
        non_ip("ARP", E / ARP()),
        non_ip("LLDP", Ether(type=0x88CC) / Raw(b"\x02\x07\x04" + b"\x00" * 43)),
        non_ip("STP", Ether(type=38) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\x00" * 35)),
        non_ip("ARP cut by snaplen", bytes(E / ARP())[:20], wire=60),
        bad("IPv4 header length 16", bytes(Ether(type=0x0800)) + b"\x44" + bytes(IP(src=a(19), dst=b(19)))[1:],
            "ipv4_bad_header_length"),
        bad("IPv4 total length 10", Ether(type=0x0800) / IP(src=a(19), dst=b(19), len=10), "ipv4_bad_total_length"),
        bad("IPv6 header cut", bytes(E / udp6(19))[:14 + 39], "ipv6_truncated"),
        bad("VLAN tag cut", bytes(Ether(type=0x8100)) + b"\x00\x0a", "vlan_truncated"),
        bad("runt", b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08", "ethernet_truncated"),
    ]


TCP4, UDP6 = tcp4(30), udp6(30)
TCP4_FLOW, UDP6_FLOW = (6, a(30), 40000, b(30), 443), (17, a6(30), 5353, b6(30), 53)


def dot11(subtype=0, fc=1, **kw):
    return Dot11(type=2, subtype=subtype, FCfield=fc, addr1="02:00:00:00:00:01", addr2="02:00:00:00:00:02",
                 addr3="02:00:00:00:00:03", **kw)


def wlan_cases():
    beacon = Dot11(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2="02:00:00:00:00:02",
                   addr3="02:00:00:00:00:02") / Dot11Beacon() / Dot11Elt(ID=0, info=b"lab")
    return [
        ip_case("data + LLC/SNAP", dot11() / snap(0x800) / TCP4, TCP4_FLOW),
        ip_case("QoS data IPv6", dot11(subtype=8) / Dot11QoS() / snap(0x86DD) / UDP6, UDP6_FLOW),
        ip_case("QoS + HT control", dot11(subtype=8, fc=0x81) / Dot11QoS() / Raw(b"\x00" * 4) / snap(0x800) / TCP4,
                TCP4_FLOW),
        ip_case("four addresses", dot11(fc=3, addr4="02:00:00:00:00:04") / snap(0x800) / TCP4, TCP4_FLOW),
        non_ip("beacon", beacon),
        non_ip("null data", dot11(subtype=4)),
        non_ip("protected", dot11(fc=0x41) / Raw(b"\x00" * 40)),
    ]


def radiotap_cases():
    qos = dot11(subtype=8) / Dot11QoS()
    pad = RadioTap(present="TSFT+Flags+Rate", Flags=0x20, Rate=2, mac_timestamp=5)
    return [c._replace(frame=bytes(RadioTap(present="TSFT+Rate", Rate=2, mac_timestamp=7)) + c.frame)
            for c in wlan_cases()] + [
        ip_case("data padding", pad / qos / b"\x00\x00" / snap(0x800) / TCP4, TCP4_FLOW),
        ip_case("FCS at the end", RadioTap(present="Flags", Flags=0x10) / dot11() / snap(0x800) / TCP4 / (b"\x00" * 4),
                TCP4_FLOW),
        bad("802.11 header cut", bytes(RadioTap() / dot11())[:20], "wlan_truncated"),
    ]


def sll_cases(v2):
    def hdr(proto, arphrd=1):
        return (CookedLinuxV2(proto=proto, lladdrtype=arphrd, lladdrlen=6) if v2
                else CookedLinux(pkttype=0, lladdrtype=arphrd, lladdrlen=6, proto=proto))
    return [
        ip_case("IPv4", hdr(0x800) / TCP4, TCP4_FLOW),
        ip_case("IPv6", hdr(0x86DD) / UDP6, UDP6_FLOW),
        ip_case("802.1Q", hdr(0x8100) / Dot1Q(vlan=5, type=0x800) / TCP4, TCP4_FLOW),
        non_ip("ARP", hdr(0x806) / ARP()),
        non_ip("netlink", hdr(0x0010, 824) / Raw(b"\x00" * 32)),
        bad("cut header", bytes(hdr(0x800))[:10], "sll2_truncated" if v2 else "sll_truncated"),
    ]


def raw_cases(linktype):
    cases = [ip_case("IPv4", TCP4, TCP4_FLOW), ip_case("IPv6", UDP6, UDP6_FLOW)]
    if linktype == 229:
        return cases[1:] + [bad("IPv4 on an IPv6 link", TCP4, "ipv6_bad_version")]
    if linktype != 228:
        cases.append(bad("version 5", b"\x50" + b"\x00" * 39, "raw_ip_bad_version"))
    return cases


def null_cases(linktype):
    if linktype == 108:                        # OpenBSD LOOP: network byte order
        return [ip_case(f"AF {af}", struct.pack(">I", af) + bytes(p), f)
                for af, p, f in ((2, TCP4, TCP4_FLOW), (24, UDP6, UDP6_FLOW), (28, UDP6, UDP6_FLOW),
                                 (30, UDP6, UDP6_FLOW))]
    cases = [ip_case(f"AF {af} {e}", struct.pack(e + "I", af) + bytes(p), f)
             for e in "<>" for af, p, f in ((2, TCP4, TCP4_FLOW), (24, UDP6, UDP6_FLOW), (28, UDP6, UDP6_FLOW),
                                            (30, UDP6, UDP6_FLOW))]
    return cases + [non_ip("AF 7", struct.pack("<I", 7) + b"\x00" * 40),
                    bad("cut", b"\x02\x00", "loopback_truncated")]


def ppp_cases():
    return [
        ip_case("address/control + IPv4", b"\xff\x03\x00\x21" + bytes(TCP4), TCP4_FLOW),
        ip_case("no address/control", b"\x00\x21" + bytes(TCP4), TCP4_FLOW),
        ip_case("compressed protocol", b"\xff\x03\x21" + bytes(TCP4), TCP4_FLOW),
        ip_case("IPv6", b"\xff\x03\x00\x57" + bytes(UDP6), UDP6_FLOW),
        non_ip("LCP", b"\xff\x03\xc0\x21\x01\x01\x00\x04"),
    ]


LINK_CASES = {
    "ethernet": (1, ethernet_cases), "linux_sll": (113, lambda: sll_cases(False)),
    "linux_sll2": (276, lambda: sll_cases(True)),
    "raw": (101, lambda: raw_cases(101)), "raw_bsd12": (12, lambda: raw_cases(12)),
    "raw_bsd14": (14, lambda: raw_cases(14)), "ipv4": (228, lambda: raw_cases(228)),
    "ipv6": (229, lambda: raw_cases(229)), "null": (0, lambda: null_cases(0)), "loop": (108, lambda: null_cases(108)),
    "ppp": (9, ppp_cases), "ieee802_11": (105, wlan_cases), "radiotap": (127, radiotap_cases),
}


# ---- what each case must give ---------------------------------------------------------------------

def expected(cases):
    """Exact flows {(proto, orig_h, orig_p, resp_h, resp_p): [orig_bytes, resp_bytes, orig_packets,
    resp_packets]}, hosts {ip: [tx_bytes, rx_bytes, tx_packets, rx_packets]} and interface totals,
    from the counting rules applied to the cases by hand."""
    flows, hosts = {}, {}
    totals = dict(frames=0, bytes=0, ip_frames=0, ip_bytes=0, non_ip_frames=0, non_ip_bytes=0,
                  undecodable_frames=0, undecodable_bytes=0)
    reasons = {}
    for c in cases:
        n = min(len(c.frame) if c.wire is None else c.wire, MAX_WIRE_LEN)
        totals["frames"] += 1
        totals["bytes"] += n
        if c.reason:
            totals["undecodable_frames"] += 1
            totals["undecodable_bytes"] += n
            reasons.setdefault(c.reason, [0, 0])
            reasons[c.reason][0] += 1
            reasons[c.reason][1] += n
            continue
        if c.flow is None:
            totals["non_ip_frames"] += 1
            totals["non_ip_bytes"] += n
            continue
        totals["ip_frames"] += 1
        totals["ip_bytes"] += n
        proto, s, sp, d, dp = c.flow
        key, rev = (proto, s, sp, d, dp), (proto, d, dp, s, sp)
        if key in flows:
            f, sent = flows[key], 0
        elif rev in flows:
            f, sent = flows[rev], 1
            if c.syn:                      # the SYN's sender is the originator: turn the flow round
                del flows[rev]
                f = flows[key] = [f[1], f[0], f[3], f[2]]
                sent = 0
        else:
            f, sent = flows.setdefault(key, [0, 0, 0, 0]), 0
        f[sent] += n
        f[2 + sent] += 1
        for ip, i in ((s, 0), (d, 1)):
            h = hosts.setdefault(ip, [0, 0, 0, 0])
            h[i] += n
            h[2 + i] += 1
    return flows, hosts, totals, reasons


# ---- import and export through run.py ---------------------------------------------------------------



def import_export(capsys, capture, db):
    code, out, err = cli(capsys, "import", capture, "--db", db)
    exports = {}
    for table in ("hosts", "flows"):
        c, text, e = cli(capsys, "export", table, "--db", db, "--format", "csv")
        assert c == 0 and e == "", e
        exports[table] = text
    return code, out, err, exports["hosts"], exports["flows"]


def exported_flows(text):
    import csv
    import io
    got = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = (proto_number(row["proto"]), row["orig_h"], int(row["orig_p"]), row["resp_h"], int(row["resp_p"]))
        assert key not in got, f"flow {key} exported twice"
        got[key] = [int(row[k]) for k in ("orig_bytes", "resp_bytes", "orig_packets", "resp_packets")]
    return got


def exported_hosts(text):
    import csv
    import io
    return {row["ip"]: [int(row[k]) for k in ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")]
            for row in csv.DictReader(io.StringIO(text))}


def _canonical(flows):
    out = {}
    for (p, s, sp, d, dp), v in flows.items():
        out[(p, str(ipaddress.ip_address(s)), sp, str(ipaddress.ip_address(d)), dp)] = v
    return out


@pytest.mark.parametrize("link", sorted(LINK_CASES))
def test_every_encapsulation_exact_and_as_tshark_counts(link, tmp_path, capsys, clean_env):
    linktype, make = LINK_CASES[link]
    cases = make()
    path = tmp_path / f"{link}.pcap"
    endian, nano = (">" if linktype % 2 else "<"), linktype % 3 == 0      # every pcap flavour is used
    records = [(T0 + i * 0.01, c.frame, c.wire) for i, c in enumerate(cases)]
    path.write_bytes(captures.pcap_bytes(linktype, records, endian=endian, nano=nano))
    code, out, err, hosts_csv, flows_csv = import_export(capsys, path, tmp_path / "t.db")
    want_flows, want_hosts, want_totals, want_reasons = expected(cases)
    clamped = sum(1 for c in cases if (c.wire or 0) > MAX_WIRE_LEN)
    kinds = (f"{want_totals['ip_frames']} IP, {want_totals['non_ip_frames']} non-IP, "
             f"{want_totals['undecodable_frames']} undecodable")
    if want_reasons:
        kinds += ": " + ", ".join(f"{reason} {n}" for reason, (n, _) in sorted(want_reasons.items()))
    summary = f"{path}: {len(cases)} frames ({kinds})" + (
        f", {clamped} wire lengths clamped to 262144" if clamped else "")
    first, stored = out.splitlines()
    assert (code, first, err) == (0, summary, "")
    hosts, flows = len(want_hosts), len(want_flows)      # what tshark saw is what the import says it stored
    assert re.fullmatch(rf"stored: \S+ \.\. \S+, [0-9.]+ k?B, {hosts} hosts?, {flows} flows?; to see them: "
                        rf"run\.py serve --db .+, then http://127\.0\.0\.1:8321/\?since=\S+&until=\S+", stored), stored

    assert exported_flows(flows_csv) == _canonical(want_flows)
    assert exported_hosts(hosts_csv) == {str(ipaddress.ip_address(k)): v for k, v in want_hosts.items()}
    con = connect(str(tmp_path / "t.db"), readonly=True)
    try:
        [iface] = interface_totals(con)
        reasons = {r["reason"]: [r["frames"], r["bytes"]] for r in undecodable_reasons(con)}
    finally:
        con.close()
    assert {k: iface[k] for k in want_totals} == want_totals
    assert iface["iface"] == path.name and iface["out_frames"] == 0
    assert reasons == want_reasons

    if not oracle.available():
        pytest.skip("tshark is not installed: exact numbers checked, oracle comparison skipped")
    truth = oracle.decode_file(path)
    assert truth["totals"] == {k: want_totals[k] for k in ("frames", "bytes", "ip_frames", "ip_bytes")}
    blind = {ip for c in cases if not c.tshark_ports for ip in (c.flow[1], c.flow[3])}
    problems = [p for p in oracle.differences(truth, hosts_csv, flows_csv)
                if not (p.startswith("flow") and any(f"'{ip}'" in p for ip in blind))]
    assert problems == []


def test_pcapng_with_several_link_types_sections_and_gzip(tmp_path, capsys, clean_env):
    """One gzip'd pcapng named .pcap: a little-endian section with Ethernet (microseconds) and
    Linux SLL2 (nanoseconds) interfaces, a big-endian one with raw IP (2^-10 s, offset) and 802.11."""
    parts = {"eth0": (1, ethernet_cases()), "any": (276, sll_cases(True)), "tun0": (101, raw_cases(101)),
             "wlan0": (105, wlan_cases())}
    le = [captures.shb("<"), captures.idb(1, "<", name="eth0"), captures.idb(276, "<", name="any", tsresol=9)]
    be = [captures.shb(">"), captures.idb(101, ">", name="tun0", tsresol=0x80 | 10, tsoffset=int(T0)),
          captures.idb(105, ">", name="wlan0")]
    step = 0
    for name, (_, cases) in parts.items():
        for c in cases:
            step += 1
            ts = T0 + step * 0.01
            orig = c.wire or len(c.frame)
            if name == "eth0":
                le.append(captures.epb(0, round(ts * 1e6), c.frame, orig, "<", flags=2 if step % 2 else 1))
            elif name == "any":
                le.append(captures.epb(1, round(ts * 1e9), c.frame, orig, "<"))
            elif name == "tun0":
                be.append(captures.epb(0, round((ts - T0) * 1024), c.frame, orig, ">"))
            else:
                be.append(captures.epb(1, round(ts * 1e6), c.frame, orig, ">"))
    path = tmp_path / "mixed.pcap"
    path.write_bytes(captures.gz(b"".join(le + be)))
    code, out, err, hosts_csv, flows_csv = import_export(capsys, path, tmp_path / "m.db")
    everything = [c for _, cases in parts.values() for c in cases]
    assert (code, err) == (0, "") and out.startswith(f"{path}: {len(everything)} frames")
    want_flows, want_hosts, want_totals, _ = expected(everything)
    assert exported_flows(flows_csv) == _canonical(want_flows)
    assert exported_hosts(hosts_csv) == {str(ipaddress.ip_address(k)): v for k, v in want_hosts.items()}
    con = connect(str(tmp_path / "m.db"), readonly=True)
    try:
        ifaces = {r["iface"]: r for r in interface_totals(con)}
    finally:
        con.close()
    assert sorted(ifaces) == sorted(parts)
    for name, (_, cases) in parts.items():
        assert {k: ifaces[name][k] for k in want_totals} == expected(cases)[2], name
    eth = parts["eth0"][1]
    assert ifaces["eth0"]["out_frames"] == (len(eth) + 1) // 2
    if not oracle.available():
        pytest.skip("tshark is not installed: exact numbers checked, oracle comparison skipped")
    blind = {ip for c in everything if not c.tshark_ports for ip in (c.flow[1], c.flow[3])}
    problems = [p for p in oracle.differences(oracle.decode_file(path), hosts_csv, flows_csv)
                if not (p.startswith("flow") and any(f"'{ip}'" in p for ip in blind))]
    assert problems == []


# ---- captures recorded by others (../shared/captures: development material, absent in a clone) -----

def _shared(pattern):
    return sorted(SHARED.glob(pattern)) if SHARED.is_dir() else []


@needs_tshark
@pytest.mark.skipif(not _shared("*.pcap*"), reason=f"{SHARED} is absent (development captures, not in the repository)")
@pytest.mark.parametrize("capture", _shared("*.pcap*") or [None], ids=lambda p: p.name if p else "none")
def test_shared_captures_match_tshark(capture, tmp_path, capsys, clean_env):
    code, out, err, hosts_csv, flows_csv = import_export(capsys, capture, tmp_path / "s.db")
    assert code == 0 and err == "", err
    truth = oracle.decode_file(capture)
    assert oracle.differences(truth, hosts_csv, flows_csv) == []


@pytest.mark.skipif(not _shared("malformed/*"), reason=f"{SHARED}/malformed is absent (not in the repository)")
@pytest.mark.parametrize("capture", _shared("malformed/*") or [None], ids=lambda p: p.name if p else "none")
def test_shared_malformed_captures_import_cleanly(capture, tmp_path, run_py):
    import subprocess
    done = subprocess.run(run_py + ["import", str(capture), "--db", str(tmp_path / "m.db")],
                          capture_output=True, text=True, timeout=60)
    said = (done.stdout + done.stderr).strip()
    assert done.returncode in (0, 2, 3), said
    said = "\n".join(line for line in said.splitlines() if not line.startswith("stored: "))   # where it went
    assert "Traceback" not in done.stderr and len(said.splitlines()) == 1, said
    if done.returncode == 3:
        assert "stopped early" in said and "byte" in said
    if done.returncode == 0 and oracle.available():
        # read to its end without damage: what tshark decodes must be what we counted
        hosts = subprocess.run(run_py + ["export", "hosts", "--db", str(tmp_path / "m.db")], capture_output=True,
                               text=True, timeout=60).stdout
        flows = subprocess.run(run_py + ["export", "flows", "--db", str(tmp_path / "m.db")], capture_output=True,
                               text=True, timeout=60).stdout
        assert oracle.differences(oracle.decode_file(capture), hosts, flows) == []
