"""A full disk and a read-only database: the writer stops writing with one clear log line and
an alert, keeps the counts in memory within its bound, and writes them all when it can again.
The file systems are small tmpfs mounts the tests make (root) and unmount afterwards."""
import logging
import os
import subprocess

import pytest

from alerts.service import AlertRunner
from records import Rollup
from common import needs_root
from storage import alert_log
from storage.backlog import Backlog, merge
from storage.db import DatabaseError, connect
from storage.writer import WriterThread, health
from common import wait_for

T = 1_700_035_200


class Settings:
    alerts_config = webhook_url = ""
    maintenance_interval = 3600.0
    writer_backlog_rows = 100_000
    retention_seconds, retention_minutes, retention_hours, retention_days, retention_flows = 900, 48, 90, 730, 90
    retention_iface_minutes = 35


def rollup(minute, hosts, first_host=0):
    """`hosts` hosts, each sending 1000 bytes + its number."""
    return Rollup(minute, [], {f"10.{(first_host + i) // 250}.{(first_host + i) % 250}.1": [1000 + i, 0, 1, 0]
                               for i in range(hosts)}, {"eth0": [hosts, hosts * 1000, hosts, 0, 0, 0, 0, 0, 0, 0]}, {})



@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs at tmp_path/fs, unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        if os.path.ismount(mount):
            subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path):
    """Writes `path` until the file system is full."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    with open(path, "ab", buffering=0) as f:    # and the last bytes a short write left
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass


def stored_tx(path):
    con = connect(path)
    try:
        return con.execute("SELECT coalesce(sum(tx_bytes), 0) FROM host_minutes").fetchone()[0]
    finally:
        con.close()


@needs_root
def test_disk_full_holds_counts_alerts_and_resumes(small_fs, caplog):
    caplog.set_level(logging.WARNING, logger="nettally")
    db = str(small_fs / "n.db")
    writer = WriterThread(db, Settings(), clock=lambda: T + 600, retry_interval=0.05)
    writer.start()
    assert writer.ready.wait(30) and writer.error is None
    sent = 0
    first = rollup(T, 10)
    writer.submit([first])
    sent += sum(c[0] for c in first.hosts.values())
    wait_for(lambda: stored_tx(db) == sent)
    fill(small_fs / "filler")
    now = [T + 120]
    runner = AlertRunner(Settings(), db, clock=lambda: now[0], start=False)
    for k in range(1, 6):                         # new minutes, new hosts: new pages to write
        r = rollup(T + 60 * k, 400, first_host=10 * k)
        writer.submit([r])
        sent += sum(c[0] for c in r.hosts.values())
    wait_for(lambda: health(db).stalled_since is not None)
    stall_lines = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(stall_lines) == 1 and "database or disk is full" in stall_lines[0]
    runner.step(now[0])
    assert runner.delivery.pending                 # the alert itself waits for space too
    assert writer.is_alive() and writer.error is None
    os.unlink(small_fs / "filler")
    wait_for(lambda: health(db).stalled_since is None)
    assert any("writing to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
    now[0] = T + 180
    runner.step(now[0])
    assert not runner.delivery.pending
    writer.close()
    assert stored_tx(db) == sent                  # nothing lost, nothing twice
    con = connect(db)
    rows = alert_log.alert_list(con)
    runner.con.close()
    con.close()
    assert [(a["kind"], a["state"]) for a in rows] == [("storage", "closed")]
    assert rows[0]["opened"] <= rows[0]["closed"] and "disk is full" in rows[0]["message"]


@needs_root
def test_read_only_database_at_start_waits_and_writes_when_writable(small_fs, caplog):
    caplog.set_level(logging.WARNING, logger="nettally")
    db = str(small_fs / "n.db")
    connect(db).close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    writer = WriterThread(db, Settings(), clock=lambda: T + 600, retry_interval=0.05)
    writer.start()
    assert writer.ready.wait(30)
    writer.submit([rollup(T, 50)])
    wait_for(lambda: health(db).stalled_since is not None)
    assert writer.error is None
    assert any("cannot write" in r.getMessage() for r in caplog.records)
    runner = AlertRunner(Settings(), db, clock=lambda: T + 120, start=False)   # cannot open it either
    runner.step(T + 120)
    assert runner.con is None and any("alert: database" in r.getMessage() for r in caplog.records)
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    wait_for(lambda: health(db).stalled_since is None)
    runner.step(T + 180)
    writer.close()
    runner.close()
    assert stored_tx(db) == sum(1000 + i for i in range(50))
    con = connect(db)
    assert [(a["kind"], a["state"]) for a in alert_log.alert_list(con)] == [("storage", "closed")]
    con.close()


@needs_root
def test_stopping_while_the_disk_is_full_says_what_is_lost(small_fs):
    db = str(small_fs / "n.db")
    connect(db).close()
    fill(small_fs / "filler")
    writer = WriterThread(db, Settings(), clock=lambda: T + 600, retry_interval=0.05)
    writer.start()
    writer.submit([rollup(T + 60 * k, 400, first_host=10 * k) for k in range(5)])
    wait_for(lambda: health(db).stalled_since is not None)
    with pytest.raises(DatabaseError, match=r"2005 rows of counts could not be written \(.*(full|no space).*\) and are lost"):
        writer.close()


def test_backlog_merges_minutes_then_hours_then_drops_oldest():
    b = Backlog(max_rows=25)
    for k in range(10):                            # 10 minutes x (5 hosts + 1 interface) = 60 rows
        b.add_rollups([rollup(T + 60 * k, 5)])
    # same hosts every minute: past the bound, minutes are folded into their hour, totals kept
    assert [r.bucket for r in b.rollups] == [T, T + 540] and b.rows == 12
    assert b.rollups[0].hosts["10.0.0.1"] == [9 * 1000, 0, 9, 0] and b.dropped_bytes == 0
    for h in range(1, 5):                          # four more hours of 10 other hosts each
        b.add_rollups([rollup(T + 3600 * h, 10, first_host=100 * h)])
    assert b.rows <= 25 and b.dropped_bytes == 5 * 1000 * 10 + 10 * 1000 * 2
    assert [r.bucket for r in b.rollups] == [T // 3600 * 3600 + 3600 * h for h in (3, 4)]


def test_merge_adds_flows_with_the_same_natural_key():
    from records import FlowDelta
    f = FlowDelta(6, "10.0.0.1", 1, "10.0.0.2", 2, T + 0.5, T + 1.0, 10, 1, 20, 2, 2, "eth0", False, 7, "a")
    g = f._replace(last_seen=T + 70.0, orig_bytes=5, orig_packets=1, resp_bytes=0, resp_packets=0, tcp_flags=16,
                   closed=True, orig_pid=None, orig_process=None, resp_pid=9, resp_process="b")
    (m,) = merge([Rollup(T, [f], {}, {}, {}), Rollup(T + 60, [g], {}, {}, {})], 3600)
    assert m.flows == [FlowDelta(6, "10.0.0.1", 1, "10.0.0.2", 2, T + 0.5, T + 70.0, 15, 2, 20, 2, 18, "eth0",
                                 True, 7, "a", 9, "b")]
