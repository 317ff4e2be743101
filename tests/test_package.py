"""NetTally as a package (pyproject.toml): `pip install` of this checkout gives a `nettally` command
that imports a capture, exports it and serves the dashboard from the installed files alone (the
schema, name tables, templates and scripts are package data), far from the checkout."""
import signal
import subprocess
import sys
import urllib.request

import pytest

from common import ROOT, wait_for
from running import running
from web_helpers import free_port


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The checkout installed (no dependencies: this interpreter has them) into a directory of its
    own; its `nettally` script and the environment that finds the installed copy first."""
    target = tmp_path_factory.mktemp("installed")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                           "--no-build-isolation", "--target", str(target), str(ROOT)],
                          capture_output=True, text=True, timeout=600, cwd=target)
    assert done.returncode == 0, done.stderr
    return target / "bin" / "nettally", {"PYTHONPATH": str(target), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.mark.slow
def test_the_installed_command_imports_exports_and_serves(installed, tmp_path):
    nettally, env = installed
    capture = tmp_path / "one.pcap"
    # one Ethernet/IPv4/UDP frame 10.0.0.1:5000 -> 10.0.0.2:53, 4 payload bytes (46 bytes on the wire)
    frame = bytes.fromhex("020000000002020000000001080045000020000100004011" "66c9" "0a0000010a000002"
                          "1388003500080000" "61626364")
    capture.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
                        + (1_700_000_000).to_bytes(4, "little") + bytes(4)
                        + len(frame).to_bytes(4, "little") * 2 + frame)
    db = tmp_path / "p.db"
    where = subprocess.run([sys.executable, "-c", "import run, storage; print(run.__file__, storage.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(ROOT) not in where.stdout and str(nettally.parent.parent) in where.stdout, where.stdout
    done = subprocess.run([str(nettally), "import", str(capture), "--db", str(db)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    hosts = subprocess.run([str(nettally), "export", "hosts", "--db", str(db)], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=60)
    assert hosts.returncode == 0 and hosts.stdout.splitlines()[1].startswith("10.0.0.1,46,0,1,0"), hosts.stdout
    port = free_port()
    with running([str(nettally), "serve", "--db", str(db), "--port", str(port)], env=env) as server:
        server.wait_for("dashboard: ", 60)
        page = wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read(),
                        what="the overview page")
        script = urllib.request.urlopen(f"http://127.0.0.1:{port}/static/js/common.js", timeout=10).read()
        assert b"<html" in page.lower() and len(script) > 100
        assert server.finish(signal.SIGTERM, timeout=30) == 0, server.output
