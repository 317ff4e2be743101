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
import os
import signal
import subprocess
import sys

import pytest

from running import ROOT, Running
from storage.alert_log import alert_list
from storage.db import connect
from tests.common import needs_root, needs_tool, wait_for
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


def _transfer(link, size=SIZE):
    """`size` bytes from namespace 1 to namespace 0 through the link, to the end."""
    server = Running(link.cmd(1, [PY, "-c", _PEER, "server", link.ipv4[1], str(size)]))
    server.wait_for("listening")
    client = subprocess.run(link.cmd(0, [PY, "-c", _PEER, "client", link.ipv4[1], str(size)]),
                            capture_output=True, text=True, timeout=300)
    assert client.returncode == 0, client.stderr
    assert server.finish(timeout=60) == 0, server.output


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
            _transfer(link)
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


_RULES = """
[[rule]]
name = "lossy-link"
kind = "retransmits"
scope = "all"
threshold = "0.2%"
window = "2m"
"""


def _alerts(db):
    con = connect(str(db), readonly=True)
    try:
        return [a for a in alert_list(con, limit=-1) if a["rule"] == "lossy-link"]
    finally:
        con.close()


@needs_root
def test_the_retransmission_alert_fires_under_loss_and_closes_once_the_loss_stops(tmp_path):
    """Issue 13: a live capture with a retransmissions rule (0.2% over 2 minutes, all traffic):
    a transfer through a 10%-lossy link opens the alert; with the loss removed (what deleting
    netem's qdisc does) a clean transfer follows, and the alert closes once the lossy minute has
    left the window. One alert: opened once, closed once. (At the first test's 2% loss, tshark
    calls nearly every resent segment out of order - sent within an RTT of the newest one - and
    so does NetTally: 1 retransmission in 5,635 segments. At 10%, timeouts resend too: about 1%.)"""
    db, rules = tmp_path / "live.db", tmp_path / "alerts.toml"
    rules.write_text(_RULES)
    with emulated_link("a", ba=f"delay={DELAY},loss=0.1,seed=13") as link:
        capture = Running(link.cmd(1, [PY, str(ROOT / "run.py"), "--no-web", "-i", link.ifname[1], "-f",
                                       f"tcp port {PORT}", "--db", str(db)]),
                          env={**os.environ, "NETTALLY_ALERTS_CONFIG": str(rules)})
        try:
            capture.wait_for("capturing on")
            _transfer(link, 2_000_000)
            # opened: still open, or already closed if the lossy transfer outlasted the window
            # (a fresh clone's run once found none open after 150 s, though it passes alone)
            [opened] = wait_for(lambda: _alerts(db), 150, "the retransmission alert to open", interval=0.5)
            link.set("ba", f"delay={DELAY}")
            _transfer(link, 2_000_000)
            wait_for(lambda: all(a["state"] == "closed" for a in _alerts(db)), 300,
                     "the retransmission alert to close", interval=0.5)
        finally:
            assert capture.finish(signal.SIGINT) == 0, capture.output
    [alert] = _alerts(db)
    assert alert["id"] == opened["id"] and alert["subject"] == "all" and alert["kind"] == "retransmits"
    assert alert["state"] == "closed" and alert["closed"] > alert["opened"], alert
    assert alert["value"] >= 0.002 and alert["peak"] >= alert["value"], alert
