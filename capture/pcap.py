"""Frames through libpcap: the capture backend of Windows (Npcap), macOS (BPF devices) and any
other libpcap platform, also selectable on Linux (--capture-backend pcap) so CI runs it.

libpcap is reached through scapy's own bindings (scapy.libs.winpcapy, which loads Npcap's
wpcap.dll on Windows and libpcap elsewhere). We open the handle ourselves instead of through
scapy's L2pcapListenSocket for three things it does not give: a snap length of SNAPLEN (the
copy stays small) with the true wire length from each record's header, a kernel buffer of
ring_mb, and the drop counters. The BPF filter is compiled by libpcap and runs in the kernel or
driver. Frames go to the same decoder and flow table as the ring's, never through scapy layers.

What libpcap does not say, direction, comes from the host's own link and IP addresses
(`outbound_test`); on a loopback device every frame counts once, as incoming, as with the ring.
"""
import ctypes
import socket
import struct
import sys

from capture.ring import (PACKET_IGNORE_OUTGOING, PRIVILEGE_MESSAGE, SNAPLEN, SOL_PACKET, CaptureSetupError, Seconds,
                          shown_name)
from records import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2,
                     LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW)
from runtime.text import one_line

READ_FRAMES = 4096              # frames a read() takes at most: the capture loop turns between batches
_SMALLEST_SLOT = 64             # bytes of buffer the smallest frame takes (Linux: header + 60-byte frame, aligned)
TIMEOUT_MS = 50                 # libpcap hands over a partly filled buffer after this long (as the ring)
_SENT = b"\x00\x04"                # PACKET_OUTGOING: Linux cooked headers' packet type of a frame this host sent
# where the IP header starts, for link types whose direction is told by the source address
_IP_AT = {LINKTYPE_RAW: 0, LINKTYPE_IPV4: 0, LINKTYPE_IPV6: 0, LINKTYPE_NULL: 4, LINKTYPE_LOOP: 4}


def outbound_test(linktype, loopback, macs, addresses):
    """A pure function data -> bool: did this host send the frame? `macs` are the interface's
    6-byte link addresses, `addresses` its packed IPv4 (4-byte) and IPv6 (16-byte) addresses."""
    if loopback:
        return lambda data: False
    if linktype == LINKTYPE_ETHERNET:
        macs = frozenset(macs)
        return lambda data: data[6:12] in macs
    if linktype == LINKTYPE_LINUX_SLL:
        return lambda data: data[0:2] == _SENT
    if linktype == LINKTYPE_LINUX_SLL2:
        return lambda data: data[10:11] == _SENT[1:]
    at = _IP_AT.get(linktype)
    if at is None:
        return lambda data: False       # a link type we cannot tell: counted as incoming
    v4 = frozenset(a for a in addresses if len(a) == 4)
    v6 = frozenset(a for a in addresses if len(a) == 16)

    def outbound(data):
        version = data[at] >> 4 if len(data) > at else 0
        if version == 4:
            return data[at + 12:at + 16] in v4
        if version == 6:
            return data[at + 8:at + 24] in v6
        return False
    return outbound


def _own_addresses(name):
    """The interface's link (MAC) and IP addresses as scapy knows them, packed."""
    from scapy.interfaces import resolve_iface
    iface = resolve_iface(name)
    macs, addresses = [], []
    if iface.mac:
        try:
            macs.append(bytes.fromhex(iface.mac.replace(":", "").replace("-", "")))
        except ValueError:
            pass
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        for ip in (iface.ips or {}).get(version, []):
            try:
                addresses.append(socket.inet_pton(family, ip.split("%", 1)[0]))
            except (OSError, ValueError):
                pass
    return macs, addresses


def _header_struct(lib):
    """A struct for pcap_pkthdr as this platform lays it out (timeval's fields are 4 or 8 bytes):
    one unpack of its bytes instead of four ctypes attribute reads per frame."""
    hdr, tv = lib.pcap_pkthdr, lib.timeval
    fields = [(tv.tv_sec.offset, tv.tv_sec.size), (tv.tv_usec.offset, tv.tv_usec.size),
              (hdr.caplen.offset, 4), (hdr.len.offset, 4)]
    fmt, at = "=", 0
    for offset, size in fields:
        fmt += "x" * (offset - at) + {4: "I", 8: "q"}[size]
        at = offset + size
    return struct.Struct(fmt + "x" * (ctypes.sizeof(hdr) - at))


def _libpcap():
    try:
        from scapy.libs import winpcapy
    except (OSError, ImportError) as e:
        raise CaptureSetupError(f"the pcap capture backend needs libpcap (Npcap on Windows): {one_line(e)}") from None
    return winpcapy


class PcapSource:
    """One interface through a libpcap handle, read without blocking: the capture loop waits on
    its selectable descriptor (POSIX) or polls it (Windows, `selectable` False)."""

    backend = "pcap"

    def __init__(self, iface, bpf="", ring_mb=64):
        self.iface = iface
        self.name = shown_name(iface)
        self.seconds = Seconds()
        self._lib = lib = _libpcap()
        self._errbuf = ctypes.create_string_buffer(lib.PCAP_ERRBUF_SIZE)
        self._handle = lib.pcap_create(iface.name.encode(), self._errbuf)
        if not self._handle:
            raise CaptureSetupError(f"cannot capture on {self.name}: {self._error_text()}")
        self._error = None              # what libpcap said when a read failed, for take_error()
        self._exact_unread = True       # whether the kernel's counters tell what the buffer holds
        try:
            self._activate(bpf, ring_mb)
            self._start(lib)
        except BaseException as e:      # the handle and its kernel buffer go, whatever went wrong
            self.close()
            if isinstance(e, (CaptureSetupError, KeyboardInterrupt, SystemExit)):
                raise
            raise CaptureSetupError(f"cannot capture on {self.name}: {one_line(e)}") from None

    def _start(self, lib):
        self.linktype = lib.pcap_datalink(self._handle)
        macs, addresses = _own_addresses(self.iface.name)
        self._outbound = outbound_test(self.linktype, self.iface.loopback, macs, addresses)
        # pcap_next_ex through a prototype of our own (plain pointers, no argument conversion per
        # call), not scapy's, whose argtypes we leave as they are
        self._next_ex = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            ("pcap_next_ex", lib._lib))
        self._header_at, self._data_at = ctypes.c_void_p(), ctypes.c_void_p()
        self._record = _header_struct(lib)
        self.frames_read = 0
        self._stats = lib.pcap_stat()
        self._dropped = 0
        self.drops()                    # start the counters from zero, as the ring does

    def _activate(self, bpf, ring_mb):
        lib, handle = self._lib, self._handle
        lib.pcap_set_snaplen(handle, SNAPLEN)
        lib.pcap_set_promisc(handle, 0)
        lib.pcap_set_timeout(handle, TIMEOUT_MS)
        self._buffer_bytes = min(ring_mb << 20, (1 << 31) - 1)     # an int in libpcap: 2 GiB at most
        if hasattr(lib, "pcap_set_buffer_size"):
            lib.pcap_set_buffer_size(handle, self._buffer_bytes)
        status = lib.pcap_activate(handle)
        if status < 0:
            reason = self._handle_error() or lib.pcap_statustostr(status).decode(errors="replace")
            if status == getattr(lib, "PCAP_ERROR_PERM_DENIED", -8):
                raise CaptureSetupError(PRIVILEGE_MESSAGE)
            raise CaptureSetupError(f"cannot capture on {self.name}: {one_line(reason)}")
        if bpf:
            program = lib.bpf_program()
            if lib.pcap_compile(handle, ctypes.byref(program), bpf.encode(), 1, -1) < 0:
                raise CaptureSetupError(f"bad filter {bpf!r}: {one_line(self._handle_error())}")
            try:
                if lib.pcap_setfilter(handle, ctypes.byref(program)) < 0:
                    raise CaptureSetupError(f"bad filter {bpf!r}: {one_line(self._handle_error())}")
            finally:
                if hasattr(lib, "pcap_freecode"):
                    lib.pcap_freecode(ctypes.byref(program))
        if lib.pcap_setnonblock(handle, 1, self._errbuf) < 0:
            raise CaptureSetupError(f"cannot capture on {self.name}: {self._error_text()}")
        get_fd = getattr(lib, "pcap_get_selectable_fd", None)
        self._fd = get_fd(handle) if get_fd is not None else -1
        self.selectable = self._fd >= 0
        if self.iface.loopback and self.selectable and sys.platform.startswith("linux"):
            self._incoming_only()

    def _incoming_only(self):
        """Each Linux loopback frame passes the capture tap twice, out then in. libpcap keeps one
        copy, but in user space (pcap_setdirection too): the kernel still copies both into the
        buffer (half the room, twice the work) and counts a dropped frame twice. The kernel skips
        the outgoing copy when the packet socket under the handle asks (Linux 4.20+; before, both
        still come and libpcap keeps one, as without this)."""
        sock = socket.fromfd(self._fd, socket.AF_PACKET, socket.SOCK_RAW)    # a second descriptor
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            # the kernel counts both copies, libpcap hands on one: the counters no longer say
            # what the buffer holds (unread() then says 0, as on other systems)
            self._exact_unread = False
        finally:
            sock.close()

    def _error_text(self):
        return self._errbuf.value.decode(errors="replace") or "libpcap gave no reason"

    def _handle_error(self):
        return (self._lib.pcap_geterr(self._handle) or b"").decode(errors="replace")

    def fileno(self):
        return self._fd

    def read(self, max_frames=None):
        """The frames libpcap holds now (at most max_frames), as one batch."""
        handle = ctypes.cast(self._handle, ctypes.c_void_p)
        header_at, data_at = self._header_at, self._data_at
        header_ref, data_ref = ctypes.byref(header_at), ctypes.byref(data_at)
        next_ex, string_at, outbound, unpack = self._next_ex, ctypes.string_at, self._outbound, self._record.unpack
        size = self._record.size
        frames = []
        max_frames = max_frames or READ_FRAMES
        append = frames.append
        for _ in range(max_frames):
            got = next_ex(handle, header_ref, data_ref)
            if got != 1:
                if got < 0:     # the handle failed (the interface went away): said once, by take_error
                    self._error = self._handle_error() or f"libpcap read error {got}"
                break           # 0: nothing more now
            sec, usec, caplen, wire = unpack(string_at(header_at.value, size))
            frame = string_at(data_at.value, caplen)
            append((sec + usec * 1e-6, wire, frame, outbound(frame)))
        if frames:
            self.frames_read += len(frames)
            self.seconds.add_frames(frames)
        return [frames] if frames else []

    @property
    def sweep_reads(self):
        """read() calls that take a whole buffer of the smallest frames: what a stop reads at most."""
        return self._buffer_bytes // _SMALLEST_SLOT // READ_FRAMES + 1

    def unread(self):
        """Frames in the buffer that nobody has read, without reading them: what a stop leaves
        behind (counted as dropped). Linux's counters say it: frames the kernel took (dropped
        ones included) less dropped ones less those read. Elsewhere pcap_stats' counters mean
        other things (docs/PLATFORMS.md): 0, what a stop leaves there is not known."""
        if not (sys.platform.startswith("linux") and self._exact_unread) or \
                self._lib.pcap_stats(self._handle, ctypes.byref(self._stats)) < 0:
            return 0
        # 32-bit counters that wrap (after 2**32 frames): the difference modulo 2**32; one that
        # comes out "negative" (read ahead of the counters' last update) is nothing held
        held = (self._stats.ps_recv - self._stats.ps_drop - self.frames_read) % (1 << 32)
        return 0 if held >= 1 << 31 else held

    def take_seconds(self):
        return self.seconds.take(self.name)

    @property
    def failed(self):
        """A read failed and nobody has taken its error yet (the loop asks after each read)."""
        return self._error is not None

    def take_error(self):
        """What libpcap said when a read failed, once."""
        error, self._error = self._error, None
        return error

    def drops(self):
        """Frames dropped since the last call because our buffer was full (pcap_stats' ps_drop,
        what the ring's counter is). Not ps_ifdrop: the interface's own drops (Linux: its
        rx_dropped) are frames nobody received, also without NetTally, and of all its traffic."""
        if self._lib.pcap_stats(self._handle, ctypes.byref(self._stats)) < 0:
            return 0
        # a 32-bit counter that wraps: the difference modulo 2**32 is right across a wrap
        new = (self._stats.ps_drop - self._dropped) % (1 << 32)
        self._dropped = self._stats.ps_drop
        return new

    def close(self):
        if self._handle:
            self._lib.pcap_close(self._handle)
            self._handle = None
