"""The capture-file reader: pcap in both byte orders and both time units, pcapng with several
sections, interfaces, block kinds and options, gzip, formats told by magic bytes; damaged files
keep what came before the damage and say where; random bytes raise nothing but CaptureError."""
import gzip
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captures import epb, gz, idb, nrb, options, pb, pcap_bytes, pcap_header, pcap_record, pcapng_bytes, shb, spb
from capture.capfile import BATCH, MAX_TS, CaptureError, CaptureFile
from records import MAX_WIRE_LEN

FRAMES = [bytes([i]) * (60 + i) for i in range(5)]       # distinct bytes and lengths
T = 1_700_000_000


def read(path):
    """(capture, [(interface name, linktype, frame)]) with every batch consumed."""
    cap = CaptureFile(str(path))
    try:
        got = [(cap.interfaces[i].name, cap.interfaces[i].linktype, f) for i, frames in cap.batches() for f in frames]
    finally:
        cap.close()
    return cap, got


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ---- classic pcap ---------------------------------------------------------------------------------

@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_time_units(tmp_path, endian, nano):
    unit = 1e9 if nano else 1e6
    records = [pcap_record((T + i, int(unit // 4) * i), f, orig_len=len(f) + 100 * i, endian=endian, nano=nano)
               for i, f in enumerate(FRAMES)]
    p = write(tmp_path, "x.pcap", pcap_header(113, endian, nano, snaplen=65535) + b"".join(records))
    cap, got = read(p)
    assert cap.format == "pcap" and cap.damage is None and cap.frames == 5 and cap.clamped == 0
    [iface] = cap.interfaces
    assert (iface.name, iface.linktype, iface.snaplen) == ("x.pcap", 113, 65535)
    assert [f[2] for _, _, f in got] == FRAMES
    assert [f[1] for _, _, f in got] == [len(f) + 100 * i for i, f in enumerate(FRAMES)]
    assert [f[0] for _, _, f in got] == pytest.approx([T + i + 0.25 * i for i in range(5)], abs=1e-6)
    assert all(f[3] is False for _, _, f in got)


def test_pcap_link_type_field_upper_bits_are_not_the_link_type(tmp_path):
    head = bytearray(pcap_header(1))
    head[20:24] = struct.pack("<I", 0x10000000 | 1)          # FCS length bits set in the upper half
    cap, got = read(write(tmp_path, "fcs.pcap", bytes(head) + pcap_record(T, FRAMES[0])))
    assert cap.interfaces[0].linktype == 1 and len(got) == 1


def test_wire_length_is_the_record_s_claim_clamped_to_262144(tmp_path):
    recs = [(T, FRAMES[0], 10), (T, FRAMES[1], 262144), (T, FRAMES[2], 262145), (T, FRAMES[3], 0xFFFFFFFF)]
    cap, got = read(write(tmp_path, "c.pcap", pcap_bytes(1, recs)))
    # orig_len below the captured length is what the record says (as tshark's frame.len)
    assert [f[1] for _, _, f in got] == [10, 262144, MAX_WIRE_LEN, MAX_WIRE_LEN]
    assert cap.clamped == 2 and cap.damage is None


def test_more_than_one_batch(tmp_path):
    n = BATCH * 2 + 5
    cap, got = read(write(tmp_path, "many.pcap", pcap_bytes(1, ((T + i, FRAMES[i % 5]) for i in range(n)))))
    assert cap.frames == n == len(got) and got[-1][2][2] == FRAMES[(n - 1) % 5]


# ---- pcapng ---------------------------------------------------------------------------------------

def _two_sections():
    """Section 1, little-endian: eth0 (Ethernet, microseconds) and wlan0 (802.11, nanoseconds);
    EPB with direction flags, SPB, obsolete PB, a name-resolution block to skip. Section 2,
    big-endian: tun0 (raw IP, 2^-10 s units, offset 1.7e9 s)."""
    le, be = "<", ">"
    return b"".join([
        shb(le), idb(1, le, snaplen=128, name="eth0"), nrb(le),
        idb(105, le, name="wlan0", tsresol=9),
        epb(0, (T + 1) * 10**6 + 250_000, FRAMES[0], orig_len=1000, endian=le, flags=1),     # inbound
        epb(1, (T + 2) * 10**9 + 5, FRAMES[1], endian=le, flags=2),                            # outbound
        spb(FRAMES[2] + b"\xee" * 100, orig_len=len(FRAMES[2]) + 100, endian=le),              # cut to snaplen 128
        pb(1, (T + 3) * 10**9, FRAMES[3], orig_len=500, endian=le),
        shb(be), idb(101, be, name="tun0", tsresol=0x80 | 10, tsoffset=T),
        epb(0, 5 * 1024 + 512, FRAMES[4], endian=be, flags=2),
        epb(0, 6 * 1024, FRAMES[0], endian=be),
    ])


def test_pcapng_sections_interfaces_blocks_and_options(tmp_path):
    cap, got = read(write(tmp_path, "two.pcapng", _two_sections()))
    assert cap.format == "pcapng" and cap.damage is None and cap.frames == 6
    assert [(i.name, i.linktype) for i in cap.interfaces] == [("eth0", 1), ("wlan0", 105), ("tun0", 101)]
    assert [(name, lt) for name, lt, _ in got] == [("eth0", 1), ("wlan0", 105), ("eth0", 1), ("wlan0", 105),
                                                    ("tun0", 101), ("tun0", 101)]
    frames = [f for _, _, f in got]
    assert [f[2] for f in frames] == [FRAMES[0], FRAMES[1], (FRAMES[2] + b"\xee" * 100)[:128], FRAMES[3],
                                      FRAMES[4], FRAMES[0]]
    assert [f[1] for f in frames] == [1000, len(FRAMES[1]), len(FRAMES[2]) + 100, 500, len(FRAMES[4]), len(FRAMES[0])]
    assert [f[3] for f in frames] == [False, True, False, False, True, False]
    assert [f[0] for f in frames] == pytest.approx([T + 1.25, T + 2 + 5e-9, 0.0, T + 3, T + 5.5, T + 6], abs=1e-6)


def test_pcapng_interleaved_interfaces_come_out_in_file_order(tmp_path):
    blocks = [shb(), idb(1, name="a"), idb(1, name="b")]
    order = [0, 1, 1, 0, 1, 0, 0, 1]
    blocks += [epb(i, (T + k) * 10**6, FRAMES[k % 5]) for k, i in enumerate(order)]
    cap, got = read(write(tmp_path, "mix.pcapng", b"".join(blocks)))
    assert [name for name, _, _ in got] == ["ab"[i] for i in order]
    assert [f[0] for _, _, f in got] == [T + k for k in range(len(order))]


def test_pcapng_timestamps_beyond_any_date_are_clamped_and_counted(tmp_path):
    data = b"".join([shb(), idb(1, tsresol=0), epb(0, 2**64 - 1, FRAMES[0]),
                     idb(1, tsoffset=-(2**40)), epb(1, 5, FRAMES[1])])
    cap, got = read(write(tmp_path, "ts.pcapng", data))
    assert [f[0] for _, _, f in got] == [MAX_TS, 0.0] and cap.bad_times == 2


def test_pcapng_unknown_options_and_empty_option_values(tmp_path):
    body = struct.pack("<HHI", 1, 0, 0) + options([(2, b""), (2988, b"vendor"), (9, b"")])
    data = shb(opts=[(4, b"writer")]) + struct.pack("<II", 1, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    cap, got = read(write(tmp_path, "o.pcapng", data + epb(0, T * 10**6, FRAMES[0])))
    assert cap.interfaces[0].name == "o.pcapng#0" and cap.interfaces[0].ts_scale == 1e-6 and len(got) == 1


# ---- magic bytes, not names; gzip ------------------------------------------------------------------

@pytest.mark.parametrize("name, data", [
    ("x.pcap", pcapng_bytes(1, [(T, FRAMES[0]), (T + 1, FRAMES[1])])),           # pcapng named .pcap
    ("x.pcapng", pcap_bytes(1, [(T, FRAMES[0]), (T + 1, FRAMES[1])])),           # pcap named .pcapng
    ("x.txt", gz(pcap_bytes(1, [(T, FRAMES[0]), (T + 1, FRAMES[1])], endian=">", nano=True))),
    ("x.pcap", gz(pcapng_bytes(1, [(T, FRAMES[0]), (T + 1, FRAMES[1])], endian=">"))),
    ("noext", gz(pcap_bytes(1, [(T, FRAMES[0])])) + gz(b"")[:0] + b""),
])
def test_format_told_by_magic_bytes(tmp_path, name, data):
    cap, got = read(write(tmp_path, name, data))
    assert cap.damage is None and [f[2] for _, _, f in got] == FRAMES[:len(got)] and len(got) >= 1


def test_gzip_with_several_members(tmp_path):
    whole = pcap_bytes(1, [(T + i, FRAMES[i]) for i in range(5)])
    cap, got = read(write(tmp_path, "m.gz", gz(whole[:100]) + gz(whole[100:])))
    assert cap.damage is None and [f[2] for _, _, f in got] == FRAMES


# ---- damage -----------------------------------------------------------------------------------------

def _pcap5():
    return pcap_bytes(1, [(T + i, FRAMES[i]) for i in range(5)])


def _offset_of_record(k):
    return 24 + sum(16 + len(FRAMES[i]) for i in range(k))


@pytest.mark.parametrize("cut, kept, words", [
    (_offset_of_record(3) + 16 + 10, 3, f"file ends inside a record at byte {_offset_of_record(3)}"),
    (_offset_of_record(3) + 7, 3, f"file ends inside a record header at byte {_offset_of_record(3)}"),
    (20, 0, "file ends inside the 24-byte pcap header"),
])
def test_pcap_truncated(tmp_path, cut, kept, words):
    cap, got = read(write(tmp_path, "t.pcap", _pcap5()[:cut]))
    assert [f[2] for _, _, f in got] == FRAMES[:kept] and cap.damage == words


def test_pcap_corrupt_record_length(tmp_path):
    data = bytearray(_pcap5())
    at = _offset_of_record(2)
    data[at + 8:at + 12] = struct.pack("<I", 0x7FFFFFF0)
    cap, got = read(write(tmp_path, "c.pcap", bytes(data)))
    assert [f[2] for _, _, f in got] == FRAMES[:2]
    assert cap.damage == f"corrupt record header at byte {at} (captured length {0x7FFFFFF0})"


def _pcapng5():
    return b"".join([shb(), idb(1)] + [epb(0, (T + i) * 10**6, FRAMES[i]) for i in range(5)])


def _block_offset(k):
    return len(shb() + idb(1)) + sum(len(epb(0, 0, FRAMES[i])) for i in range(k))


@pytest.mark.parametrize("length, words", [(13, "corrupt block length 13"), (16, "corrupt block length 16"),
                                           (0xFFFFFF00, "corrupt block length 4294967040"),
                                           (100, "block length mismatch")])
def test_pcapng_corrupt_block_length(tmp_path, length, words):
    data = bytearray(_pcapng5())
    at = _block_offset(3)
    data[at + 4:at + 8] = struct.pack("<I", length)
    cap, got = read(write(tmp_path, "c.pcapng", bytes(data)))
    assert [f[2] for _, _, f in got] == FRAMES[:3] and cap.damage == f"{words} at byte {at}"


def test_pcapng_truncated_mid_block_and_undeclared_interface(tmp_path):
    at = _block_offset(4)
    cap, got = read(write(tmp_path, "t.pcapng", _pcapng5()[:at + 30]))
    assert len(got) == 4 and cap.damage == f"file ends inside a block at byte {at}"
    cap, got = read(write(tmp_path, "u.pcapng", _pcapng5() + epb(3, 0, FRAMES[0])))
    assert len(got) == 5 and cap.damage == f"packet block for an undeclared interface at byte {_block_offset(5)}"


def test_truncated_gzip_keeps_what_came_before(tmp_path):
    whole = pcap_bytes(1, [(T + i, bytes([i % 251]) * 1000) for i in range(3000)])    # ~3 MB
    packed = gzip.compress(whole, compresslevel=1)
    cap, got = read(write(tmp_path, "t.pcap.gz", packed[:len(packed) // 2]))
    assert 500 < len(got) < 3000 and cap.frames == len(got)
    assert [f[2] for _, _, f in got] == [bytes([i % 251]) * 1000 for i in range(len(got))]
    assert cap.damage.startswith("damaged compressed data after byte ") and "\n" not in cap.damage


def test_small_truncated_gzip_keeps_what_came_before(tmp_path):
    packed = gz(_pcap5())
    cap, got = read(write(tmp_path, "t.gz", packed[:-12]))       # the deflate end and the trailer missing
    assert [f[2] for _, _, f in got] == FRAMES[:len(got)] and len(got) >= 3 and cap.damage


def test_gzip_with_a_bad_checksum_keeps_every_frame_and_says_so(tmp_path):
    packed = bytearray(gz(_pcap5()))
    packed[-8] ^= 0xFF                                      # CRC32 in the trailer
    cap, got = read(write(tmp_path, "crc.gz", bytes(packed)))
    assert [f[2] for _, _, f in got] == FRAMES and "CRC" in cap.damage


def test_gzip_with_corrupt_deflate_data(tmp_path):
    whole = pcap_bytes(1, [(T + i, bytes([i % 7]) * 200) for i in range(500)])
    packed = bytearray(gzip.compress(whole))
    for i in range(len(packed) // 2, len(packed) // 2 + 16):
        packed[i] ^= 0x5A
    cap, got = read(write(tmp_path, "bad.gz", bytes(packed)))
    assert cap.damage and len(got) < 500
    assert [f[2] for _, _, f in got] == [bytes([i % 7]) * 200 for i in range(len(got))]


# ---- unreadable ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, data, words", [
    ("notes.pcap", b"hello, world\n", "not pcap or pcapng (magic bytes 68656c6c)"),
    ("empty.pcap", b"", "not pcap or pcapng (magic bytes missing)"),
    ("junk.gz", gz(b"hello, world\n"), "gzip'd data is not pcap or pcapng"),
    ("empty.gz", gz(b""), "gzip'd data is not pcap or pcapng (magic bytes missing)"),
    ("head.gz", b"\x1f\x8b", "unreadable gzip data"),
    ("bad.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 40, "unreadable gzip data"),
])
def test_unreadable_files(tmp_path, name, data, words):
    p = write(tmp_path, name, data)
    with pytest.raises(CaptureError) as e:
        CaptureFile(str(p))
    assert words in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_directory(tmp_path):
    for path, words in ((tmp_path / "nope.pcap", "No such file"), (tmp_path, "Is a directory")):
        with pytest.raises(CaptureError, match=words):
            CaptureFile(str(path))


# ---- random input -------------------------------------------------------------------------------------

def _survives(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f"
        p.write_bytes(data)
        try:
            cap = CaptureFile(str(p))
        except CaptureError as e:
            assert "\n" not in str(e)
            return
        try:
            n = sum(len(frames) for _, frames in cap.batches())
        finally:
            cap.close()
        assert n == cap.frames
        assert cap.damage is None or "\n" not in cap.damage


MAGICS = [b"", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MAGICS), st.binary(max_size=400))
def test_random_bytes(magic, tail):
    _survives(magic + tail)


VALID = [_pcap5(), pcap_bytes(105, [(T, FRAMES[0])], endian=">", nano=True), _pcapng5(), _two_sections()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(VALID))), st.booleans(),
       st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, 800))
def test_mutated_captures(which, compress, changes, cut):
    data = bytearray(VALID[which])
    for at, value in changes:
        if at < len(data):
            data[at] = value
    data = bytes(data[:cut]) if cut < len(data) else bytes(data)
    _survives(data)
    _survives(gz(data))
    packed = bytearray(gz(VALID[which]))
    for at, value in changes:
        if 10 <= at < len(packed):
            packed[at] = value
    _survives(bytes(packed) if compress else bytes(packed[:cut]))


# ---- damage inside the first deflate block ---------------------------------------------------------

def _small_capture():
    """A real small capture: 40 DNS, HTTP and TLS-ish frames of differing content, one pcap."""
    import random
    from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether
    rng = random.Random(7)
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    frames = []
    for i in range(40):
        ip = IP(src=f"10.0.0.{1 + i % 3}", dst=f"192.0.2.{10 + i % 5}")
        if i % 3 == 0:
            frame = e / ip / UDP(sport=40000 + i, dport=53) / DNS(rd=1, qd=DNSQR(qname=f"host{i}.example.org"))
        elif i % 3 == 1:
            frame = e / ip / TCP(sport=50000 + i, dport=80, flags="PA") / (
                f"GET /item/{rng.randrange(10**6)} HTTP/1.1\r\nHost: www{i}.example.com\r\n\r\n".encode())
        else:
            frame = e / ip / TCP(sport=443, dport=50000 + i, flags="A") / rng.randbytes(rng.randrange(40, 200))
        frames.append(bytes(frame))
    return frames, pcap_bytes(1, [(T + i / 10, f) for i, f in enumerate(frames)])


def _whole_records(pcap, n):
    """How many records of a pcap lie whole in its first n bytes."""
    k, at = 0, 24
    while at + 16 <= n:
        at += 16 + struct.unpack_from("<I", pcap, at + 8)[0]
        if at > n:
            break
        k += 1
    return k


def _inflate_until_error(packed):
    """zlib's own account of a damaged gzip file: the bytes it inflates, fed one byte at a time,
    before it reports the damage (deflate sees some damage late: wrong bytes that are valid codes)."""
    inflater, out = zlib.decompressobj(31), []
    for i in range(len(packed)):
        try:
            out.append(inflater.decompress(packed[i:i + 1]))
        except zlib.error:
            break
    return b"".join(out)


SMALL_FRAMES, SMALL = _small_capture()
SMALL_GZ = gz(SMALL)


@pytest.mark.parametrize("kind", ["overwritten tail", "one byte changed"])
@pytest.mark.parametrize("at", [150, 400, 900, 1500, 2000, 2500])
def test_damage_inside_the_first_deflate_block_keeps_the_whole_records_before_it(tmp_path, kind, at):
    """Damage at several places of a gzip file whose deflate data is one block: every record that
    inflates whole from the compressed bytes before the damage is kept, byte for byte (gzip.GzipFile
    lost everything zlib had inflated in the call that met the damage: here, the whole file)."""
    import random
    assert SMALL_GZ[10] & 0b111 == 0b101 and at < len(SMALL_GZ) - 8     # BFINAL, dynamic Huffman: one block
    packed = bytearray(SMALL_GZ)
    if kind == "overwritten tail":
        packed[at:] = random.Random(at).randbytes(len(packed) - at)
    else:
        packed[at] ^= 0x55
    before = zlib.decompressobj(-zlib.MAX_WBITS).decompress(SMALL_GZ[10:at])    # undamaged prefix
    whole = _whole_records(SMALL, len(before))
    cap, got = read(write(tmp_path, "d.pcap.gz", bytes(packed)))
    kept = [f[2] for _, _, f in got]
    assert len(kept) >= whole and kept[:whole] == SMALL_FRAMES[:whole]
    assert cap.damage and "\n" not in cap.damage
    # Exactly the frames of what zlib itself inflates before it reports the damage, read as a plain
    # pcap. Past the undamaged prefix those bytes can be wrong (a record with a wrong body, or a
    # header the reader calls corrupt): deflate has nothing to tell them by before the CRC.
    _, plain = read(write(tmp_path, "d.pcap", _inflate_until_error(bytes(packed))))
    assert kept == [f[2] for _, _, f in plain]


def test_damage_in_the_code_tables_of_the_first_block_is_unreadable_in_one_line(tmp_path):
    """Before its first inflated byte (here byte 104) the block holds only its Huffman code
    tables: damage there leaves nothing to keep, not even the magic bytes (exit 2, not 3)."""
    packed = bytearray(SMALL_GZ)
    packed[60] ^= 0x55
    p = write(tmp_path, "d.pcap.gz", bytes(packed))
    with pytest.raises(CaptureError, match="unreadable gzip data: ") as e:
        CaptureFile(str(p))
    assert "\n" not in str(e.value)


def test_a_damaged_first_block_imports_what_came_before_and_exits_3(tmp_path, capsys, clean_env):
    from common import cli
    import random
    packed = SMALL_GZ[:1500] + random.Random(1).randbytes(len(SMALL_GZ) - 1500)     # an overwritten tail
    before = zlib.decompressobj(-zlib.MAX_WBITS).decompress(SMALL_GZ[10:1500])
    p = write(tmp_path, "d.pcap.gz", packed)
    code, out, err = cli(capsys, "import", p, "--db", tmp_path / "d.db")
    assert (code, err, out.count("\n")) == (3, "", 2) and out.splitlines()[1].startswith("stored: ")
    # the 20 records whole before the damage, and the one it cut through, whose header was intact
    # (its body is partly wrong: gzip cannot say so before its CRC); the next header is garbage
    _, plain = read(write(tmp_path, "d.pcap", _inflate_until_error(packed)))
    assert (_whole_records(SMALL, len(before)), len(plain)) == (20, 21)
    assert out.startswith(f"{p}: 21 frames (21 IP, 0 non-IP, 0 undecodable); stopped early: corrupt record header"), out
