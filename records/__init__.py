"""The ground floor: the records every layer speaks (frames, packets, flow deltas, rollups,
processes) and their field vocabulary. Imports nothing of the project.

Addresses stay raw bytes (4 or 16) on the hot path; they become canonical text only when a flow
or host leaves the flow table (see `ip_text`).
"""
import ipaddress
import socket
from typing import NamedTuple

# pcap / pcapng link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0          # BSD loopback, 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101         # raw IPv4 or IPv6, told by the version nibble
LINKTYPE_RAW_BSD_12 = 12   # DLT_RAW value on some BSDs, as written into old files
LINKTYPE_RAW_BSD_14 = 14
LINKTYPE_LOOP = 108        # OpenBSD loopback, address family in network byte order
LINKTYPE_IEEE802_11 = 105
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IEEE802_11_RADIOTAP = 127
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}
PORTED_PROTOS = frozenset((6, 17, 132))

# The largest frame length we believe from a capture record. Real links stop at 64 KiB jumbo /
# 256 KiB BIG TCP GSO frames; a record claiming more is damaged and is clamped (and counted).
MAX_WIRE_LEN = 262144


class Packet(NamedTuple):
    """What the decoder keeps of one IP frame: the outermost IP header and its transport ports."""
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    tcp_flags: int
    frag: tuple | None   # (ip id, offset, more fragments) when the IP packet is a fragment
    start: int = 0       # where the transport payload begins in the frame's bytes (TCP/UDP only)
    end: int = 0         # where it ends (the IP length, cut to what was captured); start == end: none
    tcp: tuple | None = None   # TCP: (seq, ack, window, payload length by the IP length); None otherwise


_TEXT: dict[bytes, str] = {}


def ip_text(raw: bytes) -> str:
    """Canonical text of a raw 4- or 16-byte address (IPv6 compressed, lower case), memoised."""
    text = _TEXT.get(raw)
    if text is None:
        if len(_TEXT) > 1_000_000:
            _TEXT.clear()
        # inet_ntop writes IPv4 exactly as ipaddress does, ~20x faster (a flood of new sources
        # meets this once per address); IPv6 keeps ipaddress's form for IPv4-mapped addresses
        text = _TEXT[raw] = socket.inet_ntop(socket.AF_INET, raw) if len(raw) == 4 else str(ipaddress.ip_address(raw))
    return text


def proto_text(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def proto_number(text: str) -> int:
    """Inverse of proto_text; raises ValueError for names we do not know."""
    text = text.strip().lower()
    if text in PROTO_NUMBERS:
        return PROTO_NUMBERS[text]
    num = int(text)
    if not 0 <= num <= 255:
        raise ValueError(f"protocol number out of range: {num}")
    return num


class ProcessKey(NamedTuple):
    """A process as attribution identifies it (pid + start time: a recycled pid is another process)."""
    pid: int
    start_time: float
    name: str
    exe: str = ""
    cmdline: str = ""
    username: str = ""
    unit: str = ""      # systemd unit or container id, from /proc/PID/cgroup


class FlowDelta(NamedTuple):
    """One flow's counts in one time bucket (deltas, to be added), Zeek conn.log names. Unlike
    Zeek, whose orig_bytes counts payload, every byte counter here is wire bytes: the frame's
    original length as the capture reports it (pcap orig_len, tshark frame.len)."""
    proto: int            # IP protocol number of the outermost IP header (6 tcp, 17 udp...)
    orig_h: str           # address of the side that sent the flow's first packet seen (the SYN
                          # sender when a SYN is seen), canonical text
    orig_p: int           # its port (TCP, UDP, SCTP; 0 otherwise)
    resp_h: str           # the other side, canonical text
    resp_p: int
    first_seen: float     # capture timestamp of the flow's first frame, seconds since the epoch
    last_seen: float      # capture timestamp of its latest frame in this bucket
    orig_bytes: int       # wire bytes orig_h sent in this bucket
    orig_packets: int     # frames orig_h sent in this bucket
    resp_bytes: int       # wire bytes resp_h sent in this bucket
    resp_packets: int
    tcp_flags: int        # union of the flags both sides sent in this bucket
    iface: str            # interface (or capture file interface) the frames came in on
    closed: bool          # the flow left the table (idle, active timeout, memory bound, stop)
    # filled by attribution (attribution/) in the collector; None where not on this host / unknown
    orig_pid: int | None = None
    orig_process: str | None = None
    resp_pid: int | None = None
    resp_process: str | None = None
    # what the flow carried (capture/peek.py), Zeek/nDPI names; "" where unknown
    app: str = ""             # application protocol as Wireshark names its dissector: tls, http, dns, quic...
    app_source: str = ""      # "dpi": read from the payload; "port": a guess from the server's port alone
    server_name: str = ""     # TLS/QUIC SNI, HTTP Host, or the DNS query name (records.wire_text)
    # filled by names/ in the collector
    service: str = ""         # a named service (YouTube, Zoom...) from server_name or the address
    traffic_class: str = ""   # one of names.classes.CLASSES (exported as `class`)
    # TCP health (capture/tcp_health.py: tshark's tcp.analysis definitions); None / 0 for other
    # protocols and with the tcp_health setting off. The RTTs are the flow's so far (not deltas):
    rtt_ms: float | None = None       # handshake round trip (tcp.analysis.initial_rtt); None: none seen
    rtt_min_ms: float | None = None   # running samples (a segment -> the ACK that covers it), of the side
    rtt_avg_ms: float | None = None   # whose data crosses the far part of the path from the capture point
    rtt_max_ms: float | None = None
    # deltas in this bucket, both sides summed:
    data_segments: int = 0    # segments carrying payload (the retransmission rate's denominator)
    retransmits: int = 0      # tcp.analysis.retransmission (its fast and spurious kinds included)
    out_of_order: int = 0     # tcp.analysis.out_of_order
    zero_windows: int = 0     # tcp.analysis.zero_window
    resets: int = 0           # segments with RST


class Rollup(NamedTuple):
    """Everything counted in one time bucket since the previous drain (deltas, to be added)."""
    bucket: int                          # bucket start, seconds since the epoch
    flows: list                          # [FlowDelta]
    hosts: dict                          # ip -> [tx_bytes, rx_bytes, tx_packets, rx_packets]
    interfaces: dict                     # iface -> counters as a list, in IFACE_FIELDS order
    undecodable: dict                    # (iface, reason) -> [frames, bytes]
    # filled by attribution in the collector:
    processes: dict = {}                 # records.ProcessKey -> [tx_bytes, rx_bytes, tx_packets, rx_packets]
    attribution: dict = {}               # 'attributed' or an unattributed reason -> [bytes, packets]
    macs: dict = {}                      # IPv4 address -> MAC, as ARP senders announced them
    names: dict = {}                     # address -> (name, source, ts): DNS answers, mDNS/LLMNR/NBNS
                                         # announcements, DHCP hostnames seen in this bucket
    unnamed: dict = {}                   # reason -> flows whose payload could not be read (dns_compression_loop...)
    samples: list = []                   # [Sample]: first frames of flows the capture's parsers left unnamed


class Sample(NamedTuple):
    """The first frames of a flow NetTally's own parsers could not name, for Wireshark's
    dissectors to try beside the counting path (names/tshark.py)."""
    key: tuple                           # (proto, orig_h, orig_p, resp_h, resp_p), canonical text
    first_seen: float                    # with key, the flow record's natural key
    linktype: int                        # pcap link type of the frames
    frames: list                         # [(ts, bytes)], at most capture.peek.SAMPLE_FRAMES, cut to SAMPLE_BYTES


# Keys of Rollup.attribution: ATTRIBUTED, or the reason a local endpoint's bytes are not charged
# to a process (DESIGN.md, docs/ATTRIBUTION.md). NO_LOCAL_ENDPOINT traffic (forwarded, broadcast,
# mirrored) is not this host's own and stays out of coverage.
ATTRIBUTED = "attributed"
NO_LOCAL_ENDPOINT = "no_local_endpoint"
SOCKET_CLOSED = "socket_closed_before_lookup"
OTHER_NETNS = "other_network_namespace"
NO_PERMISSION = "no_permission"
UNKNOWN = "unknown"
REASONS = (NO_LOCAL_ENDPOINT, SOCKET_CLOSED, OTHER_NETNS, NO_PERMISSION, UNKNOWN)

# Per-interface counters of a Rollup, in list order. Bytes are wire bytes; ip / non_ip /
# undecodable split every frame three ways; out_* are the frames this host sent (the ring's
# direction; on lo each packet once).
IFACE_FIELDS = ("frames", "bytes", "ip_frames", "ip_bytes", "non_ip_frames", "non_ip_bytes",
                "undecodable_frames", "undecodable_bytes", "out_frames", "out_bytes")


# ---- messages from the capture process to the collector (capture/live.py -> collector/live.py) ----
# One pipe carries them, in this order of urgency; the collector dispatches on the type.

class Ready(NamedTuple):
    """The rings are open and bound: counting has begun."""
    interfaces: list                     # [(iface, linktype)]
    backend: str = "ring"                # how frames are captured: ring or pcap


class Failed(NamedTuple):
    """The capture could not start (unknown interface, bad filter...)."""
    line: str


class NewFlows(NamedTuple):
    """Flows first seen since the last message, within ~50 ms, for attribution."""
    flows: list                          # [(proto, a, a_port, b, b_port, ts)], raw addresses


class Seconds(NamedTuple):
    """Live-view points: per second and interface."""
    points: list                         # [(second, iface, frames, bytes, out_frames, out_bytes)]


class Activity(NamedTuple):
    """Live per-second bytes of hosts and of flow sides (FlowTable(per_second=True)), for the
    "now" rate and the 1-second peak of hosts and, through attribution, processes."""
    hosts: list                          # [(second, ip, tx_bytes, rx_bytes)], text addresses
    flows: list                          # [(second, proto, src, src_port, dst, dst_port, bytes)]: the
                                         # bytes the side src sent to dst in that second, text addresses


class Rollups(NamedTuple):
    """Closed buckets at once, the open bucket's deltas every flush_interval."""
    rollups: list                        # [Rollup]


class Drops(NamedTuple):
    """Frames the kernel dropped (ring full) since the last report."""
    minute: int                          # bucket start, seconds since the epoch
    by_iface: dict                       # iface -> frames


class Notice(NamedTuple):
    """Something the user should know while counting goes on (an interface went down...)."""
    line: str


class Done(NamedTuple):
    """The capture stopped; everything it counted has been sent before this."""
    frames: int
    drops: int


# ---- names read off the wire ------------------------------------------------------------------------

MAX_NAME = 253          # a DNS name's longest text form; SNI, Host and announced names are cut here


def wire_text(raw, limit=MAX_NAME):
    """A name someone else wrote (DNS, SNI, Host header, DHCP/mDNS announcement) as safe text:
    printable ASCII kept, every other byte as \\xNN (a backslash as \\\\), at most `limit`
    characters. HTML escaping and CSV formula guarding happen where it is shown; this only makes
    it printable and bounded, and is the same text for the same bytes."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if raw.isascii():                   # the common case, at C speed: plain printable ASCII
        text = raw.decode("ascii")
        if text.isprintable() and "\\" not in text:
            return text[:limit]
    out = []
    size = 0
    for b in raw:
        piece = "\\\\" if b == 0x5C else chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}"
        size += len(piece)
        if size > limit:
            break
        out.append(piece)
    return "".join(out)


MAX_INTERFACE_NAME = 64


def interface_name(text, fallback):
    """An interface name as shown and stored, made once where it enters (a capture file's
    if_name, a file name, the host's interface list): characters that are not printable are
    dropped (C0 and C1 controls, NUL, bidi overrides, isolates and marks, line separators), the
    ends trimmed, at most MAX_INTERFACE_NAME characters; `fallback` if nothing is left. Unlike
    wire_text, other Unicode and backslashes stay as they are: `\\Device\\NPF_{...}` and `WLAN 2`
    are names people know their interfaces by."""
    if not text.isprintable():
        text = "".join(c for c in text if c.isprintable())
    return text.strip()[:MAX_INTERFACE_NAME].rstrip() or fallback
