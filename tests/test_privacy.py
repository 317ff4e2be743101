"""The database and its side files hold process command lines, user names and who talked to
whom: they are made 0600 and never readable by everyone (issue 10, privacy)."""
import os
import shutil
import stat
import subprocess

import pytest

from common import IS_ROOT
from storage.db import connect


def modes(path):
    return {suffix: stat.S_IMODE(os.stat(str(path) + suffix).st_mode)
            for suffix in ("", "-wal", "-shm") if os.path.exists(str(path) + suffix)}


def test_a_new_database_and_its_side_files_are_0600(tmp_path):
    old = os.umask(0o022)                       # the usual umask would make them 0644
    try:
        con = connect(str(tmp_path / "n.db"))
        con.execute("INSERT INTO processes (pid, start_time, name) VALUES (1, 1.0, 'x')")
        con.commit()
        assert modes(tmp_path / "n.db") == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
        con.close()
    finally:
        os.umask(old)


def test_an_existing_readable_database_is_closed_to_others(tmp_path):
    path = tmp_path / "old.db"
    connect(str(path)).close()
    os.chmod(path, 0o644)
    connect(str(path)).close()
    assert modes(path)[""] == 0o600


@pytest.mark.system
@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)")
def test_another_user_cannot_read_it(tmp_path):
    os.chmod(tmp_path, 0o755)                   # the folder is open: only the file's mode protects it
    path = tmp_path / "p.db"
    connect(str(path)).close()
    read = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(path)],
                          capture_output=True, timeout=30)
    assert read.returncode != 0 and b"Permission denied" in read.stderr
