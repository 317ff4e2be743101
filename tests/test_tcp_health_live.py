"""TCP health in a live capture: a pair of network namespaces made by the test, joined by a link
that delays what namespace 1 sends by 40 ms and loses 2% of it (tests/tcp_link.py: this
kernel has no sch_netem, so the link is emulated in user space, as netem would do it on the
sending side), a bounded transfer from 1 to 0, NetTally and tcpdump capturing in namespace 1,
the sender's, where netem would sit: they see every segment sent again, the lost ones included
(a receiver's capture shows the fast retransmissions that arrive within an RTT of the newest
segment as out of order, as tshark defines it).

The flow's rtt_ms is within 10% of the 40 ms, and its retransmission rate (retransmits / data
segments) within 10% of what tshark reads from tcpdump's capture of the same traffic."""
import csv
import io
import signal
import subprocess
import sys

import pytest

from running import ROOT, Running
from tests.common import needs_root, needs_tool
from tests.tcp_link import emulated_link

pytestmark = pytest.mark.system

PY = sys.executable
PORT = 5301
SIZE = 8_000_000         # enough segments that tshark flags some retransmissions (most losses it calls out of order)
DELAY = 0.040
_PEER = r"""
import socket, sys
role, host, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "server":
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, 5301)); srv.listen(1); srv.settimeout(60)
    print("listening", flush=True)
    c, _ = srv.accept()
    c.sendall(b"x" * size)
    c.close()
else:
    c = socket.create_connection((host, 5301), timeout=60)
    got = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        got += len(b)
    c.close()
    assert got == size, got
"""


def tshark_rates(path):
    """(initial RTT ms, retransmitted segments, data segments) of the transfer, as tshark reads them."""
    out = subprocess.run(["tshark", "-r", str(path), "-n", "-Y", f"tcp.port == {PORT}", "-T", "fields",
                          "-e", "tcp.analysis.initial_rtt", "-e", "tcp.analysis.retransmission", "-e", "tcp.len"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rtt, retransmitted, data = None, 0, 0
    for line in out.splitlines():
        irtt, retx, seglen = (line.split("\t") + ["", "", ""])[:3]
        if irtt and rtt is None:
            rtt = float(irtt) * 1000
        retransmitted += retx == "1"
        data += bool(seglen) and int(seglen) > 0
    return rtt, retransmitted, data


@needs_root
@needs_tool("tcpdump")
@needs_tool("tshark")
def test_rtt_and_retransmission_rate_through_a_slow_lossy_link(tmp_path):
    db, pcap = tmp_path / "live.db", tmp_path / "dump.pcap"
    with emulated_link("h", ba=f"delay={DELAY},loss=0.02,seed=13") as link:
        capture = Running(link.cmd(1, [PY, str(ROOT / "run.py"), "--no-web", "-i", link.ifname[1], "-f",
                                       f"tcp port {PORT}", "--db", str(db)]))
        dump = Running(link.cmd(1, ["tcpdump", "-i", link.ifname[1], "-U", "--immediate-mode", "-s", "128",
                                    "-B", "16384", "-w", str(pcap), f"tcp port {PORT}"]))
        try:
            capture.wait_for("capturing on")
            dump.wait_for("listening on")
            server = Running(link.cmd(1, [PY, "-c", _PEER, "server", link.ipv4[1], str(SIZE)]))
            server.wait_for("listening")
            client = subprocess.run(link.cmd(0, [PY, "-c", _PEER, "client", link.ipv4[1], str(SIZE)]),
                                    capture_output=True, text=True, timeout=300)
            assert client.returncode == 0, client.stderr
            assert server.finish(timeout=60) == 0, server.output
        finally:
            assert capture.finish(signal.SIGINT) == 0, capture.output
            dump.finish(signal.SIGTERM)
    out = subprocess.run([PY, str(ROOT / "run.py"), "export", "flows", "--db", str(db)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    [flow] = [r for r in csv.DictReader(io.StringIO(out)) if r["proto"] == "tcp" and r["resp_p"] == str(PORT)]
    rtt = float(flow["rtt_ms"])
    assert abs(rtt - DELAY * 1000) <= 0.1 * DELAY * 1000, flow
    ours = int(flow["retransmits"]) / int(flow["data_segments"])
    their_rtt, retransmitted, data = tshark_rates(pcap)
    assert retransmitted > 0 and data > 500, (retransmitted, data)
    theirs = retransmitted / data
    assert abs(ours - theirs) <= 0.1 * theirs, (flow, retransmitted, data)
    assert abs(rtt - their_rtt) <= 0.1 * their_rtt
