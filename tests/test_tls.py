"""The TLS ClientHello reader (capture/tls.py): hellos built by hand and by Python's ssl module,
whole, split over records and over TCP segments; hostile lengths and names; random bytes (only
TlsError may come out); and, where ../shared has them, real captures against tshark."""
import shutil
import ssl
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import captures
import oracle
from capture.tls import (MAX_ALPN, MAX_STREAM, ClientHello, TlsError, client_hello_from_stream,
                         parse_client_hello)
from common import ROOT, system
from records import MAX_NAME

NAMES = ROOT.parent / "shared" / "captures" / "names"


def u16(n):
    return n.to_bytes(2, "big")


def extension(kind, body):
    return u16(kind) + u16(len(body)) + body


def sni(name, kind=0):
    entry = bytes([kind]) + u16(len(name)) + name
    return extension(0, u16(len(entry)) + entry)


def alpn(*names):
    body = b"".join(bytes([len(n)]) + n for n in names)
    return extension(16, u16(len(body)) + body)


def hello(extensions=None, version=0x0303, session_id=bytes(32), suites=b"\x13\x01\x13\x02\xc0\x2f"):
    """A ClientHello handshake message (type byte first); extensions=None writes none at all."""
    body = u16(version) + bytes(range(32)) + bytes([len(session_id)]) + session_id
    body += u16(len(suites)) + suites + b"\x01\x00"
    if extensions is not None:
        body += u16(len(extensions)) + extensions
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(message, *sizes, version=0x0301):
    """The message in TLS handshake records of the given sizes (the last one takes the rest)."""
    out, p = b"", 0
    for size in sizes + (len(message),):
        piece = message[p:p + size]
        if piece:
            out += bytes([22]) + u16(version) + u16(len(piece)) + piece
        p += len(piece)
    return out


EXAMPLE = hello(sni(b"example.com") + extension(23, b"") + alpn(b"h2", b"http/1.1") + extension(43, b"\x02\x03\x04"))


def ssl_client_hello(server_name, protocols=("h2", "http/1.1")):
    """The bytes Python's ssl module (OpenSSL) sends first, with no network: a memory BIO pair."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(list(protocols))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


def reason(call, *args):
    with pytest.raises(TlsError) as caught:
        call(*args)
    return caught.value.reason


# ---- well-formed hellos -------------------------------------------------------------------------

def test_hand_built_hello_gives_name_protocols_and_version():
    assert parse_client_hello(EXAMPLE) == ClientHello("example.com", ("h2", "http/1.1"), 0x0303)
    assert client_hello_from_stream(records(EXAMPLE)) == ClientHello("example.com", ("h2", "http/1.1"), 0x0303)


def test_bytes_after_the_message_are_not_read():
    assert parse_client_hello(EXAMPLE + b"\x16\x03\x03trailing") == parse_client_hello(EXAMPLE)


def test_hello_without_extensions_or_sni():
    assert parse_client_hello(hello(None, version=0x0301)) == ClientHello(None, (), 0x0301)
    assert parse_client_hello(hello(b"")) == ClientHello(None, (), 0x0303)
    assert parse_client_hello(hello(alpn(b"h3"))) == ClientHello(None, ("h3",), 0x0303)


def test_python_ssl_hello_whole_and_split_over_records_and_segments():
    stream = ssl_client_hello("www.example.org")
    expected = ClientHello("www.example.org", ("h2", "http/1.1"), 0x0303)
    assert stream[0] == 22 and stream[5] == 1
    assert client_hello_from_stream(stream) == expected
    message = stream[5:]
    # the same message over four records, then that stream cut into TCP segments at every byte
    split = records(message, 1, 3, 100, version=0x0303)
    assert client_hello_from_stream(split) == expected
    for cut in range(len(split)):
        assert client_hello_from_stream(split[:cut]) is None, cut


def test_every_prefix_of_a_one_record_hello_needs_more():
    stream = records(EXAMPLE)
    assert [client_hello_from_stream(stream[:cut]) for cut in range(len(stream))] == [None] * len(stream)


def test_first_host_name_of_the_list_wins_and_other_name_types_are_skipped():
    entries = b"\x07" + u16(3) + b"odd" + b"\x00" + u16(5) + b"first" + b"\x00" + u16(6) + b"second"
    message = hello(extension(0, u16(len(entries)) + entries))
    assert parse_client_hello(message).server_name == "first"


def test_alpn_names_are_bounded_in_number():
    names = [f"proto-{i}".encode() for i in range(40)]
    assert parse_client_hello(hello(alpn(*names))).alpn == tuple(f"proto-{i}" for i in range(MAX_ALPN))


# ---- hostile names ------------------------------------------------------------------------------

def test_zero_length_host_name_is_no_name():
    assert parse_client_hello(hello(sni(b""))).server_name is None
    assert parse_client_hello(hello(extension(0, b""))).server_name is None


def test_non_printable_name_is_escaped():
    name = b"evil\x00\x1b[31m\\.com\xff"
    assert parse_client_hello(hello(sni(name))).server_name == "evil\\x00\\x1b[31m\\\\.com\\xff"
    assert parse_client_hello(hello(alpn(b"h2\n"))).alpn == ("h2\\x0a",)


def test_long_name_is_bounded():
    got = parse_client_hello(hello(sni(b"a" * 1000)))
    assert got.server_name == "a" * MAX_NAME
    got = parse_client_hello(hello(sni(b"\x01" * 1000)))
    assert got.server_name == "\\x01" * (MAX_NAME // 4)


# ---- malformed ----------------------------------------------------------------------------------

# ---- Peek: which side's hello is read ---------------------------------------------------------------

def _peek_tcp(*payloads, ports=(443, 50000)):
    """A TCP Peek fed (from_orig, payload) pairs as the flow table would, orig on ports[0]; the
    flow's (app, server_name) and whether it still wanted packets after the last."""
    from capture.peek import Peek
    peek = Peek(6, *ports)
    more = True
    for from_orig, payload in payloads:
        more = peek.see(from_orig, payload, 1.0, lambda *a: None)
        if not more:
            break
    return peek.app, peek.server_name, more


def test_a_hello_from_the_responder_names_the_flow():
    # nDPI's tls_torrent.pcapng: the capture starts with the server's SYN-ACK, so the server is
    # orig and the ClientHello comes from the responder
    assert _peek_tcp((False, records(EXAMPLE)))[:2] == ("tls", "example.com")
    split = records(EXAMPLE, 40)
    assert _peek_tcp((False, split[:30]), (False, split[30:]))[:2] == ("tls", "example.com")
    # after the server's own bytes came first (reordered by the capture)
    server = bytes([22, 3, 3, 0, 4, 2, 0, 0, 0])          # a ServerHello-shaped record
    assert _peek_tcp((False, server), (True, records(EXAMPLE)))[:2] == ("tls", "example.com")


def test_a_hello_from_orig_still_decides_and_ends_the_reading():
    assert _peek_tcp((True, records(EXAMPLE))) == ("tls", "example.com", False)
    # no SNI: the client spoke, nothing more will name the flow
    assert _peek_tcp((True, records(hello(extensions=None)))) == ("tls", "", False)
    # once orig opened, the responder's bytes are the server's, whatever they look like
    assert _peek_tcp((True, records(hello(extensions=None))), (False, records(EXAMPLE)))[:2] == ("tls", "")


def test_not_tls():
    assert reason(client_hello_from_stream, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n") == "not_tls"
    assert reason(client_hello_from_stream, b"SSH-2.0-OpenSSH_9.2\r\n") == "not_tls"
    assert reason(client_hello_from_stream, b"G") == "not_tls"
    assert reason(client_hello_from_stream, b"\x16\x01") == "not_tls"
    assert reason(client_hello_from_stream, b"\x16\x03\x05\x00\x10" + bytes(16)) == "not_tls"
    assert reason(client_hello_from_stream, b"\x17\x03\x03\x00\x10" + bytes(16)) == "not_tls"
    # an SSLv2-framed hello (first byte 0x80) carries no server name and is not read
    assert reason(client_hello_from_stream, b"\x80\x2e\x01\x03\x01") == "not_tls"
    assert client_hello_from_stream(b"") is None
    assert client_hello_from_stream(b"\x16") is None
    assert client_hello_from_stream(b"\x16\x03\x01") is None


def test_other_handshake_messages():
    server_hello = b"\x02" + EXAMPLE[1:]
    assert reason(client_hello_from_stream, records(server_hello)) == "not_client_hello"
    assert reason(parse_client_hello, server_hello) == "not_client_hello"


def test_huge_lengths():
    huge = b"\x01\xff\xff\xff" + EXAMPLE[4:]
    assert reason(client_hello_from_stream, records(huge)) == "client_hello_too_long"
    assert reason(parse_client_hello, huge) == "truncated_handshake"
    assert reason(client_hello_from_stream, b"\x16\x03\x01\xff\xff" + EXAMPLE) == "bad_record_length"
    assert reason(client_hello_from_stream, b"\x16\x03\x01\x00\x00" + EXAMPLE) == "bad_record_length"
    # the length just fits in MAX_STREAM, but one byte per record can never bring it in
    long_hello = hello(sni(b"x" * 3000))
    stream = records(long_hello, *[1] * 5000)[:MAX_STREAM]
    assert reason(client_hello_from_stream, stream) == "client_hello_too_long"
    assert client_hello_from_stream(stream[:MAX_STREAM - 1]) is None


def test_a_record_of_another_type_inside_the_hello():
    stream = records(EXAMPLE, 10)
    alert = b"\x15\x03\x03\x00\x02\x02\x28"
    assert reason(client_hello_from_stream, stream[:15] + alert + stream[15:]) == "unexpected_record_type"


def test_truncated_messages():
    for cut in range(len(EXAMPLE)):
        assert reason(parse_client_hello, EXAMPLE[:cut]) in ("truncated_handshake",), cut
    # a message whose own length stops inside the fixed fields
    assert reason(parse_client_hello, b"\x01\x00\x00\x10" + bytes(16)) == "truncated_client_hello"


@pytest.mark.parametrize("message, why", [
    (hello(sni(b"a"), session_id=bytes(33)), "bad_session_id"),
    (hello(sni(b"a"))[:-1], "truncated_handshake"),
    (hello(extension(0, b"\x00\x0a\x00\x00\x06server")), "bad_server_name"),
    (hello(extension(0, b"\x00\x09\x00\x00\x07server")), "bad_server_name"),
    (hello(extension(16, b"\x00\x03\x05h2")), "bad_alpn"),
    (hello(extension(16, b"\x00\x04\x02h2")), "bad_alpn"),
    (hello(u16(0) + u16(50) + b"short"), "bad_extension_length"),
    (hello(sni(b"a") + b"\x00"), "bad_extension_length"),
])
def test_inner_lengths_are_checked(message, why):
    assert reason(parse_client_hello, message) == why


def test_extensions_length_past_the_message():
    message = bytearray(hello(sni(b"example.com")))
    at = 4 + 2 + 32 + 1 + 32 + 2 + 6 + 2
    struct.pack_into("!H", message, at, 0x4000)
    assert reason(parse_client_hello, bytes(message)) == "bad_extensions_length"


# ---- random bytes: TlsError is the only exception ------------------------------------------------

def _only_tls_error(call, data):
    try:
        call(data)
    except TlsError as e:
        assert e.reason and e.reason.replace("_", "").isalpha()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes(data):
    _only_tls_error(client_hello_from_stream, data)
    _only_tls_error(client_hello_from_stream, b"\x16\x03\x01" + data)
    _only_tls_error(parse_client_hello, data)
    _only_tls_error(parse_client_hello, b"\x01" + data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(EXAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.lists(st.integers(1, 60), max_size=5))
def test_damaged_hellos(changes, cuts):
    message = bytearray(EXAMPLE)
    for at, value in changes:
        message[at] = value
    _only_tls_error(parse_client_hello, bytes(message))
    _only_tls_error(client_hello_from_stream, records(bytes(message), *cuts))


# ---- real captures (../shared) against tshark ------------------------------------------------

def client_streams(path):
    """{(client address, port, server address, port): client payload bytes in sequence order} for
    each TCP connection of an Ethernet capture whose SYN is seen; retransmissions dropped."""
    streams, expected = {}, {}
    for frame in captures.frames_of(path):
        segment = _tcp(frame)
        if segment is None:
            continue
        key, seq, flags, payload = segment
        if flags & 0x02 and not flags & 0x10:                 # SYN from the client
            expected[key], streams[key] = seq + 1, b""
        elif key in expected and payload and seq == expected[key]:
            streams[key] += payload
            expected[key] += len(payload)
    return streams


def _tcp(frame):
    """(flow key, seq, flags, payload) of an Ethernet / IPv4 or IPv6 / TCP frame, else None."""
    ip = captures.ip_transport(frame)
    if ip is None or ip[0] != 6:
        return None
    _, src, dst, p, end = ip
    sport, dport, seq = struct.unpack_from("!HHI", frame, p)
    return (src, sport, dst, dport), seq, frame[p + 13], frame[p + (frame[p + 12] >> 4) * 4:end]


@system
@pytest.mark.skipif(not NAMES.is_dir(), reason=f"{NAMES} is absent (a fresh clone has no ../shared)")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", ["zeek_tls_chrome-34-google.pcap", "zeek_tls_google-duplicate.pcap",
                                  "zeek_tls_tls13draft23-chrome67.0.3368.0-canary.pcap"])
def test_real_captures_match_tshark(name):
    path = NAMES / name
    ours = {}
    for key, stream in client_streams(path).items():
        if not stream:
            continue           # a connection opened and closed without a byte (a preconnect)
        got = client_hello_from_stream(stream[:MAX_STREAM])
        assert got is not None, key
        ours[key[1]] = got.server_name or ""
    assert ours == oracle.client_hello_names(path, "tcp")
    assert set(ours.values()) <= {"google.de", "", "tls13.crypto.mozilla.org"}
