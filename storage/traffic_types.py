"""Traffic by type: bytes per protocol and service port (the dashboard's pie). Conventions as in
storage/reads.py."""
from records import PORTED_PROTOS, proto_text
from storage import tiers
from storage.reads import source, span

# Service ports the traffic-type pie names; everything else is "<proto> other".
SERVICES = {(6, 20): "ftp-data", (6, 21): "ftp", (6, 22): "ssh", (6, 23): "telnet", (6, 25): "smtp",
            (17, 53): "dns", (6, 53): "dns", (17, 67): "dhcp", (17, 68): "dhcp", (6, 80): "http",
            (17, 123): "ntp", (6, 110): "pop3", (6, 143): "imap", (17, 137): "netbios",
            (17, 161): "snmp", (6, 389): "ldap", (6, 443): "https", (17, 443): "quic",
            (6, 445): "smb", (17, 514): "syslog", (6, 587): "smtp", (6, 853): "dns-over-tls",
            (6, 993): "imaps", (6, 995): "pop3s", (17, 1900): "ssdp", (6, 3306): "mysql",
            (6, 3389): "rdp", (6, 5432): "postgresql", (17, 5353): "mdns", (6, 6379): "redis",
            (6, 8080): "http-alt", (6, 8443): "https-alt", (17, 51820): "wireguard"}


def traffic_by_class(con, since, until, now, top=8, *, policy):
    """Bytes by protocol and service port in the range, the `top` largest classes named and the
    rest summed as 'other'. The service port is the responder's, unless only the originator's
    port is a well-known one (< 1024)."""
    tier, lo, hi = span(policy, "flow", since, until, now)
    sub, args = source(con, "flow", tier, lo, hi, "flow_id, orig_bytes, resp_bytes")
    groups = con.execute(f"""
        SELECT f.proto,
               CASE WHEN f.resp_p >= 1024 AND f.orig_p BETWEEN 1 AND 1023 THEN f.orig_p ELSE f.resp_p END AS port,
               sum(m.orig_bytes + m.resp_bytes) FROM ({sub}) m JOIN flows f ON f.id = m.flow_id
        GROUP BY f.proto, port""", args).fetchall()
    classes = {}
    for proto, port, nbytes in groups:
        name = proto_text(proto)
        service = SERVICES.get((proto, port))
        label = f"{service} ({name}/{port})" if service else f"{name} other" if proto in PORTED_PROTOS else name
        classes[label] = classes.get(label, 0) + nbytes
    ordered = sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))
    out = [{"class": label, "bytes": n} for label, n in ordered[:top]]
    rest = sum(n for _, n in ordered[top:])
    if rest:
        out.append({"class": "other", "bytes": rest})
    return {"resolution": tiers.SIZE[tier], "rows": out}
