"""packaging/nettally.service, the systemd unit: systemd's own checker accepts it, and what it
grants is enough. NetTally run as a user that is not root, with exactly the unit's ambient
capabilities and no new privileges, captures a UDP exchange on lo to the byte and charges it to
the process that sent it (a process of another user: root's)."""
import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from common import IS_ROOT, ROOT, needs_tool, system
from running import running

UNIT = ROOT / "packaging" / "nettally.service"
DATAGRAMS, PAYLOAD = 20, 100


def unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_the_unit_runs_without_root_and_sandboxed():
    service = unit()["Service"]
    assert service["User"] not in ("root", "0") and service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "nettally" and "/var/lib/nettally/" in service["ExecStart"]
    assert service["AmbientCapabilities"].split() == ["CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH",
                                                      "CAP_SYS_PTRACE"]
    assert service["CapabilityBoundingSet"] == service["AmbientCapabilities"]
    assert (service["NoNewPrivileges"], service["ProtectSystem"], service["ProtectHome"]) == ("yes", "strict", "yes")


@needs_tool("systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """In a root of its own: the unit where systemd looks for it, an executable where ExecStart
    points, and the system's own units it refers to (targets). Any warning about it fails."""
    root = tmp_path / "root"
    program = root / unit()["Service"]["ExecStart"].split()[0].lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    installed = root / "etc/systemd/system/nettally.service"
    shutil.copy(UNIT, installed)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}", str(installed)],
                          capture_output=True, text=True, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "nettally" not in said, said


def _caps(names):
    return ",".join("+" + name.lower().removeprefix("cap_") for name in names)


@system
@pytest.mark.skipif(not IS_ROOT, reason="needs root (to start a process as another user with capabilities)")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_the_units_user_and_capabilities_capture_and_attribute(tmp_path):
    service = unit()["Service"]
    caps = _caps(service["AmbientCapabilities"].split())
    flags = service["ExecStart"].split()[1:]
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    flags[flags.index("--db") + 1] = str(state / "nettally.db")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind(("127.0.0.1", 0))
        sender.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
                f"--inh-caps={caps}", f"--ambient-caps={caps}",
                sys.executable, str(ROOT / "run.py"), *flags, "--no-web", "-i", "lo", "-f", f"udp port {port}"]
        with running(argv, env={"PATH": os.environ["PATH"], "HOME": str(state)}) as capture:
            capture.wait_for("capturing on lo")
            for _ in range(DATAGRAMS):
                sender.sendto(b"x" * PAYLOAD, ("127.0.0.1", port))
                receiver.recv(2048)     # received: its frame has passed the capture tap already
            # the sender's socket stays open until the capture has stopped: attribution finds it
            assert capture.finish(signal.SIGTERM, timeout=60) == 0, capture.output
        assert f"stopped: {DATAGRAMS} frames counted, 0 dropped" in capture.output, capture.output
    export = subprocess.run([sys.executable, str(ROOT / "run.py"), "export", "processes", "--db",
                             str(state / "nettally.db")], capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    wire = DATAGRAMS * (14 + 20 + 8 + PAYLOAD)
    [header, row] = export.stdout.splitlines()
    pid, _, tx_bytes, rx_bytes, tx_packets, rx_packets = row.split(",")
    assert (int(pid), int(tx_bytes), int(rx_bytes), int(tx_packets), int(rx_packets)) == \
        (os.getpid(), wire, wire, DATAGRAMS, DATAGRAMS)
