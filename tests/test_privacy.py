"""The database and its side files hold process command lines, user names and who talked to
whom: they are made 0600, or 0640 for the group the db_group setting names, and never readable
by everyone (issue 10, privacy)."""
import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from common import IS_ROOT
from storage.db import connect, share_with_group

needs_setpriv = pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None or shutil.which("groupadd") is None,
                                   reason="needs root, setpriv and groupadd")
MEMBER, THIRD = 65534, 65533          # uids of the group's reader and of anyone else (no passwd entry needed)


@pytest.fixture
def open_dir():
    """A folder everyone may enter (pytest's own are 0700): only the files' modes protect them."""
    path = Path(tempfile.mkdtemp(prefix="nettally-privacy-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def group():
    """A group made for the test, removed after: (name, gid)."""
    name = f"ntreaders{os.getpid()}"
    subprocess.run(["groupadd", name], check=True, capture_output=True, timeout=30)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], capture_output=True, timeout=30)


def as_user(uid, groups, *command):
    """`command` run as uid (its own gid), with these supplementary groups."""
    extra = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", *extra, *command],
                          capture_output=True, timeout=60)


def owners(path):
    return {suffix: (stat.S_IMODE(st.st_mode), st.st_gid) for suffix in ("", "-wal", "-shm")
            if (st := _stat(str(path) + suffix))}


def _stat(p):
    try:
        return os.stat(p)
    except FileNotFoundError:
        return None


READ_SQL = ("import sqlite3, sys; con = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
            "print(con.execute('SELECT count(*) FROM processes').fetchone()[0])")


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
def test_another_user_cannot_read_it(open_dir):
    # open_dir, not tmp_path: pytest's folders are 0700, which alone kept every other user out
    path, control = open_dir / "p.db", open_dir / "control"
    connect(str(path)).close()
    control.write_bytes(b"readable")
    os.chmod(control, 0o644)
    assert as_user(THIRD, [], "cat", str(control)).stdout == b"readable"      # the folder lets them in
    read = as_user(THIRD, [], "cat", str(path))
    assert read.returncode != 0 and b"Permission denied" in read.stderr


# ---- db_group: 0640 for a group a setting names ------------------------------------------------------

@pytest.mark.system
@needs_setpriv
def test_db_group_makes_the_database_and_side_files_0640_for_that_group(open_dir, group):
    name, gid = group
    path = open_dir / "g.db"
    share_with_group(str(path), name)
    con = connect(str(path))
    con.execute("INSERT INTO processes (pid, start_time, name) VALUES (1, 1.0, 'x')")
    con.commit()                                   # the row is in the -wal, which stays while con is open
    try:
        assert owners(path) == {"": (0o640, gid), "-wal": (0o640, gid), "-shm": (0o640, gid)}
        connect(str(path)).close()                 # a writer opening it again keeps the group's read
        assert owners(path)[""] == (0o640, gid)
        os.chmod(path, 0o666)
        connect(str(path)).close()                 # ... and only read: never write, never others
        assert owners(path)[""] == (0o640, gid)
        for suffix in ("", "-wal", "-shm"):
            assert as_user(MEMBER, [gid], "cat", f"{path}{suffix}").returncode == 0
            third = as_user(THIRD, [], "cat", f"{path}{suffix}")
            assert third.returncode != 0 and b"Permission denied" in third.stderr
        member = as_user(MEMBER, [gid], sys.executable, "-c", READ_SQL, str(path))
        assert (member.returncode, member.stdout.strip()) == (0, b"1"), member.stderr
        assert as_user(THIRD, [], sys.executable, "-c", READ_SQL, str(path)).returncode != 0
    finally:
        con.close()
    share_with_group(str(path), "")                # the setting emptied: owner only again
    assert {mode for mode, _ in owners(path).values()} == {0o600}


@pytest.mark.system
@needs_setpriv
def test_db_group_through_run_py_and_an_unknown_group_is_one_line_exit_2(open_dir, group, capsys, clean_env,
                                                                          monkeypatch):
    from captures import pcap_bytes
    from common import cli
    name, gid = group
    capture, path = open_dir / "c.pcap", open_dir / "r.db"
    capture.write_bytes(pcap_bytes(1, [(1_700_000_000, b"\x00" * 60)]))
    monkeypatch.setenv("NETTALLY_DB_GROUP", name)
    code, out, err = cli(capsys, "import", capture, "--db", path)
    assert (code, err) == (0, "")
    assert owners(path)[""] == (0o640, gid) and all(mode == 0o640 for mode, _ in owners(path).values())
    assert as_user(MEMBER, [gid], "cat", str(path)).returncode == 0
    assert as_user(THIRD, [], "cat", str(path)).returncode != 0
    monkeypatch.setenv("NETTALLY_DB_GROUP", "no-such-group-here")
    code, out, err = cli(capsys, "import", capture, "--db", open_dir / "other.db")
    assert (code, out) == (2, "") and err == "run.py import: db_group 'no-such-group-here': no such group\n"
    assert not (open_dir / "other.db").exists()
