"""Export tables: each column declared once (name, meaning), rendered as CSV or JSON.

The CLI (`run.py export`) and the web CSV endpoints share these declarations and `render`.
Text that came off the wire or from process tables is hostile: CSV cells that a spreadsheet would
run as a formula are neutralised with a leading apostrophe.
"""
import csv
import io
import json

from records import proto_text

FLOW_FIELDS = (
    ("proto", "tcp, udp, sctp, icmp, icmpv6 or the IP protocol number"),
    ("orig_h", "address of the side that sent the first packet seen (TCP: the SYN sender)"),
    ("orig_p", "its port; 0 for protocols without ports"),
    ("resp_h", "address of the other side"),
    ("resp_p", "its port"),
    ("orig_bytes", "bytes on the wire sent by orig (frame length as captured, pcap orig_len)"),
    ("resp_bytes", "bytes on the wire sent by resp"),
    ("orig_packets", "frames sent by orig"),
    ("resp_packets", "frames sent by resp"),
    ("first_seen", "time of the first frame, ISO 8601 UTC"),
    ("last_seen", "time of the last frame, ISO 8601 UTC"),
    ("orig_pid", "process on this host that owns orig's socket; empty if none or unknown"),
    ("orig_process", "that process's name"),
    ("resp_pid", "process on this host that owns resp's socket"),
    ("resp_process", "that process's name"),
    ("tcp_flags", "union of TCP flags seen from both sides (FSRPAUEC as letters)"),
    ("iface", "interface the flow was first seen on"),
    ("app", "application protocol, as Wireshark names its dissector (tls, http, dns, quic...); empty when unknown"),
    ("app_source", "dpi: read from the packets; port: a guess from the server's port alone"),
    ("server_name", "TLS or QUIC SNI, HTTP Host, or the DNS query name the flow carried"),
    ("service", "named service (names/services.toml) from the server name or the address"),
    ("class", "traffic class (names/classes.toml): video streaming, voice and video calls, ..., other"),
    # TCP health (docs/HEALTH.md), tshark's tcp.analysis definitions; empty / 0 for other protocols.
    # Counts are the flow record's whole, also in an export over a time range.
    ("rtt_ms", "TCP handshake round trip in ms, SYN to the ACK after it (tshark tcp.analysis.initial_rtt); empty: no handshake seen"),
    ("rtt_min_ms", "least running RTT sample in ms (a segment to the ACK that covers it, far side of the capture point)"),
    ("rtt_avg_ms", "mean of the running RTT samples in ms"),
    ("rtt_max_ms", "largest running RTT sample in ms"),
    ("retransmits", "segments tshark flags tcp.analysis.retransmission (fast and spurious included), both sides"),
    ("out_of_order", "segments tshark flags tcp.analysis.out_of_order"),
    ("zero_windows", "segments tshark flags tcp.analysis.zero_window"),
    ("resets", "segments with RST"),
    ("data_segments", "segments carrying payload, both sides (the retransmission rate's denominator)"),
)
HOST_FIELDS = (
    ("ip", "IP address, canonical text (IPv6 compressed, lower case)"),
    ("tx_bytes", "bytes on the wire of frames whose outermost IP source is this address"),
    ("rx_bytes", "bytes on the wire of frames whose outermost IP destination is this address"),
    ("tx_packets", "frames sent"),
    ("rx_packets", "frames received"),
    ("name", "the address's name as last seen on the wire (DNS answer, mDNS/LLMNR/NetBIOS, DHCP)"),
    ("mac", "its MAC address, from ARP (local IPv4 hosts)"),
    ("vendor", "the MAC's vendor (IEEE OUI registry)"),
)
PROCESS_FIELDS = (
    ("pid", "process id"),
    ("process", "process name"),
    ("tx_bytes", "bytes on the wire the process sent"),
    ("rx_bytes", "bytes on the wire the process received"),
    ("tx_packets", "frames sent"),
    ("rx_packets", "frames received"),
)
TABLES = {"flows": FLOW_FIELDS, "hosts": HOST_FIELDS, "processes": PROCESS_FIELDS}

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TCP_FLAG_LETTERS = "FSRPAUEC"


def tcp_flags_text(flags):
    return "".join(letter for bit, letter in enumerate(_TCP_FLAG_LETTERS) if flags >> bit & 1)


def iso_time(ts):
    from datetime import datetime, timezone
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def flow_row(row):
    """A flows query row as export values (column order of FLOW_FIELDS)."""
    out = dict(row)
    out["proto"] = proto_text(row["proto"])
    out["first_seen"] = iso_time(row["first_seen"])
    out["last_seen"] = iso_time(row["last_seen"])
    out["tcp_flags"] = tcp_flags_text(row.get("tcp_flags") or 0)
    for side in ("orig", "resp"):
        out.setdefault(f"{side}_pid", None)
        out.setdefault(f"{side}_process", None)
    for label in ("app", "app_source", "server_name", "service"):
        out[label] = row.get(label) or ""
    out["class"] = row.get("traffic_class") or ""
    return out


def safe_cell(value):
    """CSV cell text that no spreadsheet evaluates as a formula. A carriage return inside a cell
    becomes a line feed: the csv module quotes cells holding the line terminator ("\n") but not
    a lone CR, which readers take for the end of the row (a forged row)."""
    if value is None:
        return ""
    if isinstance(value, str):
        if value.startswith(_FORMULA_START):
            value = "'" + value
        if "\r" in value:
            value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value


def render_csv_chunks(table, rows, fields=None, rows_per_chunk=1000):
    """The CSV text of `render(table, rows, "csv", fields)` in pieces, for rows from an iterator."""
    names = [name for name, _ in (fields or TABLES[table])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for n, r in enumerate(rows, 1):
        writer.writerow([safe_cell(r.get(name)) for name in names])
        if n % rows_per_chunk == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def render(table, rows, fmt, fields=None):
    """Text of `rows` (dicts) as CSV (header + rows, columns of TABLES[table] or `fields`) or a
    JSON array. Extra keys in the rows are not exported."""
    names = [name for name, _ in (fields or TABLES[table])]
    if fmt == "json":
        return json.dumps([{n: r.get(n) for n in names} for r in rows], indent=1) + "\n"
    return "".join(render_csv_chunks(table, rows, fields))
