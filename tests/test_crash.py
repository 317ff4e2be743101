"""Crash safety.

- A process applying rollups is killed with SIGKILL mid-stream: what is stored is exactly the
  batches it committed (no partial batch), and a restarted writer adds the rest without counting
  anything twice.
- The live collector (`run.py --no-web -i lo`) is killed with SIGKILL during steady traffic on lo
  and restarted; a parallel tcpdump is the oracle: everything sent more than one flush interval
  (plus the commit) before the kill is stored, nothing after it, and nothing twice.
- The writer checks the database at start: a damaged one is moved aside and said so, never
  overwritten; a file that is not SQLite at all is left alone.
- WAL checkpoints keep the WAL small, and say so when a reader holds it.
"""
import glob
import logging
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from records import Rollup
from common import IS_ROOT, ROOT
from settings import Settings as DefaultSettings
from storage import retention
from storage.db import DatabaseError, connect
from storage.store import RollupStore
from storage.writer import WriterThread
from common import wait_for

T = 1_700_035_200
PY = sys.executable



def batch(k):
    """Batch k: one rollup of 20 hosts, host i sending k * 100 + i bytes."""
    return [Rollup(T + 60 * (k % 50), [], {f"10.0.0.{i}": [k * 100 + i, 0, 1, 0] for i in range(20)}, {}, {})]


def batch_bytes(k):
    return sum(k * 100 + i for i in range(20))


_CHILD = """
import sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from storage.db import connect
from storage.store import RollupStore
from test_crash import batch
store = RollupStore(connect({db!r}))
for k in range({start}, 100000):
    store.apply(batch(k))
    print(k, flush=True)
"""


@pytest.mark.system
def test_sigkill_mid_stream_keeps_whole_batches_and_restart_counts_nothing_twice(tmp_path):
    db = str(tmp_path / "k.db")
    child = subprocess.Popen([PY, "-c", _CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), db=db, start=0)],
                             stdout=subprocess.PIPE, text=True)
    last = -1
    for line in child.stdout:
        last = int(line)
        if last >= 300:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    con = connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = con.execute("SELECT sum(tx_bytes) FROM host_minutes").fetchone()[0]
    # the child may have committed a batch or two after the last line it printed, never a part of one
    committed = [sum(batch_bytes(k) for k in range(n)) for n in range(last + 1, last + 50)]
    assert stored in committed
    done = committed.index(stored) + last + 1
    store = RollupStore(con)
    for k in range(done, done + 10):
        store.apply(batch(k))
    assert con.execute("SELECT sum(tx_bytes) FROM host_minutes").fetchone()[0] == sum(
        batch_bytes(k) for k in range(done + 10))
    con.close()


# ---- integrity check at start ------------------------------------------------------------------

def _damage_a_table_page(path):
    con = connect(path)
    RollupStore(con).apply([Rollup(T + 60 * k, [], {f"10.0.{k}.{i}": [1, 1, 1, 1] for i in range(200)}, {}, {})
                            for k in range(20)])
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'host_minutes_ip_sums'").fetchone()[0]
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(path, "r+b") as f:        # scribble over the index's root page, past its header
        f.seek((root - 1) * page + 100)
        f.write(b"\xff" * (page - 200))


def test_damaged_database_is_moved_aside_and_a_new_one_started(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="nettally")
    db = tmp_path / "d.db"
    _damage_a_table_page(db)
    damaged = db.read_bytes()
    writer = WriterThread(str(db), DefaultSettings(), clock=lambda: T + 600)
    writer.start()
    assert writer.ready.wait(30) and writer.error is None
    writer.submit(batch(1))
    writer.close()
    aside = glob.glob(str(db) + ".damaged-*")
    assert len(aside) == 1 and Path(aside[0]).read_bytes() == damaged
    lines = [r.getMessage() for r in caplog.records if "integrity check" in r.getMessage()]
    assert len(lines) == 1 and aside[0] in lines[0]
    con = connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT sum(tx_bytes) FROM host_minutes").fetchone()[0] == batch_bytes(1)
    con.close()


def test_a_file_that_is_not_sqlite_is_never_touched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    writer = WriterThread(str(path), DefaultSettings())
    writer.start()
    assert writer.ready.wait(30)
    writer.submit(batch(1))
    with pytest.raises(DatabaseError, match="not an SQLite database; refusing to touch it"):
        writer.close()
    assert path.read_text() == "my notes\n" and os.listdir(tmp_path) == ["notes.txt"]


# ---- the writer thread: hooks, sources, housekeeping, WAL ----------------------------------------

class Settings:
    maintenance_interval = 0.05
    writer_backlog_rows = 100_000
    retention_seconds, retention_minutes, retention_hours, retention_days, retention_flows = 900, 1, 90, 730, 90
    retention_iface_minutes = 35


def test_writer_thread_hooks_sources_and_housekeeping(tmp_path):
    db = str(tmp_path / "w.db")
    told = []
    writer = WriterThread(db, Settings(), clock=lambda: T + 3 * 3600, source=("live", "lo"), after_write=told.append)
    writer.start()
    for k in range(3):
        writer.submit(batch(k))
    writer.submit_seconds([(T + 3 * 3600 - 5, "lo", 1, 100, 0, 0)])
    writer.submit_drops(T, {"lo": 4})
    con = connect(db)
    # minutes are kept 1 h: housekeeping rolls them into hours and prunes them
    wait_for(lambda: con.execute("SELECT count(*) FROM host_minutes").fetchone()[0] == 0
             and con.execute("SELECT count(*) FROM host_hours").fetchone()[0] == 20, what="housekeeping")
    wait_for(lambda: os.path.getsize(db + "-wal") == 0, what="a WAL checkpoint")
    writer.close(frames=1234)
    assert [r for chunk in told for r in chunk] == [r for k in range(3) for r in batch(k)]
    assert con.execute("SELECT sum(tx_bytes) FROM host_hours").fetchone()[0] == sum(batch_bytes(k) for k in range(3))
    assert con.execute("SELECT kind, name, frames, finished IS NOT NULL FROM sources").fetchall() == [
        ("live", "lo", 1234, 1)]
    assert con.execute("SELECT frames FROM capture_drops_hours").fetchall() == [(4,)]
    assert con.execute("SELECT count(*) FROM iface_seconds").fetchone() == (1,)
    con.close()


def test_checkpoint_truncates_the_wal_and_reports_a_reader_holding_it(tmp_path, caplog):
    db = str(tmp_path / "c.db")
    con = connect(db)
    store = RollupStore(con)
    reader = sqlite3.connect(db)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM host_minutes").fetchone()    # holds this snapshot open
    for k in range(20):
        store.apply(batch(k))
    busy, pages, _ = retention.checkpoint(con)
    assert busy == 1 and pages > 0 and os.path.getsize(db + "-wal") > 0
    assert any("blocked by a reader" in r.getMessage() for r in caplog.records)
    reader.rollback()                    # a reader doing short transactions, as the web's do
    reader.execute("SELECT count(*) FROM host_minutes").fetchone()
    assert retention.checkpoint(con)[0] == 0
    assert os.path.getsize(db + "-wal") == 0
    reader.close()
    con.close()


# ---- the live collector killed with SIGKILL ------------------------------------------------------

FLUSH = 1.0                 # --flush-interval for the collector under test
COMMIT_MARGIN = 0.5         # the drain is handed over and committed within this (measured ~10 ms)
PAYLOAD = 1000
RATE = 200                  # datagrams a second
live = pytest.mark.skipif(not (IS_ROOT and sys.platform.startswith("linux")), reason="live capture needs root on Linux")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")


class Proc:
    """A process whose output lines are collected by a thread, so a test can wait for one."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     start_new_session=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_line(self, text, seconds=60):
        wait_for(lambda: any(text in line for line in self.lines) or self.proc.poll() is not None, seconds, text)
        assert any(text in line for line in self.lines), "".join(self.lines)

    def kill_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def send_steadily(port, seconds, stop=None):
    """RATE datagrams a second of PAYLOAD bytes to 127.0.0.1:port for at most `seconds`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start, sent = time.monotonic(), 0
    while sent < seconds * RATE and not (stop and stop.is_set()):
        ahead = start + sent / RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)         # pacing the traffic, not waiting for a result
        s.sendto(bytes(PAYLOAD), ("127.0.0.1", port))
        sent += 1
    s.close()
    return sent


def pcap_records(path):
    """[(ts, orig_len, dst_port)] of a tcpdump pcap of UDP/IPv4 on lo (Ethernet link type)."""
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    nano = magic == 0xA1B23C4D
    out, at = [], 24
    while at + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, at)
        if at + 16 + incl > len(data):         # tcpdump is still writing this one
            break
        frame = data[at + 16:at + 16 + incl]
        at += 16 + incl
        dport = struct.unpack_from("!H", frame, 14 + 20 + 2)[0]
        out.append((sec + frac / (1e9 if nano else 1e6), orig, dport))
    return out


def stored_bytes(db, port):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT coalesce(sum(orig_bytes + resp_bytes), 0) FROM flows WHERE resp_p = ?",
                           (port,)).fetchone()[0]
    finally:
        con.close()


@pytest.mark.system
@live
@needs_tcpdump
def test_sigkill_of_the_collector_loses_at_most_a_flush_interval(tmp_path):
    db, dump = str(tmp_path / "live.db"), str(tmp_path / "oracle.pcap")
    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in sinks:
        s.bind(("127.0.0.1", 0))
    p1, p2 = (s.getsockname()[1] for s in sinks)
    bpf = f"udp and (dst port {p1} or dst port {p2})"
    tcpdump = Proc([shutil.which("tcpdump"), "-i", "lo", "-U", "-n", "-w", dump, bpf])
    service = [PY, "run.py", "--no-web", "-i", "lo", "-f", bpf, "--db", db, "--flush-interval", str(FLUSH)]
    started = []
    try:
        tcpdump.wait_line("listening on")
        first = Proc(service)
        started.append(first)
        first.wait_line("capturing on")
        stop = threading.Event()
        sender = threading.Thread(target=send_steadily, args=(p1, 30, stop))
        sender.start()
        # steady traffic for several flush intervals, then the crash in the middle of it
        wait_for(lambda: stored_bytes(db, p1) > 0, 30, "the first flush")
        start = time.monotonic()
        wait_for(lambda: time.monotonic() - start > 3 * FLUSH + 0.3, 10, "traffic")
        killed_at = time.time()
        first.kill_group(signal.SIGKILL)
        first.proc.wait(30)
        stop.set()
        sender.join(30)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()
        after_crash = stored_bytes(db, p1)
        second = Proc(service)                   # the restart, on the same database
        started.append(second)
        second.wait_line("capturing on")
        sent2 = send_steadily(p2, 2)
        second.kill_group(signal.SIGINT)         # a clean stop writes everything
        assert second.proc.wait(60) == 0, "".join(second.lines)
        # the oracle reads the kernel's buffer at its own pace: let it catch up before it stops
        wait_for(lambda: sum(1 for r in pcap_records(dump) if r[2] == p2) >= sent2, 15, "tcpdump")
    finally:
        for p in started:
            if p.proc.poll() is None:
                p.kill_group(signal.SIGKILL)
                p.proc.wait(30)
        tcpdump.kill_group(signal.SIGINT)
        tcpdump.proc.wait(30)
        for s in sinks:
            s.close()
    seen = pcap_records(dump)
    before_kill = sum(n for ts, n, port in seen if port == p1 and ts <= killed_at)
    settled = sum(n for ts, n, port in seen if port == p1 and ts <= killed_at - FLUSH - COMMIT_MARGIN)
    stored1 = stored_bytes(db, p1)
    assert stored1 == after_crash                  # the restart added nothing to the old traffic
    assert settled <= stored1 <= before_kill       # lost: only the last flush interval; never twice
    assert before_kill - stored1 <= (FLUSH + COMMIT_MARGIN) * RATE * (PAYLOAD + 42)
    assert stored_bytes(db, p2) == sum(n for _, n, port in seen if port == p2) > 0
