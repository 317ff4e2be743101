"""Frames from the kernel: the one module that opens capture sockets.

On Linux each interface gets an AF_PACKET socket with a TPACKET_V3 memory-mapped receive ring:
the kernel fills fixed-size blocks with many frames and flips a block's status to "user" when it
is full or its timer retires it; we walk the block's frames, copy out the bytes the decoder needs
and hand the block back. One poll wake-up and one status flip per block, not per frame, is what
lets pure Python keep up with hundreds of thousands of frames a second.

Elsewhere, and on Linux when asked (--capture-backend pcap), frames come through libpcap
(capture/pcap.py).

scapy is used only at the edge: it resolves interfaces, maps ARPHRD types to link types and
compiles BPF filters through libpcap. Frames are never dissected with scapy layers.

A source yields batches of (ts, wire_len, data, outbound) tuples, what FlowTable.ingest takes.
"""
import ctypes
import glob
import mmap
import os
import socket
import struct
import sys
from dataclasses import dataclass

from records import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, interface_name
from runtime.privileges import is_admin
from runtime.text import one_line

# The decoder reads headers; the first payloads of a flow are read for names (capture/peek.py):
# a TLS ClientHello, a QUIC Initial (1200+ bytes), a DNS answer. 2048 bytes hold any of them in a
# standard-MTU frame; copying that instead of up to 64 KiB of a loopback or jumbo frame keeps the
# ring compact and the copy bounded. The wire length comes from the kernel, not the copied bytes.
SNAPLEN = 2048
BLOCK_SIZE = 1 << 20              # 1 MiB blocks: ring_mb of them per interface
BLOCK_TIMEOUT_MS = 50             # a partly filled block is handed to us after this long
_FRAME_SIZE = 2048                # V3 ignores frame slots except for this sanity check

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
ARPHRD_LOOPBACK = 772
DLT_RAW_LINUX = 12                # libpcap's DLT_RAW on Linux; pcap files call it LINKTYPE_RAW (101)
_BPF_RET_K = 0x06
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # ancillary load of skb->pkt_type

_BLOCK_HDR = struct.Struct("<8xIII")   # tpacket_block_desc: block_status, num_pkts, offset_to_first_pkt
_U32 = struct.Struct("<I")
# tpacket3_hdr (48 bytes) then sockaddr_ll: next_offset, sec, nsec, snaplen, len, status, mac,
# vlan_tci, vlan_tpid, and sll_pkttype at byte 58.
_PKT_HDR = struct.Struct("<6IH6xIH20xB")
# sockaddr_ll fields for cooked (SLL) headers: protocol (network order), hatype, pkttype, halen, addr
_SLL_ADDR = struct.Struct("<50x2s4xHBB8s")
_SLL_HDR = struct.Struct("!HHH8s2s")
_VLAN_TAG = struct.Struct("!HH")
_STATS = struct.Struct("<III")         # tpacket_stats_v3: packets, drops, freeze_q_cnt


class CaptureSetupError(Exception):
    """An interface, filter or privilege problem, said in one line."""


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    arphrd: int
    linktype: int        # pcap link type of the frames we hand on
    loopback: bool
    cooked: bool         # no usable link header: SOCK_DGRAM plus a Linux SLL header, as libpcap does


PRIVILEGE_MESSAGE = "capturing needs root (CAP_NET_RAW): run with sudo"


def privilege_problem():
    """None if this process may open capture sockets, else a one-line reason."""
    if sys.platform.startswith("linux"):
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        except PermissionError:
            return PRIVILEGE_MESSAGE
        except OSError as e:
            return f"cannot open a packet socket: {e.strerror}"
        return None
    if is_admin():
        return None
    bpf = glob.glob("/dev/bpf*")             # macOS and the BSDs: libpcap opens a BPF device
    if bpf:
        if any(os.access(path, os.R_OK | os.W_OK) for path in bpf):
            return None
        return "capturing needs root or access to /dev/bpf* (macOS: Wireshark's ChmodBPF, group access_bpf)"
    if sys.platform.startswith("win"):
        return "capturing needs an administrator: run from an elevated prompt (and Npcap installed)"
    return PRIVILEGE_MESSAGE


def interfaces_up():
    """Names of every interface that is up, as scapy lists them."""
    import scapy.arch  # noqa: F401  (loads the platform's interface provider)
    from scapy.interfaces import get_if_list, resolve_iface
    names = []
    for name in get_if_list():
        try:
            if "UP" in resolve_iface(name).flags:
                names.append(name)
        except (ValueError, OSError):
            continue
    return names


def resolve(name):
    """The Interface called `name`, or CaptureSetupError."""
    import scapy.arch  # noqa: F401
    from scapy.data import ARPHRD_TO_DLT
    from scapy.interfaces import resolve_iface
    try:
        iface = resolve_iface(name)
    except (ValueError, OSError):
        raise CaptureSetupError(f"unknown interface {name!r}") from None
    arphrd = int(iface.type or 0)
    dlt = ARPHRD_TO_DLT.get(arphrd, -1)
    loopback = arphrd == ARPHRD_LOOPBACK or "LOOPBACK" in iface.flags
    if dlt == DLT_RAW_LINUX:
        return Interface(name, iface.index, arphrd, LINKTYPE_RAW, loopback, False)
    if dlt is None or dlt < 0 or dlt == LINKTYPE_LINUX_SLL:
        return Interface(name, iface.index, arphrd, LINKTYPE_LINUX_SLL, loopback, True)
    return Interface(name, iface.index, arphrd, dlt, loopback, False)


def shown_name(iface):
    """The name counted, stored and shown for `iface` (the kernel's name stays for binding):
    Linux allows control and bidi characters in interface names."""
    return interface_name(iface.name, f"if{iface.index}")


def compile_bpf(expression, iface):
    """BPF instructions [(code, jt, jf, k)] for `expression` on `iface`, compiled by libpcap
    through scapy; every accepting return is capped at SNAPLEN. CaptureSetupError if it does
    not compile."""
    if not expression:
        return [(_BPF_RET_K, 0, 0, SNAPLEN)]
    from scapy.arch.common import compile_filter, free_filter
    # the program runs on what the socket receives: cooked sockets get the packet from its
    # network header, so their filter is compiled for raw IP
    dlt = DLT_RAW_LINUX if iface.cooked or iface.linktype == LINKTYPE_RAW else iface.linktype
    try:
        program = compile_filter(expression, linktype=dlt)
    except Exception as e:          # scapy raises Scapy_Exception / ImportError / OSError
        raise CaptureSetupError(f"bad filter {expression!r}: {one_line(e)}") from None
    try:
        insns = [(i.code, i.jt, i.jf, i.k & 0xFFFFFFFF) for i in program.bf_insns[:program.bf_len]]
    finally:
        free_filter(program)
    return [(code, jt, jf, min(k, SNAPLEN) if code == _BPF_RET_K and k else k)
            for code, jt, jf, k in insns]


def _attach(sock, insns):
    raw = b"".join(struct.pack("<HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HL", len(insns), ctypes.addressof(buf)))


def _drop_outgoing(insns):
    """Kernels before 4.20 lack PACKET_IGNORE_OUTGOING: the same rule as a filter prologue."""
    return [(_BPF_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE), (_BPF_JEQ_K, 0, 1, PACKET_OUTGOING),
            (_BPF_RET_K, 0, 0, 0)] + insns


class Seconds:
    """Per-second interface points for the live view: {second: [frames, bytes, out_frames, out_bytes]}."""

    def __init__(self):
        self.points = {}

    def add(self, sec, frames, nbytes, out_frames, out_bytes):
        p = self.points.get(sec)
        if p is None:
            self.points[sec] = [frames, nbytes, out_frames, out_bytes]
        else:
            p[0] += frames
            p[1] += nbytes
            p[2] += out_frames
            p[3] += out_bytes

    def add_frames(self, frames):
        """Adds a batch of (ts, wire_len, data, outbound) frames, one call per second they span (the
        pcap source's way; the ring's walker does the same inline, in its one pass over a block:
        a second pass over its frames costs 0.2 µs a frame, measured, about 10% of the ring's
        1.9-2.2 µs a packet)."""
        second = -1
        s_frames = s_bytes = s_out_frames = s_out_bytes = 0
        for ts, wire, _, outbound in frames:
            sec = int(ts)
            if sec != second:
                if s_frames:
                    self.add(second, s_frames, s_bytes, s_out_frames, s_out_bytes)
                second = sec
                s_frames = s_bytes = s_out_frames = s_out_bytes = 0
            s_frames += 1
            s_bytes += wire
            if outbound:
                s_out_frames += 1
                s_out_bytes += wire
        if s_frames:
            self.add(second, s_frames, s_bytes, s_out_frames, s_out_bytes)

    def take(self, iface):
        points, self.points = self.points, {}
        return [(sec, iface, *p) for sec, p in sorted(points.items())]


class RingSource:
    """One interface through an AF_PACKET TPACKET_V3 ring (Linux)."""

    backend = "ring"

    def __init__(self, iface, bpf="", ring_mb=64, block_timeout_ms=BLOCK_TIMEOUT_MS):
        if ring_mb < 1:
            raise CaptureSetupError(f"ring size must be at least 1 MiB, not {ring_mb}")
        self.iface = iface
        self.name, self.linktype = shown_name(iface), iface.linktype
        self.seconds = Seconds()
        self._vlan_offset = 14 if iface.cooked else 12 if iface.linktype == LINKTYPE_ETHERNET else None
        insns = compile_bpf(bpf, iface)
        kind = socket.SOCK_DGRAM if iface.cooked else socket.SOCK_RAW
        # protocol 0: the socket receives nothing until bind(), after the filter and ring are set
        try:
            self._sock = socket.socket(socket.AF_PACKET, kind, 0)
        except PermissionError:
            raise CaptureSetupError(PRIVILEGE_MESSAGE) from None
        self._mm = None
        try:
            self._setup(insns, ring_mb, block_timeout_ms)
        except OSError as e:
            self.close()
            raise CaptureSetupError(f"cannot capture on {self.name}: {e.strerror or e}") from None

    def _setup(self, insns, ring_mb, block_timeout_ms):
        sock = self._sock
        if self.iface.loopback:
            # every frame on a loopback device passes twice, out then in: keep it once (incoming)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                insns = _drop_outgoing(insns)
        _attach(sock, insns)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        self._block_nr, self._block_size = ring_mb, BLOCK_SIZE
        req = struct.pack("7I", BLOCK_SIZE, ring_mb, _FRAME_SIZE, BLOCK_SIZE // _FRAME_SIZE * ring_mb,
                          block_timeout_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._mm = mmap.mmap(sock.fileno(), BLOCK_SIZE * ring_mb, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self._block = 0
        sock.bind((self.iface.name, ETH_P_ALL))
        self.drops()        # start the kernel counters from zero

    def fileno(self):
        return self._sock.fileno()

    def read(self, max_blocks=16):
        """Batches of frames from the blocks the kernel has handed over (at most max_blocks)."""
        mm, batches = self._mm, []
        walk = self._walk_cooked if self.iface.cooked else self._walk
        for _ in range(max_blocks):
            base = self._block * self._block_size
            status, num, first = _BLOCK_HDR.unpack_from(mm, base)
            if not status & TP_STATUS_USER:
                break
            if num:
                batches.append(walk(mm, base + first, num))
            _U32.pack_into(mm, base + 8, TP_STATUS_KERNEL)     # the block is the kernel's again
            self._block = (self._block + 1) % self._block_nr
        return batches

    def _walk(self, mm, off, num):
        frames = []
        append = frames.append
        unpack = _PKT_HDR.unpack_from
        vlan_offset = self._vlan_offset
        second = -1
        s_frames = s_bytes = s_out_frames = s_out_bytes = 0
        for _ in range(num):
            step, sec, nsec, snap, wire, status, mac, tci, tpid, pkttype = unpack(mm, off)
            start = off + mac
            if status & TP_STATUS_VLAN_VALID and vlan_offset is not None and snap >= vlan_offset:
                # the NIC (or veth) took the 802.1Q tag into metadata: put it back, as libpcap does
                cut = start + vlan_offset
                data = mm[start:cut] + _VLAN_TAG.pack(tpid or 0x8100, tci & 0xFFFF) + mm[cut:start + snap]
                wire += 4
            else:
                data = mm[start:start + snap]
            outbound = pkttype == PACKET_OUTGOING
            # microseconds, like pcap: a double near 1.7e9 s cannot hold nanoseconds anyway
            append((sec + nsec // 1000 * 1e-6, wire, data, outbound))
            if sec != second:
                if s_frames:
                    self.seconds.add(second, s_frames, s_bytes, s_out_frames, s_out_bytes)
                second = sec
                s_frames = s_bytes = s_out_frames = s_out_bytes = 0
            s_frames += 1
            s_bytes += wire
            if outbound:
                s_out_frames += 1
                s_out_bytes += wire
            off += step
        if s_frames:
            self.seconds.add(second, s_frames, s_bytes, s_out_frames, s_out_bytes)
        return frames

    def _walk_cooked(self, mm, off, num):
        """Interfaces without a link header we understand: prepend the 16-byte Linux SLL header
        built from the frame's sockaddr_ll (and count it in the wire length), as libpcap does."""
        frames = []
        vlan_offset = self._vlan_offset
        for _ in range(num):
            step, sec, nsec, snap, wire, status, mac, tci, tpid, pkttype = _PKT_HDR.unpack_from(mm, off)
            protocol, hatype, pkttype, halen, addr = _SLL_ADDR.unpack_from(mm, off)
            data = _SLL_HDR.pack(pkttype, hatype, halen, addr, protocol) + mm[off + mac:off + mac + snap]
            wire += 16
            if status & TP_STATUS_VLAN_VALID:
                data = data[:vlan_offset] + _VLAN_TAG.pack(tpid or 0x8100, tci & 0xFFFF) + data[vlan_offset:]
                wire += 4
            outbound = pkttype == PACKET_OUTGOING
            frames.append((sec + nsec // 1000 * 1e-6, wire, data, outbound))
            self.seconds.add(sec, 1, wire, int(outbound), wire if outbound else 0)
            off += step
        return frames

    def take_seconds(self):
        return self.seconds.take(self.name)

    def unread(self):
        """Frames in blocks the kernel has handed over and nobody has read yet, without reading
        them: what a stop would leave behind (the capture loop counts them as dropped)."""
        mm, block, frames = self._mm, self._block, 0
        for _ in range(self._block_nr):
            status, num, _ = _BLOCK_HDR.unpack_from(mm, block * self._block_size)
            if not status & TP_STATUS_USER:
                break
            frames += num
            block = (block + 1) % self._block_nr
        return frames

    @property
    def sweep_reads(self):
        """read() calls that take a whole ring (16 blocks each), what a stop reads at most."""
        return self._block_nr // 16 + 1

    def take_error(self):
        """The socket's pending error as text, cleared (the kernel reports an interface going
        down once; capture resumes by itself when it comes back up)."""
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return os.strerror(code) if code else None

    def drops(self):
        """Frames the kernel dropped since the last call (ring full)."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        return _STATS.unpack(raw)[1]

    def close(self):
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._sock.close()

