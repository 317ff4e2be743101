"""The TLS ClientHello a client opens with: the server name (SNI) and the application protocols
(ALPN) it asks for. Read from the client's first TCP bytes (`client_hello_from_stream`) and, through
capture/quic.py, from QUIC's CRYPTO stream (`parse_client_hello`).

Pure: bytes in, a `ClientHello` or a `TlsError` out (never another exception); no I/O, no clock.
Every length is checked against the bytes that hold it, so work and memory stay within the input.

Cost, measured with timeit (best of 7 runs of 20,000; Python 3.11, a shared 2-core machine):
client_hello_from_stream on a 517-byte ClientHello in one record (Python's ssl module's hello:
SNI, two ALPN names, 12 extensions): 5.8 µs per call, nearly half of it in records.wire_text.
"""
import struct
from typing import NamedTuple

from records import wire_text

MAX_STREAM = 16384        # client bytes the caller keeps; a hello that cannot fit is given up on
MAX_ALPN = 16             # ALPN names kept: browsers offer 2-3, the rest would only cost memory
# RFC 8446 5.1: a TLSPlaintext record carries at most 2^14 bytes. The hello is plaintext.
MAX_RECORD = 16384

CONTENT_HANDSHAKE = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
HOST_NAME = 0

_U16 = struct.Struct("!H").unpack_from
_RECORD = struct.Struct("!BHH").unpack_from       # content type, legacy record version, length
_EXTENSION = struct.Struct("!HH").unpack_from     # type, length


class TlsError(ValueError):
    """Bytes that are not, or not a well-formed, TLS ClientHello. `reason` is a short snake_case
    word the caller counts under."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class ClientHello(NamedTuple):
    server_name: str | None    # SNI host_name (records.wire_text); None when absent or empty
    alpn: tuple                # ALPN protocol names (wire_text), in the client's order; may be empty
    version: int               # legacy_version of the hello (0x0303 for TLS 1.2 and 1.3);
                               # 0 for a Google QUIC CHLO (capture/quic.py), which has none


def parse_client_hello(body) -> ClientHello:
    """body = one Handshake message starting at its type byte (0x01 ClientHello); raises TlsError.
    Bytes after the message are ignored."""
    if len(body) < 4:
        raise TlsError("truncated_handshake")
    if body[0] != CLIENT_HELLO:
        raise TlsError("not_client_hello")
    end = 4 + int.from_bytes(body[1:4], "big")
    if len(body) < end:
        raise TlsError("truncated_handshake")
    # legacy_version (2) and random (32), then the session id (at most 32 bytes)
    if end < 4 + 35:
        raise TlsError("truncated_client_hello")
    version = _U16(body, 4)[0]
    p = 4 + 34
    if body[p] > 32:
        raise TlsError("bad_session_id")
    p += 1 + body[p]
    if p + 2 > end:
        raise TlsError("truncated_client_hello")
    p += 2 + _U16(body, p)[0]                       # cipher suites
    if p + 1 > end:
        raise TlsError("bad_cipher_suites")
    p += 1 + body[p]                                # compression methods
    if p > end:
        raise TlsError("bad_compression_methods")
    if p == end:
        return ClientHello(None, (), version)      # SSL 3.0-style hello: no extensions at all
    if p + 2 > end:
        raise TlsError("bad_extensions_length")
    stop = p + 2 + _U16(body, p)[0]
    if stop > end:
        raise TlsError("bad_extensions_length")
    server_name, alpn = _extensions(body, p + 2, stop)
    return ClientHello(server_name, alpn, version)


def _extensions(body, p, stop):
    server_name, alpn = None, ()
    while p + 4 <= stop:
        kind, size = _EXTENSION(body, p)
        p += 4
        if p + size > stop:
            raise TlsError("bad_extension_length")
        if kind == EXT_SERVER_NAME and server_name is None:
            server_name = _server_name(body, p, p + size)
        elif kind == EXT_ALPN and not alpn:
            alpn = _alpn(body, p, p + size)
        p += size
    if p != stop:
        raise TlsError("bad_extension_length")
    return server_name, alpn


def _server_name(body, p, stop):
    """The first host_name of a server_name extension (RFC 6066 3); None for an empty one."""
    if p == stop:
        return None
    if p + 2 > stop or p + 2 + _U16(body, p)[0] != stop:
        raise TlsError("bad_server_name")
    p += 2
    while p + 3 <= stop:
        kind, size = body[p], _U16(body, p + 1)[0]
        p += 3
        if p + size > stop:
            raise TlsError("bad_server_name")
        if kind == HOST_NAME:
            # wire_text keeps at most MAX_NAME characters: never hand it more bytes than that
            return wire_text(body[p:p + min(size, 1024)]) if size else None
        p += size
    return None


def _alpn(body, p, stop):
    if p + 2 > stop or p + 2 + _U16(body, p)[0] != stop:
        raise TlsError("bad_alpn")
    p += 2
    names = []
    while p < stop and len(names) < MAX_ALPN:
        size = body[p]
        p += 1
        if p + size > stop:
            raise TlsError("bad_alpn")
        names.append(wire_text(body[p:p + size]))
        p += size
    return tuple(names)


def client_hello_from_stream(data) -> ClientHello | None:
    """data = the client's TCP payload from the start of the connection, concatenated (the caller
    keeps at most MAX_STREAM bytes). Walks TLS records (content type 22), reassembles a handshake
    message split over several records; returns the ClientHello when complete, None when more
    bytes are needed, raises TlsError("not_tls") when the bytes are not a TLS handshake start,
    other reasons when malformed."""
    size = len(data)
    if size < 5:
        # decide as early as the bytes allow, so a non-TLS flow is not buffered for nothing
        if (size and data[0] != CONTENT_HANDSHAKE) or (size > 1 and data[1] != 3):
            raise TlsError("not_tls")
        return None
    kind, legacy, length = _RECORD(data, 0)
    if kind != CONTENT_HANDSHAKE or legacy >> 8 != 3 or legacy & 0xFF > 4:
        raise TlsError("not_tls")
    if length == 0 or length > MAX_RECORD:
        raise TlsError("bad_record_length")
    if size > 5 and data[5] != CLIENT_HELLO:
        raise TlsError("not_client_hello")
    if size >= 9 and length >= 4:
        need = 4 + int.from_bytes(data[6:9], "big")
        if need + 5 > MAX_STREAM:
            raise TlsError("client_hello_too_long")
        # the common case: the whole hello in the first record
        if need <= length and 5 + need <= size:
            return parse_client_hello(data[5:5 + need])
    return _reassembled(data)


def _reassembled(data):
    """The hello once the handshake records gathered so far hold all of it, else None."""
    size = len(data)
    parts = []
    have = 0
    need = None
    p = 0
    while p + 5 <= size:
        kind, legacy, length = _RECORD(data, p)
        if kind != CONTENT_HANDSHAKE:
            raise TlsError("unexpected_record_type")
        if length == 0 or length > MAX_RECORD:
            raise TlsError("bad_record_length")
        piece = data[p + 5:p + 5 + length]
        parts.append(piece)
        have += len(piece)
        if need is None and have >= 4:
            head = b"".join(parts)
            need = 4 + int.from_bytes(head[1:4], "big")
            if need + 5 > MAX_STREAM:
                raise TlsError("client_hello_too_long")
        if need is not None and have >= need:
            return parse_client_hello(b"".join(parts)[:need])
        p += 5 + length
    if size >= MAX_STREAM:
        # the caller keeps no more than this: the hello will never be whole
        raise TlsError("client_hello_too_long")
    return None
