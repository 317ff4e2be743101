"""Shared test setup: the project root on sys.path, and markers for what a test needs."""
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (live capture / network namespaces)")


def needs_tool(name):
    return pytest.mark.skipif(shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists(),
                              reason=f"{name} is not installed (make test installs it when run as root on Debian)")


@pytest.fixture
def run_py():
    """argv prefix that runs this checkout's run.py with the current interpreter."""
    return [sys.executable, str(ROOT / "run.py")]


@pytest.fixture
def clean_env(monkeypatch):
    """No NETTALLY_* variable of the caller's environment reaches run.py's settings."""
    for name in list(os.environ):
        if name.startswith("NETTALLY_"):
            monkeypatch.delenv(name)


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
