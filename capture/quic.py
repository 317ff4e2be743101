"""QUIC: the TLS ClientHello (server name, ALPN) in a client's Initial packets.

Feed `QuicClientHellos` the UDP payloads a client sent, in order; it returns the hello once the
CRYPTO stream holds all of it. Versions read:
  - QUIC v1 (RFC 9001) and v2 (RFC 9369: own salt, "quicv2 " labels, Initial type bits 0b01);
  - IETF drafts 23-34 and Facebook's mvfst drafts, with the salt Wireshark's packet-quic.c uses
    for each (tests cover drafts 27-29, draft-29 against its published test vector);
  - Google QUIC T050/T051 (TLS in Initials protected like the drafts, each with its own salt) and
    Q050 (same protection, a gQUIC CHLO inside), framed with gQUIC frames (CRYPTO = 0x08);
  - Google QUIC Q024-Q043 (public header) and Q046 (long header): no encryption, the CHLO rides
    on stream 1 in clear and its "SNI" tag holds the server name (packet-gquic.c, nDPI quic.c).
    Before Q039 the stream frame's fields are little-endian, and before Q034 a private flags
    byte follows the message hash. A CHLO is read where its stream frame starts it, at any
    offset: a capture that begins after the client's first CHLO still shows the second one.
Initial keys come from the Destination Connection ID of the client's first Initial; a packet they
do not open is tried with keys from its own DCID (a client after a Retry), at most MAX_KEYS sets.

Pure: no I/O, no clock. State per flow is bounded: at most MAX_CRYPTO bytes of CRYPTO data in at
most MAX_FRAGMENTS pieces, MAX_KEYS key sets. Malformed input raises QuicError, nothing else.

Cost, measured with timeit (best of 7 runs of 5,000; Python 3.11, cryptography 50, a shared
2-core machine): feed() of a new flow's 1200-byte QUIC v1 Initial from aioquic (key derivation,
header and payload decryption, frames, ClientHello): 25 µs per call.
"""
import re
import struct

from capture.quic_keys import GQUIC_LITTLE, GQUIC_PUBLIC, IETF, Q034, Q046, VERSIONS, Keys
from capture.tls import ClientHello, TlsError, parse_client_hello
from records import wire_text

MAX_CRYPTO = 65536       # CRYPTO stream bytes kept per flow (a ClientHello is 0.3-2 KB)
MAX_FRAGMENTS = 64       # CRYPTO pieces kept (Chrome scatters its hello over ~20)
MAX_KEYS = 4             # Initial key sets derived per flow (first DCID, after Retry...)
MAX_CHLO_TAGS = 128      # gQUIC CHLO tag entries (Chromium's kMaxEntries)

_U32 = struct.Struct("!I").unpack_from
_U16 = struct.Struct("!H").unpack_from
_U16LE = struct.Struct("<H").unpack_from
_U32LE = struct.Struct("<I").unpack_from
_NOT_ZERO = re.compile(b"[^\x00]")
_PN_LENGTHS = (1, 2, 4, 6)            # gQUIC's 2-bit length codes (packet numbers, ACK fields)


class QuicError(ValueError):
    """Bytes that are not, or not a readable, client Initial. `reason` is a short snake_case
    word the caller counts under (ClientHello problems come as "tls_" + TlsError's reason)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def looks_like_quic(datagram) -> bool:
    """Cheap test of a UDP payload: an IETF long header (first bit set) with a version read here
    or a greasing version (0x?a?a?a?a, RFC 9000 15: QUIC, though feed() cannot open it), or a
    gQUIC Q024-Q043 public header that carries its version (flags 0x01 and 0x08 set)."""
    if len(datagram) < 7:
        return False
    first = datagram[0]
    if first & 0x80:
        version = _U32(datagram, 1)[0]
        return version in VERSIONS or version == Q046 or version & 0x0F0F0F0F == 0x0A0A0A0A
    return first & 0x09 == 0x09 and len(datagram) >= 13 and _U32(datagram, 9)[0] in GQUIC_PUBLIC


class QuicClientHellos:
    """Per flow, the client's side: feed it each UDP payload the client sent, in order.
    Bounded state (see the module's limits)."""

    __slots__ = ("version", "_dcid", "_keys", "_crypto", "_hello")

    def __init__(self):
        self.version = None      # the QUIC version seen (after the first feed)
        self._dcid = None        # DCID whose keys opened the latest Initial
        self._keys = {}          # (version, dcid) -> _Keys
        self._crypto = _CryptoStream()
        self._hello = None

    def feed(self, datagram) -> ClientHello | None:
        """The ClientHello once the CRYPTO stream holds all of it (the same one on every later
        call); None while more is needed; raises QuicError."""
        if self._hello is not None:
            return self._hello
        if len(datagram) < 7:
            raise QuicError("truncated_packet")
        first = datagram[0]
        if first & 0x80:
            version = _U32(datagram, 1)[0]
            if version == Q046:
                return self._gquic_clear(datagram, version, _q046_payload(datagram))
            problem = self._long_packets(datagram)
            if self._hello is None and problem:
                raise QuicError(problem)
            return self._hello
        if first & 0x01 and len(datagram) >= 13 and _U32(datagram, 9)[0] in GQUIC_PUBLIC:
            version = _U32(datagram, 9)[0]
            return self._gquic_clear(datagram, version, _public_payload(datagram, version, True))
        if self.version in GQUIC_PUBLIC:
            return self._gquic_clear(datagram, self.version, _public_payload(datagram, self.version, False))
        raise QuicError("not_initial")

    # ---- IETF-style long headers (QUIC v1, v2, drafts, Q050, T05x) ----------------------------

    def _long_packets(self, d):
        """Walks the coalesced packets of one datagram, reading the CRYPTO frames of each
        Initial; returns the problem that stopped it before any Initial opened, if one did."""
        p, size, opened = 0, len(d), False
        while p < size and self._hello is None:
            if not d[p] & 0x80:
                break          # a short-header packet runs to the end of the datagram
            try:
                p, plain, spec = self._long_packet(d, p)
            except QuicError as e:
                # bytes after an Initial that opened: a packet we cannot read, or the random
                # padding some clients append to a datagram; what came before stands
                return None if opened else e.reason
            if plain is not None:
                opened = True
                if spec.frames == IETF:
                    _ietf_frames(plain, self._crypto)
                else:
                    _gquic_frames(plain, self._crypto, None)
                self._hello = self._crypto.chlo() if spec.chlo else self._crypto.client_hello()
        return None

    def _long_packet(self, d, p):
        """The long-header packet at p: (its end, its payload when it is an Initial, else None,
        its version's spec)."""
        if p + 7 > len(d):
            raise QuicError("truncated_packet")
        first = d[p]
        version = _U32(d, p + 1)[0]
        spec = VERSIONS.get(version)
        if spec is None:
            raise QuicError("version_negotiation" if version == 0 else "unknown_version")
        if self.version is None:
            self.version = version
        dcil = d[p + 5]
        q = p + 6 + dcil
        if dcil > 20 or q >= len(d) or d[q] > 20:
            raise QuicError("bad_connection_id")
        dcid = bytes(d[p + 6:q])
        q += 1 + d[q]
        kind = (first >> 4) & 3
        if kind == spec.retry:
            return len(d), None, spec      # a Retry has no Length field (and clients send none)
        if kind == spec.initial:
            token, q = _varint(d, q)
            q += token
        length, q = _varint(d, q)
        end = q + length
        if end > len(d):
            raise QuicError("truncated_packet")
        if kind != spec.initial:
            return end, None, spec         # 0-RTT or Handshake: skipped by its length
        return end, self._open(d, p, q, end, version, spec, dcid), spec

    def _open(self, d, start, pn_at, end, version, spec, dcid):
        if pn_at + 20 > end:
            raise QuicError("truncated_packet")
        plain = None
        if self._dcid is not None:
            plain = self._keys_for(version, spec, self._dcid).open(d, start, pn_at, end)
        if plain is None and dcid != self._dcid:
            # the first Initial, or a client after a Retry (RFC 9001 5.2): keys from this DCID
            plain = self._keys_for(version, spec, dcid).open(d, start, pn_at, end)
            if plain is not None:
                self._dcid = dcid
        if plain is None:
            raise QuicError("decrypt_failed")
        return plain

    def _keys_for(self, version, spec, dcid):
        keys = self._keys.get((version, dcid))
        if keys is None:
            if len(self._keys) >= MAX_KEYS:
                raise QuicError("too_many_connection_ids")
            keys = self._keys[version, dcid] = Keys(spec, dcid)
        return keys

    # ---- gQUIC in clear (Q024-Q043, Q046) -----------------------------------------------------

    def _gquic_clear(self, datagram, version, payload_at):
        if self.version is None:
            self.version = version
        if payload_at is None or payload_at > len(datagram):
            raise QuicError("truncated_packet")
        # the 12-byte message authentication hash (FNV-1a) is not checked: it would cost a
        # Python loop over every byte, and a forged packet can only name itself
        _gquic_frames(datagram[payload_at:], self._crypto, version)
        self._hello = self._crypto.chlo()
        return self._hello


def _public_payload(d, version, with_version):
    """Offset of the frames in a Q024-Q043 public-header packet (flags, 8-byte CID, version,
    packet number, 12-byte hash, before Q034 a private flags byte), None when the flags promise
    no connection id."""
    flags = d[0]
    if not flags & 0x08:
        return None
    private = 1 if version < Q034 else 0
    return 1 + 8 + (4 if with_version else 0) + _PN_LENGTHS[(flags >> 4) & 3] + 12 + private


def _q046_payload(d):
    """Offset of the frames in a Q046 long-header packet: connection id lengths as nibbles
    (length - 3, 0 for none), the packet number length in the type byte, then the 12-byte hash."""
    lengths = d[5]
    dcil = (lengths >> 4) + 3 if lengths >> 4 else 0
    scil = (lengths & 0x0F) + 3 if lengths & 0x0F else 0
    return 6 + dcil + scil + (d[0] & 3) + 1 + 12


def _varint(d, p):
    """RFC 9000 16 variable-length integer at p: (value, next position)."""
    if p >= len(d):
        raise QuicError("truncated_packet")
    size = 1 << (d[p] >> 6)
    if p + size > len(d):
        raise QuicError("truncated_packet")
    return int.from_bytes(d[p:p + size], "big") & ((1 << (8 * size - 2)) - 1), p + size


# ---- frames ------------------------------------------------------------------------------------

def _ietf_frames(plain, crypto):
    """The frames an Initial may carry (RFC 9000 12.4): PADDING, PING, ACK, CRYPTO,
    CONNECTION_CLOSE. CRYPTO data goes to the stream; anything else is a protocol violation."""
    p, size = 0, len(plain)
    while p < size:
        kind = plain[p]
        if kind == 0x00:
            found = _NOT_ZERO.search(plain, p)
            p = found.start() if found else size
        elif kind == 0x01:
            p += 1
        elif kind == 0x06:
            p = _crypto_frame(plain, p + 1, crypto)
        elif kind in (0x02, 0x03):
            p = _skip_ack(plain, p + 1, kind == 0x03)
        elif kind == 0x1C:
            return             # the client closed the connection: nothing further to read
        else:
            raise QuicError("bad_frame")


def _crypto_frame(plain, p, crypto):
    """A CRYPTO frame's body at p (offset, length, data) into `crypto`; the position after it."""
    offset, p = _varint(plain, p)
    length, p = _varint(plain, p)
    if p + length > len(plain):
        raise QuicError("bad_crypto_frame")
    crypto.add(offset, plain[p:p + length])
    return p + length


def _skip_ack(plain, p, ecn):
    _, p = _varint(plain, p)             # largest acknowledged
    _, p = _varint(plain, p)             # ack delay
    ranges, p = _varint(plain, p)
    _, p = _varint(plain, p)             # first range
    if ranges > (len(plain) - p) // 2:
        raise QuicError("bad_ack_frame")  # each range takes two bytes at least
    for _ in range(2 * ranges + (3 if ecn else 0)):
        _, p = _varint(plain, p)
    return p


def _gquic_frames(plain, crypto, version):
    """gQUIC frames: CRYPTO (0x08, Q050/T05x: version None here) or STREAM frames on stream 1
    (Q024-Q046) go to the crypto stream; PADDING fills the rest of the packet; PING, ACK (from
    Q034: its older layout ends the packet) and STOP_WAITING are stepped over; any other frame
    ends the packet (nothing after it is needed)."""
    p, size = 0, len(plain)
    order = "little" if version in GQUIC_LITTLE else "big"
    while p < size:
        kind = plain[p]
        if kind & 0x80:
            p = _gquic_stream(plain, p, crypto, order)
        elif kind & 0x40:
            p = _gquic_ack(plain, p) if version is None or version >= Q034 else None
            if p is None:
                return         # an ACK we cannot step over: nothing after it is needed
        elif kind == 0x08 and version is None:
            p = _crypto_frame(plain, p + 1, crypto)
        elif kind == 0x07:
            p += 1
        else:
            return             # PADDING (to the end), or a frame with nothing for us


def _gquic_stream(plain, p, crypto, order):
    """STREAM frame, type 1FDOOOSS: fin, data length present, offset length, stream id length;
    the fields in `order` (little-endian before Q039)."""
    kind = plain[p]
    id_len = (kind & 3) + 1
    ooo = (kind >> 2) & 7
    off_len = ooo + 1 if ooo else 0
    q = p + 1 + id_len + off_len
    if q > len(plain):
        raise QuicError("bad_crypto_frame")
    stream = int.from_bytes(plain[p + 1:p + 1 + id_len], order)
    offset = int.from_bytes(plain[p + 1 + id_len:q], order)
    if kind & 0x20:
        if q + 2 > len(plain):
            raise QuicError("bad_crypto_frame")
        length, q = int.from_bytes(plain[q:q + 2], order), q + 2
    else:
        length = len(plain) - q
    if q + length > len(plain):
        raise QuicError("bad_crypto_frame")
    if stream == 1:            # the crypto handshake stream
        crypto.add_message(offset, plain[q:q + length])
    return q + length


def _gquic_ack(plain, p):
    """ACK frame, type 01NULLMM: N = more ack blocks, LL = largest acked length, MM = block
    length; then delay (2), blocks, timestamps (gQUIC wire layout, Q035 onwards)."""
    kind = plain[p]
    block = _PN_LENGTHS[kind & 3]
    q = p + 1 + _PN_LENGTHS[(kind >> 2) & 3] + 2
    blocks = 0
    if kind & 0x20:
        if q >= len(plain):
            return None
        blocks = plain[q]
        q += 1
    q += block + blocks * (1 + block)
    if q >= len(plain):
        return None
    stamps = plain[q]
    q += 1 + (5 + 3 * (stamps - 1) if stamps else 0)
    return q if q <= len(plain) else None


# ---- the CRYPTO stream ---------------------------------------------------------------------------

class _CryptoStream:
    """CRYPTO data by offset, out of order, retransmitted or overlapping; bounded in bytes and
    pieces. Pieces are kept apart (not in an offset-sized buffer) so a far offset costs its own
    bytes only."""

    __slots__ = ("pieces", "kept", "start", "base")

    def __init__(self):
        self.pieces = []       # [(offset, bytes)]
        self.kept = 0          # bytes held
        self.start = 0         # bytes from offset 0 known to be contiguous
        self.base = 0          # stream offset taken as 0 (a gQUIC CHLO that starts later)

    def add_message(self, offset, data):
        """gQUIC stream 1 data: handshake messages back to back. When the first piece held starts
        a CHLO at a later offset (the capture began after the first CHLO), that is offset 0."""
        if not self.pieces and offset > self.base and data[:4] == b"CHLO":
            self.base = offset
        if offset >= self.base:
            self.add(offset - self.base, data)

    def add(self, offset, data):
        end = offset + len(data)
        if not data or end <= self.start:
            return             # empty, or a retransmission of what is already whole
        if end > MAX_CRYPTO or self.kept + len(data) > MAX_CRYPTO:
            raise QuicError("crypto_too_long")
        for at, piece in self.pieces:
            if at <= offset and end <= at + len(piece):
                return         # a retransmission of a piece already held
        if len(self.pieces) >= MAX_FRAGMENTS:
            raise QuicError("too_many_crypto_fragments")
        self.pieces.append((offset, bytes(data)))
        self.kept += len(data)
        self.pieces.sort()
        reach = 0
        for at, piece in self.pieces:
            if at > reach:
                break
            reach = max(reach, at + len(piece))
        self.start = reach

    def _prefix(self, size):
        """The first `size` bytes of the stream (size <= self.start)."""
        if self.pieces[0][0] == 0 and len(self.pieces[0][1]) >= size:
            return self.pieces[0][1][:size]
        out = bytearray(size)
        for at, piece in self.pieces:
            if at >= size:
                break
            out[at:at + len(piece)] = piece[:size - at]
        return bytes(out)

    def client_hello(self):
        """The TLS ClientHello once whole, else None."""
        if self.start < 4:
            return None
        head = self._prefix(4)
        if head[0] != 1:
            raise QuicError("tls_not_client_hello")
        need = 4 + int.from_bytes(head[1:4], "big")
        if need > MAX_CRYPTO:
            raise QuicError("tls_client_hello_too_long")
        if self.start < need:
            return None
        try:
            return parse_client_hello(self._prefix(need))
        except TlsError as e:
            raise QuicError("tls_" + e.reason) from None

    def chlo(self):
        """A gQUIC CHLO message once whole: its SNI tag as the server name, else None. Layout
        (little-endian): "CHLO", tag count (2), padding (2), count x (tag, end offset (4)),
        then the values back to back."""
        if self.start < 8:
            return None
        head = self._prefix(8)
        if head[:4] != b"CHLO":
            raise QuicError("not_chlo")
        count = _U16LE(head, 4)[0]
        if count > MAX_CHLO_TAGS:
            raise QuicError("bad_chlo")
        values = 8 + 8 * count
        if self.start < values:
            return None
        index = self._prefix(values)
        last = _U32LE(index, values - 4)[0] if count else 0
        if values + last > MAX_CRYPTO:
            raise QuicError("bad_chlo")
        if self.start < values + last:
            return None
        message = self._prefix(values + last)
        server_name, previous = None, 0
        for entry in range(8, values, 8):
            end = _U32LE(message, entry + 4)[0]
            if end < previous:
                raise QuicError("bad_chlo")
            if message[entry:entry + 4] == b"SNI\x00" and end > previous:
                server_name = wire_text(message[values + previous:values + min(end, previous + 1024)])
            previous = end
        return ClientHello(server_name, (), 0)
