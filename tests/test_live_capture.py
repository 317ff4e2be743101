"""Live capture: run.py's main job counted against a tcpdump running in parallel with the same
filter, on lo and on a veth pair between two namespaces the test creates. Traffic comes only from
processes the tests start (this file run as a script: `peer`, `client`, `inject`), is bounded in
count and time, and goes only to loopback or the tests' own namespaces.

Also, without root: the ring's block walker on a hand-built TPACKET_V3 block, the BPF snap cap,
and the capture loop over fake sources.
"""
import csv
import io
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
from common import wait_for
from running import running

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
PY = sys.executable
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
LINUX = sys.platform.startswith("linux")

live = pytest.mark.skipif(not (IS_ROOT and LINUX), reason="live capture needs root on Linux")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None,
                                   reason="tcpdump is not installed (make test installs it as root on Debian)")
needs_netns = pytest.mark.skipif(bool(netns.missing()), reason=f"network namespaces: {netns.missing()}")

COUNT_COLUMNS = ("proto", "orig_h", "orig_p", "resp_h", "resp_p", "orig_bytes", "resp_bytes",
                 "orig_packets", "resp_packets", "tcp_flags")
# Two packet sockets on one device may stamp the same frame a few hundred ns apart (the kernel
# reads the clock per tap when the skb carries no timestamp): times agree to this much, not exactly.
TIME_TOLERANCE = 0.001
UDP_DATAGRAMS = 12
TCP_BYTES = 40_000


def udp_payload(i):
    return 100 + 37 * i


def udp_reply(size):
    return size // 2 + 1


# ---- processes and their output ----------------------------------------------------------------

def run_py(*args):
    return [PY, str(ROOT / "run.py"), *args]


def tcpdump(iface, bpf, path, count=None):
    # A short snap length and a big buffer: in immediate mode libpcap's ring has one slot per
    # snaplen-sized frame, and with the default 262144 bytes a 2 MiB buffer holds 7 frames, which
    # a busy machine overflows. The wire length (orig_len) does not depend on the snap length.
    argv = ["tcpdump", "-i", iface, "-U", "--immediate-mode", "-s", "256", "-B", "16384", "-Z", "root",
            "-w", str(path)]
    if count:
        argv += ["-c", str(count)]
    argv.append(bpf)
    return argv


def free_port():
    """A port free for TCP and UDP on 127.0.0.1 and ::1 right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(family, kind) as s:
                        s.bind((addr, port))
            return port
        except OSError:
            continue


def exchange(addr, tcp_port, udp_port, server_cmd=lambda a: a, client_cmd=lambda a: a):
    """One bounded TCP exchange and UDP_DATAGRAMS request/reply pairs between a peer process
    (server) and a client process."""
    with running(server_cmd([PY, str(THIS), "peer", addr, str(tcp_port), str(udp_port)])) as server:
        server.wait_for("ready")
        client = subprocess.run(client_cmd([PY, str(THIS), "client", addr, str(tcp_port), str(udp_port)]),
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        assert server.finish(timeout=30) == 0, server.output


def send_marker(addr, port, cmd=lambda a: a):
    done = subprocess.run(cmd([PY, str(THIS), "mark", addr, str(port)]), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def pcap_frames(path):
    """(wire_len, data) of each complete frame tcpdump has written so far."""
    sys.path.insert(0, str(ROOT))
    from capture.capfile import CaptureError, CaptureFile
    try:
        capture = CaptureFile(str(path))
    except (CaptureError, OSError):
        return []
    try:
        return [(n, data) for _, frames in capture.batches() for _, n, data, _ in frames]
    finally:
        capture.close()


def wait_for_port_in_pcap(path, port, timeout=30.0):
    """Polls tcpdump's file until a frame to UDP `port` is in it: everything sent before is too."""
    from capture.decode import decode
    from records import Packet
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, data in pcap_frames(path):
            pkt = decode(1, data)
            if isinstance(pkt, Packet) and pkt.proto == 17 and pkt.dport == port:
                return
        time.sleep(0.02)          # poll interval, bounded by the deadline
    raise AssertionError(f"marker to port {port} never reached {path}")


def export(db, table):
    out = subprocess.run(run_py("export", table, "--db", str(db)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return list(csv.DictReader(io.StringIO(out.stdout)))


def import_pcap(path, db):
    done = subprocess.run(run_py("import", str(path), "--db", str(db)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def counts(rows):
    return sorted(tuple(r[c] for c in COUNT_COLUMNS) for r in rows)


def times(rows):
    from datetime import datetime
    return {tuple(r[c] for c in COUNT_COLUMNS[:5]): [datetime.fromisoformat(r[c].replace("Z", "+00:00")).timestamp()
                                                    for c in ("first_seen", "last_seen")] for r in rows}


def assert_times_close(live_rows, file_rows):
    live, other = times(live_rows), times(file_rows)
    assert live.keys() == other.keys()
    for key, (first, last) in live.items():
        assert abs(first - other[key][0]) <= TIME_TOLERANCE and abs(last - other[key][1]) <= TIME_TOLERANCE, key


def iface_totals(db):
    sys.path.insert(0, str(ROOT))
    from storage.interfaces import interface_totals
    from storage.db import connect
    con = connect(str(db), readonly=True)
    try:
        return interface_totals(con)
    finally:
        con.close()


def assert_oracle_complete(dump):
    """tcpdump saw everything: an oracle that lost frames proves nothing."""
    dropped = re.search(r"(\d+) packets? dropped by kernel", dump.output)
    assert dropped and dropped.group(1) == "0", dump.output


def assert_same_as_tcpdump(live_db, pcap, tmp_path):
    """Per-flow and per-host counts of the live database equal those of tcpdump's file imported."""
    file_db = tmp_path / "tcpdump.db"
    import_pcap(pcap, file_db)
    live_flows, file_flows = export(live_db, "flows"), export(file_db, "flows")
    assert live_flows and counts(live_flows) == counts(file_flows)
    assert_times_close(live_flows, file_flows)
    assert sorted(map(sorted, (r.items() for r in export(live_db, "hosts")))) == \
        sorted(map(sorted, (r.items() for r in export(file_db, "hosts"))))
    frames = pcap_frames(pcap)
    [live] = iface_totals(live_db)
    assert (live["frames"], live["bytes"]) == (len(frames), sum(n for n, _ in frames))
    assert live["ip_frames"] == live["frames"]
    return live_flows, live


def udp_flow_bytes(family_header):
    """Exact wire bytes of the UDP exchange: Ethernet + IP header + UDP header + payload."""
    sent = sum(14 + family_header + 8 + udp_payload(i) for i in range(UDP_DATAGRAMS))
    replies = sum(14 + family_header + 8 + udp_reply(udp_payload(i)) for i in range(UDP_DATAGRAMS))
    return sent, replies


def assert_udp_exact(flows, addr, udp_port):
    header = 40 if ":" in addr else 20
    [flow] = [f for f in flows if f["proto"] == "udp" and f["resp_h"] == addr and f["resp_p"] == str(udp_port)]
    assert (int(flow["orig_packets"]), int(flow["resp_packets"])) == (UDP_DATAGRAMS, UDP_DATAGRAMS)
    assert (int(flow["orig_bytes"]), int(flow["resp_bytes"])) == udp_flow_bytes(header)


# ---- live tests (root) -------------------------------------------------------------------------

@pytest.mark.system
@live
@needs_tcpdump
@pytest.mark.parametrize("backend", ["ring", "pcap"])
def test_lo_counts_equal_tcpdump_and_sigterm_flushes(tmp_path, backend):
    tcp_port, udp_port, marker = free_port(), free_port(), free_port()
    bpf = f"tcp port {tcp_port} or udp port {udp_port} or udp port {marker}"
    db, pcap = tmp_path / "live.db", tmp_path / "lo.pcap"
    with running(run_py("--no-web", "-i", "lo", "-f", bpf, "--db", str(db), "--capture-backend", backend)) as capture, \
            running(tcpdump("lo", bpf, pcap)) as dump:
        capture.wait_for(f"capturing on lo ({backend})")
        dump.wait_for("listening on")
        for addr in ("127.0.0.1", "::1"):
            exchange(addr, tcp_port, udp_port)
        send_marker("127.0.0.1", marker)
        wait_for_port_in_pcap(pcap, marker)
        assert capture.finish(signal.SIGTERM) == 0, capture.output
        dump.finish(signal.SIGTERM)
    assert_oracle_complete(dump)
    flows, lo = assert_same_as_tcpdump(db, pcap, tmp_path)
    # each lo packet once: the UDP exchange is exactly UDP_DATAGRAMS frames each way
    for addr in ("127.0.0.1", "::1"):
        assert_udp_exact(flows, addr, udp_port)
        [tcp] = [f for f in flows if f["proto"] == "tcp" and f["resp_h"] == addr]
        assert tcp["resp_p"] == str(tcp_port) and "S" in tcp["tcp_flags"] and "F" in tcp["tcp_flags"]
    assert lo["out_frames"] == 0           # lo keeps the incoming copy of each packet
    assert f"stopped: {lo['frames']} frames counted, 0 dropped" in capture.output
    # what monitoring reads of the same database: the frames tcpdump saw, and the writer's last write
    from prometheus_client.parser import text_string_to_metric_families
    from web.app import create_app
    client = create_app(test_config={"DB": str(db), "TOKEN": None, "POOL_SIZE": 2, "METRICS_SINCE": 0}).test_client()
    frames = {tuple(sorted(m.labels.items())): m.value for family in text_string_to_metric_families(
        client.get("/metrics").get_data(as_text=True)) for m in family.samples if m.name == "nettally_interface_frames_total"}
    assert frames == {(("direction", "in"), ("interface", "lo")): lo["frames"],
                      (("direction", "out"), ("interface", "lo")): 0}
    [writer] = client.get("/health").get_json()["writers"]
    assert writer["writes"] >= 1 and 0 <= writer["last_write_age_s"] < 600


@pytest.mark.system
@live
@needs_tcpdump
def test_count_stops_by_itself(tmp_path):
    port = free_port()
    bpf = f"udp port {port}"
    db, pcap = tmp_path / "live.db", tmp_path / "lo.pcap"
    count = 7
    with running(run_py("--no-web", "-i", "lo", "-f", bpf, "--db", str(db), "-c", str(count))) as capture, \
            running(tcpdump("lo", bpf, pcap, count=count)) as dump:
        capture.wait_for("capturing on lo")
        dump.wait_for("listening on")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            sink.bind(("127.0.0.1", port))
            for i in range(count + 3):           # more than -c: both must stop at `count`
                s.sendto(b"n" * (10 + i), ("127.0.0.1", port))
        assert capture.finish(timeout=30) == 0, capture.output
        assert dump.finish(timeout=30) == 0, dump.output
    assert_oracle_complete(dump)
    flows, _ = assert_same_as_tcpdump(db, pcap, tmp_path)
    [flow] = flows
    assert (int(flow["orig_packets"]), int(flow["orig_bytes"])) == (count, sum(42 + 10 + i for i in range(count)))
    assert f"stopped: {count} frames counted" in capture.output


@pytest.mark.system
@live
def test_duration_stops_by_itself(tmp_path):
    with running(run_py("--no-web", "-i", "lo", "-f", f"udp port {free_port()}", "--db", str(tmp_path / "d.db"),
                        "--duration", "0.5")) as capture:
        assert capture.finish(timeout=30) == 0, capture.output
    assert "stopped: 0 frames counted" in capture.output
    # the service's output is its log: every line says when (UTC)
    lines = capture.output.splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run.py: ", line) for line in lines), lines


@live
@pytest.mark.parametrize("args, message", [
    (["-i", "nosuch0"], "run.py: unknown interface 'nosuch0'\n"),
    (["-i", "lo", "-f", "udp prot 53"], "run.py: bad filter 'udp prot 53'"),
    (["-i", "nosuch0", "--capture-backend", "pcap"], "run.py: unknown interface 'nosuch0'\n"),
    (["-i", "lo", "-f", "udp prot 53", "--capture-backend", "pcap"], "run.py: bad filter 'udp prot 53'"),
])
@pytest.mark.system
def test_bad_interface_or_filter_is_one_line(tmp_path, args, message):
    done = subprocess.run(run_py("--no-web", "--db", str(tmp_path / "x.db"), *args),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1 and done.stdout == ""


@live
@pytest.mark.system
def test_a_busy_dashboard_port_ends_the_run_before_capture_with_one_line(tmp_path):
    """Another server (a second NetTally, say) has the port: exit 2, one line, nothing captured,
    no database made, and never the other server's URL."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = subprocess.run(run_py("-i", "lo", "--port", str(port), "--db", str(tmp_path / "x.db")),
                              capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"run.py: cannot listen on 127.0.0.1:{port}: Address already in use (another NetTally or "
                           "another server has it? choose one with --port); nothing was captured\n")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.system
@pytest.mark.skipif(not (IS_ROOT and LINUX), reason="needs root on Linux, to drop to nobody with setpriv")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop to nobody")
def test_without_privilege_exits_2_with_one_line(tmp_path):
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
                           *run_py("--no-web", "-i", "lo", "--db", str(tmp_path / "x.db"))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "run.py: capturing needs root (CAP_NET_RAW): run with sudo\n"


@pytest.fixture
def veth():
    pair = netns.create("lc")
    yield pair
    netns.destroy(pair)


@pytest.mark.system
@live
@needs_tcpdump
@needs_netns
@pytest.mark.parametrize("backend", ["ring", "pcap"])
def test_veth_in_namespace_keeps_outgoing_and_equals_tcpdump(tmp_path, veth, backend):
    """Outgoing frames kept, and told from incoming: by the kernel's packet type (ring), by the
    interface's own MAC address (pcap)."""
    tcp_port, udp_port, marker = 5001, 5002, 5003
    bpf = f"tcp port {tcp_port} or udp port {udp_port} or udp port {marker}"
    db, pcap = tmp_path / "live.db", tmp_path / "veth.pcap"
    here, there = (lambda argv: veth.cmd(0, argv)), (lambda argv: veth.cmd(1, argv))
    argv = run_py("--no-web", "-i", veth.ifname[0], "-f", bpf, "--db", str(db), "--capture-backend", backend)
    with running(here(argv)) as capture, \
            running(here(tcpdump(veth.ifname[0], bpf, pcap))) as dump:
        capture.wait_for(f"({backend})")
        dump.wait_for("listening on")
        for addr in (veth.ipv4[1], veth.ipv6[1]):
            exchange(addr, tcp_port, udp_port, server_cmd=there, client_cmd=here)
        send_marker(veth.ipv4[1], marker, cmd=here)
        wait_for_port_in_pcap(pcap, marker)
        assert capture.finish(signal.SIGINT) == 0, capture.output
        dump.finish(signal.SIGTERM)
    assert_oracle_complete(dump)
    flows, totals = assert_same_as_tcpdump(db, pcap, tmp_path)
    for addr in (veth.ipv4[1], veth.ipv6[1]):
        assert_udp_exact(flows, addr, udp_port)
    # outgoing frames are kept on a non-loopback interface: everything ns 0 sent is counted
    sent = {r["ip"]: r for r in export(db, "hosts")}
    ours = [sent[a] for a in (veth.ipv4[0], veth.ipv6[0])]
    assert totals["out_frames"] == sum(int(h["tx_packets"]) for h in ours) > 2 * UDP_DATAGRAMS
    assert totals["out_bytes"] == sum(int(h["tx_bytes"]) for h in ours)


@pytest.mark.system
@live
@needs_tcpdump
@needs_netns
def test_vlan_tag_from_ring_metadata_is_put_back(tmp_path, veth):
    """The receiving veth moves an 802.1Q / 802.1ad tag into skb metadata (skb_vlan_untag), so the
    ring reports it in tp_vlan_tci/tpid; counted bytes must include it, as tcpdump's do."""
    port, marker = 6001, 6002
    bpf = f"udp port {port} or udp port {marker}"
    db, pcap = tmp_path / "live.db", tmp_path / "vlan.pcap"
    with running(veth.cmd(1, run_py("--no-web", "-i", veth.ifname[1], "-f", bpf, "--db", str(db)))) as capture, \
            running(veth.cmd(1, tcpdump(veth.ifname[1], bpf, pcap))) as dump:
        capture.wait_for("capturing on")
        dump.wait_for("listening on")
        done = subprocess.run(veth.cmd(0, [PY, str(THIS), "inject", veth.ifname[0], str(port), str(marker)]),
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        wait_for_port_in_pcap(pcap, marker)
        assert capture.finish(signal.SIGTERM) == 0, capture.output
        dump.finish(signal.SIGTERM)
    assert_oracle_complete(dump)
    frames = pcap_frames(pcap)
    tagged = [(n, d) for n, d in frames if d[12:14] in (b"\x81\x00", b"\x88\xa8")]
    assert len(tagged) == len(INJECTED)     # libpcap put every tag back in place
    assert sorted(n for n, _ in tagged) == sorted(size for _, _, size in INJECTED)
    flows, _ = assert_same_as_tcpdump(db, pcap, tmp_path)
    [flow] = [f for f in flows if f["resp_p"] == str(port) and f["orig_h"] == "10.200.1.1"]
    v4 = [size for tpid, family, size in INJECTED if family == 4]
    assert (int(flow["orig_packets"]), int(flow["orig_bytes"])) == (len(v4), sum(v4))


# ---- without root: the ring walker, the BPF cap, the capture loop ------------------------------

def _block(frames, block_size=4096):
    """A TPACKET_V3 block owned by user space holding `frames`: (sec, nsec, wire, data, status,
    tci, tpid, pkttype) each, laid out as the kernel does (header, sockaddr_ll, frame at tp_mac)."""
    buf = bytearray(block_size)
    first = 48
    struct.pack_into("<III", buf, 8, 1, len(frames), first)
    off = first
    for i, (sec, nsec, wire, data, status, tci, tpid, pkttype) in enumerate(frames):
        mac = 80
        step = (mac + len(data) + 15) // 16 * 16 if i < len(frames) - 1 else 0
        struct.pack_into("<6IHH4xIH", buf, off, step, sec, nsec, len(data), wire, status, mac, mac, tci, tpid)
        struct.pack_into("<HHiHBB8s", buf, off + 48, 17, 0x0008, 1, 1, pkttype, 6, b"\x02" * 6)
        buf[off + mac:off + mac + len(data)] = data
        off += step
    return buf


def _ring_over(buf, linktype=1, cooked=False, block_size=4096):
    from capture import ring
    source = ring.RingSource.__new__(ring.RingSource)
    source.iface = ring.Interface("test0", 1, 1, linktype, False, cooked)
    source.name, source.linktype = "test0", linktype
    source.seconds = ring.Seconds()
    source._vlan_offset = 14 if cooked else 12
    source._mm, source._block, source._block_nr, source._block_size = buf, 0, 1, block_size
    return source


def test_ring_walker_reads_frames_direction_and_puts_vlan_tags_back():
    from capture.ring import TP_STATUS_USER, TP_STATUS_VLAN_VALID
    eth = bytes(range(12)) + b"\x08\x00" + b"\x45" + bytes(40)
    block = _block([
        (100, 123_456_789, 1514, eth, TP_STATUS_USER, 0, 0, 0),
        (100, 999_999_999, 70, eth, TP_STATUS_USER | TP_STATUS_VLAN_VALID, 0x6064, 0, 4),
        (101, 5_000, 80, eth, TP_STATUS_USER | TP_STATUS_VLAN_VALID, 200, 0x88A8, 0),
    ])
    source = _ring_over(block)
    [frames] = source.read()
    assert [(ts, n, out) for ts, n, _, out in frames] == [
        (100 + 123_456 * 1e-6, 1514, False), (100 + 999_999 * 1e-6, 74, True), (101 + 5 * 1e-6, 84, False)]
    assert frames[0][2] == eth
    assert frames[1][2] == eth[:12] + b"\x81\x00\x60\x64" + eth[12:]     # tpid 0 means 802.1Q
    assert frames[2][2] == eth[:12] + b"\x88\xa8\x00\xc8" + eth[12:]
    assert struct.unpack_from("<I", block, 8)[0] == 0                  # handed back to the kernel
    assert source.read() == []
    assert source.take_seconds() == [(100, "test0", 2, 1588, 1, 74), (101, "test0", 1, 84, 0, 0)]


def test_ring_walker_cooked_prepends_linux_sll_header():
    from capture.ring import TP_STATUS_USER
    ip = b"\x45" + bytes(39)
    [frames] = _ring_over(_block([(7, 0, 40, ip, TP_STATUS_USER, 0, 0, 4)]), linktype=113, cooked=True).read()
    [(ts, n, data, out)] = frames
    assert (ts, n, out) == (7.0, 56, True)
    assert data == struct.pack("!HHH8s", 4, 1, 6, b"\x02" * 6 + b"\0\0") + b"\x08\x00" + ip


@pytest.mark.skipif(not LINUX, reason="the TPACKET ring is Linux only")
def test_bpf_accepting_returns_are_capped_at_snaplen():
    from capture import ring
    iface = ring.Interface("x", 1, 1, 1, False, False)
    assert ring.compile_bpf("", iface) == [(6, 0, 0, ring.SNAPLEN)]
    program = ring.compile_bpf("udp port 53", iface)
    returns = {k for code, _, _, k in program if code == 6}
    assert returns == {0, ring.SNAPLEN}
    with pytest.raises(ring.CaptureSetupError, match="bad filter 'udp prot 53'"):
        ring.compile_bpf("udp prot 53", iface)


class _FakeSource:
    """A capture source over a pipe: readable while it has batches left."""

    def __init__(self, name, batches):
        self.name, self.linktype = name, 1
        self._batches = list(batches)
        self._r, self._w = os.pipe()
        if self._batches:
            os.write(self._w, b"x")

    def fileno(self):
        return self._r

    def read(self):
        batches, self._batches = self._batches, []
        if batches:
            os.read(self._r, 1)
        return batches

    def take_seconds(self):
        return []

    def take_error(self):
        return None

    def drops(self):
        return 3

    def close(self):
        os.close(self._r)
        os.close(self._w)


def _udp_frame(sport, dport, payload=10):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload, 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return b"\x00" * 12 + b"\x08\x00" + ip + struct.pack("!HHHH", sport, dport, 8 + payload, 0) + b"p" * payload


def test_capture_loop_stops_at_count_and_sends_flows_before_rollups():
    from capture.live import LiveCapture
    from records import Done, Drops, NewFlows, Rollups
    from settings import Settings
    a = _FakeSource("a", [[(1000.0 + i, 60, _udp_frame(1, 2), False) for i in range(3)]])
    b = _FakeSource("b", [[(1000.5 + i, 70, _udp_frame(3, 4), True) for i in range(4)]])
    sent = []
    try:
        capture = LiveCapture(Settings(count=5), [a, b], sent.append, wall=lambda: 2000.0)
        capture.run(lambda: False)
    finally:
        a.close()
        b.close()
    kinds = [type(m) for m in sent]
    assert kinds.index(NewFlows) < kinds.index(Rollups) and kinds[-1] is Done
    assert sent[-1] == Done(frames=5, drops=6)
    flows = [f for m in sent if isinstance(m, Rollups) for r in m.rollups for f in r.flows]
    assert sum(f.orig_packets for f in flows) == 5 and all(f.closed for f in flows)
    assert any(isinstance(m, Drops) and m == Drops(1980, {"a": 3, "b": 3}) for m in sent)


def test_capture_loop_sends_per_second_activity_of_hosts_and_flow_sides():
    """Issue 11: the loop hands on the flow table's per-second points as Activity; at the stop
    the open second goes too, so every byte of a flow side is in its seconds."""
    from capture.live import LiveCapture
    from records import Activity
    from settings import Settings
    a = _FakeSource("a", [[(1000.25 + i / 2, 60, _udp_frame(1, 2), False) for i in range(5)]])
    sent = []
    try:
        LiveCapture(Settings(), [a], sent.append, wall=lambda: 2000.0).run(lambda: bool(sent))
    finally:
        a.close()
    activity = [m for m in sent if isinstance(m, Activity)]
    hosts = sorted(h for m in activity for h in m.hosts)
    assert hosts == [(1000, "10.0.0.1", 120, 0), (1000, "10.0.0.2", 0, 120), (1001, "10.0.0.1", 120, 0),
                     (1001, "10.0.0.2", 0, 120), (1002, "10.0.0.1", 60, 0), (1002, "10.0.0.2", 0, 60)]
    assert sorted(f for m in activity for f in m.flows) == [
        (1000, 17, "10.0.0.1", 1, "10.0.0.2", 2, 120), (1001, 17, "10.0.0.1", 1, "10.0.0.2", 2, 120),
        (1002, 17, "10.0.0.1", 1, "10.0.0.2", 2, 60)]


def _blast_lo(port, count, size=1000):
    """count UDP datagrams to 127.0.0.1:port (a socket of the test receives them: no ICMP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", port))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        for _ in range(count):
            tx.sendto(b"x" * size, ("127.0.0.1", port))


@pytest.mark.system
@live
def test_what_a_ring_holds_unread_is_what_reading_it_gives():
    from capture import sources
    port = free_port()
    source = sources.open_source("lo", f"udp dst port {port}", ring_mb=4)
    try:
        _blast_lo(port, 1500)
        wait_for(lambda: source.unread() == 1500, 30, "the ring's blocks to be handed over")
        assert sum(len(batch) for batch in source.read(max_blocks=64)) == 1500
        assert source.unread() == 0
    finally:
        source.close()


@pytest.mark.system
@live
@pytest.mark.parametrize("backend, ring_mb, one_read", [("ring", 40, 16 * 900), ("pcap", 16, 4096)])
def test_a_stop_with_a_full_buffer_counts_every_frame_as_counted_or_dropped(monkeypatch, backend, ring_mb, one_read):
    """A small buffer (the ring's 40 blocks; libpcap's 16 MiB), 45,000 frames sent before anyone
    reads: the kernel drops what does not fit; the loop is stopped at once with no time to sweep
    (as on a machine too busy to read the buffer in the sweep's 150 ms), yet counted + dropped is
    every frame sent: nothing a stop leaves in the buffer is lost silently. (libpcap does not say
    what its buffer holds: the pcap source works it out from pcap_stats, frames taken, dropped
    ones included, less dropped, less read.)"""
    from capture import live, sources
    from records import Done
    from settings import Settings
    monkeypatch.setattr(live, "FINAL_SWEEP", 0.0)
    port = free_port()
    source = sources.open_source("lo", f"udp dst port {port}", ring_mb=ring_mb, backend=backend)
    dropped, sent = [], []
    try:
        _blast_lo(port, 45_000)
        wait_for(lambda: dropped.append(source.drops()) or source.unread() + sum(dropped) == 45_000, 60,
                 "every frame held in the buffer or dropped")
        held = source.unread()
        live.LiveCapture(Settings(interfaces=("lo",)), [source], sent.append).run(lambda: True)
    finally:
        source.close()
    done = sent[-1]
    assert isinstance(done, Done) and held > one_read, held      # more than one read() takes
    assert done.frames + done.drops + sum(dropped) == 45_000, (done, sum(dropped))


# ---- traffic peers: this file run as a script inside the tests' namespaces -----------------------

INJECTED = [(0x8100, 4, 64), (0x8100, 4, 300), (0x88A8, 4, 1000), (0x8100, 6, 120), (0x88A8, 6, 500)]


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _peer(addr, tcp_port, udp_port):
    """Serves one TCP exchange and UDP_DATAGRAMS request/reply pairs, then exits (20 s at most)."""
    family = _family(addr)
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr, tcp_port))
    listener.listen(1)
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((addr, udp_port))
    print("ready", flush=True)
    deadline = time.monotonic() + 20
    conn, received, replies, tcp_done = None, 0, 0, False
    while not (tcp_done and replies == UDP_DATAGRAMS) and time.monotonic() < deadline:
        watch = [udp, conn or listener]
        for s in select.select(watch, [], [], 1.0)[0]:
            if s is listener:
                conn, _ = listener.accept()
            elif s is conn:
                chunk = conn.recv(65536)
                received += len(chunk)
                if not chunk:
                    conn.sendall(b"r" * (received // 3 + 100))
                    conn.close()
                    conn, tcp_done = None, True
            else:
                data, sender = udp.recvfrom(65536)
                udp.sendto(b"q" * udp_reply(len(data)), sender)
                replies += 1
    return 0 if tcp_done and replies == UDP_DATAGRAMS else 1


def _client(addr, tcp_port, udp_port):
    family = _family(addr)
    with socket.create_connection((addr, tcp_port), timeout=10) as s:
        s.sendall(b"a" * TCP_BYTES)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for i in range(UDP_DATAGRAMS):
            s.sendto(b"u" * udp_payload(i), (addr, udp_port))
            s.recvfrom(65536)           # one at a time: nothing can overflow a buffer
    return 0


def _mark(addr, port):
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as s:
        s.sendto(b"marker", (addr, port))
    return 0


def _inject(ifname, port, marker):
    """Sends INJECTED tagged UDP frames, then one untagged marker, on `ifname` (raw socket)."""
    src_mac, dst_mac = b"\x02\x00\x00\x00\x00\x01", b"\xff" * 6
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    frames = [_tagged(src_mac, dst_mac, tpid, family, size, port) for tpid, family, size in INJECTED]
    frames.append(dst_mac + src_mac + b"\x08\x00" + _ipv4_udp(marker, 10))
    for frame in frames:
        s.send(frame)
    s.close()
    return 0


def _tagged(src_mac, dst_mac, tpid, family, size, port):
    head = dst_mac + src_mac + struct.pack("!HH", tpid, (3 << 13) | 100)
    payload = size - len(head) - 2 - (20 if family == 4 else 40) - 8
    if family == 4:
        return head + b"\x08\x00" + _ipv4_udp(port, payload)
    udp = struct.pack("!HHHH", 40000, port, 8 + payload, 0) + b"v" * payload
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, socket.inet_pton(socket.AF_INET6, "fd00:200::1"),
                      socket.inet_pton(socket.AF_INET6, "fd00:200::2"))
    return head + b"\x86\xdd" + ip6 + udp


def _ipv4_udp(port, payload):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload, 1, 0, 64, 17, 0,
                         socket.inet_aton("10.200.1.1"), socket.inet_aton("10.200.1.2"))
    words = sum(struct.unpack("!10H", header))
    checksum = ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    return header + struct.pack("!HHHH", 40000, port, 8 + payload, 0) + b"v" * payload


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "peer":
        sys.exit(_peer(rest[0], int(rest[1]), int(rest[2])))
    if command == "client":
        sys.exit(_client(rest[0], int(rest[1]), int(rest[2])))
    if command == "mark":
        sys.exit(_mark(rest[0], int(rest[1])))
    if command == "inject":
        sys.exit(_inject(rest[0], int(rest[1]), int(rest[2])))
    sys.exit(f"unknown command {command}")


def test_pcap_direction_comes_from_the_hosts_own_addresses():
    """libpcap does not say who sent a frame: the pcap backend tells it from the interface's own
    MAC (Ethernet), the cooked header's packet type (Linux SLL, SLL2) or its own IP addresses
    (raw IP and BSD loopback framing); on a loopback device every frame is incoming, as with the ring."""
    import socket as so
    from capture.pcap import outbound_test
    from records import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NULL, LINKTYPE_RAW
    mac, other = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    v4, v6 = so.inet_pton(so.AF_INET, "10.0.0.1"), so.inet_pton(so.AF_INET6, "fd00::1")
    ip4 = lambda src: b"\x45" + bytes(11) + so.inet_pton(so.AF_INET, src) + bytes(4)      # noqa: E731
    ip6 = lambda src: b"\x60" + bytes(7) + so.inet_pton(so.AF_INET6, src) + bytes(16)     # noqa: E731
    eth = outbound_test(LINKTYPE_ETHERNET, False, [mac], [v4])
    assert eth(other + mac + b"\x08\x00") and not eth(mac + other + b"\x08\x00")
    assert not outbound_test(LINKTYPE_ETHERNET, True, [mac], [v4])(other + mac + b"\x08\x00")
    sll = outbound_test(LINKTYPE_LINUX_SLL, False, [], [])
    assert sll(b"\x00\x04" + bytes(14)) and not sll(b"\x00\x00" + bytes(14))
    sll2 = outbound_test(LINKTYPE_LINUX_SLL2, False, [], [])
    assert sll2(bytes(10) + b"\x04" + bytes(9)) and not sll2(bytes(20))
    raw = outbound_test(LINKTYPE_RAW, False, [], [v4, v6])
    assert raw(ip4("10.0.0.1")) and not raw(ip4("10.0.0.2"))
    assert raw(ip6("fd00::1")) and not raw(ip6("fd00::2")) and not raw(b"") and not raw(b"\x00" * 40)
    null = outbound_test(LINKTYPE_NULL, False, [], [v4])
    assert null(b"\x02\x00\x00\x00" + ip4("10.0.0.1")) and not null(b"\x02\x00\x00\x00" + ip4("10.0.0.9"))
    assert not outbound_test(9999, False, [mac], [v4])(other + mac)
