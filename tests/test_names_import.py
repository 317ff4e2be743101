"""Names and applications end to end: a capture with real handshakes (Python's ssl ClientHello,
aioquic's QUIC Initials, an HTTP request, DNS answers, an mDNS announcement, a DHCP request) is
imported with `run.py import`; the flows and hosts exports carry app, app_source, server_name,
service, class and the hosts' names; the API filters by them."""
import csv
import io
import shutil
import ssl

import pytest
from scapy.all import BOOTP, DHCP, DNS, DNSQR, DNSRR, IP, TCP, UDP, Ether, wrpcap

from common import cli

CLIENT, RESOLVER, VIDEO, WEB, QUICS = "10.1.0.2", "10.1.0.53", "192.0.2.10", "192.0.2.80", "192.0.2.20"
T0 = 1_700_000_040.0
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def client_hello(server_name):
    """The ClientHello record Python's ssl module sends for `server_name` (no network)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def quic_initials(server_name):
    """The first datagrams an aioquic client sends (QUIC v1 Initials carrying its ClientHello)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    connection = QuicConnection(configuration=QuicConfiguration(is_client=True, server_name=server_name,
                                                                alpn_protocols=["h3"]))
    connection.connect((QUICS, 443), now=0.0)
    return [data for data, _ in connection.datagrams_to_send(now=0.0)]


def tcp_session(client, server, sport, dport, request, t):
    """Handshake, one request, its ACK: the frames of a short TCP exchange."""
    c, s = IP(src=client, dst=server), IP(src=server, dst=client)
    return [(t, E / c / TCP(sport=sport, dport=dport, flags="S", seq=100)),
            (t + 0.01, E / s / TCP(sport=dport, dport=sport, flags="SA", seq=500, ack=101)),
            (t + 0.02, E / c / TCP(sport=sport, dport=dport, flags="A", seq=101, ack=501)),
            (t + 0.03, E / c / TCP(sport=sport, dport=dport, flags="PA", seq=101, ack=501) / request),
            (t + 0.04, E / s / TCP(sport=dport, dport=sport, flags="A", seq=501, ack=101 + len(request)))]


def build_capture(path):
    frames = []
    query = DNS(id=7, rd=1, qd=DNSQR(qname="www.youtube.com", qtype="A"))
    answer = DNS(id=7, qr=1, aa=1, qd=DNSQR(qname="www.youtube.com", qtype="A"),
                 an=[DNSRR(rrname="www.youtube.com", type="CNAME", rdata="youtube-ui.l.google.com"),
                     DNSRR(rrname="youtube-ui.l.google.com", type="A", rdata=VIDEO)])
    frames += [(T0, E / IP(src=CLIENT, dst=RESOLVER) / UDP(sport=40000, dport=53) / query),
               (T0 + 0.01, E / IP(src=RESOLVER, dst=CLIENT) / UDP(sport=53, dport=40000) / answer)]
    frames += tcp_session(CLIENT, VIDEO, 40001, 443, client_hello("www.youtube.com"), T0 + 1)
    frames += tcp_session(CLIENT, WEB, 40002, 80, b"GET /x HTTP/1.1\r\nHost: Intranet.Example:8080\r\n\r\n", T0 + 2)
    frames += [(T0 + 3 + i / 100, E / IP(src=CLIENT, dst=QUICS) / UDP(sport=40003, dport=443) / d)
               for i, d in enumerate(quic_initials("rr3.googlevideo.com"))]
    mdns = DNS(qr=1, aa=1, an=DNSRR(rrname="printer.local", type="A", rdata="10.1.0.9", ttl=120))
    frames.append((T0 + 4, E / IP(src="10.1.0.9", dst="224.0.0.251") / UDP(sport=5353, dport=5353) / mdns))
    dhcp = (E / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
            / BOOTP(chaddr=bytes.fromhex("020000000007"), xid=1)
            / DHCP(options=[("message-type", "request"), ("requested_addr", "10.1.0.7"),
                            ("hostname", b"alice-laptop"), "end"]))
    frames.append((T0 + 5, dhcp))
    frames.append((T0 + 6, E / IP(src=CLIENT, dst="198.51.100.1") / TCP(sport=40004, dport=22, flags="S")))
    packets = []
    for t, frame in frames:
        frame.time = t
        packets.append(frame)
    wrpcap(str(path), packets)


def export(capsys, table, db):
    code, out, err = cli(capsys, "export", table, "--db", db)
    assert code == 0, err
    return list(csv.DictReader(io.StringIO(out)))


@pytest.fixture
def imported(tmp_path, capsys, clean_env):
    pcap, db = tmp_path / "names.pcap", tmp_path / "names.db"
    build_capture(pcap)
    code, out, err = cli(capsys, "import", pcap, "--db", db)
    assert code == 0, err
    return db


def test_flows_carry_app_server_name_service_and_class(imported, capsys):
    flows = {(r["resp_h"], r["resp_p"]): r for r in export(capsys, "flows", imported)}
    labels = {k: (r["app"], r["app_source"], r["server_name"], r["service"], r["class"]) for k, r in flows.items()}
    assert labels[(RESOLVER, "53")] == ("dns", "dpi", "www.youtube.com", "YouTube", "system and background")
    assert labels[(VIDEO, "443")] == ("tls", "dpi", "www.youtube.com", "YouTube", "video streaming")
    assert labels[(WEB, "80")] == ("http", "dpi", "intranet.example", "", "web browsing")
    assert labels[(QUICS, "443")] == ("quic", "dpi", "rr3.googlevideo.com", "YouTube", "video streaming")
    assert labels[("224.0.0.251", "5353")][:2] == ("mdns", "dpi")
    assert labels[("255.255.255.255", "67")][:2] == ("dhcp", "dpi")
    # a bare SYN carries nothing: the port's guess, marked as one
    assert labels[("198.51.100.1", "22")][:3] == ("ssh", "port", "")


def test_hosts_carry_the_names_seen_on_the_wire(imported, capsys):
    hosts = {r["ip"]: r for r in export(capsys, "hosts", imported)}
    assert hosts[VIDEO]["name"] == "www.youtube.com"          # the name asked, through the CNAME
    assert hosts["10.1.0.9"]["name"] == "printer.local"       # mDNS announcement
    assert hosts[CLIENT]["name"] == ""
    assert list(hosts[VIDEO])[-3:] == ["name", "mac", "vendor"]


def test_api_filters_flows_by_app_class_and_name_and_sums_apps(imported):
    from settings import Settings
    from web.app import create_app
    client = create_app(Settings(db=str(imported)), {"CLOCK": lambda: T0 + 60, "TOKEN": None}).test_client()
    rows = client.get("/api/flows?since=0&app=quic").get_json()["rows"]
    assert [(r["resp_h"], r["server_name"]) for r in rows] == [(QUICS, "rr3.googlevideo.com")]
    rows = client.get("/api/flows?since=0&class=video%20streaming").get_json()["rows"]
    assert sorted(r["resp_h"] for r in rows) == [VIDEO, QUICS]
    rows = client.get("/api/flows?since=0&name=youtube").get_json()["rows"]      # SNI, DNS query or host name
    assert sorted(r["resp_h"] for r in rows) == [RESOLVER, VIDEO]
    apps = client.get("/api/apps?since=0&by=class").get_json()
    assert [r["class"] for r in apps["rows"]] == ["video streaming", "system and background", "web browsing", "other"]
    assert apps["rows"][-1]["bytes"] == 54                    # the bare SYN: 14 + 20 + 20
    assert sum(r["bytes"] for r in apps["rows"]) == apps["total_bytes"] > 0
    by_class = {r["class"]: r["bytes"] for r in apps["rows"]}
    flows = client.get("/api/flows?since=0&class=video%20streaming&limit=1000").get_json()["rows"]
    assert by_class["video streaming"] == sum(r["orig_bytes"] + r["resp_bytes"] for r in flows)


def test_hostile_dns_is_counted_unreadable_and_the_rest_imports(tmp_path, capsys, clean_env):
    # a response whose question name points at itself (a compression loop), and one with a label of
    # control bytes: the loop is counted by reason, the other name is kept as escaped text
    header = bytes.fromhex("0001 8180 0001 0000 0000 0000")
    loop = header + bytes.fromhex("c00c 0001 0001")
    odd = DNS(id=2, qr=1, qd=DNSQR(qname=b"a\x1b[31m<b>.example"))
    frames = [E / IP(src=RESOLVER, dst=CLIENT) / UDP(sport=53, dport=41000) / loop,
              E / IP(src=RESOLVER, dst=CLIENT) / UDP(sport=53, dport=41001) / odd]
    for i, frame in enumerate(frames):
        frame.time = T0 + i
    wrpcap(str(tmp_path / "hostile.pcap"), frames)
    code, out, err = cli(capsys, "import", tmp_path / "hostile.pcap", "--db", tmp_path / "h.db")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].endswith("(2 IP, 0 non-IP, 0 undecodable; payload unreadable: dns_compression_loop 1)")
    flows = {r["resp_p"]: r for r in export(capsys, "flows", tmp_path / "h.db")}
    assert {r["app"] for r in flows.values()} == {"dns"}
    assert (flows["41000"]["server_name"], flows["41001"]["server_name"]) == ("", "a\\x1b[31m<b>.example")


def test_late_app_names_fill_what_the_port_guessed_and_never_overwrite_a_reading(imported, capsys):
    from storage.db import connect
    from storage.store import RollupStore
    flows = {(r["resp_h"], r["resp_p"]): r for r in export(capsys, "flows", imported)}
    ssh, tls = flows[("198.51.100.1", "22")], flows[(VIDEO, "443")]

    def natural(r):
        from datetime import datetime
        first = datetime.fromisoformat(r["first_seen"].replace("Z", "+00:00")).timestamp()
        return (6, r["orig_h"], int(r["orig_p"]), r["resp_h"], int(r["resp_p"]), first)

    import socket
    store = RollupStore(connect(str(imported)), socket.gethostname())    # the import's agent: this host
    store.relabel([(*natural(ssh), "sftp", "file transfer and downloads"),
                   (*natural(tls), "http", "web browsing")])
    store.con.close()
    after = {(r["resp_h"], r["resp_p"]): r for r in export(capsys, "flows", imported)}
    got = after[("198.51.100.1", "22")]
    assert (got["app"], got["app_source"], got["class"]) == ("sftp", "dpi", "file transfer and downloads")
    assert (after[(VIDEO, "443")]["app"], after[(VIDEO, "443")]["class"]) == ("tls", "video streaming")


def test_the_import_says_how_many_hosts_it_named(tmp_path, capsys, clean_env):
    build_capture(tmp_path / "n.pcap")
    code, out, _ = cli(capsys, "import", tmp_path / "n.pcap", "--db", tmp_path / "n.db")
    assert code == 0 and "; 3 hosts named" in out        # the video server, the printer, alice-laptop


@pytest.mark.system
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (make test installs it as root)")
def test_wireshark_names_what_our_parsers_leave_to_a_port_guess(tmp_path, capsys, clean_env):
    """SNMP is not among NetTally's own parsers: its port guesses it; tshark, beside the import,
    reads it and the flow record says so (app_source dpi)."""
    from scapy.layers.snmp import SNMP, SNMPget, SNMPvarbind
    from scapy.asn1.asn1 import ASN1_OID
    get = SNMP(community="public", PDU=SNMPget(varbindlist=[SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"))]))
    frames = [E / IP(src=CLIENT, dst="10.1.0.161") / UDP(sport=41161, dport=161) / get,
              E / IP(src="10.1.0.161", dst=CLIENT) / UDP(sport=161, dport=41161) / get]
    for i, frame in enumerate(frames):
        frame.time = T0 + i
    wrpcap(str(tmp_path / "snmp.pcap"), frames)
    code, _, err = cli(capsys, "import", tmp_path / "snmp.pcap", "--db", tmp_path / "s.db")
    assert (code, err) == (0, "")
    [flow] = export(capsys, "flows", tmp_path / "s.db")
    assert (flow["app"], flow["app_source"]) == ("snmp", "dpi")


def test_names_age_with_the_flows_and_a_reused_flow_id_inherits_nothing(imported):
    from settings import Settings
    from storage.db import connect
    from storage.retention import maintain
    from storage.tiers import RetentionPolicy
    con = connect(str(imported))
    assert con.execute("SELECT count(*) FROM flow_names").fetchone()[0] > 0
    policy = RetentionPolicy.from_settings(Settings())
    while not maintain(con, policy, T0 + 400 * 86400):      # past every retention
        pass
    assert [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("flows", "flow_names", "host_names", "host_macs")] == [0, 0, 0, 0]
    con.close()


def test_a_hosts_apps_add_up_to_its_bytes_at_every_tier(imported, capsys):
    from settings import Settings
    from storage.apps import app_usage
    from storage.db import connect
    from storage.retention import maintain
    from storage.tiers import RetentionPolicy
    hosts = {r["ip"]: r for r in export(capsys, "hosts", imported)}
    con = connect(str(imported))
    policy = RetentionPolicy.from_settings(Settings())
    for now in (T0 + 600, T0 + 5 * 86400):          # minutes, then (minutes pruned) hours
        while not maintain(con, policy, now):
            pass
        for ip in (CLIENT, VIDEO):
            apps = app_usage(con, None, None, now, by="all", host=ip, policy=policy)
            h = hosts[ip]
            assert apps["total_bytes"] == int(h["tx_bytes"]) + int(h["rx_bytes"])
            assert sum(r["packets"] for r in apps["rows"]) == int(h["tx_packets"]) + int(h["rx_packets"])
    video = app_usage(con, None, None, T0 + 5 * 86400, by="service", host=VIDEO, policy=policy)["rows"]
    assert [r["service"] for r in video] == ["YouTube"]
    con.close()
