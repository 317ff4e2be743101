"""names/tshark.py: Wireshark's dissectors name the app of flows our parsers left unnamed.

The pure parts (a frame's layers to an app, a flow's votes, the pcap it writes) run without
tshark; everything that runs tshark is marked system and skips, saying why, where it is missing.
"""
import os
import random
import struct
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from scapy.all import DNS, DNSQR, IP, TCP, UDP, CookedLinux, Ether, IPv6, RawPcapReader
from scapy.layers.netbios import NBTSession
from scapy.layers.ntp import NTP
from scapy.layers.smb2 import SMB2_Header, SMB2_Negotiate_Protocol_Request

from common import ROOT, needs_tool, system
from names import tshark
from names.tshark import TsharkLabeller, _flow_app, _frame_app, _write_pcap
from records import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, Sample

CLIENT, SERVER = "10.1.0.2", "10.1.0.1"
NAMES = ROOT.parent / "shared" / "captures" / "names"

# ---- frames --------------------------------------------------------------------------------------

SIP_INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
              b"Via: SIP/2.0/UDP 10.1.0.2:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\n"
              b"To: Bob <sip:bob@example.com>\r\nFrom: Alice <sip:alice@example.com>;tag=1928301774\r\n"
              b"Call-ID: a84b4c76e66710@10.1.0.2\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@10.1.0.2>\r\n"
              b"Content-Length: 0\r\n\r\n")
# CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s, client id "test"
MQTT_CONNECT = bytes([0x10, 16]) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test"
_COOKIE = b"Cookie: mstshash=user01\r\n"
_X224 = bytes([6 + len(_COOKIE) + 8, 0xE0, 0, 0, 0, 0, 0]) + _COOKIE + bytes.fromhex("0100080003000000")
RDP_CONNECT = struct.pack(">BBH", 3, 0, 4 + len(_X224)) + _X224      # TPKT, X.224 CR, RDP negotiation
STUN_BINDING = bytes.fromhex("000100002112a442") + bytes(range(12))
DHT_PING = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"


def tcp(payload, port, *, server_first=False, client_port=40000):
    """An Ethernet frame of a TCP flow between CLIENT and SERVER:port."""
    if server_first:
        ip, seg = IP(src=SERVER, dst=CLIENT), TCP(sport=port, dport=client_port, flags="PA")
    else:
        ip, seg = IP(src=CLIENT, dst=SERVER), TCP(sport=client_port, dport=port, flags="PA")
    return bytes(Ether() / ip / seg / payload)


def udp(payload, port, *, client_port=40000, reply=False):
    ends = (SERVER, CLIENT, port, client_port) if reply else (CLIENT, SERVER, client_port, port)
    return bytes(Ether() / IP(src=ends[0], dst=ends[1]) / UDP(sport=ends[2], dport=ends[3]) / payload)


def sample(proto, port, frames, linktype=LINKTYPE_ETHERNET, client_port=40000):
    key = (proto, CLIENT, client_port, SERVER, port)
    return Sample(key, 1700000000.0, linktype, [(1700000000.0 + i / 1000, f) for i, f in enumerate(frames)])


def quic_initial():
    """The first datagram of a real QUIC v1 client (aioquic): a 1,200-byte Initial."""
    configuration = QuicConfiguration(is_client=True, server_name="quic.test.example", alpn_protocols=["h3"])
    connection = QuicConnection(configuration=configuration)
    connection.connect(("127.0.0.1", 4433), now=0.0)
    return connection.datagrams_to_send(now=0.0)[0][0]


def smb2_negotiate():
    return NBTSession() / SMB2_Header(Command=0) / SMB2_Negotiate_Protocol_Request(Dialects=[0x0202, 0x0311])


def noise(seed, n=200):
    return random.Random(seed).randbytes(n)


# Each: (name, sample, the exact app). Ports are where tshark 4.0 finds the protocol by its port
# table or a heuristic: it has no heuristic for SSH or SMTP (on 2222 or 2525 they are `data`).
NAMED = [
    ("ssh banners", sample("tcp", 22, [tcp(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", 22, server_first=True),
                                       tcp(b"SSH-2.0-nettally_test\r\n", 22)]), "ssh"),
    ("smtp greeting", sample("tcp", 25, [tcp(b"220 mail.example.com ESMTP Postfix\r\n", 25, server_first=True),
                                         tcp(b"EHLO client.example.com\r\n", 25)]), "smtp"),
    ("sip invite on 5060", sample("udp", 5060, [udp(SIP_INVITE, 5060)]), "sip"),
    ("sip invite, any port", sample("udp", 50060, [udp(SIP_INVITE, 50060)]), "sip"),
    ("ntp", sample("udp", 123, [udp(NTP(), 123), udp(NTP(mode=4), 123, reply=True)]), "ntp"),
    ("mqtt connect", sample("tcp", 1883, [tcp(MQTT_CONNECT, 1883)]), "mqtt"),
    ("dns, any port", sample("udp", 50053, [udp(DNS(qd=DNSQR(qname="example.com")), 50053)]), "dns"),
    ("mdns", sample("udp", 5353, [udp(DNS(qd=DNSQR(qname="printer.local")), 5353)]), "mdns"),
    ("smb2 over nbss", sample("tcp", 445, [tcp(smb2_negotiate(), 445)]), "smb"),
    ("rdp under tpkt and cotp", sample("tcp", 3389, [tcp(RDP_CONNECT, 3389)]), "rdp"),
    ("stun", sample("udp", 3478, [udp(STUN_BINDING, 3478)]), "stun"),
    ("bittorrent dht", sample("udp", 6881, [udp(DHT_PING, 6881)]), "bittorrent"),
    ("http, a SYN first", sample("tcp", 8000, [bytes(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=8000)),
                                              tcp(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 8000)]), "http"),
    ("quic, not the tls inside", sample("udp", 443, [udp(quic_initial(), 443)]), "quic"),
    ("quic cut to 1024 bytes, any port", sample("udp", 4433, [udp(quic_initial(), 4433)[:1024]]), "quic"),
    ("sip cut short", sample("udp", 5060, [udp(SIP_INVITE + b"X-Pad: " + b"a" * 2000 + b"\r\n\r\n", 5060)[:1024]]), "sip"),
]
UNNAMED = [
    ("random udp, high port", sample("udp", 50001, [udp(noise(i), 50001) for i in range(4)])),
    ("random tcp, high port", sample("tcp", 50002, [tcp(noise(10 + i), 50002) for i in range(4)])),
    ("ssh on 2222: no decode-as", sample("tcp", 2222, [tcp(b"SSH-2.0-OpenSSH_9.2\r\n", 2222, server_first=True)])),
    ("handshake only", sample("tcp", 50003, [bytes(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=50003))])),
    ("malformed dns on 53", sample("udp", 53, [udp(b"\x00\x01\x01\x00\x00\x05\x00\x00\x00\x00\x00\x00\x03abc", 53)])),
]


@pytest.fixture(scope="module")
def labeller():
    found = TsharkLabeller()
    if not found.available:
        pytest.skip(found.why_not)
    return found


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """tempfile's folder for this test only, to see that the labeller leaves nothing in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ---- with tshark -----------------------------------------------------------------------------

@system
@needs_tool("tshark")
def test_named_flows_get_exact_apps_and_unnamed_ones_nothing(labeller, own_tmp):
    samples = [s for _, s, _ in NAMED] + [s for _, s in UNNAMED]
    samples = [s._replace(key=(name,) + s.key) for (name, *_), s in zip(NAMED + UNNAMED, samples)]
    got = labeller.label(samples)
    assert got == {(name,) + s.key: app for name, s, app in NAMED}
    assert list(own_tmp.iterdir()) == []


@system
@needs_tool("tshark")
def test_one_file_per_link_type():
    query = IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=50053) / DNS(qd=DNSQR(qname="example.com"))
    six = IPv6(src="fd00::2", dst="fd00::1") / UDP(sport=40000, dport=5060) / SIP_INVITE
    samples = [sample("udp", 50053, [bytes(query)], LINKTYPE_RAW),
               Sample(("udp", "fd00::2", 40000, "fd00::1", 5060), 0.0, LINKTYPE_LINUX_SLL,
                      [(1.0, bytes(CookedLinux(proto=0x86DD) / six))]),
               sample("tcp", 1883, [tcp(MQTT_CONNECT, 1883)], client_port=40001)]
    assert TsharkLabeller().label(samples) == {samples[0].key: "dns", samples[1].key: "sip", samples[2].key: "mqtt"}


@system
@needs_tool("tshark")
def test_at_most_max_flows_per_call_are_read():
    samples = [sample("udp", 50053, [udp(DNS(id=i, qd=DNSQR(qname=f"h{i}.example.com")), 50053, client_port=20000 + i)],
                      client_port=20000 + i) for i in range(500)]
    labeller = TsharkLabeller(max_flows_per_call=200)
    got = labeller.label(samples)
    assert len(got) == 200 and set(got) == {s.key for s in samples[:200]}
    assert set(got.values()) == {"dns"}
    assert labeller.dropped == {"tshark_over_batch": 300}


@system
@needs_tool("tshark")
def test_timeout_kills_tshark_and_returns(own_tmp):
    samples = [sample("udp", 5060, [udp(SIP_INVITE, 5060, client_port=10000 + i)] * 4, client_port=10000 + i)
               for i in range(3000)]
    labeller = TsharkLabeller(max_flows_per_call=3000, timeout=0.3)
    started = time.monotonic()
    got = labeller.label(samples)
    assert time.monotonic() - started < 5.0
    assert len(got) < len(samples)
    assert labeller.dropped["tshark_timeout"] == len(samples) - len(got)
    assert [p for p in psutil.Process().children(recursive=True) if "tshark" in p.name()] == []
    assert list(own_tmp.iterdir()) == []


@system
@needs_tool("tshark")
def test_bad_frames_never_raise(labeller, own_tmp):
    samples = [
        sample("udp", 1, [b""]),
        sample("udp", 2, [b"\x00"]),
        sample("udp", 3, [noise(7, 60)] * 4),
        sample("tcp", 4, [tcp(b"", 4)[:20]]),
        sample("udp", 5, [udp(SIP_INVITE, 5060)], linktype=99999),            # tshark knows no such link type
        sample("udp", 6, [udp(SIP_INVITE, 5060)], linktype=-1),
        sample("udp", 7, [udp(SIP_INVITE, 5060)], linktype=None),
        Sample(("udp", "x", 6, "y", 7), 0.0, LINKTYPE_ETHERNET, [(-5.0, udp(SIP_INVITE, 5060)), (float("nan"), b"")]),
        Sample(("udp", "x", 8, "y", 9), 0.0, LINKTYPE_ETHERNET, [(None, b"")]),
        sample("udp", 5060, [udp(SIP_INVITE, 5060)], client_port=40010),
    ]
    before = dict(labeller.dropped)
    got = labeller.label(samples)
    assert got == {samples[-1].key: "sip"}
    assert list(own_tmp.iterdir()) == []
    assert labeller.dropped.get("tshark_bad_sample", 0) - before.get("tshark_bad_sample", 0) == 4
    assert labeller.dropped.get("tshark_failed", 0) - before.get("tshark_failed", 0) == 1


@system
@needs_tool("tshark")
def test_real_captures_first_frames(labeller):
    """The first four frames of each flow of the development captures (skips where they are absent)."""
    if not NAMES.is_dir():
        pytest.skip(f"{NAMES} is absent (development captures live outside the repository)")
    expected = {"zeek_quic_quicv2-http3-443.pcap": "quic", "zeek_quic_quic_win11_firefox_google.pcap": "quic",
                "zeek_tls_chrome-34-google.pcap": "tls", "zeek_http_websocket.pcap": "http",
                "zeek_dns-two-responses.pcap": "dns", "zeek_dns_mdns-no-assoc.pcap": "mdns"}
    for name, app in expected.items():
        flows = {}
        for data, _ in RawPcapReader(str(NAMES / name)):
            packet = Ether(data)
            layer = packet.getlayer(TCP) or packet.getlayer(UDP)
            ip = packet.getlayer(IP) or packet.getlayer(IPv6)
            ends = sorted([(ip.src, layer.sport), (ip.dst, layer.dport)])
            frames = flows.setdefault(tuple(ends), [])
            if len(frames) < 4 and len(layer.payload):
                frames.append((1.0, bytes(data)[:1024]))
        got = labeller.label([Sample(key, 0.0, LINKTYPE_ETHERNET, frames) for key, frames in flows.items()])
        assert set(got.values()) == {app}, name


# ---- without tshark --------------------------------------------------------------------------

def test_a_path_without_tshark_is_not_available(tmp_path):
    labeller = TsharkLabeller(tshark_path=str(tmp_path / "tshark"))
    assert not labeller.available
    assert labeller.why_not == f"no executable tshark at {tmp_path / 'tshark'}"
    assert labeller.label([sample("udp", 5060, [udp(SIP_INVITE, 5060)])]) == {}


@system
def test_a_program_that_is_not_tshark_is_not_available(tmp_path):
    fake = tmp_path / "tshark"
    fake.write_text("#!/bin/sh\necho 'this is not\nwireshark'\n")
    fake.chmod(0o755)
    labeller = TsharkLabeller(tshark_path=str(fake))
    assert not labeller.available
    assert "\n" not in labeller.why_not and labeller.why_not.startswith(f"{fake} is not a working tshark")
    assert labeller.label([sample("udp", 5060, [udp(SIP_INVITE, 5060)])]) == {}


def test_no_tshark_on_the_path(monkeypatch):
    monkeypatch.setattr(tshark.shutil, "which", lambda name: None)
    labeller = TsharkLabeller()
    assert not labeller.available and labeller.why_not.startswith("tshark is not installed")
    assert "\n" not in labeller.why_not


@pytest.mark.parametrize("protocols, malformed, vote", [
    ("eth:ethertype:ip:udp:dns", False, "dns"),
    ("eth:ethertype:ip:udp:quic:tls", False, "quic"),
    ("eth:ethertype:ipv6:udp:gquic", False, "quic"),
    ("eth:ethertype:ip:tcp:tls:x509sat:x509ce:tls", False, "tls"),
    ("eth:ethertype:ip:tcp:http:websocket:data-text-lines", False, "http"),
    ("eth:ethertype:ip:tcp:nbss:smb2:dcerpc:srvsvc", False, "smb"),
    ("eth:ethertype:ip:tcp:nbss:smb", False, "smb"),
    ("eth:ethertype:ip:tcp:nbss", False, "nbss"),
    ("eth:ethertype:ip:tcp:tpkt:cotp:rdp", False, "rdp"),
    ("eth:ethertype:ip:tcp:rpc:nfs", False, "nfs"),
    ("eth:ethertype:ip:udp:sip:sdp", False, "sip"),
    ("eth:ethertype:ip:udp:bt-dht", False, "bittorrent"),
    ("eth:ethertype:ip:udp:classicstun", False, "stun"),
    ("eth:ethertype:ip:tcp:pgsql", False, "postgresql"),
    ("sll:ethertype:ip:udp:ntp", False, "ntp"),
    ("raw:ipv6:ipv6.hopopts:udp:dhcpv6", False, "dhcpv6"),
    ("eth:ethertype:vlan:ethertype:ip:tcp:ssh:_ws.short", False, "ssh"),
    ("eth:ethertype:ip:udp:data", False, ""),
    ("eth:ethertype:ip:tcp:media", False, ""),
    ("eth:ethertype:ip:udp:dns", True, None),                         # malformed: no vote
    ("eth:ethertype:ip:udp:_ws.malformed", False, None),
    ("eth:ethertype:ip:tcp", False, None),                            # no payload (or reassembly pending)
    ("eth:ethertype:ip:icmp:ip:udp:dns", False, None),                # the quoted header of an ICMP error
    ("eth:ethertype:ip:gre:ip:tcp:http", False, None),                # a tunnel: its endpoints' flow has no app
    ("eth:ethertype:arp", False, None),
    ("", False, None),
    (None, False, None),
])
def test_frame_app(protocols, malformed, vote):
    assert _frame_app(protocols, malformed) == vote


@pytest.mark.parametrize("votes, app", [
    (["smtp"], "smtp"),
    (["dns", "dns", "dns", "dns"], "dns"),
    (["rtcp", "", "", ""], ""),                   # a weak heuristic on one frame of noise
    (["rtcp", ""], ""),
    (["rtp", "rtp", ""], "rtp"),
    (["sip", "rtp", "rtp"], "rtp"),
    (["sip", "rtp"], "sip"),                      # equals: the first seen
    (["", ""], ""),
    ([], ""),
])
def test_flow_app(votes, app):
    assert _flow_app(votes) == app


def test_written_pcap_says_frames_may_be_cut_and_skips_what_cannot_be_written(tmp_path):
    good = sample("udp", 5060, [udp(SIP_INVITE, 5060), udp(b"x", 5060)])
    bad = Sample(("udp", "x", 1, "y", 2), 0.0, LINKTYPE_ETHERNET, [(1.0, b"ok"), ("later", b"")])
    five = sample("udp", 53, [udp(b"q", 53)] * 5, client_port=40001)
    path = tmp_path / "f.pcap"
    owners, left_out = _write_pcap(str(path), LINKTYPE_ETHERNET, [good, bad, five])
    assert owners == [good.key] * 2 + [five.key] * tshark.FRAMES_PER_FLOW and left_out == 1
    data = path.read_bytes()
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET)
    records = []
    at = 24
    while at < len(data):
        seconds, micros, incl, orig = struct.unpack_from("<IIII", data, at)
        records.append((seconds, micros, data[at + 16:at + 16 + incl], orig))
        at += 16 + incl
    assert at == len(data) and len(records) == 6
    assert records[0] == (1700000000, 0, good.frames[0][1], len(good.frames[0][1]) + 65535)
    assert records[1][:2] == (1700000000, 1000)


def test_an_unwritable_temporary_folder_labels_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(tshark, "_find_tshark", lambda path: ("/nowhere/tshark", None, ""))
    labeller = TsharkLabeller()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert labeller.label([sample("udp", 5060, [udp(SIP_INVITE, 5060)])]) == {}
    assert labeller.dropped == {"tshark_failed": 1}
    assert not Path(tmp_path / "missing").exists() and os.path.isdir(tmp_path)
