"""The pure parts of attribution: keys, the join, cgroup labels, /proc and trace-line parsing."""
from records import FlowDelta, Rollup
from records import ProcessKey

from attribution import join
from attribution.cgroup import unit_of
from attribution.events import parse_line
from attribution.linux import ipv6_of_if_inet6, local_ipv4_of_fib_trie
from attribution.table import candidate_keys, canonical

CURL = ProcessKey(100, 1000.0, "curl", "/usr/bin/curl", "curl http://x", "alice", "")
NGINX = ProcessKey(200, 900.0, "nginx", "/usr/sbin/nginx", "nginx: worker", "www-data", "nginx.service")
OWN = {"127.0.0.1", "::1", "192.0.2.2", "fd00::2"}


def delta(proto=6, a="192.0.2.2", ap=40000, b="198.51.100.7", bp=443, ob=1000, op=10, rb=5000, rp=8):
    return FlowDelta(proto, a, ap, b, bp, 10.0, 11.0, ob, op, rb, rp, 0x1B, "eth0", False)


def rollup(*deltas):
    return Rollup(60, list(deltas), {}, {}, {})


def test_canonical_addresses():
    assert canonical("::ffff:127.0.0.1") == "127.0.0.1"
    assert canonical("FE80::1%eth0") == "fe80::1"
    assert canonical("2001:DB8:0:0::1") == "2001:db8::1"
    assert canonical("not an address") is None


def test_candidate_keys_order_and_dual_stack():
    keys = candidate_keys(17, "127.0.0.1", 5353, "127.0.0.1", 9)
    assert keys == [(17, "127.0.0.1", 5353, "127.0.0.1", 9), (17, "0.0.0.0", 5353, "127.0.0.1", 9),
                    (17, "127.0.0.1", 5353, None, 0), (17, "0.0.0.0", 5353, None, 0), (17, "::", 5353, None, 0)]
    assert candidate_keys(6, "::1", 80, "::1", 5)[-1] == (6, "::", 80, None, 0)


def test_find_owner_prefers_connected_then_listener():
    table = {(6, "0.0.0.0", 443, None, 0): NGINX}
    assert join.find_owner(table.get, 6, "192.0.2.2", 443, "198.51.100.7", 5000) == NGINX
    table[(6, "192.0.2.2", 443, "198.51.100.7", 5000)] = CURL
    assert join.find_owner(table.get, 6, "192.0.2.2", 443, "198.51.100.7", 5000) == CURL
    assert join.find_owner(table.get, 6, "192.0.2.2", 444, "198.51.100.7", 5000) is None
    # an IPv4 flow reaches a dual-stack IPv6 listener
    assert join.find_owner({(6, "::", 8080, None, 0): NGINX}.get, 6, "127.0.0.1", 8080, "127.0.0.1", 1) == NGINX


def test_side_places():
    d = delta(a="fd00::2", b="10.9.0.2")
    assert join.side_places(d, OWN, {"10.9.0.2"}) == (join.LOCAL, join.OTHER)
    assert join.side_places(delta(a="198.51.100.1"), OWN, set()) == (None, None)


def test_charge_one_local_side():
    out = join.charge(rollup(delta()), [(CURL, None)])
    d = out.flows[0]
    assert (d.orig_pid, d.orig_process, d.resp_pid, d.resp_process) == (100, "curl", None, None)
    assert out.processes == {CURL: [1000, 5000, 10, 8]}
    assert out.attribution == {"attributed": [6000, 18]}


def test_charge_loopback_flow_to_both_processes():
    d = delta(a="127.0.0.1", b="127.0.0.1", bp=80)
    out = join.charge(rollup(d), [(CURL, NGINX)])
    assert out.processes == {CURL: [1000, 5000, 10, 8], NGINX: [5000, 1000, 8, 10]}
    assert out.attribution == {"attributed": [12000, 36]}
    assert join.coverage(out.attribution) == 1.0


def test_charge_reasons_and_no_local_endpoint():
    forwarded = delta(a="198.51.100.1", ob=70, op=1, rb=0, rp=0)
    closed = delta(ap=40001, ob=100, op=1, rb=200, rp=2)
    both = delta(a="127.0.0.1", b="127.0.0.1", ob=10, op=1, rb=0, rp=0)
    out = join.charge(rollup(forwarded, closed, both),
                      [(None, None), ("socket_closed_before_lookup", None), (CURL, "unknown")])
    assert out.attribution == {"no_local_endpoint": [70, 1], "socket_closed_before_lookup": [300, 3],
                               "attributed": [10, 1], "unknown": [10, 1]}
    assert [f.orig_pid for f in out.flows] == [None, None, 100]
    assert join.coverage(out.attribution) == 10 / 320


def test_charge_keeps_pids_on_an_empty_closing_delta_but_counts_nothing():
    d = delta(ob=0, op=0, rb=0, rp=0)._replace(closed=True)
    out = join.charge(rollup(d), [(CURL, None)])
    assert out.flows[0].orig_pid == 100 and out.processes == {} and out.attribution == {}


def test_attributed_equals_sum_over_processes():
    deltas = [delta(ap=40000 + i, ob=i * 10, op=i, rb=i * 7, rp=i) for i in range(1, 20)]
    decisions = [(CURL if i % 2 else NGINX, "unknown" if i % 3 == 0 else None) for i in range(1, 20)]
    out = join.charge(rollup(*deltas), decisions)
    assert out.attribution["attributed"][0] == sum(c[0] + c[1] for c in out.processes.values())
    assert out.attribution["attributed"][1] == sum(c[2] + c[3] for c in out.processes.values())


def test_moved_correction():
    stub = delta(ob=0, op=0, rb=0, rp=0)._replace(orig_pid=100, orig_process="curl")
    out = join.moved(Rollup, 120, [(CURL, "socket_closed_before_lookup", [10, 20, 1, 2], stub)])
    assert out.bucket == 120 and out.flows == [stub] and out.hosts == {}
    assert out.processes == {CURL: [10, 20, 1, 2]}
    assert out.attribution == {"attributed": [30, 3], "socket_closed_before_lookup": [-30, -3]}


def test_cgroup_units():
    assert unit_of("0::/system.slice/nginx.service\n") == "nginx.service"
    assert unit_of("0::/user.slice/user-1000.slice/session-3.scope\n") == "session-3.scope"
    docker = "0::/system.slice/docker-" + "ab" * 32 + ".scope\n"
    assert unit_of(docker) == "docker:abababababab"
    assert unit_of("4:memory:/docker/" + "cd" * 32 + "\n1:name=systemd:/docker/" + "cd" * 32) == "docker:cdcdcdcdcdcd"
    assert unit_of("0::/machine.slice/libpod-" + "ef" * 32 + ".scope/container") == "podman:efefefefefef"
    assert unit_of("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + "12" * 32 + ".scope") \
        == "containerd:121212121212"
    assert unit_of("0::/lxc.payload.web1/system.slice/x.service") == "lxc:web1"
    assert unit_of("9:name=systemd:/\n4:memory:/process_api/bc84\n0::/\n") == ""
    assert unit_of("garbage") == ""


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.9.0.0
        /24 link UNICAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.9.0.2
        /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
"""


def test_other_namespace_address_parsers():
    assert local_ipv4_of_fib_trie(FIB_TRIE) == {"10.9.0.2", "127.0.0.1"}
    text = ("fd000000000000000000000000000002 03 40 00 80     veth1\n"
            "00000000000000000000000000000001 01 80 10 80       lo\n")
    assert ipv6_of_if_inet6(text) == {"fd00::2", "::1"}


def test_trace_lines():
    tcp = ("          python-14806   (  14806) [001] .....   539.154200: inet_sock_set_state: family=AF_INET "
           "protocol=IPPROTO_TCP sport=42536 dport=45595 saddr=127.0.0.1 daddr=127.0.0.1 "
           "saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_FIN_WAIT1")
    assert parse_line(tcp) == ((6, "127.0.0.1", 42536, "127.0.0.1", 45595), 14806)
    assert parse_line(tcp.replace("[001] .....", "[001] ..s2.")) is None      # softirq: not the owner
    thread = tcp.replace("python-14806   (  14806)", "my-worker 2-14900   (  14806)")
    assert parse_line(thread) == ((6, "127.0.0.1", 42536, "127.0.0.1", 45595), 14806)
    listen = ("python-1 (  1) [000] ..... 1.0: inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP "
              "sport=80 dport=0 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=:: daddrv6=:: oldstate=TCP_CLOSE "
              "newstate=TCP_LISTEN")
    assert parse_line(listen) == ((6, "::", 80, None, 0), 1)
    udp = ("python-15059   (  15059) [000] .....   565.353324: fib_table_lookup: table 254 oif 0 iif 1 "
           "proto 17 0.0.0.0/47205 -> 127.0.0.1/45792 tos 0 scope 0 flags 0 ==> dev lo gw 0.0.0.0/:: err 0")
    assert parse_line(udp) == ((17, "0.0.0.0", 47205, "127.0.0.1", 45792), 15059)
    udp6 = ("python-15060   (  15060) [000] .....   565.370206: fib6_table_lookup: table 255 oif 0 iif 1 "
            "proto 17 fd00::1/54275 -> fd00::2/36021 flowlabel 0x0 tos 0 scope 0 flags 0 ==> dev lo gw :: err 0")
    assert parse_line(udp6) == ((17, "fd00::1", 54275, "fd00::2", 36021), 15060)
    assert parse_line("# tracer: nop") is None
    assert parse_line("garbage ( x ) [") is None
