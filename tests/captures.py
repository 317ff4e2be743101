"""Test helpers that write capture files byte by byte: classic pcap (either byte order, micro- or
nanosecond magic), pcapng (sections of either byte order, several interfaces, EPB / SPB / obsolete
PB, options) and gzip. Frames themselves are built with scapy by the tests; these helpers only
frame them, so a test controls every header field (orig_len, block lengths, options).
"""
import gzip
import struct

# ---- classic pcap ---------------------------------------------------------------------------------

PCAP_MAGIC_US, PCAP_MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D


def pcap_header(linktype, endian="<", nano=False, snaplen=262144):
    magic = PCAP_MAGIC_NS if nano else PCAP_MAGIC_US
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts, data, orig_len=None, endian="<", nano=False, incl_len=None):
    """One record. `ts` is (seconds, fraction in the file's unit) or a float; `incl_len` lets a
    test write a header that lies about the captured length."""
    if isinstance(ts, tuple):
        sec, frac = ts
    else:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
    data = bytes(data)
    orig = len(data) if orig_len is None else orig_len
    incl = len(data) if incl_len is None else incl_len
    return struct.pack(endian + "IIII", sec, frac, incl, orig) + data


def pcap_bytes(linktype, records, endian="<", nano=False, snaplen=262144):
    """records: iterables of (ts, data) or (ts, data, orig_len)."""
    out = [pcap_header(linktype, endian, nano, snaplen)]
    for rec in records:
        ts, data, *rest = rec
        out.append(pcap_record(ts, data, rest[0] if rest else None, endian, nano))
    return b"".join(out)


# ---- pcapng ---------------------------------------------------------------------------------------

def _pad4(b):
    return b + b"\x00" * (-len(b) % 4)


def options(opts, endian="<"):
    """opts: [(code, value bytes)]; adds opt_endofopt. Empty list -> no option block at all."""
    if not opts:
        return b""
    out = b"".join(struct.pack(endian + "HH", code, len(value)) + _pad4(value) for code, value in opts)
    return out + struct.pack(endian + "HH", 0, 0)


def block(btype, body, endian="<", length=None):
    """A pcapng block; `length` overrides both length fields (to write a corrupt one)."""
    body = _pad4(body)
    n = len(body) + 12 if length is None else length
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def shb(endian="<", opts=()):
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options(list(opts), endian)
    return block(0x0A0D0D0A, body, endian)


def idb(linktype, endian="<", snaplen=0, name=None, tsresol=None, tsoffset=None):
    opts = []
    if name is not None:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(endian + "q", tsoffset)))
    body = struct.pack(endian + "HHI", linktype, 0, snaplen) + options(opts, endian)
    return block(1, body, endian)


def _split(units):
    return (units >> 32) & 0xFFFFFFFF, units & 0xFFFFFFFF


def epb(iface, units, data, orig_len=None, endian="<", flags=None, incl_len=None):
    """Enhanced packet block; `units` is the timestamp in the interface's if_tsresol units;
    `flags` the epb_flags word (bits 0-1: 1 inbound, 2 outbound)."""
    data = bytes(data)
    hi, lo = _split(units)
    incl = len(data) if incl_len is None else incl_len
    orig = len(data) if orig_len is None else orig_len
    opts = [(2, struct.pack(endian + "I", flags))] if flags is not None else []
    body = struct.pack(endian + "IIIII", iface, hi, lo, incl, orig) + _pad4(data) + options(opts, endian)
    return block(6, body, endian)


def spb(data, orig_len=None, endian="<"):
    """Simple packet block: interface 0, no timestamp, captured length implied by the block."""
    data = bytes(data)
    orig = len(data) if orig_len is None else orig_len
    return block(3, struct.pack(endian + "I", orig) + _pad4(data), endian)


def pb(iface, units, data, orig_len=None, endian="<"):
    """Obsolete packet block (type 2): 16-bit interface id and drops count."""
    data = bytes(data)
    hi, lo = _split(units)
    orig = len(data) if orig_len is None else orig_len
    body = struct.pack(endian + "HHIIII", iface, 0, hi, lo, len(data), orig) + _pad4(data)
    return block(2, body, endian)


def nrb(endian="<"):
    """A name resolution block with no records: a block the reader must skip."""
    return block(4, struct.pack(endian + "HH", 0, 0), endian)


def pcapng_bytes(linktype, records, endian="<", name="eth0"):
    """One section, one interface (microseconds), one EPB per (ts, data[, orig_len])."""
    out = [shb(endian), idb(linktype, endian, name=name)]
    for rec in records:
        ts, data, *rest = rec
        out.append(epb(0, round(ts * 1e6), data, rest[0] if rest else None, endian))
    return b"".join(out)


def gz(data):
    return gzip.compress(data, mtime=0)


def ip_transport(frame):
    """(proto, src, dst, transport header offset, IP payload end) of an Ethernet / IPv4 or IPv6
    frame, else None: what tests that read real captures' TCP or UDP need, in one place."""
    import struct
    etype, p = struct.unpack_from("!H", frame, 12)[0], 14
    if etype == 0x0800:
        proto, end = frame[p + 9], p + struct.unpack_from("!H", frame, p + 2)[0]
        return proto, frame[p + 12:p + 16], frame[p + 16:p + 20], p + (frame[p] & 15) * 4, end
    if etype == 0x86DD:
        proto, end = frame[p + 6], p + 40 + struct.unpack_from("!H", frame, p + 4)[0]
        return proto, frame[p + 8:p + 24], frame[p + 24:p + 40], p + 40, end
    return None


def frames_of(path):
    """Each frame's bytes of a capture file, in order, through the project's own reader."""
    from capture.capfile import CaptureFile
    capture = CaptureFile(str(path))
    try:
        for _, frames in capture.batches():
            for _ts, _wire, frame, _outbound in frames:
                yield frame
    finally:
        capture.close()
