"""Exactly-once imports (issue 10): a file's counts are stored once, whatever happens to the import.

- the same content imported twice (same path or another) is refused in one line; --force adds it;
- an import killed with SIGKILL at any point leaves nothing, the next start says so, and the re-run
  gives the database of one clean import, row for row;
- a hypothesis state machine drives imports, kills, stops and re-imports of a few files in random
  order: the stored totals always equal those of the distinct files imported (plus forced ones).
"""
import multiprocessing
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from common import needs_root, wait_for
from captures import pcap_bytes

# Tables that hold what a file adds; `sources`, `imports` and the alert tables also hold wall-clock times.
_NOT_COUNTS = {"sources", "imports", "alerts", "alert_rules", "sqlite_sequence"}


def _frame(i):
    """An Ethernet/IPv4/UDP frame of host 10.0.<i>.x, its size depending on i."""
    ip_payload = 8 + 20 + (i % 7) * 10
    ip = (bytes([0x45, 0]) + (20 + ip_payload).to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0])
          + bytes([10, 0, i % 5, 1 + i % 3]) + bytes([10, 1, 0, 9]))
    udp = (40000 + i % 11).to_bytes(2, "big") + (53).to_bytes(2, "big") + ip_payload.to_bytes(2, "big") + bytes(2)
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp + bytes(ip_payload - 8)


def small_capture(path, seed, frames=300):
    """A capture whose content depends on seed: frames over three minutes, so several buckets."""
    t0 = 1_700_000_000 + seed * 1000
    records = [(t0 + i * 0.6, _frame(seed * 31 + i)) for i in range(frames)]
    path.write_bytes(pcap_bytes(1, records))
    return sum(len(f) for _, f in records), frames


def _read(db, sql, empty):
    """Rows of a query; `empty` when the database or its schema is not there yet (an import cut
    off before it made them)."""
    if not Path(db).exists():
        return empty
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
        return empty
    finally:
        con.close()


def totals(db):
    return _read(db, "SELECT coalesce(sum(frames), 0), coalesce(sum(bytes), 0) FROM iface_minutes", [(0, 0)])[0]


def dump(db):
    """Every row of every count table, flows named by their natural key rather than their row id
    (ids follow the order flows reach the writer, which batching may change): two databases with
    equal dumps hold the same counts."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        key = {row[0]: row[1:] for row in con.execute(
            "SELECT id, proto, orig_h, orig_p, resp_h, resp_p, first_seen FROM flows")}
        out = {}
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            if name in _NOT_COUNTS:
                continue
            cur = con.execute(f"SELECT * FROM {name}")
            cols = [d[0] for d in cur.description]
            rows = [tuple(key.get(v, v) if c in ("id", "flow_id") and name.startswith("flow") else v
                          for c, v in zip(cols, row)) for row in cur]
            out[name] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def ledger(db):
    return _read(db, "SELECT name, state, frames FROM imports ORDER BY id", [])


def _run(run_py, *args):
    return subprocess.run(run_py + ["import", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.system
def test_the_same_content_is_stored_once_unless_forced(tmp_path, run_py):
    a, db = tmp_path / "a.pcap", tmp_path / "x.db"
    nbytes, frames = small_capture(a, 1)
    done = _run(run_py, a, "--db", db)
    assert (done.returncode, done.stderr) == (0, "")
    assert totals(db) == (frames, nbytes)
    once = dump(db)

    again = _run(run_py, a, "--db", db)
    assert again.returncode == 2 and again.stdout == ""
    assert re.fullmatch(rf"run.py import: {re.escape(str(a))}: already imported on \S+ \S+, {frames} frames; "
                        r"--force imports it again \(its counts are then added twice\)\n", again.stderr), again.stderr
    assert dump(db) == once

    copy = tmp_path / "copy.pcap"                   # the same bytes under another name
    shutil.copy(a, copy)
    other = _run(run_py, copy, "--db", db)
    assert other.returncode == 2 and f"{copy}: already imported (as {a}) on " in other.stderr
    assert dump(db) == once

    forced = _run(run_py, copy, "--force", "--db", db)
    assert (forced.returncode, forced.stderr) == (0, "")
    assert totals(db) == (2 * frames, 2 * nbytes)
    assert [(Path(n).name, s, f) for n, s, f in ledger(db)] == [
        ("a.pcap", "stored", frames), ("a.pcap", "refused", None), ("copy.pcap", "refused", None),
        ("copy.pcap", "stored", frames)]


@pytest.mark.system
def test_a_second_file_in_one_command_is_refused_alone(tmp_path, run_py):
    a, b, db = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "x.db"
    na, fa = small_capture(a, 1)
    nb, fb = small_capture(b, 2)
    done = _run(run_py, a, a, b, "--db", db)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "already imported" in done.stderr
    assert done.stdout.startswith(f"{a}: {fa} frames") and f"\n{b}: {fb} frames" in done.stdout
    assert totals(db) == (fa + fb, na + nb)


def _descendants(pid):
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _gone(pids):
    return all(not Path(f"/proc/{p}").exists() or "Z" in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]
               for p in pids)


def _wal_size(db):
    try:
        return os.stat(f"{db}-wal").st_size
    except OSError:
        return 0


@pytest.mark.system
@pytest.mark.slow
def test_kill_9_at_five_points_then_a_rerun_equals_one_clean_import(tmp_path, run_py):
    """SIGKILL of the whole import (its writer and reader processes die with it) at 5 random
    points, chosen by how far its transaction has grown; every re-run reports the import cut off
    before, and the final database equals a clean import's, row for row."""
    from bench import gen_capture
    path = tmp_path / "500k.pcap"
    gen_capture.generate(str(path), packets=500_000, flows=5_000, seconds=300.0, seed=7)
    clean = tmp_path / "clean.db"
    proc = subprocess.Popen(run_py + ["import", str(path), "--db", str(clean)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:                    # how far the transaction grows (its WAL), to pick points
        peak = max(peak, _wal_size(clean))
        time.sleep(0.005)
    assert (proc.returncode, proc.stderr.read()) == (0, "")
    proc.stdout.close()
    proc.stderr.close()
    assert peak > 1 << 20, "the import's transaction never reached the WAL: no point to kill at"
    expected = dump(clean)
    assert totals(clean)[0] == 500_000

    rng = random.Random(10)
    db = tmp_path / "killed.db"
    for point in sorted(rng.uniform(0.0, 0.9) for _ in range(5)):
        _kill_import_at(run_py, path, db, point * peak)
        if ledger(db)[-1][1] == "stored":         # it committed just before the kill landed
            rerun = _run(run_py, path, "--db", db)
            assert rerun.returncode == 2 and "already imported" in rerun.stderr
            assert dump(db) == expected
        else:
            assert ledger(db)[-1][1] == "running"
            assert totals(db) == (0, 0)           # nothing of a cut-off import is stored
            rerun = _run(run_py, path, "--db", db)
            assert rerun.returncode == 0, rerun.stderr
            assert re.fullmatch(rf"run.py import: the import of {re.escape(str(path))} started \S+ \S+ was cut "
                                r"off \(process \d+ ended without finishing\); nothing of it was stored: import it "
                                r"again\n", rerun.stderr), rerun.stderr
            assert dump(db) == expected, f"killed at {point:.2f} of the transaction"
            assert [s for _, s, _ in ledger(db)] == ["abandoned", "stored"]
        db.unlink()
        for side in ("-wal", "-shm"):
            Path(f"{db}{side}").unlink(missing_ok=True)


def _running(db):
    rows = ledger(db)
    return bool(rows) and rows[-1][1] == "running"


def _kill_import_at(run_py, path, db, wal_bytes):
    """Starts an import and SIGKILLs it, and every process it started, once its transaction has
    grown to wal_bytes (or once it ended, if it ended first: then it is not killed)."""
    proc = subprocess.Popen(run_py + ["import", str(path), "--db", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: proc.poll() is not None or (_running(db) and _wal_size(db) >= wal_bytes), 120,
             f"the import's transaction to reach {wal_bytes} bytes")
    tree = _descendants(proc.pid)
    proc.kill()
    proc.communicate()
    _kill_all(tree)


def _kill_all(tree):
    for pid in tree:                  # the import's own processes (writer, reader) stop with it
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: _gone(tree), 30, "the import's processes to end")


def _import_in_child(db, path, force):
    import run
    os._exit(run.main(["import", str(path), "--db", str(db)] + (["--force"] if force else [])))


class ImportsMachine(RuleBasedStateMachine):
    """Imports, SIGKILLed imports, SIGTERMed imports and forced re-imports of three files (one of
    them also under a second name) in any order. Model: how many times each content is stored."""

    @initialize()
    def setup(self):
        import tempfile
        self.dir = Path(tempfile.mkdtemp(prefix="nettally-once-"))
        self.db = self.dir / "m.db"
        self.files, self.sizes = [], {}
        for seed in (1, 2, 3):
            p = self.dir / f"f{seed}.pcap"
            self.sizes[seed] = small_capture(p, seed, frames=200 + 50 * seed)
            self.files.append((p, seed))
        twin = self.dir / "twin.pcap"
        shutil.copy(self.dir / "f1.pcap", twin)
        self.files.append((twin, 1))
        self.stored = {1: 0, 2: 0, 3: 0}
        self.ctx = multiprocessing.get_context("fork")

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _start(self, index, force=False):
        path, content = self.files[index]
        child = self.ctx.Process(target=_import_in_child, args=(self.db, path, force))
        child.start()
        return child, content

    @rule(index=st.integers(0, 3), force=st.booleans())
    def import_file(self, index, force):
        child, content = self._start(index, force)
        child.join(60)
        assert child.exitcode in (0, 2)
        if force or not self.stored[content]:
            assert child.exitcode == 0
            self.stored[content] += 1
        else:
            assert child.exitcode == 2                 # refused: already stored

    @rule(index=st.integers(0, 3), after_ms=st.integers(0, 300), how=st.sampled_from(["kill", "term"]))
    def cut_off(self, index, after_ms, how):
        """Any point is a fair point: the invariant must hold whenever the import dies."""
        child, content = self._start(index)
        child.join(after_ms / 1000)
        tree = _descendants(child.pid)
        if child.exitcode is None:                     # still at work (else it ended by itself)
            os.kill(child.pid, signal.SIGKILL if how == "kill" else signal.SIGTERM)
        child.join(60)
        _kill_all(tree)
        states = [s for _, s, _ in ledger(self.db)]
        if states.count("stored") > sum(self.stored.values()):
            assert not self.stored[content]            # it committed before the signal came, and
            self.stored[content] += 1                  # was stored once: the totals must show it
        assert states.count("stored") == sum(self.stored.values())
        assert "running" not in states[:-1]            # every earlier cut-off was reported

    @invariant()
    def totals_are_those_of_what_was_stored(self):
        if not hasattr(self, "db"):
            return
        expected = tuple(sum(self.stored[c] * self.sizes[c][i] for c in self.stored) for i in (1, 0))
        assert totals(self.db) == expected


TestImportsMachine = ImportsMachine.TestCase
TestImportsMachine.settings = settings(max_examples=8, stateful_step_count=6, deadline=None,
                                       suppress_health_check=list(HealthCheck))
TestImportsMachine = pytest.mark.system(pytest.mark.slow(TestImportsMachine))


@needs_root
def test_the_live_capture_reports_an_import_cut_off_before_it_started(tmp_path, run_py):
    """The next start of any kind says so: here the live capture, on lo, for half a second."""
    from storage import imports
    from storage.db import connect
    db = tmp_path / "live.db"
    con = connect(str(db))
    imports.begin(con, "", "/captures/gone.pcap", 10, 999_999_999, 1.0, started=1_700_000_000)
    con.close()                                  # a process that cannot be alive left it 'running'
    done = subprocess.run(run_py + ["--no-web", "-i", "lo", "--db", str(db), "--duration", "0.5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"the import of /captures/gone.pcap started 2023-11-\d+ \S+ was cut off \(process 999999999 "
                     r"ended without finishing\); nothing of it was stored: import it again\n", done.stderr), done.stderr
    assert [s for _, s, _ in ledger(db)] == ["abandoned"]


def test_a_big_file_hashed_beside_its_import_is_not_refused_by_its_own_row(tmp_path, capsys, monkeypatch):
    """A file over HASH_AT_ONCE is hashed by a thread while it is imported; a hash known only
    after the import committed once took the import's own row for an earlier one ('already
    imported', exit 2, for a file imported once)."""
    from collector import import_ledger
    from common import cli
    monkeypatch.setattr(import_ledger, "HASH_AT_ONCE", 0)        # this small file takes the big files' way
    a, db = tmp_path / "a.pcap", tmp_path / "x.db"
    nbytes, frames = small_capture(a, 4)
    code, out, err = cli(capsys, "import", a, "--db", db)
    assert (code, err) == (0, ""), err
    assert totals(db) == (frames, nbytes) and [s for _, s, _ in ledger(db)] == ["stored"]
    code, out, err = cli(capsys, "import", a, "--db", db)
    assert code == 2 and "already imported on" in err and totals(db) == (frames, nbytes)
