"""Shared test setup: the project root on sys.path, and the fixtures every file may use. Helpers
are imported from tests/common.py, never from this file."""
import os
import sys

import pytest

from common import ROOT

sys.path.insert(0, str(ROOT))


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
