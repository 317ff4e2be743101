"""NetTally as a package (pyproject.toml): `pip install .` of this checkout into a fresh virtualenv
gives a `nettally` command that imports a capture, exports it and serves the dashboard from the
installed files alone (the schema, name tables, templates and scripts are package data), far from
the checkout. The dependencies come from this interpreter's environment (a .pth file): the test
installs NetTally itself, not the internet's packages."""
import json
import signal
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from common import ROOT, wait_for
from running import running
from web_helpers import free_port


SHARED_CAPTURE = Path(__file__).resolve().parents[2] / "shared" / "captures" / "ppp_pcapng-example.pcapng"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtualenv with this checkout `pip install`ed into it (its dependencies: this
    interpreter's site-packages, through a .pth file); its `nettally` script and an environment
    with nothing of the checkout in it."""
    venv = tmp_path_factory.mktemp("venv")
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the venv's own setuptools (ensurepip's, older than requirements-test.txt's pin) would
    # shadow the pinned one the build needs
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], capture_output=True, timeout=300)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                           "--no-build-isolation", str(ROOT)], capture_output=True, text=True, timeout=600, cwd=venv)
    assert done.returncode == 0, done.stderr
    return venv / "bin" / "nettally", {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


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
    where = subprocess.run([str(nettally.parent / "python"), "-c", "import run, storage; print(run.__file__, storage.__file__)"],
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


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CAPTURE.exists(), reason=f"{SHARED_CAPTURE} is not here (the shared captures sit beside the checkout)")
def test_the_installed_command_imports_a_shared_capture_as_the_checkout_does(installed, tmp_path):
    nettally, env = installed
    exports = {}
    for how, argv, run_env in (("installed", [str(nettally)], env), ("checkout", [sys.executable, str(ROOT / "run.py")], None)):
        db = tmp_path / f"{how}.db"
        done = subprocess.run(argv + ["import", str(SHARED_CAPTURE), "--db", str(db)], capture_output=True, text=True,
                              env=run_env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        # as sets of rows: flows with the same first_seen come in the order they were written (by id)
        exports[how] = [sorted(json.dumps(row, sort_keys=True) for row in json.loads(subprocess.run(
            argv + ["export", table, "--db", str(db), "--format", "json"], capture_output=True, text=True,
            env=run_env, cwd=tmp_path, timeout=120).stdout)) for table in ("hosts", "flows")]
    assert exports["installed"] == exports["checkout"] and len(exports["installed"][0]) > 2
