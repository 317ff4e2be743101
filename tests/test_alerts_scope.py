"""Alerts after an import judge what the import stored (issue 10): its hosts and interfaces, in its
own span, with timestamps far from the rest left out and counted (alerts/scope.py)."""
import re
import sqlite3
import subprocess

import pytest

from alerts.scope import GAP, ImportScope
from captures import pcap_bytes
from records import IFACE_FIELDS, Rollup

DAY, YEAR = 86_400, 365 * 86_400
T0 = 1_700_006_400                      # 2023-11-15 00:00 UTC


def _rollup(bucket, frames, hosts=("10.0.0.1",), iface="f.pcap"):
    counters = [0] * len(IFACE_FIELDS)
    counters[0] = frames
    return Rollup(bucket, [], {h: [1, 0, 1, 0] for h in hosts}, {iface: counters}, {})


def test_two_frames_ten_years_apart_keep_one_and_count_the_other():
    scope = ImportScope()
    scope.add([_rollup(T0, 1), _rollup(T0 + 10 * YEAR, 1)])
    assert scope.span() == (T0, T0 + 60, 1)       # equal runs: the earliest is the capture


def test_the_run_with_most_frames_is_the_capture_and_a_day_long_capture_stays_whole():
    scope = ImportScope()
    scope.add([_rollup(T0 - 10 * YEAR, 3)])                            # a damaged record's clock
    scope.add([_rollup(T0 + m * 60, 10) for m in range(0, 24 * 60, 7)])   # a day, gaps under GAP
    scope.add([_rollup(T0 + DAY + GAP + 3600, 2)])                     # beyond the gap: apart
    assert scope.span() == (T0, T0 + (24 * 60 - 1) // 7 * 7 * 60 + 60, 5)


def test_frames_clamped_to_the_ends_of_time_are_never_the_capture_unless_alone():
    scope = ImportScope()
    scope.add([_rollup(253_402_300_740, 100), _rollup(0, 7), _rollup(T0, 59)])
    assert scope.span() == (T0, T0 + 60, 107)
    alone = ImportScope()
    alone.add([_rollup(253_402_300_740, 3)])
    assert alone.span() == (253_402_300_740, 253_402_300_800, 0)


def test_hosts_and_interfaces_are_what_the_import_saw_and_bounded():
    scope = ImportScope(max_subjects=3)
    scope.add([_rollup(T0, 1, hosts=("10.0.0.1", "10.0.0.2"), iface="a")])
    assert scope.subjects() == {"host": {"10.0.0.1", "10.0.0.2"}, "interface": {"a"}, "process": set()}
    other = ImportScope(max_subjects=3)
    other.add([_rollup(T0 + 60, 1, hosts=("10.0.0.3", "10.0.0.4"), iface="b")])
    scope.merge(other)
    assert scope.subjects() == {"interface": {"a", "b"}, "process": set()}   # too many: every host judged
    assert scope.span() == (T0, T0 + 120, 0)


def _frame(src, dst="192.0.2.1"):
    ip = (bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]) + bytes(map(int, src.split(".")))
          + bytes(map(int, dst.split("."))))
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + bytes([0x9c, 0x40, 0, 53, 0, 8, 0, 0])


def _alerts(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT subject FROM alerts ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.mark.system
def test_a_far_off_timestamp_does_not_drag_another_capture_into_the_alerts(tmp_path, run_py):
    """The issue's case: a database holding a capture whose late hosts are new devices, then a
    2-frame file with one timestamp 10 years before it, so that its span would cover the first
    capture. The second import opens alerts about its own hosts only, and says what it left out."""
    first, db = tmp_path / "first.pcap", tmp_path / "a.db"
    early = [(T0 + i, _frame("10.0.0.1")) for i in range(5)]
    late = [(T0 + 2 * 3600 + i, _frame(f"10.0.1.{i + 1}")) for i in range(40)]   # 40 new devices
    first.write_bytes(pcap_bytes(1, early + late))
    done = subprocess.run(run_py + ["import", str(first), "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "alerts: 40 (new-device 40)" in done.stdout
    before = _alerts(db)

    two = tmp_path / "two.pcap"
    two.write_bytes(pcap_bytes(1, [(T0 - 10 * YEAR, _frame("10.9.0.1")), (T0 + 3 * 3600, _frame("10.9.0.2"))]))
    done = subprocess.run(run_py + ["import", str(two), "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert re.search(r"^alert rules: 1 frames left out, their timestamps more than a day away from the capture's "
                     r"2013-11-\d\dT\S+Z \.\. 2013-11-\d\dT\S+Z$", done.stdout, re.M), done.stdout
    new = _alerts(db)[len(before):]
    assert all(subject.startswith("10.9.0.") for (subject,) in new), new
    assert "10.0.1." not in done.stdout
