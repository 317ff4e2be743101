"""The flow table with exact numbers: orientation, timeouts, the memory bound, hosts, interfaces,
fragments and minute buckets; and its fast path agreeing with the decoder on any header."""
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ARP, IP, TCP, UDP, Dot1Q, Ether, IPOption_NOP, IPv6, Raw

from capture.flows import FlowTable
from records import IFACE_FIELDS, FlowDelta

T0 = 1_700_000_040.0          # a minute boundary
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def tcp(src, dst, sport, dport, flags="A", pad=0, vlan=False, options=False):
    ip = IP(src=src, dst=dst, options=[IPOption_NOP()] * 4 if options else [])
    l2 = E / Dot1Q(vlan=7) if vlan else E
    return bytes(l2 / ip / TCP(sport=sport, dport=dport, flags=flags) / Raw(b"\x00" * pad))


def udp(src, dst, sport, dport, pad=0):
    return bytes(E / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"\x00" * pad))


def run(table, frames, iface="eth0", linktype=1):
    """Ingests [(ts, data[, wire_len[, outbound]])] and drains everything: all rollups."""
    table.ingest(iface, linktype, [(ts, rest[0] if rest else len(data), data, rest[1] if len(rest) > 1 else False)
                                   for ts, data, *rest in frames])
    return table.take() + [table.drain(0.0, close_all=True)]


def flows_of(rollups):
    """{(proto, orig_h, orig_p, resp_h, resp_p): [orig_bytes, resp_bytes, orig_packets, resp_packets]}"""
    out = {}
    for r in rollups:
        for f in r.flows:
            c = out.setdefault(f[:5], [0, 0, 0, 0])
            for i, v in enumerate((f.orig_bytes, f.resp_bytes, f.orig_packets, f.resp_packets)):
                c[i] += v
    return out


def hosts_of(rollups):
    out = {}
    for r in rollups:
        for ip, c in r.hosts.items():
            h = out.setdefault(ip, [0, 0, 0, 0])
            for i in range(4):
                h[i] += c[i]
    return {ip: h for ip, h in out.items() if any(h)}


def iface_of(rollups, name="eth0"):
    total = [0] * len(IFACE_FIELDS)
    for r in rollups:
        for i, v in enumerate(r.interfaces.get(name, ())):
            total[i] += v
    return dict(zip(IFACE_FIELDS, total))


# ---- orientation ------------------------------------------------------------------------------------

def test_orig_is_the_sender_of_the_first_packet_seen():
    ack = tcp(B, A, 80, 40000)
    rollups = run(FlowTable(), [(T0, udp(B, A, 53, 5000)), (T0 + 1, udp(A, B, 5000, 53)),
                                (T0 + 2, ack), (T0 + 3, tcp(A, B, 40000, 80))])
    assert flows_of(rollups) == {(17, B, 53, A, 5000): [42, 42, 1, 1], (6, B, 80, A, 40000): [54, 54, 1, 1]}


def test_a_bare_syn_from_the_other_side_names_the_originator():
    for kw in ({}, {"vlan": True}, {"options": True}):      # fast path and decoder path
        frames = [(T0, tcp(B, A, 80, 40000, "A", **kw)), (T0 + 1, tcp(A, B, 40000, 80, "S", **kw)),
                  (T0 + 2, tcp(B, A, 80, 40000, "SA", **kw))]
        n = len(frames[0][1])
        assert flows_of(run(FlowTable(), frames)) == {(6, A, 40000, B, 80): [n, 2 * n, 1, 2]}, kw


def test_syn_ack_does_not_turn_a_flow_round():
    frames = [(T0, tcp(B, A, 80, 40000, "A")), (T0 + 1, tcp(A, B, 40000, 80, "SA"))]
    assert flows_of(run(FlowTable(), frames)) == {(6, B, 80, A, 40000): [54, 54, 1, 1]}


def test_orientation_is_fixed_once_part_of_the_flow_has_been_written():
    table = FlowTable()
    table.ingest("eth0", 1, [(T0, 54, tcp(B, A, 80, 40000), False)])
    first = table.drain(T0 + 1)
    table.ingest("eth0", 1, [(T0 + 2, 54, tcp(A, B, 40000, 80, "S"), False)])
    second = table.drain(T0 + 3, close_all=True)
    assert [f[:5] for f in first.flows + second.flows] == [(6, B, 80, A, 40000)] * 2
    assert [(f.orig_packets, f.resp_packets, f.closed) for f in first.flows + second.flows] == [
        (1, 0, False), (0, 1, True)]


# ---- timeouts -----------------------------------------------------------------------------------------

def test_idle_timeout_ends_the_record():
    table = FlowTable(idle_timeout=120)
    table.ingest("eth0", 1, [(T0, 60, udp(A, B, 1, 2), False)])
    kept = table.drain(T0 + 60)
    assert [(f.closed, f.orig_packets) for f in kept.flows] == [(False, 1)] and len(table) == 1
    assert table.drain(T0 + 120).flows == [] and len(table) == 1          # idle 120 s, not more: stays
    gone = table.drain(T0 + 120.5)
    assert [(f.closed, f.orig_packets, f.orig_bytes) for f in gone.flows] == [(True, 0, 0)] and len(table) == 0
    # the same 5-tuple later is a new record
    table.ingest("eth0", 1, [(T0 + 500, 60, udp(B, A, 2, 1), False)])
    again = table.drain(T0 + 501, close_all=True)
    assert [(f[:5], f.first_seen) for f in again.flows] == [((17, B, 2, A, 1), T0 + 500)]


def test_idle_flows_leave_at_a_minute_boundary_during_import():
    table = FlowTable(idle_timeout=30)
    frames = [(T0, udp(A, B, 1, 2)), (T0 + 10, udp(A, C, 1, 2)), (T0 + 61, udp(A, C, 1, 2))]
    rollups = run(table, frames)
    closed_at_60 = [(f.resp_h, f.closed) for f in rollups[0].flows]
    assert sorted(closed_at_60) == [(B, True), (C, True)]          # both idle > 30 s at T0 + 60
    assert [(f.resp_h, f.first_seen) for f in rollups[1].flows] == [(C, T0 + 61)]


def test_active_timeout_cuts_records_and_loses_nothing():
    table = FlowTable(active_timeout=300, idle_timeout=120)
    frames = [(T0 + 30 * k, udp(A, B, 1000, 2000, pad=k)) for k in range(30)]     # 15 minutes, every 30 s
    rollups = run(table, frames)
    records = {}
    for r in rollups:
        for f in r.flows:
            rec = records.setdefault(f.first_seen, [0, 0, False])
            rec[0] += f.orig_packets
            rec[1] += f.orig_bytes
            rec[2] = rec[2] or f.closed
    assert sorted(records) == [T0, T0 + 360, T0 + 720]
    assert [records[t][0] for t in sorted(records)] == [12, 12, 6]
    assert sum(v[1] for v in records.values()) == sum(42 + k for k in range(30))
    assert all(v[2] for v in records.values())


# ---- memory bound -------------------------------------------------------------------------------------

def test_memory_bound_writes_evicted_flows_and_keeps_totals_exact():
    table = FlowTable(max_flows=10)
    frames = [(T0 + k * 0.1, udp(A, f"10.0.1.{k}", 1000 + k, 53, pad=k)) for k in range(25)]
    frames += [(T0 + 3 + k * 0.1, udp(f"10.0.1.{k}", A, 53, 1000 + k, pad=k)) for k in range(5)]   # replies
    rollups = run(table, frames)
    assert table.evicted_flows == 20 and len(table) == 0
    got = flows_of(rollups)
    for k in range(25):
        # flows evicted before their reply came are two records, in the same 5-tuple direction pair
        fwd = got.pop((17, A, 1000 + k, f"10.0.1.{k}", 53))
        if k < 5:
            back = got.pop((17, f"10.0.1.{k}", 53, A, 1000 + k))
            assert fwd == [42 + k, 0, 1, 0] and back == [42 + k, 0, 1, 0]
        else:
            assert fwd == [42 + k, 0, 1, 0]
    assert got == {}
    hosts = hosts_of(rollups)
    assert hosts[A] == [sum(42 + k for k in range(25)), sum(42 + k for k in range(5)), 25, 5]
    assert sum(sum(f.orig_bytes + f.resp_bytes for f in r.flows) for r in rollups) == sum(
        len(d) for _, d in frames)


# ---- hosts and interfaces ----------------------------------------------------------------------------

def test_hosts_are_credited_per_direction_and_to_self_both_ways():
    frames = [(T0, udp(A, B, 1, 2, pad=10)), (T0 + 1, udp(B, A, 2, 1)),
              (T0 + 2, udp(C, C, 7, 7)),                     # a socket to itself
              (T0 + 3, udp(C, C, 8, 9))]                     # two sockets of one host
    assert hosts_of(run(FlowTable(), frames)) == {A: [52, 42, 1, 1], B: [42, 52, 1, 1], C: [84, 84, 2, 2]}


def test_interface_counters_by_kind_and_undecodable_reasons():
    frames = [(T0, tcp(A, B, 1, 2), 1514, True),                       # fast path, outbound, cut by snaplen
              (T0 + 1, tcp(A, B, 1, 2, vlan=True)),                     # decoder path
              (T0 + 2, bytes(E / ARP())),
              (T0 + 3, bytes(E)[:13]),
              (T0 + 4, bytes(Ether(type=0x0800)) + b"\x44" + b"\x00" * 19, 100, True),
              (T0 + 5, bytes(Ether(type=0x0800)) + b"\x44" + b"\x00" * 19)]
    table = FlowTable()
    rollups = run(table, frames)
    assert iface_of(rollups) == dict(frames=6, bytes=1514 + 58 + 42 + 13 + 100 + 34, ip_frames=2, ip_bytes=1514 + 58,
                                     non_ip_frames=1, non_ip_bytes=42, undecodable_frames=3,
                                     undecodable_bytes=13 + 100 + 34, out_frames=2, out_bytes=1614)
    reasons = {}
    for r in rollups:
        for k, v in r.undecodable.items():
            reasons[k] = [a + b for a, b in zip(reasons.get(k, [0, 0]), v)]
    assert reasons == {("eth0", "ethernet_truncated"): [1, 13], ("eth0", "ipv4_bad_header_length"): [2, 134]}


def test_two_interfaces_are_counted_apart():
    table = FlowTable()
    table.ingest("eth0", 1, [(T0, 60, udp(A, B, 1, 2), False)])
    table.ingest("lo", 101, [(T0 + 1, 28, bytes(IP(src=A, dst=A) / UDP(sport=3, dport=4)), True)])
    r = table.drain(T0 + 2, close_all=True)
    assert r.interfaces == {"eth0": [1, 60, 1, 60, 0, 0, 0, 0, 0, 0], "lo": [1, 28, 1, 28, 0, 0, 0, 0, 1, 28]}
    assert sorted((f.iface, f[:5]) for f in r.flows) == [("eth0", (17, A, 1, B, 2)), ("lo", (17, A, 3, A, 4))]


def test_fragments_inherit_the_first_fragment_s_ports():
    first = bytes(E / IP(src=A, dst=B, id=5, flags="MF") / UDP(sport=7, dport=8) / Raw(b"a" * 16))
    later = bytes(E / IP(src=A, dst=B, id=5, frag=3, proto=17) / Raw(b"b" * 16))
    orphan = bytes(E / IP(src=A, dst=B, id=6, frag=3, proto=17) / Raw(b"c" * 16))
    other_dir = bytes(E / IP(src=B, dst=A, id=5, frag=3, proto=17) / Raw(b"d" * 16))   # key includes src, dst
    got = flows_of(run(FlowTable(), [(T0, first), (T0 + 1, later), (T0 + 2, orphan), (T0 + 3, other_dir)]))
    assert got == {(17, A, 7, B, 8): [58 + 50, 0, 2, 0], (17, A, 0, B, 0): [50, 50, 1, 1]}


# ---- minute buckets -----------------------------------------------------------------------------------

def test_buckets_roll_over_at_minute_boundaries_and_sum_to_the_totals():
    frames = [(T0 + s, udp(A, B, 1, 2, pad=int(s) % 7)) for s in (0, 30, 59.999, 60, 61, 119, 185)]
    frames.insert(2, (T0 + 45, bytes(E / ARP())))
    frames.insert(5, (T0 + 60.5, bytes(E / ARP())))
    table = FlowTable()
    table.ingest("eth0", 1, [(ts, len(d), d, False) for ts, d in frames])
    closed = table.take()
    last = table.drain(0.0, close_all=True)
    rollups = closed + [last]
    assert [r.bucket for r in rollups] == [T0, T0 + 60, T0 + 180]
    per_minute = [r.interfaces["eth0"][:6] for r in rollups]
    sizes = {s: 42 + int(s) % 7 for s in (0, 30, 59.999, 60, 61, 119, 185)}
    assert per_minute == [
        [4, sizes[0] + sizes[30] + sizes[59.999] + 42, 3, sizes[0] + sizes[30] + sizes[59.999], 1, 42],
        [4, sizes[60] + sizes[61] + sizes[119] + 42, 3, sizes[60] + sizes[61] + sizes[119], 1, 42],
        [1, sizes[185], 1, sizes[185], 0, 0]]
    assert [sum(f.orig_packets for f in r.flows) for r in rollups] == [3, 3, 1]
    assert [r.hosts[A][0] for r in rollups] == [p[3] for p in per_minute]
    assert sum(p[1] for p in per_minute) == sum(len(d) for _, d in frames)


def test_a_time_far_ahead_does_not_drag_later_frames_into_its_minute():
    """One record stamped in 2096 among frames a minute apart (found in review): every other frame
    still lands in its own minute, and the odd one in its own."""
    times = [T0 + 60 * k for k in range(10)]
    times.insert(3, 4_000_000_000.0)
    table = FlowTable()
    table.ingest("eth0", 1, [(ts, 60, udp(A, B, 1, 2), False) for ts in times])
    rollups = table.take() + [table.drain(0.0, close_all=True)]
    per_bucket = {}
    for r in rollups:
        per_bucket[r.bucket] = per_bucket.get(r.bucket, 0) + r.interfaces["eth0"][0]
    assert per_bucket == {**{T0 + 60 * k: 1 for k in range(10)}, 3_999_999_960: 1}


def test_rollups_do_not_share_attribution_dicts():
    table = FlowTable()
    table.ingest("eth0", 1, [(T0, 60, udp(A, B, 1, 2), False), (T0 + 60, 60, udp(A, B, 1, 2), False)])
    r1, r2 = table.take()[0], table.drain(0.0, close_all=True)
    r1.processes["x"] = 1
    assert r2.processes == {} and r1.attribution is not r2.attribution


def test_take_new_flows_lists_each_new_flow_once_with_text_addresses():
    table = FlowTable()
    table.ingest("eth0", 1, [(T0, 60, udp(A, B, 1, 2), False), (T0 + 1, 60, udp(B, A, 2, 1), False),
                             (T0 + 2, 60, bytes(E / IPv6(src="2001:DB8::1", dst="::1") / UDP(sport=3, dport=4)),
                              False)])
    assert table.take_new_flows() == [(17, A, 1, B, 2, T0), (17, "2001:db8::1", 3, "::1", 4, T0 + 2)]
    assert table.take_new_flows() == []


# ---- fast path == decoder -----------------------------------------------------------------------------

ipv4_headers = st.builds(
    lambda ihl, total, ident, frag, proto, ports, flags, tail: (
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, ident, frag, 64, proto, 0, b"\x0a\0\0\1", b"\x0a\0\0\2")
        + b"\x01" * (max(ihl, 5) * 4 - 20) + struct.pack("!HH", *ports) + b"\0" * 9 + bytes([flags]) + tail),
    st.integers(4, 7), st.sampled_from([0, 20, 23, 24, 33, 34, 40, 60, 1500]), st.integers(0, 3),
    st.sampled_from([0, 0x4000, 0x2000, 0x0003, 0x6001]), st.sampled_from([6, 17, 132, 1, 47]),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)), st.integers(0, 255), st.binary(max_size=30))
ipv6_headers = st.builds(
    lambda version, plen, nh, ports, flags, tail: (
        struct.pack("!IHBB16s16s", version << 28, plen, nh, 64, b"\x20\x01" + b"\0" * 13 + b"\1", b"\0" * 15 + b"\2")
        + struct.pack("!HH", *ports) + b"\0" * 9 + bytes([flags]) + tail),
    st.sampled_from([6, 6, 4]), st.sampled_from([0, 3, 4, 13, 14, 20, 1000]), st.sampled_from([6, 17, 0, 44, 58]),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)), st.integers(0, 255), st.binary(max_size=30))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ipv4_headers, ipv6_headers), min_size=1, max_size=6), st.integers(0, 80))
def test_ethernet_fast_path_counts_as_the_decoder_does(packets, cut):
    """The same IP packets behind Ethernet (fast path) and on a raw-IP link (decoder only)."""
    packets = [p[:max(cut, 20)] if i == 0 else p for i, p in enumerate(packets)]
    eth = [(T0 + i, len(p) + 14, bytes(E)[:12] + (b"\x08\x00" if p[0] >> 4 == 4 else b"\x86\xdd") + p, False)
           for i, p in enumerate(packets)]
    rawip = [(ts, n - 14, data[14:], out) for ts, n, data, out in eth]
    a, b = FlowTable(), FlowTable()
    a.ingest("x", 1, eth)
    b.ingest("x", 101, rawip)
    ra, rb = a.drain(0.0, close_all=True), b.drain(0.0, close_all=True)
    def strip(r, link_header):
        return sorted((f[:5], f.orig_packets, f.resp_packets, f.orig_bytes - link_header * f.orig_packets,
                       f.resp_bytes - link_header * f.resp_packets, f.tcp_flags) for f in r.flows)
    assert strip(ra, 14) == strip(rb, 0)
    assert ra.interfaces["x"][2] == rb.interfaces["x"][2]          # IP frames


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=90), min_size=1, max_size=8), st.sampled_from([0, 1, 9, 101, 113, 127]))
def test_random_frames_are_all_counted(frames, linktype):
    table = FlowTable(max_flows=3)
    rollups = run(table, [(T0 + i * 20, b"\x08\x00" * 7 + f if i % 2 else f) for i, f in enumerate(frames)],
                  linktype=linktype)
    c = iface_of(rollups)
    assert c["frames"] == len(frames) == c["ip_frames"] + c["non_ip_frames"] + c["undecodable_frames"]
    assert sum(f.orig_packets + f.resp_packets for r in rollups for f in r.flows) == c["ip_frames"]
    assert all(isinstance(f, FlowDelta) for r in rollups for f in r.flows)


def test_arp_senders_name_the_mac_of_their_address():
    """IPv4 address -> MAC from ARP requests and replies (tagged or not); a probe from 0.0.0.0 and
    the source MAC of IP frames (a router's, for remote hosts) teach nothing."""
    bcast = "ff:ff:ff:ff:ff:ff"
    frames = [
        (T0, bytes(Ether(src="02:00:00:00:00:05", dst=bcast) / ARP(op=1, hwsrc="02:00:00:00:00:05", psrc="10.0.0.5",
                                                                    pdst="10.0.0.1"))),
        (T0 + 1, bytes(Ether(src="02:00:00:00:00:07", dst=bcast) / Dot1Q(vlan=3)
                       / ARP(op=2, hwsrc="02:00:00:00:00:07", psrc="10.0.0.7", pdst="10.0.0.5"))),
        (T0 + 2, bytes(Ether(src="02:00:00:00:00:09", dst=bcast) / ARP(op=1, hwsrc="02:00:00:00:00:09", psrc="0.0.0.0",
                                                                    pdst="10.0.0.9"))),
        (T0 + 3, udp("192.0.2.1", "10.0.0.5", 53, 999)),
        (T0 + 61, bytes(Ether(src="02:00:00:00:00:06", dst=bcast) / ARP(op=1, hwsrc="02:00:00:00:00:06", psrc="10.0.0.5",
                                                                     pdst="10.0.0.1"))),
    ]
    rollups = run(FlowTable(), frames)
    assert [r.macs for r in rollups if r.macs] == [
        {"10.0.0.5": "02:00:00:00:00:05", "10.0.0.7": "02:00:00:00:00:07"}, {"10.0.0.5": "02:00:00:00:00:06"}]
    assert iface_of(rollups)["non_ip_frames"] == 4


# ---- memory bound: nothing waits in the table beyond max_flows (issue 10) ---------------------------

def test_evicted_flows_leave_at_once_not_when_their_minute_closes():
    table = FlowTable(max_flows=10)
    table.ingest("eth0", 1, [(T0 + k * 0.1, 60, udp(A, f"10.0.1.{k}", 1000 + k, 53), False) for k in range(11)])
    evicted, = table.take()                   # the minute is still open
    assert [(f.resp_h, f.closed) for f in evicted.flows] == [("10.0.1.0", True)]
    assert evicted.bucket == T0 and evicted.hosts == {A: [60, 0, 1, 0], "10.0.1.0": [0, 60, 0, 1]}
    assert evicted.interfaces == {} and table.held()["flows"] == 10


def test_closed_buckets_and_close_come_in_pieces_that_add_up_to_one_drain(monkeypatch):
    frames = [(T0 + k, 60 + k, udp(A, f"10.0.1.{k % 20}", 1000 + k % 20, 53), False) for k in range(50)]
    frames += [(T0 + 50 + k, 60, udp(f"10.0.1.{k}", A, 53, 1000 + k), False) for k in range(20)]   # next minute
    table = FlowTable()
    table.ingest("eth0", 1, frames)
    whole = table.take() + [table.drain(0.0, close_all=True)]
    monkeypatch.setattr("capture.flows.ROLLUP_FLOWS", 3)
    table = FlowTable()
    table.ingest("eth0", 1, frames)
    pieces = table.take()
    table.close()
    pieces += table.take()
    table, streamed = FlowTable(), []
    table.stream_to(streamed.append)
    table.ingest("eth0", 1, frames)
    table.close()
    assert table.take() == []
    for got in (pieces, streamed):            # which flows share a piece follows a set's order
        assert len(got) > len(whole) and all(len(r.flows) <= 3 for r in got)
        assert flows_of(got) == flows_of(whole) and hosts_of(got) == hosts_of(whole)
        assert iface_of(got) == iface_of(whole) and iface_of(whole)["frames"] == 70


def test_new_flows_nobody_takes_are_kept_up_to_max_flows_or_not_at_all():
    frames = [(T0 + k * 0.1, 60, udp(A, f"10.0.1.{k}", 1000 + k, 53), False) for k in range(25)]
    listing = FlowTable(max_flows=10)
    listing.ingest("eth0", 1, frames)
    assert len(listing.take_new_flows()) == 10 and listing.unlisted_flows == 15
    quiet = FlowTable(max_flows=10, list_new_flows=False)
    quiet.ingest("eth0", 1, frames)
    assert quiet.take_new_flows() == [] and quiet.held()["new_flows"] == 0


def test_arp_senders_per_minute_are_bounded(monkeypatch):
    monkeypatch.setattr("capture.flows.MAX_MACS", 4)
    frames = [(T0 + k, bytes(Ether(src="02:00:00:00:00:05", dst="ff:ff:ff:ff:ff:ff")
                             / ARP(op=1, hwsrc="02:00:00:00:00:05", psrc=f"10.0.0.{k + 1}", pdst="10.0.0.99")))
              for k in range(6)]
    rollups = run(FlowTable(), frames)
    assert sum(len(r.macs) for r in rollups) == 4
    assert sum(r.unnamed.get("macs_over_bucket_limit", 0) for r in rollups) == 2
    assert iface_of(rollups)["non_ip_frames"] == 6
