"""Capture file reader: classic pcap (either byte order, micro- or nanosecond), pcapng (many
interfaces and link types; EPB, SPB and the obsolete PB), each optionally gzip-compressed. The
format is told by magic bytes, never by the file name.

`CaptureFile.batches()` yields (interface index, frames) with frames a list of
(ts, wire_len, data, outbound), ready for FlowTable.ingest, in file order (runs of consecutive
frames of one interface, so the flow table sees packets and minutes in the order they came).
A file damaged part-way yields everything before the damage and then sets `damage` to a
one-line description with the offset.
"""
import os
import struct
import zlib

from records import MAX_WIRE_LEN, interface_name

CHUNK = 1 << 22
BATCH = 4096
PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
MAX_OTHER_BLOCK = 64 << 20         # a non-packet pcapng block larger than this is corrupt
MAX_CAPTURED = 262144 + 65536     # beyond this a record length is corrupt, not a big frame
# pcapng timestamps are 64-bit counts in a per-interface unit plus a signed offset: a damaged one
# can name a time no date or database column holds. They are clamped into the years 1970..9999.
MAX_TS = 253402300799.0
READ_ERRORS = (OSError, EOFError, zlib.error)
GZIP_STEP = 1 << 16               # compressed bytes inflated per call (and replayed byte by byte at damage)
# smallest body (block minus its type and two length fields) of each block type that is read
_MIN_BODY = {0x0A0D0D0A: 16, 1: 8, 6: 20, 2: 20, 3: 4}


class CaptureError(Exception):
    """The file cannot be read at all (exit 2)."""


class Interface:
    __slots__ = ("name", "linktype", "snaplen", "ts_scale", "ts_offset")

    def __init__(self, name, linktype, snaplen=0, ts_scale=1e-6, ts_offset=0):
        self.name, self.linktype, self.snaplen = name, linktype, snaplen
        self.ts_scale, self.ts_offset = ts_scale, ts_offset


_ZLIB_WORDS = {"incorrect data check": "CRC check failed", "incorrect length check": "length check failed",
               "incorrect header check": "not a gzip member"}


class _Gunzip:
    """The inflated bytes of a gzip file (one member or several), read like a file.

    zlib throws away everything it inflated in a call that meets damaged deflate data (so with
    gzip.GzipFile, damage inside the first block kept nothing). Here a call that fails is replayed
    from a copy of the inflater taken before it, one compressed byte at a time: every byte inflated
    before the damage is handed out, and the next read raises the error. Damage that still reads
    as valid deflate codes cannot be seen before the member's CRC: those bytes come out as they are."""

    def __init__(self, raw):
        self.raw = raw
        self.error = None            # raised by the read after the last good bytes
        self.done = False
        self._inflater = self._member()
        self._pending = b""          # compressed bytes not yet given to the inflater

    @staticmethod
    def _member():
        return zlib.decompressobj(16 + zlib.MAX_WBITS)      # gzip header and CRC/size trailer

    def read(self, n):
        """Up to n inflated bytes; b"" at the end."""
        while not self.done:
            piece = self._inflate(n)
            if piece:
                return piece
        if self.error is not None:
            raise self.error
        return b""

    def close(self):
        self.raw.close()

    def _inflate(self, n):
        if not self._pending:
            self._pending = self.raw.read(GZIP_STEP)
            if not self._pending:
                self.done = True
                if self._inflater is not None:
                    self.error = EOFError("compressed file ended before the end-of-stream marker was reached")
                return b""
        if self._inflater is None:                 # between members: zero padding is allowed
            self._pending = self._pending.lstrip(b"\x00")
            if not self._pending:
                return b""
            self._inflater = self._member()
        data = self._pending
        before = self._inflater.copy()
        try:
            piece = self._inflater.decompress(data, n)    # bounded: a deflate bomb inflates 1000:1
        except zlib.error:
            self._inflater = before
            return self._replay(data)
        self._pending = self._inflater.unconsumed_tail
        if self._inflater.eof:
            self._pending = self._inflater.unused_data
            self._inflater = None
        return piece

    def _replay(self, data):
        """`data` again from the copy, byte by byte, up to the damage: fewer bytes than the call
        that failed was allowed, since it failed before it had them all."""
        inflater, pieces = self._inflater, []
        for i in range(len(data)):
            try:
                pieces.append(inflater.decompress(data[i:i + 1]))
            except zlib.error as e:
                self.error = zlib.error(_ZLIB_WORDS.get(str(e).rpartition(": ")[2], str(e)))
                self.done = True
                break
            if inflater.eof:                         # the damage lies in a later member
                self._pending = inflater.unused_data + data[i + 1:]
                self._inflater = None
                break
        else:
            self.error, self.done = zlib.error("damaged deflate data"), True
        return b"".join(pieces)


class _Stream:
    """A byte window over a file read in large chunks; `need(n)` makes n bytes available at pos.
    A read error (damaged gzip data) ends the stream after the last byte read before it and is
    kept in `error`: the readers see a short file, stop there, and batches() says why."""

    def __init__(self, f, head=b""):
        self.f, self.buf, self.pos, self.consumed, self.eof = f, head, 0, 0, False
        self.error = None
        self._read = f.read

    def need(self, n):
        if self.pos + n <= len(self.buf):
            return True
        while not self.eof and self.pos + n > len(self.buf):
            try:
                more = self._read(max(CHUNK, n))
            except READ_ERRORS as e:
                self.error, more = e, b""
            if self.error is not None or not more:
                self.eof = True
            if more:
                self.consumed += self.pos
                self.buf = self.buf[self.pos:] + more
                self.pos = 0
        return self.pos + n <= len(self.buf)

    @property
    def offset(self):
        return self.consumed + self.pos


class CaptureFile:
    def __init__(self, path):
        self.path = path
        self.label = interface_name(os.path.basename(path), "capture")     # a pcap's interface name
        self.interfaces: list[Interface] = []
        self.frames = 0
        self.clamped = 0          # records whose claimed wire length exceeded MAX_WIRE_LEN
        self.bad_times = 0        # pcapng timestamps outside 1970..9999, clamped into it
        self.damage = None        # where and why reading stopped early
        try:
            raw = open(path, "rb")
        except OSError as e:
            raise CaptureError(f"{path}: cannot open: {e.strerror}") from None
        self._compressed = False
        try:
            head = raw.read(4)
            if head[:2] == GZIP_MAGIC:
                raw.seek(0)
                raw = _Gunzip(raw)
                self._compressed = True
                head = b""
                while len(head) < 4:
                    piece = raw.read(4 - len(head))        # raises at damage before the magic bytes
                    if not piece:
                        break
                    head += piece
        except READ_ERRORS as e:
            raw.close()
            raise CaptureError(f"{path}: unreadable{' gzip data' if self._compressed else ''}: {e}") from None
        self._f, self._head = raw, head
        if head in PCAP_MAGIC:
            self.format = "pcap"
        elif head == PCAPNG_SHB:
            self.format = "pcapng"
        else:
            raw.close()
            what = "gzip'd data is" if self._compressed else "file is"
            raise CaptureError(f"{path}: {what} not pcap or pcapng (magic bytes {head.hex() or 'missing'})")

    def close(self):
        self._f.close()

    def batches(self):
        stream = _Stream(self._f, self._head)
        reader = self._pcap if self.format == "pcap" else self._pcapng
        yield from reader(stream)
        if stream.error is not None:
            what = "damaged compressed data" if self._compressed else "read error"
            self.damage = f"{what} after byte {stream.offset} of the capture: {stream.error}"

    def _wire_len(self, orig):
        """The record's original length as it claims (like tshark's frame.len), clamped."""
        if orig > MAX_WIRE_LEN:
            self.clamped += 1
            return MAX_WIRE_LEN
        return orig

    # ---- classic pcap ---------------------------------------------------------------------------

    def _pcap(self, s):
        if not s.need(24):
            self.damage = "file ends inside the 24-byte pcap header"
            return
        endian, scale = PCAP_MAGIC[s.buf[:4]]
        snaplen, network = struct.unpack_from(endian + "II", s.buf, 16)
        self.interfaces.append(Interface(self.label, network & 0xFFFF, snaplen, scale))
        s.pos = 24
        record = struct.Struct(endian + "IIII").unpack_from
        frames = []
        append = frames.append
        clamp = MAX_WIRE_LEN
        # The window and the position live in locals, written back to s before s is asked
        # anything: attribute traffic was a tenth of the reading time.
        buf, pos = s.buf, s.pos
        limit = len(buf)
        while True:
            if pos + 16 > limit:
                s.pos = pos
                if not s.need(16):
                    if s.pos < len(s.buf):
                        self.damage = f"file ends inside a record header at byte {s.offset}"
                    break
                buf, pos = s.buf, s.pos
                limit = len(buf)
            sec, frac, incl, orig = record(buf, pos)
            if incl > MAX_CAPTURED:
                s.pos = pos
                self.damage = f"corrupt record header at byte {s.offset} (captured length {incl})"
                break
            end = pos + 16 + incl
            if end > limit:
                s.pos = pos
                if not s.need(16 + incl):
                    self.damage = f"file ends inside a record at byte {s.offset}"
                    break
                buf, pos = s.buf, s.pos
                limit = len(buf)
                end = pos + 16 + incl
            if orig > clamp:
                orig = self._wire_len(orig)
            append((sec + frac * scale, orig, buf[pos + 16:end], False))
            pos = end
            if len(frames) >= BATCH:
                s.pos = pos
                self.frames += len(frames)
                yield 0, frames
                frames = []
                append = frames.append
        if frames:
            self.frames += len(frames)
            yield 0, frames

    # ---- pcapng ---------------------------------------------------------------------------------

    def _pcapng(self, s):
        endian = "<"
        section = []             # this section's interface numbers -> index in self.interfaces
        runs = []                # [(interface index, frames)] not yet yielded, in file order
        run_index, run = None, None
        count = 0
        while True:
            if not s.need(12):
                if s.pos < len(s.buf):
                    self.damage = f"file ends inside a block header at byte {s.offset}"
                break
            buf, pos = s.buf, s.pos
            if buf[pos:pos + 4] == PCAPNG_SHB:
                bom = buf[pos + 8:pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    self.damage = f"bad byte-order magic in section header at byte {s.offset}"
                    break
                section = []
            btype, blen = struct.unpack_from(endian + "II", buf, pos)
            # packet blocks are bounded by the largest frame; others (name resolution, TLS keys,
            # custom blocks) can be large in real files: only an absurd length is damage
            limit = MAX_CAPTURED + 1024 if btype in (2, 3, 6) else MAX_OTHER_BLOCK
            if blen < 12 + _MIN_BODY.get(btype, 0) or blen % 4 or blen > limit:
                self.damage = f"corrupt block length {blen} at byte {s.offset}"
                break
            if not s.need(blen):
                self.damage = f"file ends inside a block at byte {s.offset}"
                break
            buf, pos = s.buf, s.pos
            if struct.unpack_from(endian + "I", buf, pos + blen - 4)[0] != blen:
                self.damage = f"block length mismatch at byte {s.offset}"
                break
            body = buf[pos + 8:pos + blen - 4]
            s.pos = pos + blen
            if btype == 1:
                section.append(len(self.interfaces))
                self.interfaces.append(self._interface_block(body, endian))
            elif btype in (6, 3, 2):
                got = self._packet_block(btype, body, endian, section)
                if got is None:
                    self.damage = f"packet block for an undeclared interface at byte {s.offset - blen}"
                    break
                index, frame = got
                if index != run_index:
                    run_index, run = index, []
                    runs.append((index, run))
                run.append(frame)
                count += 1
                if count >= BATCH:
                    yield from self._flush(runs)
                    runs, run_index, count = [], None, 0
        yield from self._flush(runs)

    def _flush(self, runs):
        for index, frames in runs:
            self.frames += len(frames)
            yield index, frames

    def _interface_block(self, body, e):
        linktype, snaplen = struct.unpack_from(e + "H2xI", body, 0)
        number = len(self.interfaces)
        iface = Interface(f"{self.label}#{number}", linktype, snaplen)
        for code, value in _options(body, 8, e):
            if code == 2 and value:                    # if_name
                iface.name = interface_name(value.decode("utf-8", "replace"), iface.name)
            elif code == 9 and len(value) >= 1:        # if_tsresol
                v = value[0]
                iface.ts_scale = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
            elif code == 14 and len(value) >= 8:       # if_tsoffset
                iface.ts_offset = struct.unpack_from(e + "q", value)[0]
        return iface

    def _packet_block(self, btype, body, e, section):
        if btype == 6:                                  # enhanced packet block
            number, hi, lo, incl, orig = struct.unpack_from(e + "IIIII", body, 0)
            data_at = 20
        elif btype == 2:                                # obsolete packet block
            number, _, hi, lo, incl, orig = struct.unpack_from(e + "HHIIII", body, 0)
            data_at = 20
        else:                                           # simple packet block: interface 0, no time
            number, hi, lo = 0, 0, 0
            orig = struct.unpack_from(e + "I", body, 0)[0]
            data_at = 4
            incl = min(orig, len(body) - 4)
        if number >= len(section):
            return None
        index = section[number]
        iface = self.interfaces[index]
        if btype == 3 and iface.snaplen:
            incl = min(incl, iface.snaplen)
        incl = min(incl, len(body) - data_at)
        data = body[data_at:data_at + incl]
        outbound = False
        if btype == 6:
            for code, value in _options(body, data_at + ((incl + 3) & ~3), e):
                if code == 2 and len(value) >= 4:       # epb_flags: bits 0-1 direction, 2 = outbound
                    outbound = struct.unpack_from(e + "I", value)[0] & 3 == 2
        ts = ((hi << 32) | lo) * iface.ts_scale + iface.ts_offset
        if not 0.0 <= ts <= MAX_TS:
            self.bad_times += 1
            ts = 0.0 if ts < 0 else MAX_TS
        return index, (ts, self._wire_len(orig), data, outbound)


def _options(body, off, e):
    """(code, value) pairs of a pcapng option list; stops quietly at damage or opt_endofopt."""
    while off + 4 <= len(body):
        code, length = struct.unpack_from(e + "HH", body, off)
        if code == 0:
            return
        value = body[off + 4:off + 4 + length]
        if len(value) < length:
            return
        yield code, value
        off += 4 + ((length + 3) & ~3)
