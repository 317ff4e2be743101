"""tshark as an independent reference for per-IP and per-flow byte counts of a capture file.

The same semantics as the project's counting rules (DESIGN.md):
- bytes of a frame = its original length on the wire (tshark frame.len), clamped to 262144 like
  the importer clamps records that claim more (the clamping is counted there, not hidden);
- a frame belongs to its OUTERMOST IP header (tunnels not opened, ICMP-quoted headers ignored);
- per IP: outer source tx, outer destination rx;
- per flow: (proto, ip A, port A, ip B, port B) on the outer IP, ports only for TCP/UDP/SCTP;
  non-first fragments inherit the ports of the first fragment with the same (src, dst, proto, id)
  seen earlier in the file, else 0.
IPv6's protocol is the next-header value after the outer header's extension chain (hop-by-hop,
routing, destination options, fragment), read from tshark's own fields, so protocols tshark has
no name for still get their number; where tshark could not read an extension header (truncated),
the protocol is that header's own number, as the decoder reports it.

Frames where tshark cannot show both outer addresses count as not IP. Directions are compared
order-free (A = the lower endpoint) since tshark does not know which side is `orig`.
"""
import csv
import io
import ipaddress
import shutil
import subprocess
from collections import defaultdict

MAX_WIRE_LEN = 262144
_EXT = {"ipv6.hopopts": 0, "ipv6.routing": 43, "ipv6.dstopts": 60, "ipv6.fraghdr": 44}
FIELDS = ["frame.len", "frame.protocols", "ip.src", "ip.dst", "ip.proto", "ip.id", "ip.flags.mf",
          "ip.frag_offset", "ipv6.src", "ipv6.dst", "ipv6.nxt", "ipv6.hopopts.nxt", "ipv6.routing.nxt",
          "ipv6.dstopts.nxt", "ipv6.fraghdr.nxt", "ipv6.fraghdr.offset", "ipv6.fraghdr.ident",
          "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "sctp.srcport", "sctp.dstport"]
PORTED = {6: "tcp", 17: "udp", 132: "sctp"}
PROTO = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}


def available():
    return shutil.which("tshark") is not None


def _nth(value, n=0):
    parts = value.split("|") if value else []
    return parts[n] if n < len(parts) else ""


def _ip(text):
    return str(ipaddress.ip_address(text))


def _order(e):
    a = ipaddress.ip_address(e[0])
    return a.version, a, e[1]


def flow_key(proto, a, pa, b, pb):
    """Order-free flow key, and whether (a, pa) is its first endpoint."""
    lo, hi = sorted([(a, pa), (b, pb)], key=_order)
    return (proto, lo[0], lo[1], hi[0], hi[1]), (a, pa) == lo


def tshark_lines(path):
    cmd = ["tshark", "-r", str(path), "-n", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-o", "tcp.desegment_tcp_streams:FALSE", "-T", "fields", "-E", "separator=/t",
           "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120).stdout
    return [dict(zip(FIELDS, line.split("\t"))) for line in out.splitlines()]


def _ipv6_proto(v, chain):
    """Next header after the outer IPv6 header's extension chain (`chain`: its frame.protocols tokens)."""
    if not chain:
        return int(_nth(v["ipv6.nxt"]) or -1)
    last = chain[-1]
    nxt = _nth(v[last + ".nxt"], chain.count(last) - 1)
    return int(nxt) if nxt else _EXT[last]


def decode_file(path):
    """{"totals": {...}, "hosts": {ip: {...}}, "flows": {key tuple: {...}}} of one capture."""
    totals = dict(frames=0, bytes=0, ip_frames=0, ip_bytes=0)
    hosts = defaultdict(lambda: dict(tx_bytes=0, rx_bytes=0, tx_packets=0, rx_packets=0))
    flows = defaultdict(lambda: dict(a_to_b_bytes=0, b_to_a_bytes=0, a_to_b_packets=0, b_to_a_packets=0))
    frag_ports = {}
    for v in tshark_lines(path):
        if not v.get("frame.len"):
            continue
        n = min(int(_nth(v["frame.len"])), MAX_WIRE_LEN)
        totals["frames"] += 1
        totals["bytes"] += n
        toks = v.get("frame.protocols", "").split(":")
        outer = next((i for i, t in enumerate(toks) if t in ("ip", "ipv6")), None)
        if outer is None:
            continue
        if toks[outer] == "ip" and not _nth(v["ip.src"]) and toks[outer + 1:outer + 2] == ["ipv6"]:
            outer += 1        # tshark's IPv4 dissector hands a version-6 header (LINKTYPE_IPV4) to IPv6
        if toks[outer] == "ip":
            if not (_nth(v["ip.src"]) and _nth(v["ip.dst"]) and _nth(v["ip.proto"])):
                continue
            src, dst = _ip(_nth(v["ip.src"])), _ip(_nth(v["ip.dst"]))
            proto = int(_nth(v["ip.proto"]))
            frag_id = _nth(v["ip.id"])
            offset = int(_nth(v["ip.frag_offset"]) or 0)
            fragmented = offset > 0 or _nth(v["ip.flags.mf"]) in ("1", "True")
        else:
            if not (_nth(v["ipv6.src"]) and _nth(v["ipv6.dst"])):
                continue
            src, dst = _ip(_nth(v["ipv6.src"])), _ip(_nth(v["ipv6.dst"]))
            chain = []
            for t in toks[outer + 1:]:
                if t not in _EXT:
                    break
                chain.append(t)
                if t == "ipv6.fraghdr":
                    break
            proto = _ipv6_proto(v, chain)
            fragmented = "ipv6.fraghdr" in chain
            frag_id = _nth(v["ipv6.fraghdr.ident"]) if fragmented else ""
            offset = int(_nth(v["ipv6.fraghdr.offset"]) or 0) if fragmented else 0
        totals["ip_frames"] += 1
        totals["ip_bytes"] += n
        hosts[src]["tx_bytes"] += n
        hosts[src]["tx_packets"] += 1
        hosts[dst]["rx_bytes"] += n
        hosts[dst]["rx_packets"] += 1
        sport = dport = 0
        if proto in PORTED:
            name = PORTED[proto]
            if offset == 0 and _nth(v[f"{name}.srcport"]) and _nth(v[f"{name}.dstport"]):
                sport, dport = int(_nth(v[f"{name}.srcport"])), int(_nth(v[f"{name}.dstport"]))
                if fragmented:
                    frag_ports[(src, dst, proto, frag_id)] = (sport, dport)
            elif fragmented and offset:
                sport, dport = frag_ports.get((src, dst, proto, frag_id), (0, 0))
        key, forward = flow_key(proto, src, sport, dst, dport)
        f = flows[key]
        d = "a_to_b" if forward else "b_to_a"
        f[d + "_bytes"] += n
        f[d + "_packets"] += 1
    return dict(totals=totals, hosts=dict(hosts), flows=dict(flows))


# ---- the project's exports, in the oracle's terms --------------------------------------------------

def _proto_num(text):
    text = text.strip().lower()
    return PROTO[text] if text in PROTO else int(text)


def hosts_from_csv(text):
    got = {}
    for r in csv.DictReader(io.StringIO(text)):
        h = got.setdefault(_ip(r["ip"]), dict(tx_bytes=0, rx_bytes=0, tx_packets=0, rx_packets=0))
        for k in h:
            h[k] += int(r[k] or 0)
    return got


def flows_from_csv(text):
    got = {}
    for r in csv.DictReader(io.StringIO(text)):
        key, forward = flow_key(_proto_num(r["proto"]), _ip(r["orig_h"]), int(r["orig_p"]),
                                _ip(r["resp_h"]), int(r["resp_p"]))
        f = got.setdefault(key, dict(a_to_b_bytes=0, b_to_a_bytes=0, a_to_b_packets=0, b_to_a_packets=0))
        o, r_ = ("a_to_b", "b_to_a") if forward else ("b_to_a", "a_to_b")
        f[o + "_bytes"] += int(r["orig_bytes"])
        f[o + "_packets"] += int(r["orig_packets"])
        f[r_ + "_bytes"] += int(r["resp_bytes"])
        f[r_ + "_packets"] += int(r["resp_packets"])
    return got


def differences(oracle, hosts_csv, flows_csv):
    """Every per-IP and per-flow total that differs between the oracle and the exports."""
    problems = []
    for kind, have in (("host", hosts_from_csv(hosts_csv)), ("flow", flows_from_csv(flows_csv))):
        want = oracle[kind + "s"]
        for key in sorted(set(want) | set(have), key=str):
            if want.get(key) != have.get(key):
                problems.append(f"{kind} {key}: tshark {want.get(key)} ours {have.get(key)}")
    return problems


def client_hello_names(path, transport):
    """{client port: server name or ""} for each TLS ClientHello tshark decodes in a capture, over
    `transport` ("tcp" for TLS, "udp" for QUIC Initials)."""
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "tls.handshake.type == 1", "-T", "fields",
                          "-e", f"{transport}.srcport", "-e", "tls.handshake.extensions_server_name"],
                         capture_output=True, text=True, check=True).stdout
    return {int(port): name for port, name in (line.split("\t") for line in out.splitlines())}
