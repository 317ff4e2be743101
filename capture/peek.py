"""What a flow carried, read from its first packets: its application protocol (`app`), the
server's name (`server_name`: TLS or QUIC SNI, HTTP Host, the DNS query name) and the names hosts
give themselves or are given on the wire (DNS answers, mDNS / LLMNR / NetBIOS announcements,
DHCP hostnames).

Pure: payload bytes in, labels out; the flow table (capture/flows.py) calls `Peek.see` only for
a flow's first payload-carrying packets, so a bulk transfer costs one `is None` test per packet
once its flow is named. A flow stops being read when it is named or its budget is spent:
PACKETS payload packets, or NAME_PACKETS on the ports that carry names (a resolver's flow or an
mDNS group keeps answering). Malformed DNS, TLS and QUIC never raise out of here: the flow keeps
what was learnt and the reason is counted (`problem`).
"""
from capture import dhcp, dns, http, quic, signatures, tls

PACKETS = 8             # a ClientHello in a few segments, QUIC Initials, an HTTP request head
SAMPLE_FRAMES, SAMPLE_BYTES = 4, 1024     # kept of a sampled flow: its first payload frames, each cut to this
TRIES = 2               # payloads that match no signature before a flow is given up (one per side,
                        # as a rule: a server that speaks first shows itself in its first payload)
NAME_PACKETS = 64       # DNS, mDNS, LLMNR, NBNS and DHCP flows: names come in every packet
_DNS_PORTS = {53: "dns", 5353: "mdns", 5355: "llmnr"}
_NAME_PORTS = frozenset((53, 5353, 5355, 137, 67, 68))
_TCP, _UDP = 6, 17


class Peek:
    """One flow's reading state. orig is taken as the client (it sent the first packet; for
    TCP the SYN), so the ClientHello, the Initials and the request are orig's."""

    __slots__ = ("proto", "port", "client_port", "names", "left", "tries", "app", "server_name", "problem",
                 "frames", "_stream", "_quic", "_dns_stream", "_client")

    def __init__(self, proto, orig_port, resp_port):
        self.proto = proto
        self.port = resp_port          # the server's port: the one that says what it serves
        self.client_port = orig_port
        self.names = resp_port in _NAME_PORTS or orig_port in _NAME_PORTS     # a flow that keeps carrying names
        self.left = NAME_PACKETS if self.names else PACKETS
        self.tries = TRIES
        self.app = ""
        self.server_name = ""
        self.problem = ""              # the first reason the payload could not be read, e.g. dns_compression_loop
        self.frames = None             # [(ts, bytes)] kept for Wireshark when the flow table samples this flow
                                       # (it sets a list): the first payload frames, not padding
        self._stream = None            # the client's first TCP bytes, for a ClientHello over several segments
        self._quic = None
        self._dns_stream = None
        self._client = None            # TCP: the side seen opening (from_orig of its ClientHello or
                                       # request); None while neither side has

    def see(self, from_orig, payload, ts, learn, frame=b""):
        """Reads one packet's payload (non-empty) of `frame`, its whole frame (kept when the flow
        is sampled). `learn(address, name, source, ts)` takes host names. Returns False once
        nothing more is to be learnt from this flow."""
        self.left -= 1
        if payload.count(0) == len(payload):       # padding names nothing, for Wireshark neither
            if self._more_names():
                return True
            self.tries -= 1
            return self.tries > 0 and self.left > 0
        if self.frames is not None and len(self.frames) < SAMPLE_FRAMES:
            self.frames.append((ts, bytes(frame[:SAMPLE_BYTES])))     # a copy: live frames live in the ring
        try:
            if self.proto == _UDP:
                self._udp(from_orig, payload, ts, learn)
            else:
                self._tcp(from_orig, payload, ts, learn)
        except (tls.TlsError, quic.QuicError, dns.DnsError) as e:
            family = "tls" if isinstance(e, tls.TlsError) else "quic" if isinstance(e, quic.QuicError) else "dns"
            self.problem = self.problem or f"{family}_{e.reason}"
            self._stream = self._quic = self._dns_stream = None
            if family != "dns":        # a resolver flow goes on answering; a broken handshake does not
                return self._more_names()
        if not self.app and self._stream is None and self._quic is None and not self._more_names():
            self.tries -= 1            # nothing recognised: a few more tries, not the whole budget
            return self.tries > 0 and self.left > 0
        return self.left > 0 and not self._named()

    def _named(self):
        if self.names:
            return False               # names keep coming: read until the budget is spent
        if self.app in ("tls", "quic", "http"):
            if self.proto == _TCP and self._client is None:
                return False           # a server's bytes came first (the capture began after the
                                       # request): the next request may still name the flow
            return bool(self.server_name) or (self._stream is None and self._quic is None)
        return bool(self.app)

    def _more_names(self):
        return self.left > 0 and self.names

    # ---- UDP ---------------------------------------------------------------------------------

    def _udp(self, from_orig, payload, ts, learn):
        port = self.port if self.port in _NAME_PORTS else self.client_port
        source = _DNS_PORTS.get(port)
        if source is not None:
            self._dns(dns.parse, payload, source, ts, learn)
            return
        if port == 137:
            found = dns.netbios_name(payload)
            if found is not None:
                self.app = "nbns"
                learn(found[1], found[0], "nbns", ts)
            return
        if port in (67, 68):
            info = dhcp.parse(payload)
            if info is not None:
                self.app = "dhcp"
                address = info.your_ip or info.requested_ip
                if info.hostname and address:
                    learn(address, info.hostname, "dhcp", ts)
            return
        if self._quic is not None or (from_orig and not self.app and quic.looks_like_quic(payload)):
            if from_orig:
                self._read_quic(payload)
            return
        if from_orig and payload[0] & 0x80 and 443 in (self.port, self.client_port) and len(payload) >= 1200:
            # a long header in a full-size datagram to 443: QUIC of a version we do not know
            raise quic.QuicError("unknown_version")
        if not self.app:
            self.app = signatures.app_of_payload(_UDP, self.client_port, self.port, payload)

    def _read_quic(self, payload):
        self.app = "quic"
        if self._quic is None:
            self._quic = quic.QuicClientHellos()
        hello = self._quic.feed(payload)
        if hello is not None:
            self.server_name = hello.server_name or ""
            self._quic = None

    def _dns(self, parse, data, source, ts, learn):
        """One message through `parse` (dns.parse or dns.parse_tcp). A malformed one whose first
        question was whole still names the flow with it; the error goes on to be counted."""
        try:
            message = parse(data)
        except dns.DnsError as e:
            if e.question is not None:
                self._named_by(e.question, source, ts, learn)
            raise
        if message is not None:
            self._named_by(message, source, ts, learn)
        return message

    def _named_by(self, message, source, ts, learn):
        self.app = source
        if message.qname and not self.server_name:
            self.server_name = message.qname
        for address, name in message.addresses:
            learn(address, name, source, ts)

    # ---- TCP ---------------------------------------------------------------------------------

    def _tcp(self, from_orig, payload, ts, learn):
        if self.port == 53 or self.client_port == 53:
            self._dns_stream = (self._dns_stream or b"") + payload
            if self._dns(dns.parse_tcp, self._dns_stream[:tls.MAX_STREAM], "dns", ts, learn) is not None:
                self._dns_stream = None
            return
        if self._client is None and not from_orig and _opens(payload):
            # the responder opens: the capture missed the SYN (or began mid-connection, before
            # a keep-alive request), so orig is in fact the server. What orig's bytes gave the
            # flow is a server's label: the request's reading replaces it.
            self._client, self.app = False, ""
        if from_orig != (self._client is not False):
            if not self.app:           # a server that speaks first: SSH, SMTP, FTP banners
                self.app = signatures.app_of_payload(_TCP, self.client_port, self.port, payload)
            return
        if self._stream is not None:
            self._read_tls(self._stream + payload)
            return
        if self.app and not (self._client is None and _opens(payload)):
            return             # labelled, and not the client's first request or hello after a server's bytes
        if http.is_request(payload):
            self._client = from_orig
            self.app = "http"
            self.server_name = http.request_host(payload) or ""
            return
        app = signatures.app_of_payload(_TCP, self.client_port, self.port, payload)
        self.app = app
        if app == "tls":
            if _opens(payload):
                self._client = from_orig
            self._read_tls(payload)

    def _read_tls(self, stream):
        stream = stream[:tls.MAX_STREAM]
        hello = tls.client_hello_from_stream(stream)
        if hello is None:
            self._stream = stream if len(stream) < tls.MAX_STREAM else None
            return
        self._stream = None
        self.server_name = hello.server_name or ""


def _opens(payload):
    """A client's first bytes: an HTTP/1.x request line, or a TLS handshake record holding a
    ClientHello (type 1)."""
    return (payload[0] == 0x16 and len(payload) > 5 and payload[5] == 1) or http.is_request(payload)


def port_guess(proto, orig_port, resp_port):
    """The application a flow's ports suggest, for flows the payload did not name (app_source
    'port'): never shown as fact."""
    return signatures.app_of_ports(proto, orig_port, resp_port)
