"""What tests share, imported one way (`from common import ...`): the checkout's root, what a
test needs from the machine (each such need marks the test `system`), the in-process CLI and
waiting for a condition."""
import os
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# `system`: needs root, network namespaces, a browser, tshark/tcpdump or processes of its own;
# `pytest -m "not system"` (make test-unit) runs the pure rest in seconds.
system = pytest.mark.system


def needs_root(test):
    return system(pytest.mark.skipif(not IS_ROOT, reason="needs root (live capture / network namespaces)")(test))


def needs_tool(name):
    missing = shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()
    skip = pytest.mark.skipif(missing, reason=f"{name} is not installed (make test installs it when run as root on Debian)")
    return lambda test: system(skip(test))


def cli(capsys, *argv):
    """run.py in this process: (exit status, stdout, stderr)."""
    import run
    code = run.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def wait_for(condition, seconds=30.0, what="condition", interval=0.02):
    """Polls condition() until it returns something true and returns that; fails naming `what`
    at the deadline. Tests wait for conditions this way, never for a fixed time."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(interval)
