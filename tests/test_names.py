"""names/: service rules, class rules, OUI vendors and the passive name map; pure, no root."""
import gc
import ipaddress
import os
import random
import time
import tomllib
import tracemalloc

import pytest

from names import classes, services, vendors
from names.classes import CLASSES, ClassRules
from names.passive import NameMap
from names.services import ServiceRules
from names.vendors import Vendors
from records import wire_text

HOSTILE = [
    "x" * 100_000,
    "a." * 5_000 + "example",
    "." * 1000,
    "=cmd()",
    "=HYPERLINK(\"http://evil\")",
    wire_text(b"\x00\x01\xff<script>alert(1)</script>\\.youtube.com\x7f"),
    wire_text(bytes(range(256)) * 4),
    "\u202e\u0000\udcff",
    "",
]
HOSTILE_IDS = ["long", "dots", "only-dots", "formula", "hyperlink", "escaped-script", "escaped-bytes", "surrogates",
               "empty"]


@pytest.fixture(scope="module")
def rules():
    return ServiceRules.load()


@pytest.fixture(scope="module")
def class_rules():
    return ClassRules.load()


# ---- services -----------------------------------------------------------------------------------

def test_domains_match_at_label_boundaries(rules):
    assert rules.service("youtube.com", None) == "YouTube"
    assert rules.service("www.youtube.com", None) == "YouTube"
    assert rules.service("a.b.c.youtube.com", None) == "YouTube"
    assert rules.service("WWW.YouTube.COM.", None) == "YouTube"           # case, absolute form
    assert rules.service("www.youtube.com:443", None) == "YouTube"        # a Host header's port
    assert rules.service("notyoutube.com", None) == ""
    assert rules.service("youtube.com.evil.example", None) == ""
    assert rules.service("youtube", None) == ""
    assert rules.service("com", None) == ""


def test_the_longest_suffix_wins(rules):
    assert rules.service("youtubei.googleapis.com", None) == "YouTube"
    assert rules.service("maps.googleapis.com", None) == "Google"
    assert rules.service("steamcdn-a.akamaihd.net", None) == "Steam"
    assert rules.service("a248.e.akamaihd.net", None) == "Akamai"
    assert rules.service("fe2.update.microsoft.com", None) == "Windows Update"
    assert rules.service("tlu.dl.delivery.mp.microsoft.com", None) == "Windows Update"
    assert rules.service("teams.microsoft.com", None) == "Microsoft Teams"
    assert rules.service("www.microsoft.com", None) == "Microsoft"
    assert rules.service("teams.live.com", None) == "Microsoft Teams"
    assert rules.service("onedrive.live.com", None) == "Microsoft 365"
    assert rules.service("login.live.com", None) == "Microsoft"


def test_the_name_decides_before_the_address(rules):
    assert rules.service("www.youtube.com", "1.1.1.1") == "YouTube"
    assert rules.service("www.example.org", "1.1.1.1") == "Cloudflare"      # no name match: address
    assert rules.service(None, "8.8.8.8") == "Google"
    assert rules.service("", "2001:4860:4860::8888") == "Google"
    assert rules.service(None, "17.253.144.10") == "Apple"
    assert rules.service(None, "52.113.0.1") == "Microsoft Teams"
    assert rules.service(None, "2603:1063::1") == "Microsoft Teams"
    assert rules.service(None, "170.114.10.1") == "Zoom"
    assert rules.service(None, "192.0.2.1") == ""
    assert rules.service(None, None) == ""


def test_the_repository_tables_cover_the_services_asked_for(rules, class_rules):
    for name in ("YouTube", "Netflix", "Zoom", "Microsoft Teams", "WhatsApp", "Google", "Microsoft 365", "Steam",
                 "Windows Update", "iCloud", "Apple", "Amazon Prime Video", "Spotify", "Facebook", "Instagram",
                 "TikTok", "Discord", "Twitch", "Dropbox", "GitHub", "Cloudflare", "Akamai", "Slack", "Webex"):
        domains, networks = rules.services[name]
        assert domains or networks, name
    named_by_class_rules = set().union(*(r.services for r in class_rules.rules))
    assert named_by_class_rules - set(rules.services) == set()               # no typo in classes.toml


def _user_file(tmp_path, text):
    path = tmp_path / "services.toml"
    path.write_text(text)
    return str(path)


def test_cidr_most_specific_wins_v4_and_v6(tmp_path):
    path = _user_file(tmp_path, """
[service."Outer"]
networks = ["10.0.0.0/8", "2001:db8::/32"]
[service."Inner"]
networks = ["10.1.0.0/16", "2001:db8:1::/48"]
[service."Host"]
networks = ["10.1.2.3/32", "2001:db8:1::3/128"]
[service."Beside"]
networks = ["11.0.0.0/8"]
""")
    r = ServiceRules.load(path)
    expect = {
        "9.255.255.255": "", "10.0.0.0": "Outer", "10.0.255.255": "Outer", "10.1.0.0": "Inner",
        "10.1.2.2": "Inner", "10.1.2.3": "Host", "10.1.2.4": "Inner", "10.1.255.255": "Inner",
        "10.2.0.0": "Outer", "10.255.255.255": "Outer", "11.0.0.0": "Beside", "11.255.255.255": "Beside",
        "12.0.0.0": "", "0.0.0.0": "", "255.255.255.255": "", "::ffff:10.1.2.3": "Host",
        "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff": "", "2001:db8::": "Outer", "2001:db8:1::": "Inner",
        "2001:db8:1::3": "Host", "2001:db8:1::4": "Inner", "2001:db8:1:ffff:ffff:ffff:ffff:ffff": "Inner",
        "2001:db8:2::": "Outer", "2001:db9::": "", "::": "", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": "",
    }
    assert {a: r.service(None, a) for a in expect} == expect


def test_flattened_ranges_agree_with_a_brute_force_search():
    rnd = random.Random(9)
    nets = []
    for i in range(300):
        prefix = rnd.choice((8, 12, 16, 20, 24, 28, 32))
        base = rnd.choice((0x0A000000, 0x0A010000, 0xC0A80000, rnd.getrandbits(32)))
        net = ipaddress.ip_network((base + rnd.getrandbits(12) * (1 << max(0, 32 - prefix - 12)), prefix), strict=False)
        nets.append((net, f"s{i}"))
    unique = {}
    for net, name in nets:
        unique[net] = name                                   # the later of identical blocks wins
    r = ServiceRules({name: ((), (net,)) for net, name in unique.items()})
    probes = [int(net.network_address) + d for net, _ in nets for d in (-1, 0, 1)]
    probes += [int(net.broadcast_address) + d for net, _ in nets for d in (-1, 0, 1)]
    probes += [rnd.getrandbits(32) for _ in range(2000)]
    for value in probes:
        if not 0 <= value < 1 << 32:
            continue
        address = ipaddress.ip_address(value)
        covering = [(net.prefixlen, name) for net, name in unique.items() if address in net]
        assert r.service(None, str(address)) == (max(covering)[1] if covering else ""), address


def test_a_user_file_extends_and_overrides_by_service_name(tmp_path):
    path = _user_file(tmp_path, """
[service."Intranet"]
domains = ["corp.example"]
networks = ["192.168.10.0/24", "fd00:10::/32"]

[service."Google"]               # replaces the repository's entry: only google.com is Google now
domains = ["google.com"]

[service."Video portal"]         # a domain the repository gives YouTube: the user's file wins
domains = ["googlevideo.com"]
""")
    r = ServiceRules.load(path)
    assert r.service("wiki.corp.example", None) == "Intranet"
    assert r.service(None, "192.168.10.7") == "Intranet"
    assert r.service(None, "fd00:10::7") == "Intranet"
    assert r.service("mail.google.com", None) == "Google"
    assert r.service("www.gstatic.com", None) == ""
    assert r.service(None, "8.8.8.8") == ""                   # the replaced entry's networks are gone too
    assert r.service("r1---sn-a.googlevideo.com", None) == "Video portal"
    assert r.service("www.youtube.com", None) == "YouTube"   # the rest of YouTube's entry stays
    assert r.services["Google"] == (("google.com",), ())


@pytest.mark.parametrize("text, says", [
    ('[service."X"\ndomains = []', "service table"),
    ('[services."X"]\ndomains = ["a.example"]', "unknown key 'services'"),
    ('[service."X"]\ndomain = ["a.example"]', "unknown key 'domain'"),
    ('[service."X"]\ndomains = "a.example"', "domains must be a list of strings"),
    ('[service."X"]\ndomains = ["*.example.com"]', "is not a domain name"),
    ('[service."X"]\ndomains = ["bad domain.com"]', "is not a domain name"),
    ('[service."X"]\nnetworks = ["10.0.0.1/8"]', "has host bits set"),
    ('[service."X"]\nnetworks = ["10.0.0.0/33"]', "10.0.0.0/33"),
    ('[service."X"]\ndomains = ["a.example"]\n[service."Y"]\ndomains = ["A.example"]', "listed under both"),
    ('service = 3', "must be tables"),
])
def test_a_bad_user_service_file_is_one_line(tmp_path, text, says):
    path = _user_file(tmp_path, text)
    with pytest.raises(ValueError) as e:
        ServiceRules.load(path)
    message = str(e.value)
    assert "\n" not in message and path in message and says in message


def test_a_missing_user_service_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^service table .*nope\.toml: .*No such file") as e:
        ServiceRules.load(str(tmp_path / "nope.toml"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_server_names_and_addresses_never_raise(rules, text):
    assert rules.service(text, text) in ("", *rules.services)
    assert rules.service(text, None) == ("YouTube" if text.endswith(".youtube.com") else "")


def test_a_long_hostile_name_still_matches_its_real_suffix(rules):
    assert rules.service("a." * 5_000 + "youtube.com", None) == "YouTube"
    assert rules.service(wire_text(b"\x00\xff.youtube.com"), None) == "YouTube"
    assert rules.service("=cmd().youtube.com", None) == "YouTube"


# ---- classes ------------------------------------------------------------------------------------

UDP, TCP = 17, 6
# one example per rule of classes.toml: (rule, app, service, proto, server port, class)
EXAMPLES = [
    ("background-apps", "dns", "YouTube", UDP, 53, "system and background"),
    ("background-apps", "mdns", "", UDP, 5353, "system and background"),
    ("background-apps", "ntp", "", UDP, 123, "system and background"),
    ("background-apps", "dhcp", "", UDP, 67, "system and background"),
    ("background-apps", "ssdp", "", UDP, 1900, "system and background"),
    ("background-apps", "llmnr", "", UDP, 5355, "system and background"),
    ("background-apps", "nbns", "", UDP, 137, "system and background"),
    ("control-messages", "", "", 1, 0, "system and background"),
    ("control-messages", "", "Google", 58, 0, "system and background"),
    ("control-messages", "", "", 2, 0, "system and background"),
    ("call-apps", "stun", "Google", UDP, 19302, "voice and video calls"),
    ("call-apps", "rtp", "", UDP, 40000, "voice and video calls"),
    ("call-apps", "sip", "", UDP, 5060, "voice and video calls"),
    ("call-services", "tls", "Zoom", TCP, 443, "voice and video calls"),
    ("call-services", "quic", "Microsoft Teams", UDP, 443, "voice and video calls"),
    ("call-services", "tls", "WhatsApp", TCP, 443, "voice and video calls"),
    ("call-services", "", "Webex", UDP, 9000, "voice and video calls"),
    ("call-services", "tls", "Discord", TCP, 443, "voice and video calls"),
    ("call-ports", "", "", UDP, 3478, "voice and video calls"),
    ("call-ports", "", "", UDP, 3481, "voice and video calls"),
    ("call-ports", "", "", UDP, 8801, "voice and video calls"),
    ("call-ports", "", "", UDP, 9987, "voice and video calls"),
    ("call-ports", "", "", TCP, 64738, "voice and video calls"),
    ("video-services", "quic", "YouTube", UDP, 443, "video streaming"),
    ("video-services", "tls", "Netflix", TCP, 443, "video streaming"),
    ("video-services", "tls", "Twitch", TCP, 443, "video streaming"),
    ("video-services", "tls", "Amazon Prime Video", TCP, 443, "video streaming"),
    ("video-services", "tls", "TikTok", TCP, 443, "video streaming"),
    ("music-services", "tls", "Spotify", TCP, 443, "video streaming"),
    ("video-apps", "rtsp", "", TCP, 554, "video streaming"),
    ("steam-downloads", "http", "Steam", TCP, 80, "file transfer and downloads"),
    ("steam-downloads", "tls", "Steam", TCP, 443, "file transfer and downloads"),
    ("steam-games", "", "Steam", UDP, 27015, "gaming"),
    ("download-services", "tls", "Windows Update", TCP, 443, "file transfer and downloads"),
    ("download-services", "http", "Windows Update", TCP, 80, "file transfer and downloads"),
    ("download-services", "tls", "Dropbox", TCP, 443, "file transfer and downloads"),
    ("transfer-apps", "ftp", "", TCP, 21, "file transfer and downloads"),
    ("transfer-apps", "bittorrent", "", TCP, 51413, "file transfer and downloads"),
    ("transfer-apps", "smb2", "", TCP, 445, "file transfer and downloads"),
    ("transfer-apps", "nfs", "", TCP, 2049, "file transfer and downloads"),
    ("game-ports", "", "", UDP, 27016, "gaming"),
    ("game-ports", "", "", UDP, 3074, "gaming"),
    ("game-ports", "", "", TCP, 25565, "gaming"),
    ("game-ports", "", "", UDP, 19132, "gaming"),
    ("background-services", "tls", "iCloud", TCP, 443, "system and background"),
    ("web-apps", "tls", "Google", TCP, 443, "web browsing"),
    ("web-apps", "quic", "", UDP, 443, "web browsing"),
    ("web-apps", "http", "", TCP, 8000, "web browsing"),
    ("web-ports", "", "", TCP, 443, "web browsing"),
    ("web-ports", "", "GitHub", TCP, 80, "web browsing"),
]


@pytest.mark.parametrize("rule, app, service, proto, port, expected", EXAMPLES)
def test_every_class_rule_example(class_rules, rule, app, service, proto, port, expected):
    assert class_rules.traffic_class(app, service, proto, port) == expected
    assert class_rules.matching_rule(app, service, proto, port).name == rule


def test_every_rule_of_the_table_has_an_example(class_rules):
    assert {r.name for r in class_rules.rules} == {e[0] for e in EXAMPLES}


@pytest.mark.parametrize("app, service, proto, port", [
    ("ssh", "", TCP, 22), ("", "", UDP, 51234), ("", "", 47, 0), ("rdp", "", TCP, 3389), ("", "", UDP, 3482),
    ("", "", UDP, 8811), ("", "", TCP, 3478), ("", "", UDP, 65536), ("", "", UDP, -1), ("", "", UDP, None),
    (None, None, None, None), ("=cmd()", "=cmd()", TCP, 22), ("x" * 100_000, "\x00", 300, 1 << 70),
])
def test_what_no_rule_matches_is_other(class_rules, app, service, proto, port):
    assert class_rules.traffic_class(app, service, proto, port) == "other"
    assert class_rules.matching_rule(app, service, proto, port) is None


def test_classes_are_the_seven_asked_for(class_rules):
    assert CLASSES == ("video streaming", "voice and video calls", "file transfer and downloads", "web browsing",
                       "gaming", "system and background", "other")
    assert {r.traffic_class for r in class_rules.rules} == set(CLASSES) - {"other"}


def test_a_user_file_replaces_rules_by_name_and_puts_new_ones_first(tmp_path):
    path = tmp_path / "classes.toml"
    path.write_text("""
[[rule]]
name = "backups"
service = ["Intranet"]
ports = ["tcp/873", "tcp/22"]
class = "file transfer and downloads"

[[rule]]
name = "steam-games"           # Steam outside its download ports is only play on Valve's game ports
service = ["Steam"]
ports = ["udp/27000-27100"]
class = "gaming"

[[rule]]
name = "ssh"
app = ["ssh"]
class = "other"
""")
    table = ClassRules.load()
    r = ClassRules.load(str(path))
    names = [rule.name for rule in r.rules]
    assert names[:2] == ["backups", "ssh"]
    assert names[2:] == [rule.name for rule in table.rules]
    assert names.index("steam-games") == 2 + [rule.name for rule in table.rules].index("steam-games")
    assert r.traffic_class("ssh", "Intranet", TCP, 22) == "file transfer and downloads"
    assert r.traffic_class("", "Steam", UDP, 27015) == "gaming"
    assert r.traffic_class("", "Steam", TCP, 27036) == "other"       # was gaming by the table's rule
    assert table.traffic_class("", "Steam", TCP, 27036) == "gaming"


@pytest.mark.parametrize("text, says", [
    ('[[rule]]\nname = "x"\napp = ["a"]\nclass = "music"', "class 'music' is not one of"),
    ('[[rule]]\nname = "x"\nclass = "gaming"', "no condition"),
    ('[[rule]]\nname = "x"\nports = ["tcp/99999"]\nclass = "gaming"', "ports are 0-65535"),
    ('[[rule]]\nname = "x"\nports = ["tcp/20-10"]\nclass = "gaming"', "first <= last"),
    ('[[rule]]\nname = "x"\nports = ["foo/1"]\nclass = "gaming"', "foo"),
    ('[[rule]]\nname = "x"\nports = ["tcp:22"]\nclass = "gaming"', "expected \"proto/port\""),
    ('[[rule]]\nname = "x"\napp = "ssh"\nclass = "other"', "app must be a list"),
    ('[[rule]]\nname = "x"\napp = ["ssh"]\nclass = "other"\ncolour = 1', "unknown key 'colour'"),
    ('[[rule]]\napp = ["ssh"]\nclass = "other"', "rule name None"),
    ('[[rule]]\nname = "x"\napp = ["a"]\nclass = "other"\n[[rule]]\nname = "x"\napp = ["b"]\nclass = "other"',
     "appears twice"),
    ('[rule]\nname = "x"', "rules are [[rule]] tables"),
    ('[[rules]]\nname = "x"', "unknown key 'rules'"),
    ('[[rule]\nname = "x"', "class rules"),
])
def test_a_bad_user_class_file_is_one_line(tmp_path, text, says):
    path = tmp_path / "classes.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        ClassRules.load(str(path))
    message = str(e.value)
    assert "\n" not in message and str(path) in message and says in message


def test_the_repository_tables_parse_as_documented():
    with open(services.TABLE, "rb") as f:
        assert set(tomllib.load(f)) == {"service"}
    with open(classes.TABLE, "rb") as f:
        assert set(tomllib.load(f)) == {"rule"}


# ---- vendors ------------------------------------------------------------------------------------

# registered in every source, the fallback's sample included
COMMON = {"00:03:93:12:34:56": "Apple", "00:50:56:c0:00:08": "VMware", "b8:27:eb:01:02:03": "Raspberry Pi Foundation",
          "00:00:0c:07:ac:01": "Cisco Systems", "00:09:5b:aa:bb:cc": "Netgear"}
# MA-M (/28) and MA-S (/36) blocks inside one MA-L, longest prefix first
SUB_BLOCKS = {"00:55:da:00:00:01": "Shinko Technos", "00:55:da:1f:ff:ff": "KoolPOS",
              "00:1b:c5:00:00:01": "Converging Systems", "00:1b:c5:00:10:01": "OpenRB.com, Direct SIA"}
NOT_VENDORS = ["02:00:00:00:00:01", "52:54:00:12:34:56", "3e:22:fb:00:00:01", "02:03:93:12:34:56",
               "ac:de:48:00:11:22", "70:b3:d5:00:00:00", "ff:ff:ff:ff:ff:ff", "", "00:03:93", "00:03:93:12:34:56:78",
               "zz:zz:zz:zz:zz:zz", "+0:03:93:12:34:56", " 00:03:93:12:34:5", "=cmd()", "x" * 100_000, None, 42]


def _check(table, expect):
    assert {mac: table.vendor(mac) for mac in expect} == expect


@pytest.mark.skipif(not os.path.exists(vendors.WIRESHARK_MANUF),
                    reason=f"{vendors.WIRESHARK_MANUF} is absent (Debian: apt-get install wireshark-common)")
def test_vendors_from_wiresharks_manuf():
    table = Vendors.load()
    assert table.source == f"wireshark:{vendors.WIRESHARK_MANUF}"
    assert table.sizes[24] > 30_000 and table.sizes[28] > 4_000 and table.sizes[36] > 9_000
    _check(table, {**COMMON, **SUB_BLOCKS})


def test_vendors_from_scapys_copy():
    table = Vendors.load(manuf_path="/nonexistent/manuf")
    assert table.source == "scapy:scapy.libs.manuf"
    assert table.sizes[24] > 30_000 and table.sizes[28] > 4_000 and table.sizes[36] > 9_000
    _check(table, {**COMMON, **SUB_BLOCKS, "dc:a6:32:00:00:01": "Raspberry Pi Trading", "3c:22:fb:00:00:01": "Apple"})


def test_vendors_from_the_fallback(monkeypatch):
    monkeypatch.setattr(vendors, "from_scapy", lambda: None)
    table = Vendors.load(manuf_path="/nonexistent/manuf")
    assert table.source == "fallback:names/oui_fallback.txt"
    assert 300 <= len(table) <= 500 and set(table.sizes) == {24}
    _check(table, {**COMMON, "dc:a6:32:00:00:01": "Raspberry Pi Trading", "08:00:27:00:00:01": "PCS Computer Systems"})


def test_mac_spellings_and_addresses_without_a_vendor():
    table = Vendors.load()
    for mac in ("00:03:93:12:34:56", "00-03-93-12-34-56", "00:03:93:AB:CD:EF", "0003.9312.3456", "000393123456"):
        assert table.vendor(mac) == "Apple", mac
    assert {mac: table.vendor(mac) for mac in NOT_VENDORS if mac != "x" * 100_000} == {
        mac: "" for mac in NOT_VENDORS if mac != "x" * 100_000}
    assert table.vendor("x" * 100_000) == ""


def test_manuf_lines_of_both_layouts_and_the_longest_prefix():
    blocks = vendors.parse_manuf([
        "# comment", "", "garbage", "00:1B:C5\tIeeeRegi\tIEEE Registration Authority",
        "00:1B:C5:00:00:00/36\tConvergi\tConverging Systems Inc.",        # Wireshark: six octets
        "00:1B:C5:00:10/36\tOpenRBco\tOpenRB.com, Direct SIA",            # scapy: the octets the mask needs
        "00:55:DA:10:00:00/28\tKoolPOS\tKoolPOS Inc.",
        "00:55:DA\tShinkoTe\tShinko Technos co.,ltd.",
        "00:09:5B\tNetgear", "00:00:18\tWebsterC\tWebster Computer Corporation\t# Appletalk/Ethernet Gateway",
        "GG:00:00\tBad\tBad Inc.", "00:00:19/99\tBad\tBad Inc.",
    ])
    table = Vendors(blocks, "test")
    _check(table, {"00:1b:c5:00:00:09": "Converging Systems", "00:1b:c5:00:10:09": "OpenRB.com, Direct SIA",
                   "00:1b:c5:00:20:09": "", "00:55:da:10:00:01": "KoolPOS", "00:55:da:20:00:01": "Shinko Technos",
                   "00:09:5b:00:00:01": "Netgear", "00:00:18:00:00:01": "Webster Computer", "00:00:19:00:00:01": ""})


@pytest.mark.parametrize("registered, shown", [
    ("Apple, Inc.", "Apple"), ("Samsung Electronics Co.,Ltd", "Samsung Electronics"), ("Intel Corporate", "Intel"),
    ("TP-LINK TECHNOLOGIES CO.,LTD.", "TP-LINK TECHNOLOGIES"), ("Raspberry Pi Trading Ltd", "Raspberry Pi Trading"),
    ("Cisco Systems, Inc", "Cisco Systems"), ("AVM Audiovisuelles Marketing und Computersysteme GmbH",
                                             "AVM Audiovisuelles Marketing und Computersysteme"),
    ("Ubiquiti Inc", "Ubiquiti"), ("Nokia Corporation", "Nokia"), ("", "Short"), ("Inc.", "Inc"),
])
def test_vendor_names_drop_the_legal_form(registered, shown):
    assert vendors.vendor_name("Short", registered) == shown


# ---- passive name map ---------------------------------------------------------------------------

def test_the_most_recent_name_wins():
    m = NameMap()
    m.learn("192.0.2.1", "a.example", "dns", 100.0)
    m.learn("192.0.2.1", "b.example", "dns", 200.0)
    m.learn("192.0.2.1", "late.example", "dns", 150.0)              # an older answer, seen late
    assert m.name("192.0.2.1", 200.0) == ("b.example", "dns", 200.0)
    m.learn("192.0.2.1", "c.example", "dns", 200.0)                 # same time, same kind: the later call
    assert m.name("192.0.2.1", 200.0) == ("c.example", "dns", 200.0)


@pytest.mark.parametrize("source", ["mdns", "llmnr", "nbns", "dhcp"])
def test_announcements_beat_dns_answers_only_when_not_older(source):
    m = NameMap()
    m.learn("192.168.1.20", "printer.lan", "dns", 100.0)
    m.learn("192.168.1.20", "Office-Printer", source, 100.0)        # same time: the host's own word
    assert m.name("192.168.1.20", 100.0) == ("Office-Printer", source, 100.0)
    m.learn("192.168.1.20", "printer.lan", "dns", 100.0)            # same time: a DNS answer does not undo it
    assert m.name("192.168.1.20", 100.0)[1] == source
    m.learn("192.168.1.20", "printer.lan", "dns", 101.0)            # newer: it does
    assert m.name("192.168.1.20", 101.0) == ("printer.lan", "dns", 101.0)
    m.learn("192.168.1.20", "Office-Printer", source, 100.5)        # an older announcement does not
    assert m.name("192.168.1.20", 101.0)[0] == "printer.lan"


def test_reverse_lookups_only_name_what_the_wire_has_not():
    m = NameMap(max_age=1000.0)
    m.learn("142.250.1.1", "www.google.com", "dns", 100.0)
    m.learn("142.250.1.1", "lhr25s34-in-f1.1e100.net", "rdns", 500.0)
    assert m.name("142.250.1.1", 500.0)[0] == "www.google.com"
    m.learn("142.250.1.1", "lhr25s34-in-f1.1e100.net", "rdns", 1101.0)   # the wire's name is stale
    assert m.name("142.250.1.1", 1101.0) == ("lhr25s34-in-f1.1e100.net", "rdns", 1101.0)
    m.learn("142.250.1.1", "www.google.com", "dns", 1000.0)         # any wire name beats a PTR name
    assert m.name("142.250.1.1", 1101.0)[1] == "dns"
    m.learn("198.51.100.1", "one.example", "rdns", 10.0)
    m.learn("198.51.100.1", "two.example", "rdns", 20.0)
    m.learn("198.51.100.1", "old.example", "rdns", 15.0)
    assert m.name("198.51.100.1", 20.0)[0] == "two.example"


def test_names_expire_by_age():
    m = NameMap(max_age=60.0)
    m.learn("192.0.2.1", "a.example", "dns", 0.0)
    m.learn("192.0.2.2", "b.example", "mdns", 30.0)
    assert m.name("192.0.2.1", 60.0) is not None
    assert m.name("192.0.2.1", 60.5) is None
    assert m.name("192.0.2.9", 0.0) is None
    m.learn("192.0.2.3", "c.example", "dns", 80.0)                  # drops what is older than 20.0
    assert len(m) == 2 and m.name("192.0.2.2", 80.0)[0] == "b.example"
    assert m.expire(200.0) == 2 and len(m) == 0


def test_the_least_recently_learnt_is_forgotten_first():
    m = NameMap(max_entries=3)
    for i, address in enumerate(("10.0.0.1", "10.0.0.2", "10.0.0.3")):
        m.learn(address, f"h{i}", "dns", float(i))
    m.learn("10.0.0.1", "h0-again", "dns", 5.0)                      # learnt again: now the most recent
    m.learn("10.0.0.4", "h4", "dns", 6.0)
    assert len(m) == 3
    assert m.name("10.0.0.2", 6.0) is None
    assert [m.name(a, 6.0)[0] for a in ("10.0.0.1", "10.0.0.3", "10.0.0.4")] == ["h0-again", "h2", "h4"]


def test_take_changes_returns_what_was_learnt_since_the_last_call():
    m = NameMap(max_entries=3)
    assert m.take_changes() == []
    m.learn("10.0.0.1", "a", "dns", 1.0)
    m.learn("10.0.0.2", "b", "mdns", 2.0)
    m.learn("10.0.0.1", "a2", "dns", 3.0)
    m.learn("10.0.0.1", "old", "dns", 0.5)                           # not learnt: no change
    assert m.take_changes() == [("10.0.0.2", "b", "mdns", 2.0), ("10.0.0.1", "a2", "dns", 3.0)]
    assert m.take_changes() == []
    for i in range(5):
        m.learn(f"10.0.1.{i}", f"n{i}", "dhcp", 10.0 + i)
    assert m.take_changes() == [(f"10.0.1.{i}", f"n{i}", "dhcp", 10.0 + i) for i in (2, 3, 4)]
    assert m.dropped_changes == 2
    assert len(m) == 3


def test_learn_refuses_an_unknown_source_and_ignores_empty_names():
    m = NameMap()
    with pytest.raises(ValueError, match="unknown name source 'arp'"):
        m.learn("10.0.0.1", "a", "arp", 1.0)
    m.learn("10.0.0.1", "", "dns", 1.0)
    m.learn("", "a", "dns", 1.0)
    assert len(m) == 0 and m.take_changes() == []


@pytest.mark.parametrize("text", HOSTILE[:-1], ids=HOSTILE_IDS[:-1])
def test_hostile_names_pass_through_the_map_unchanged(text):
    m = NameMap()
    m.learn("10.0.0.1", text, "dns", 1.0)
    m.learn(text, "name", "mdns", 1.0)
    assert m.name("10.0.0.1", 1.0) == (text, "dns", 1.0)
    assert m.name(text, 1.0) == ("name", "mdns", 1.0)
    assert m.take_changes() == [("10.0.0.1", text, "dns", 1.0), (text, "name", "mdns", 1.0)]


MAX_ENTRIES = 100_000
LEARNS = 1_000_000
# for 100,000 entries of 29-character names, their addresses and their pending changes; measured
# 53 MB at the peak (46 MB held at the end), see names/passive.py
BOUND_MB = 64


@pytest.mark.slow
def test_a_million_distinct_answers_stay_within_the_bound():
    # the memory test; tracemalloc makes each allocation ~10x dearer, ~10 s of CPU here
    gc.collect()
    tracemalloc.start()
    try:
        m = NameMap(max_entries=MAX_ENTRIES)
        learn = m.learn
        started = time.perf_counter()
        for i in range(LEARNS):
            # distinct answers as the extractors hand them over: IPv4 and IPv6 addresses, names
            # built per answer (they are the map's to keep), one allocation each
            address = "10.%d.%d.%d" % (i >> 16, i >> 8 & 255, i & 255) if i & 1 else "2001:db8::%x" % i
            learn(address, "host-%012d.example.com" % i, "dns", i * 0.001)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(m) == MAX_ENTRIES
    assert len(m.take_changes()) == MAX_ENTRIES
    assert m.dropped_changes == LEARNS - MAX_ENTRIES
    assert peak < BOUND_MB * 1e6, f"{peak / 1e6:.1f} MB for {MAX_ENTRIES} entries ({elapsed:.1f} s)"
