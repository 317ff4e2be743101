"""A flow's application protocol (its `app`), named as Wireshark names the dissector, lower case.

`app_of_payload` reads the bytes of a flow's first payload: each signature is a fixed header
shape checked with slicing and struct, and ports only decide between formats that look alike
(a "220 " greeting is SMTP on 25 and FTP on 21). `app_of_ports` is the port guess, for flows
whose payload named nothing; the caller marks it `app_source = "port"`.

Labels where we fold Wireshark's names: SMB2/3 (`smb2` in Wireshark) is `smb`; Google QUIC
(`gquic`) is `quic`; the BitTorrent DHT (`bt-dht`) is `bittorrent`. Ports of protocols that
start with TLS (443, 465 submissions, 853, 993, 995, 5061, 8443, 8883) guess `tls`, the label
DPI gives the same bytes, so a guess and a later payload label never disagree; what runs inside
the TLS (mail, DNS, MQTT...) is for the service and class rules to say from the port.

RTP has no magic number: version 2, a payload type that is assigned (static) or dynamic
(96-127), and a header (CSRCs, extension, padding) that fits the packet. It is tried on UDP only
when both ports are unprivileged and neither is in the port table. On uniformly random payloads
about 1 in 20 passes (tests/test_app_signatures.py measures it), so an encrypted game or VPN
flow on high ports can be labelled rtp from one packet; a caller that wants certainty confirms
it on a second packet (same SSRC, next sequence number). RTCP (packet types 200-207, length
in words that fits) is labelled `rtcp`.

Cost (timeit, CPython 3.11, best of 3 runs on a shared 2-core machine): a 1400-byte TLS record
0.25 us; a 1400-byte payload nothing recognises 1.2 us on TCP, 1.0 us on UDP (every signature
tried); a 95-byte DNS response on port 53 5.7 us (it is parsed: a port alone proves nothing).
"""
import re
import struct

from capture import dhcp, dns
from capture.http import is_request, is_response

TCP, UDP = 6, 17

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U32X2 = struct.Struct("!II").unpack_from

# ---- the port guess -------------------------------------------------------------------------------

_TCP_PORTS = {
    20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "dns", 80: "http", 88: "kerberos",
    110: "pop", 119: "nntp", 135: "dcerpc", 139: "nbss", 143: "imap", 179: "bgp", 389: "ldap", 443: "tls",
    445: "smb", 465: "tls", 587: "smtp", 636: "tls", 853: "tls", 873: "rsync", 993: "tls", 995: "tls",
    1080: "socks", 1433: "tds", 1723: "pptp", 1883: "mqtt", 3306: "mysql", 3389: "rdp", 3478: "stun",
    5060: "sip", 5061: "tls", 5222: "xmpp", 5432: "postgresql", 5900: "vnc", 6379: "redis", 8080: "http",
    8443: "tls", 8883: "tls", 27017: "mongo",
    **{port: "bittorrent" for port in range(6881, 6890)},
}
_UDP_PORTS = {
    53: "dns", 67: "dhcp", 68: "dhcp", 69: "tftp", 123: "ntp", 137: "nbns", 138: "nbdgm", 161: "snmp",
    162: "snmp", 443: "quic", 500: "isakmp", 514: "syslog", 546: "dhcpv6", 547: "dhcpv6", 1194: "openvpn",
    1900: "ssdp", 3478: "stun", 5060: "sip", 5353: "mdns", 5355: "llmnr", 19302: "stun", 51820: "wg",
    **{port: "bittorrent" for port in range(6881, 6890)},
}
_PORTS = {TCP: _TCP_PORTS, UDP: _UDP_PORTS}


def app_of_ports(proto: int, sport: int, dport: int) -> str:
    """The well-known port's protocol; of two known ports the lower wins (the server's is the
    well-known one, the client's ephemeral port may collide with a higher entry). "" if none."""
    table = _PORTS.get(proto)
    if table is None:
        return ""
    low, high = (sport, dport) if sport <= dport else (dport, sport)
    return table.get(low) or table.get(high) or ""


# ---- signatures -----------------------------------------------------------------------------------

_TLS_MAX_RECORD = 16384 + 2048          # TLSCiphertext limit (RFC 5246 6.2.3)
_SSL2_VERSIONS = frozenset((b"\x00\x02", b"\x03\x00", b"\x03\x01", b"\x03\x02", b"\x03\x03"))
_SMB_MAGIC = frozenset((b"\xffSMB", b"\xfeSMB", b"\xfdSMB", b"\xfcSMB"))   # SMB1, 2/3, encrypted, compressed
_BITTORRENT = b"\x13BitTorrent protocol"
_PG_PROTOCOL_3 = 0x00030000
_PG_REQUESTS = frozenset((80877102, 80877103, 80877104))   # cancel, SSLRequest, GSSENCRequest
_REDIS_COMMAND = re.compile(rb"\*[1-9][0-9]{0,6}\r\n\$[0-9]").match
_SIP_METHODS = frozenset((b"INVITE", b"ACK", b"BYE", b"CANCEL", b"REGISTER", b"OPTIONS", b"PRACK", b"SUBSCRIBE",
                          b"NOTIFY", b"PUBLISH", b"INFO", b"REFER", b"MESSAGE", b"UPDATE"))
_SIP_TARGETS = (b"sip:", b"sips:", b"tel:")
_STUN_COOKIE = b"\x21\x12\xa4\x42"
_DTLS_VERSIONS = frozenset((0xFF, 0xFD, 0xFC))            # after 0xFE: DTLS 1.0, 1.2, 1.3
# QUIC long-header versions: v1, v2 (RFC 9369), drafts 27-29, Google's T050/T051 (IETF framing)
_QUIC_VERSIONS = frozenset((b"\x00\x00\x00\x01", b"\x6b\x33\x43\xcf", b"\xff\x00\x00\x1b", b"\xff\x00\x00\x1c",
                            b"\xff\x00\x00\x1d", b"T050", b"T051"))
# RTP payload types assigned by RFC 3551 (static) and the dynamic range
_RTP_TYPES = frozenset((0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 25, 26, 28, 31, 32, 33, 34,
                        *range(96, 128)))
_DNS_PORTS = ((5353, "mdns"), (5355, "llmnr"), (137, "nbns"), (53, "dns"))


def app_of_payload(proto: int, sport: int, dport: int, payload: bytes) -> str:
    """The protocol the payload's first bytes show; "" when none of ours. Never raises."""
    if not payload:
        return ""
    if proto == TCP:
        return _tcp(sport, dport, payload)
    if proto == UDP:
        return _udp(sport, dport, payload)
    return ""


def _either(sport: int, dport: int, ports: tuple) -> bool:
    return sport in ports or dport in ports


def _tls_record(payload: bytes) -> bool:
    """A TLS record header: content type 20-23 (tested by the caller), version 3.0-3.4, length sane."""
    return (len(payload) >= 5 and payload[1] == 3 and payload[2] <= 4
            and 0 < _U16(payload, 3)[0] <= _TLS_MAX_RECORD)


def _sip_request(payload: bytes) -> bool:
    """A SIP method, a space, and a SIP (or tel) URI as the request target."""
    space = payload.find(b" ", 0, 10)
    return space > 0 and payload[:space] in _SIP_METHODS and \
        payload[space + 1:space + 6].lower().startswith(_SIP_TARGETS)


def _tcp(sport: int, dport: int, payload: bytes) -> str:
    first = payload[0]
    n = len(payload)
    if 20 <= first <= 23 and _tls_record(payload):
        return "tls"
    if first & 0x80 and n >= 5 and payload[2] == 1 and payload[3:5] in _SSL2_VERSIONS:
        return "tls"           # an SSLv2-framed ClientHello (old clients offering SSLv3 / TLS 1.x this way)
    if _sip_request(payload):
        return "sip"           # before HTTP: OPTIONS, NOTIFY and SUBSCRIBE are methods of both
    if is_request(payload) or is_response(payload):
        return "http"
    if first == 0:
        if n >= 8 and payload[4:8] in _SMB_MAGIC:
            return "smb"       # NetBIOS session message header (or SMB direct's), then the SMB magic
        if n >= 8:
            length, code = _U32X2(payload)
            if (code == _PG_PROTOCOL_3 and 8 < length <= 10000) or (code in _PG_REQUESTS and length in (8, 16)):
                return "postgresql"
    if payload.startswith(b"SSH-"):
        return "ssh"
    if payload.startswith(_BITTORRENT):
        return "bittorrent"
    if payload.startswith((b"220 ", b"220-")):
        line = payload[:min(n, 512)].split(b"\n", 1)[0].upper()
        if b"SMTP" in line or _either(sport, dport, (25, 587)):
            return "smtp"
        if b"FTP" in line or _either(sport, dport, (21,)):
            return "ftp"
        return ""
    if payload[:5].upper() in (b"EHLO ", b"HELO "):
        return "smtp"
    if payload.startswith(b"SIP/2.0 "):
        return "sip"
    if first == 3 and n >= 11 and payload[1] == 0 and payload[5] & 0xF0 in (0xE0, 0xD0, 0xF0):
        # TPKT + X.224 (connection request, confirm, data); other ISO transports (S7 on 102) share it
        if _either(sport, dport, (3389,)) or b"mstshash=" in payload[:64]:
            return "rdp"
        return ""
    if first == 0x10 and (b"\x00\x04MQTT" in payload[2:12] or b"\x00\x06MQIsdp" in payload[2:14]):
        return "mqtt"          # CONNECT: the protocol name follows the 1-4 byte remaining length
    if _REDIS_COMMAND(payload):
        return "redis"
    if _either(sport, dport, (6379,)) and first in b"+-:$*" and payload.endswith(b"\r\n"):
        return "redis"         # a reply: RESP's first byte, told apart from POP's "+OK" by the port
    if payload.startswith(b"* OK") and (b"IMAP" in payload[:256].upper() or _either(sport, dport, (143,))):
        return "imap"
    if payload.startswith(b"+OK") and (b"POP" in payload[:256].upper() or _either(sport, dport, (110,))):
        return "pop"
    if n >= 10 and payload[3] == 0 and payload[4] == 10 and 48 <= payload[5] <= 57 \
            and 20 < payload[0] | payload[1] << 8 | payload[2] << 16 <= n - 4:
        return "mysql"         # server greeting: packet 0, protocol 10, a version string "8.0.36..."
    if n >= 20 and payload[4:8] == _STUN_COOKIE and first & 0xC0 == 0:
        return "stun"
    if _either(sport, dport, (53, 5353, 5355)):
        try:
            if dns.parse_tcp(payload) is not None or n >= 14:
                return "dns"   # a whole message, or the first segment of a long one (a zone transfer)
        except dns.DnsError:
            return ""
    return ""


def _udp(sport: int, dport: int, payload: bytes) -> str:
    first = payload[0]
    n = len(payload)
    # the port decides which parser to try first: these formats have no magic number of their own
    for port, name in _DNS_PORTS:
        if sport == port or dport == port:
            try:
                dns.parse(payload)
                return name
            except dns.DnsError:
                return ""
    if _either(sport, dport, (67, 68)):
        return "dhcp" if dhcp.parse(payload) is not None else ""
    if _either(sport, dport, (123,)):
        return "ntp" if _ntp(payload) else ""
    if first & 0xC0 == 0xC0:
        if n >= 7 and payload[1:5] in _QUIC_VERSIONS and payload[5] <= 20:
            return "quic"      # long header, connection ID length within RFC 9000's 20
        if n >= 7 and payload[1:3] == b"Q0" and payload[3:5].isdigit():
            return "quic"      # Google QUIC Q046/Q050 long header
    if n >= 13 and first & 0x89 == 0x09 and payload[9:11] == b"Q0" and payload[11:13].isdigit():
        return "quic"          # Google QUIC Q043 and older: public flags (version, 8-byte CID), CID, version
    if 20 <= first <= 23 and n >= 13 and payload[1] == 0xFE and payload[2] in _DTLS_VERSIONS:
        return "dtls"
    if n >= 20 and payload[4:8] == _STUN_COOKIE and first & 0xC0 == 0:
        return "stun"
    if _sip_request(payload):
        return "sip"
    if is_request(payload):
        method = payload[:payload.find(b" ")]
        return "ssdp" if method in (b"M-SEARCH", b"NOTIFY") or _either(sport, dport, (1900,)) else ""
    if is_response(payload):
        # a search response comes from the device's port, 1900 or not, and always has USN/ST
        head = payload[:1024].lower()
        return "ssdp" if _either(sport, dport, (1900,)) or b"\nusn:" in head or b"\nst:" in head else ""
    if payload.startswith(b"SIP/2.0 "):
        return "sip"
    if payload.startswith((b"d1:a", b"d1:r", b"d1:e")) and b"1:y1:" in payload:
        return "bittorrent"    # a bencoded DHT (KRPC) message
    if sport >= 1024 and dport >= 1024 and sport not in _UDP_PORTS and dport not in _UDP_PORTS:
        return _rtp(payload)
    return ""


def _ntp(payload: bytes) -> bool:
    """Version 1-4 and a mode: client/server modes (1-5) carry the 48-byte header, control (6)
    and private (7) messages (ntpq, monlist) are shorter."""
    if len(payload) < 8:
        return False
    version, mode = payload[0] >> 3 & 7, payload[0] & 7
    return 1 <= version <= 4 and (len(payload) >= 48 if 1 <= mode <= 5 else mode in (6, 7))


def _rtp(payload: bytes) -> str:
    n = len(payload)
    if n < 12 or payload[0] >> 6 != 2:
        return ""
    kind = payload[1]
    if 200 <= kind <= 207:
        return "rtcp" if (_U16(payload, 2)[0] + 1) * 4 <= n else ""
    if kind & 0x7F not in _RTP_TYPES:
        return ""
    header = 12 + 4 * (payload[0] & 0x0F)
    if payload[0] & 0x10:
        if header + 4 > n:
            return ""
        header += 4 + 4 * _U16(payload, header + 2)[0]
    if payload[0] & 0x20 and not 0 < payload[-1] <= n - header:
        return ""
    return "rtp" if header <= n else ""
