"""capture.dns: names from DNS, mDNS, LLMNR and NetBIOS name service messages, built with scapy
and by hand, hostile ones included (compression loops, deep chains, long names, control bytes),
random bytes (only DnsError may come out), and tshark's dns.qry.name on real captures."""
import signal
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import DNS, DNSQR, DNSRR, RawPcapReader
from scapy.layers.netbios import NBNS_ADD_ENTRY, NBNSHeader, NBNSQueryResponse, NBNSRegistrationRequest

from capture.dns import DnsError, DnsMessage, netbios_name, parse, parse_tcp
from common import needs_tool, system

NAMES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / "names"


def header(flags=0x8180, qd=1, an=0, ns=0, ar=0, ident=0x1234):
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def labels(*parts):
    """A name in wire form from raw labels, ending with the root."""
    return b"".join(bytes((len(p),)) + p for p in parts) + b"\0"


def rr_a(owner=b"\xc0\x0c", address=b"\xc0\x00\x02\x07", rtype=1, rclass=1):
    return owner + struct.pack("!HHIH", rtype, rclass, 300, len(address)) + address


def reason(message):
    with pytest.raises(DnsError) as caught:
        parse(message)
    assert isinstance(caught.value, ValueError)
    return caught.value.reason


# ---- well-formed messages ---------------------------------------------------------------------------

def test_query():
    assert parse(bytes(DNS(id=7, rd=1, qd=DNSQR(qname="WWW.Example.COM.", qtype="AAAA")))) == \
        DnsMessage(False, "www.example.com", 28, [])


def test_response_a_and_aaaa():
    message = DNS(id=7, qr=1, qd=DNSQR(qname="example.com"),
                  an=[DNSRR(rrname="example.com", rdata="192.0.2.1"),
                      DNSRR(rrname="example.com", type="AAAA", rdata="2001:DB8::0001")])
    assert parse(bytes(message)) == DnsMessage(True, "example.com", 1,
                                               [("192.0.2.1", "example.com"), ("2001:db8::1", "example.com")])


def test_cname_chain_credits_the_question():
    message = DNS(id=1, qr=1, qd=DNSQR(qname="www.example.com"),
                  an=[DNSRR(rrname="www.example.com", type="CNAME", rdata="edge.example.net"),
                      DNSRR(rrname="edge.example.net", rdata="192.0.2.7")])
    assert parse(bytes(message)).addresses == [("192.0.2.7", "www.example.com")]


def test_two_hop_chain_and_an_unrelated_additional_record():
    message = DNS(id=1, qr=1, qd=DNSQR(qname="www.example.com"),
                  an=[DNSRR(rrname="www.example.com", type="CNAME", rdata="a.example.net"),
                      DNSRR(rrname="a.example.net", type="CNAME", rdata="b.cdn.example"),
                      DNSRR(rrname="B.CDN.example", rdata="192.0.2.8")],
                  ns=[DNSRR(rrname="cdn.example", type="NS", rdata="ns1.cdn.example")],
                  ar=[DNSRR(rrname="ns1.cdn.example", rdata="198.51.100.53")])
    assert parse(bytes(message)).addresses == [("192.0.2.8", "www.example.com"),
                                               ("198.51.100.53", "ns1.cdn.example")]


def test_address_in_the_authority_section_is_not_taken():
    message = header(qd=1, an=0, ns=1) + labels(b"a", b"example") + b"\0\1\0\1" + rr_a()
    assert parse(message).addresses == []


def test_cname_loop_ends():
    message = DNS(id=1, qr=1, qd=DNSQR(qname="a.example"),
                  an=[DNSRR(rrname="a.example", type="CNAME", rdata="b.example"),
                      DNSRR(rrname="b.example", type="CNAME", rdata="a.example"),
                      DNSRR(rrname="b.example", rdata="192.0.2.9"),
                      DNSRR(rrname="c.example", rdata="192.0.2.10")])
    assert parse(bytes(message)).addresses == [("192.0.2.9", "a.example"), ("192.0.2.10", "c.example")]


def test_mdns_announcement_has_no_question():
    # RFC 6762 8.3: an unsolicited response, class IN with the cache-flush bit
    message = DNS(id=0, qr=1, aa=1, rd=0, qd=[],
                  an=[DNSRR(rrname="host.local", rdata="192.168.1.10", rclass=0x8001, ttl=120),
                      DNSRR(rrname="host.local", type="AAAA", rdata="fe80::1", rclass=0x8001, ttl=120)])
    assert parse(bytes(message)) == DnsMessage(True, None, None,
                                               [("192.168.1.10", "host.local"), ("fe80::1", "host.local")])


def test_llmnr_query_is_dns_wire_format():
    # RFC 4795: same header and question layout; flags C/TC/T in place of AA/TC/RD
    assert parse(header(flags=0, qd=1) + labels(b"printer") + b"\0\1\0\1") == DnsMessage(False, "printer", 1, [])


def test_root_name_and_records_of_other_classes():
    message = header(qd=1, an=1) + b"\0" + b"\0\2\0\1" + rr_a(owner=b"\0", rclass=3)   # CHAOS class
    assert parse(message) == DnsMessage(True, "", 2, [])


def test_odd_rdata_length_is_skipped():
    message = header(qd=1, an=2) + labels(b"x") + b"\0\1\0\1" + rr_a(address=b"\1\2\3") + rr_a()
    assert parse(message).addresses == [("192.0.2.7", "x")]


def test_a_pointer_chain_of_legal_depth():
    # each answer's name points at the previous answer's name: the n-th is n-1 jumps deep
    body = labels(b"a") + b"\0\1\0\1"
    offsets = [12]
    for _ in range(20):
        owner = struct.pack("!H", 0xC000 | offsets[-1])
        offsets.append(12 + len(body))
        body += rr_a(owner=owner)
    message = header(qd=1, an=20) + body
    assert parse(message).addresses == [("192.0.2.7", "a")] * 20     # the last is 20 jumps deep
    deeper = header(qd=1, an=21) + body + rr_a(owner=struct.pack("!H", 0xC000 | offsets[-1]))
    assert reason(deeper) == "compression_depth"


# ---- hostile names ----------------------------------------------------------------------------------

def test_pointer_to_itself():
    assert reason(header(qd=1) + b"\xc0\x0c\0\1\0\1") == "compression_loop"


def test_pointer_loop_between_two_names():
    # the answer's name is "x" then a pointer to the question, whose pointer leads back to the answer
    question = b"\x01q\xc0\x17" + b"\0\1\0\1"              # at 12; its pointer goes forward to 23
    answer = b"\x01x\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\1\2\3\4"   # at 20
    message = header(qd=1, an=1) + question + answer
    assert reason(message) == "compression_loop"


def test_pointer_loop_in_answers_only():
    # two answers whose names point at each other: the second points back, the first forward
    first = b"\xc0\x1a" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\1\2\3\4"     # at 12 -> 26
    second = b"\x01a\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\1\2\3\4"   # at 26 -> 12
    assert reason(header(qd=0, an=2) + first + second) == "compression_loop"


def test_pointer_into_the_header():
    assert reason(header(qd=0, an=1) + rr_a(owner=b"\xc0\x02")) == "bad_pointer"


def test_name_of_300_bytes():
    name = labels(*[b"a" * 63] * 4 + [b"b" * 40])        # 4 * 64 + 41 + 1 = 298 bytes on the wire
    assert reason(header(qd=1) + name + b"\0\1\0\1") == "name_too_long"


def test_name_of_exactly_255_bytes_and_127_labels():
    assert parse(header(qd=1) + labels(*[b"x"] * 127) + b"\0\1\0\1").qname == ".".join(["x"] * 127)
    assert reason(header(qd=1) + labels(*[b"x"] * 128) + b"\0\1\0\1") == "name_too_long"


def test_name_too_long_through_pointers():
    # the suffix is 200 bytes, the owner adds 100 more before pointing at it
    suffix = labels(*[b"s" * 49] * 4)                     # 201 bytes with the root
    owner = labels(*[b"o" * 49] * 2)[:-1] + b"\xc0\x0c"   # 100 bytes of labels, then the pointer
    message = header(qd=1, an=1) + suffix + b"\0\1\0\1" + rr_a(owner=owner)
    assert reason(message) == "name_too_long"


def test_control_bytes_and_markup_are_escaped():
    message = header(qd=1) + labels(b"a\x00b", b"\x1b[31m", b"<script>", b"back\\slash", b"\xc3\xa9") + b"\0\1\0\1"
    assert parse(message).qname == "a\\x00b.\\x1b[31m.<script>.back\\\\slash.\\xc3\\xa9"


def test_uppercase_is_lowered_before_escaping():
    assert parse(header(qd=1) + labels(b"MiXeD\xc9") + b"\0\1\0\1").qname == "mixed\\xc9"


def test_extended_label_type():
    assert reason(header(qd=1) + b"\x41\x01" + b"\0\1\0\1") == "bad_label_type"


@pytest.mark.parametrize("message", [
    b"", b"\x12\x34\x81", header()[:11],
    header(qd=1) + b"\x03ab",                 # the label runs past the end
    header(qd=1) + b"\x03abc",                # no root label
    header(qd=1) + labels(b"abc") + b"\0",    # the question's type and class cut
    header(qd=1) + b"\xc0",                   # half a pointer
    header(qd=1, an=1) + labels(b"a") + b"\0\1\0\1" + rr_a()[:-1],    # rdata cut
    header(qd=2) + labels(b"a") + b"\0\1\0\1" + labels(b"b") + b"\0\1",
])
def test_truncated(message):
    assert reason(message) == "truncated"


def test_impossible_counts():
    assert reason(header(qd=0xFFFF, an=0xFFFF) + labels(b"a") + b"\0\1\0\1") == "bad_count"


def test_at_most_64_records_are_read():
    body = labels(b"a") + b"\0\1\0\1" + b"".join(rr_a(address=bytes((10, 0, 0, i))) for i in range(70))
    message = parse(header(qd=1, an=70) + body)
    assert len(message.addresses) == 64 and message.addresses[-1] == ("10.0.0.63", "a")
    # the rest may even be garbage: they are not read
    assert len(parse(header(qd=1, an=200) + body + b"\xff" * 10).addresses) == 64


def test_past_64_questions_only_the_first_counts():
    body = b"".join(labels(b"q%d" % i) + b"\0\1\0\1" for i in range(65)) + rr_a()
    assert parse(header(qd=65, an=1) + body) == DnsMessage(True, "q0", 1, [])


# ---- DNS over TCP -----------------------------------------------------------------------------------

def test_tcp_message_split_over_two_segments():
    message = bytes(DNS(id=3, qr=1, qd=DNSQR(qname="split.example"), an=[DNSRR(rrname="split.example",
                                                                                rdata="203.0.113.5")]))
    stream = struct.pack("!H", len(message)) + message
    first, second = stream[:20], stream[20:]
    assert parse_tcp(b"") is None and parse_tcp(stream[:1]) is None
    assert parse_tcp(first) is None
    assert parse_tcp(first + second) == DnsMessage(True, "split.example", 1, [("203.0.113.5", "split.example")])
    assert parse_tcp(first + second + b"\0\x0c next message") == parse_tcp(stream)


def test_tcp_length_shorter_than_a_header():
    with pytest.raises(DnsError) as caught:
        parse_tcp(b"\0\x05hello")
    assert caught.value.reason == "truncated"


# ---- a damaged message after a whole question: the question is kept -----------------------------------

QUESTION = labels(b"sip", b"Example", b"dk") + b"\0\x21\0\x01"          # SRV, IN


@pytest.mark.parametrize("message, why", [
    (header(flags=0x0100, qd=1, ar=1) + QUESTION + b"\0\0\x29\x10",     # an OPT record cut short
     "truncated"),
    (header(flags=0x8180, qd=1, an=1) + QUESTION + rr_a(owner=b"\xc0\x40"), "compression_loop"),
    (header(flags=0x8180, qd=1, an=9000) + QUESTION, "bad_count"),        # a fuzzed count
])
def test_a_damaged_message_keeps_its_whole_first_question(message, why):
    # as in nDPI's fuzz-2006-06-26-2594.pcap: tshark and nDPI read the name of such a query
    with pytest.raises(DnsError) as caught:
        parse(message)
    assert caught.value.reason == why
    assert caught.value.question == DnsMessage(bool(message[2] & 0x80), "sip.example.dk", 33, [])


@pytest.mark.parametrize("message", [
    header(qd=1) + labels(b"sip", b"example")[:-3],                      # cut inside the name
    header(qd=1) + labels(b"sip", b"example") + b"\0",                   # cut inside type and class
    header(qd=1) + b"\xc0\x0c" + b"\0\1\0\1",                            # the question's name loops
    header(qd=0, an=1) + rr_a(owner=b"\xc0\x0c")[:5],
])
def test_no_question_without_a_whole_one(message):
    with pytest.raises(DnsError) as caught:
        parse(message)
    assert caught.value.question is None


def test_a_flow_is_named_by_the_question_of_a_damaged_message():
    from capture.peek import Peek
    learnt = []
    damaged = header(flags=0x0100, qd=1, ar=1) + QUESTION + b"\0\0\x29\x10"
    peek = Peek(17, 40000, 53)
    assert peek.see(True, damaged, 1.0, lambda *a: learnt.append(a))     # a resolver flow reads on
    assert (peek.app, peek.server_name, peek.problem) == ("dns", "sip.example.dk", "dns_truncated")
    tcp = Peek(6, 40001, 53)
    tcp.see(True, struct.pack("!H", len(damaged)) + damaged, 1.0, lambda *a: None)
    assert (tcp.app, tcp.server_name, tcp.problem) == ("dns", "sip.example.dk", "dns_truncated")


# ---- NetBIOS name service ---------------------------------------------------------------------------

def nbns_registration(name, suffix=0x4141, group=0, opcode=5, address="192.168.1.20"):
    return bytes(NBNSHeader(OPCODE=opcode, NM_FLAGS=0x11, QDCOUNT=1, ARCOUNT=1)
                 / NBNSRegistrationRequest(QUESTION_NAME=name, SUFFIX=suffix, G=group, NB_ADDRESS=address))


def test_netbios_registration():
    # suffix 0x00 (workstation) is encoded "AA"
    assert netbios_name(nbns_registration("DESKTOP-ABC")) == ("desktop-abc", "192.168.1.20")
    assert netbios_name(nbns_registration("PC", opcode=8)) == ("pc", "192.168.1.20")       # refresh


def test_netbios_positive_query_response():
    response = (NBNSHeader(OPCODE=0, RESPONSE=1, NM_FLAGS=0x58, ANCOUNT=1)
                / NBNSQueryResponse(RR_NAME="FILESERVER", SUFFIX=0x4341,                 # 0x20: file server
                                    ADDR_ENTRY=[NBNS_ADD_ENTRY(NB_ADDRESS="10.0.0.5")]))
    assert netbios_name(bytes(response)) == ("fileserver", "10.0.0.5")


@pytest.mark.parametrize("payload", [
    nbns_registration("WORKGROUP", group=1),                  # a group name names no host
    nbns_registration("ALICE", suffix=0x4144),                # 0x03 messenger: a user
    nbns_registration("PC", opcode=6),                        # a release
    nbns_registration("PC", address="0.0.0.0"),
    bytes(NBNSHeader(OPCODE=0, RESPONSE=1, RCODE=3, ANCOUNT=1)
          / NBNSQueryResponse(RR_NAME="PC", SUFFIX=0x4141, ADDR_ENTRY=[NBNS_ADD_ENTRY(NB_ADDRESS="10.0.0.5")])),
    header(flags=0x2800, qd=1, ar=1) + labels(b"NOTENCODED") + b"\0\x20\0\1" + b"\xc0\x0c" +
    struct.pack("!HHIH", 32, 1, 0, 6) + b"\0\0\1\2\3\4",
    b"", b"\0" * 11, b"\xff" * 80,
    header(flags=0x2800, qd=1, ar=1) + labels(b"E" * 32) + b"\0\x20\0\1" + b"\xc0\x32",   # points at itself
])
def test_netbios_not_a_host_name(payload):
    assert netbios_name(payload) is None


def test_netbios_name_with_control_bytes_is_escaped():
    raw = b"EVIL\x1b[0m<b>" + b" " * 4 + b"\x00"
    encoded = bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 15)))
    message = header(flags=0x2800, qd=1, ar=1) + labels(encoded) + b"\0\x20\0\1" + b"\xc0\x0c" + \
        struct.pack("!HHIH", 32, 1, 0, 6) + b"\0\0\x0a\0\0\x09"
    assert netbios_name(message) == ("evil\\x1b[0m<b>", "10.0.0.9")


# ---- random input: DnsError or a result, nothing else -----------------------------------------------

SEEDS = [bytes(DNS(id=1, qr=1, qd=DNSQR(qname="www.example.com"),
                   an=[DNSRR(rrname="www.example.com", type="CNAME", rdata="edge.example.net"),
                       DNSRR(rrname="edge.example.net", rdata="192.0.2.7")])),
         nbns_registration("HOST")]


def outcome(call, data):
    try:
        return call(data)
    except DnsError as error:
        assert error.reason and isinstance(error, ValueError)
        return error


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes(data):
    assert isinstance(outcome(parse, data), (DnsMessage, DnsError))
    assert isinstance(outcome(parse_tcp, data), (DnsMessage, DnsError, type(None)))
    assert netbios_name(data) is None or isinstance(netbios_name(data), tuple)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 7), st.integers(0, 7), st.integers(0, 7), st.binary(max_size=300))
def test_random_body_behind_a_plausible_header(qd, an, ar, body):
    assert isinstance(outcome(parse, header(qd=qd, an=an, ar=ar) + body), (DnsMessage, DnsError))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6))
def test_mutated_messages(seed, flips):
    data = bytearray(seed)
    for at, value in flips:
        data[at % len(data)] = value
    data = bytes(data)
    result = outcome(parse, data)
    assert isinstance(result, (DnsMessage, DnsError))
    if isinstance(result, DnsMessage):
        assert all(len(name) <= 253 for _, name in result.addresses)
    netbios_name(data)


# ---- real captures against tshark -------------------------------------------------------------------

def udp_or_tcp_payload(frame):
    """(ports, payload) of an Ethernet / IPv4 or IPv6 / UDP or TCP frame, read by hand so that the
    bytes are exactly those captured (no dissector rebuilds them)."""
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800:
        ip = 14 + (frame[14] & 0x0F) * 4
        proto = frame[14 + 9]
    else:
        ip, proto = 14 + 40, frame[14 + 6]
    sport, dport = struct.unpack_from("!HH", frame, ip)
    start = ip + 8 if proto == 17 else ip + (frame[ip + 12] >> 4) * 4
    return (sport, dport), frame[start:]


def tshark_fields(path, *fields):
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-e", "frame.number",
                          *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return {int(row[0]): row[1:] for row in (line.split("\t") for line in out.splitlines())}


def frames(path):
    return [bytes(data) for data, _ in RawPcapReader(str(path))]


def names_files(pattern):
    if not NAMES.is_dir():
        pytest.skip(f"{NAMES} is absent (development captures live outside the repository)")
    return sorted(NAMES.glob(pattern))


def bounded(call, *args):
    """call(*args) under an alarm: a walk that does not end fails the test instead of hanging it."""
    def hang(*_):
        raise AssertionError("the parser did not return within 5 s")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(5)
    try:
        return call(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


HOSTILE = ("zeek_dns_dns-invalid-names.pcap", "zeek_dns_max-compression-depth.pcap")


@system
@needs_tool("tshark")
def test_query_names_and_addresses_match_tshark():
    files = names_files("zeek_dns*.pcap")
    compared = 0
    for path in files:
        expected = tshark_fields(path, "dns.qry.name", "dns.a", "dns.aaaa")
        for number, frame in enumerate(frames(path), 1):
            _, payload = udp_or_tcp_payload(frame)
            qname, a, aaaa = expected[number]
            result = bounded(outcome, parse, payload)
            if isinstance(result, DnsError):
                assert path.name in HOSTILE, (path.name, number, result.reason)
                assert qname == "" or qname.startswith("<"), (path.name, number, qname)   # tshark: malformed
                continue
            tshark_qname = None if qname == "" else "" if qname == "<Root>" else qname.lower()
            assert result.qname == tshark_qname, (path.name, number)
            tshark_addresses = set(filter(None, a.split(",") + aaaa.split(",")))
            assert {address for address, _ in result.addresses} == tshark_addresses, (path.name, number)
            compared += 1
    assert compared >= 10


@system
def test_hostile_captures_are_bounded():
    files = {path.name: path for path in names_files("zeek_dns_*.pcap")}
    reasons = []
    for frame in frames(files["zeek_dns_dns-invalid-names.pcap"]):
        result = bounded(outcome, parse, udp_or_tcp_payload(frame)[1])
        reasons.append(result.reason)
    assert reasons == ["truncated", "compression_loop", "truncated"]
    # a chain of pointers to pointers 6 deep: legal, within the 20 jumps allowed, read in full
    (frame,) = frames(files["zeek_dns_max-compression-depth.pcap"])
    result = bounded(parse, udp_or_tcp_payload(frame)[1])
    assert result == DnsMessage(True, "a", 1, [(f"127.0.0.{i}", "a") for i in range(1, 8)])


@system
def test_mdns_capture_names_unsolicited_answers_by_owner():
    files = {path.name: path for path in names_files("zeek_dns_*.pcap")}
    results = [parse(udp_or_tcp_payload(frame)[1]) for frame in frames(files["zeek_dns_mdns-no-assoc.pcap"])]
    assert [r.addresses for r in results if r.addresses] == [
        [("192.168.0.2", "unrelated-reply-a.local")],
        [("fe80::200:deff:fead:beef", "unrelated-reply-aaaa.local")],
        [("fe80::1", "v6-unrelated.local")],
    ]
