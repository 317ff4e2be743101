"""NetTally without the POSIX-only pieces Windows lacks (issue 15): `pwd`, `grp`, `os.geteuid`,
`os.getuid`, `os.setuid`, `os.fork`, `os.killpg` and `signal.pthread_sigmask` are taken away in
every process NetTally starts (a sitecustomize, which spawned children import too), and `import`,
`export` and `serve` still do their whole job: the same numbers as with them, and a dashboard
that answers /api/hosts."""
import json
import signal
import subprocess
import sys
import urllib.request

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from captures import pcap_bytes
from common import ROOT, wait_for
from running import running
from web_helpers import free_port

TAKEN = ("pwd", "grp", "os.geteuid", "os.getuid", "os.setuid", "os.fork", "os.killpg", "signal.pthread_sigmask")

SITECUSTOMIZE = """
import os, signal, sys
sys.modules["pwd"] = None           # `import pwd` now raises ImportError, as on Windows
sys.modules["grp"] = None
for name in ("geteuid", "getuid", "setuid", "fork", "killpg"):
    if hasattr(os, name):
        delattr(os, name)
if hasattr(signal, "pthread_sigmask"):
    del signal.pthread_sigmask
"""


def _exchange():
    """A TCP connection (handshake, data both ways, FIN) and a UDP request and answer."""
    a, b = "10.9.0.1", "10.9.0.2"
    ea, eb = "02:00:00:00:00:01", "02:00:00:00:00:02"
    frames = [
        Ether(src=ea, dst=eb) / IP(src=a, dst=b) / TCP(sport=40000, dport=443, flags="S", seq=1),
        Ether(src=eb, dst=ea) / IP(src=b, dst=a) / TCP(sport=443, dport=40000, flags="SA", seq=7, ack=2),
        Ether(src=ea, dst=eb) / IP(src=a, dst=b) / TCP(sport=40000, dport=443, flags="A", seq=2, ack=8),
        Ether(src=ea, dst=eb) / IP(src=a, dst=b) / TCP(sport=40000, dport=443, flags="PA", seq=2, ack=8) / (b"q" * 300),
        Ether(src=eb, dst=ea) / IP(src=b, dst=a) / TCP(sport=443, dport=40000, flags="PA", seq=8, ack=302) / (b"r" * 1200),
        Ether(src=ea, dst=eb) / IP(src=a, dst=b) / TCP(sport=40000, dport=443, flags="FA", seq=302, ack=1208),
        Ether(src=eb, dst=ea) / IP(src=b, dst=a) / TCP(sport=443, dport=40000, flags="FA", seq=1208, ack=303),
        Ether(src=ea, dst=eb) / IP(src=a, dst=b) / UDP(sport=50000, dport=9000) / (b"u" * 40),
        Ether(src=eb, dst=ea) / IP(src=b, dst=a) / UDP(sport=9000, dport=50000) / (b"v" * 90),
    ]
    return pcap_bytes(1, [(1_700_000_000 + i * 0.25, bytes(f)) for i, f in enumerate(frames)])


@pytest.fixture()
def without_posix(tmp_path):
    """The environment whose Python processes lack the POSIX-only pieces, checked in a child."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)}
    probe = ("import importlib, os, signal\n"
             "def there(name):\n"
             "    mod, _, attr = name.rpartition('.')\n"
             "    if not mod:\n"
             "        try:\n"
             "            importlib.import_module(name)\n"
             "            return True\n"
             "        except ImportError:\n"
             "            return False\n"
             "    return hasattr({'os': os, 'signal': signal}[mod], attr)\n"
             f"print([n for n in {TAKEN!r} if there(n)])")
    left = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert left.stdout.strip() == "[]", left.stdout + left.stderr
    return env


def _run(env, *argv):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_import_export_and_serve_without_posix_pieces(without_posix, tmp_path):
    capture = tmp_path / "exchange.pcap"
    capture.write_bytes(_exchange())
    plain = {"PATH": without_posix["PATH"], "HOME": without_posix["HOME"]}
    expected = {}
    for env, db in ((plain, tmp_path / "plain.db"), (without_posix, tmp_path / "bare.db")):
        done = _run(env, "import", str(capture), "--db", str(db))
        assert done.returncode == 0, done.stderr
        expected[env is plain] = {table: _run(env, "export", table, "--db", str(db), "--format", "json")
                                  for table in ("hosts", "flows")}
    for table in ("hosts", "flows"):
        bare, full = expected[False][table], expected[True][table]
        assert bare.returncode == 0, bare.stderr
        assert json.loads(bare.stdout) == json.loads(full.stdout)
    hosts = {h["ip"]: h for h in json.loads(expected[False]["hosts"].stdout)}
    # 5 TCP frames of a and 1 UDP from 10.9.0.1; wire bytes are the frames' own lengths
    assert sorted(hosts) == ["10.9.0.1", "10.9.0.2"]
    assert (hosts["10.9.0.1"]["tx_packets"], hosts["10.9.0.1"]["rx_packets"]) == (5, 4)
    assert hosts["10.9.0.1"]["tx_bytes"] == 54 * 3 + 354 + 82 and hosts["10.9.0.1"]["rx_bytes"] == 54 * 2 + 1254 + 132

    port = free_port()
    argv = [sys.executable, str(ROOT / "run.py"), "serve", "--db", str(tmp_path / "bare.db"), "--port", str(port)]
    with running(argv, env=without_posix) as server:
        server.wait_for("dashboard: ", 60)
        answer = wait_for(lambda: _get_json(f"http://127.0.0.1:{port}/api/hosts?since=2023-11-14T22:00:00Z"), what="/api/hosts")
        assert sorted(h["ip"] for h in answer["rows"]) == ["10.9.0.1", "10.9.0.2"]
        assert server.finish(signal.SIGTERM, timeout=30) == 0, server.output


def _get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except OSError:
        return None
