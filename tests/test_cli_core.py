"""`run.py import` and `run.py export`: exit status 0 / 2 / 3, exactly one line on bad input and
no traceback, damaged captures keep what came before the damage; and tools/system-deps.sh."""
import csv
import io
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether

from common import cli
from captures import block, epb, gz, idb, pcap_bytes, pcapng_bytes, shb

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_040.0
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
FRAMES = [bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * k)) for k in range(6)]
EXIT_OK, EXIT_USAGE, EXIT_DAMAGED = 0, 2, 3


pytestmark = pytest.mark.usefixtures("clean_env")


def sub(run_py, *argv):
    done = subprocess.run(run_py + [str(a) for a in argv], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("NETTALLY_")})
    return done.returncode, done.stdout, done.stderr


def hosts(capsys, db):
    code, out, err = cli(capsys, "export", "hosts", "--db", db)
    assert (code, err) == (0, "")
    return {r["ip"]: (int(r["tx_bytes"]), int(r["tx_packets"])) for r in csv.DictReader(io.StringIO(out))}


def stored(db, k, first=T0, last=None, flows=1):
    """The import's last line for FRAMES[:k] sent at first, first + 1, ... (one flow, two hosts)."""
    def utc(t):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t // 60 * 60))
    since, until = utc(first), utc((first + k - 1 if last is None else last) + 60)
    size = sum(len(f) for f in FRAMES[:k])
    return (f"stored: {since} .. {until}, {size} B, 2 hosts, {flows} flow{'' if flows == 1 else 's'}; to see them: "
            f"run.py serve --db {db}, then http://127.0.0.1:8321/?since={since}&until={until}\n")


def sent(k):
    """What 10.0.0.1 sent in FRAMES[:k]: (bytes, packets)."""
    return sum(len(f) for f in FRAMES[:k]), k


def test_import_then_export(tmp_path, capsys):
    p = tmp_path / "ok.pcap"
    p.write_bytes(pcap_bytes(1, [(T0 + i, f) for i, f in enumerate(FRAMES)]))
    assert cli(capsys, "import", p, "--db", tmp_path / "a.db") == (
        EXIT_OK, f"{p}: 6 frames (6 IP, 0 non-IP, 0 undecodable)\n" + stored(tmp_path / "a.db", 6), "")
    assert hosts(capsys, tmp_path / "a.db")["10.0.0.1"] == sent(6)


# ---- unreadable input: exit 2, one line, no traceback -------------------------------------------------

@pytest.mark.parametrize("name, make, words", [
    ("missing.pcap", None, "cannot open: No such file or directory"),
    ("adir", lambda p: p.mkdir(), "cannot open: Is a directory"),
    ("empty.pcap", lambda p: p.write_bytes(b""), "not pcap or pcapng (magic bytes missing)"),
    ("notes.pcap", lambda p: p.write_text("GET / HTTP/1.1\r\n"), "not pcap or pcapng"),
    ("junk.gz", lambda p: p.write_bytes(gz(b"not a capture")), "gzip'd data is not pcap or pcapng"),
    ("broken.gz", lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 30), "unreadable gzip data"),
])
@pytest.mark.system
def test_unreadable_input_is_one_line_and_exit_2(tmp_path, run_py, name, make, words):
    p = tmp_path / name
    if make:
        make(p)
    code, out, err = sub(run_py, "import", p, "--db", tmp_path / "u.db")
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith(f"run.py import: {p}: ") and words in err and err.count("\n") == 1, err


def test_a_bad_file_among_good_ones(tmp_path, capsys):
    good = tmp_path / "good.pcap"
    good.write_bytes(pcap_bytes(1, [(T0, FRAMES[0])]))
    code, out, err = cli(capsys, "import", tmp_path / "nope.pcap", good, "--db", tmp_path / "m.db")
    assert (code, out) == (EXIT_USAGE, f"{good}: 1 frames (1 IP, 0 non-IP, 0 undecodable)\n" + stored(tmp_path / "m.db", 1))
    assert err.count("\n") == 1
    assert hosts(capsys, tmp_path / "m.db")["10.0.0.1"] == sent(1)


# ---- damaged part-way: everything before the damage, where it stopped, exit 3 ------------------------

def _pcap_offset(k):
    return 24 + sum(16 + len(f) for f in FRAMES[:k])


def _pcapng():
    return pcapng_bytes(1, [(T0 + i, f) for i, f in enumerate(FRAMES)])


def _pcapng_offset(k):
    return len(shb() + idb(1, name="eth0")) + sum(len(epb(0, 0, f)) for f in FRAMES[:k])


def _truncated(data, at):
    return data[:at]


def _corrupt_len(data, at, value):
    data = bytearray(data)
    data[at:at + 4] = value.to_bytes(4, "little")
    return bytes(data)


PCAP = pcap_bytes(1, [(T0 + i, f) for i, f in enumerate(FRAMES)])
BIG = pcap_bytes(1, [(T0 + i / 100, FRAMES[i % 6]) for i in range(40_000)])


@pytest.mark.parametrize("name, data, kept, words", [
    ("cut.pcap", PCAP[:_pcap_offset(4) + 20], 4, f"file ends inside a record at byte {_pcap_offset(4)}"),
    ("len.pcap", _corrupt_len(PCAP, _pcap_offset(2) + 8, 0x40000000), 2,
     f"corrupt record header at byte {_pcap_offset(2)} (captured length 1073741824)"),
    ("blk.pcapng", _corrupt_len(_pcapng(), _pcapng_offset(3) + 4, 7), 3,
     f"corrupt block length 7 at byte {_pcapng_offset(3)}"),
    ("cut.pcapng", _pcapng()[:_pcapng_offset(5) + 20], 5, f"file ends inside a block at byte {_pcapng_offset(5)}"),
    ("cut.pcap.gz", gz(BIG)[:len(gz(BIG)) * 2 // 3], None, "damaged compressed data after byte "),
])
def test_damaged_captures_keep_what_came_before_and_exit_3(tmp_path, capsys, name, data, kept, words):
    p = tmp_path / name
    p.write_bytes(data)
    code, out, err = cli(capsys, "import", p, "--db", tmp_path / "d.db")
    assert (code, err) == (EXIT_DAMAGED, "") and out.count("\n") == 2
    out, stored_line = out.splitlines(keepends=True)
    if kept is not None:
        assert stored_line == stored(tmp_path / "d.db", kept)
    frames = int(out.split(": ", 1)[1].split(" frames")[0])
    assert out.startswith(f"{p}: {frames} frames ({frames} IP, 0 non-IP, 0 undecodable); stopped early: {words}"), out
    if kept is None:                                     # the gzip'd one: some, not all, in file order
        assert 1000 < frames < 40_000
        want = (sum(len(FRAMES[i % 6]) for i in range(frames)), frames)
    else:
        assert frames == kept
        want = sent(kept)
    assert hosts(capsys, tmp_path / "d.db")["10.0.0.1"] == want


@pytest.mark.system
def test_damaged_import_says_so_in_a_subprocess_too(tmp_path, run_py):
    p = tmp_path / "cut.pcap"
    p.write_bytes(PCAP[:_pcap_offset(3) + 5])
    code, out, err = sub(run_py, "import", p, "--db", tmp_path / "d.db")
    assert (code, err) == (EXIT_DAMAGED, "")
    assert out == (f"{p}: 3 frames (3 IP, 0 non-IP, 0 undecodable); stopped early: file ends inside a record header "
                   f"at byte {_pcap_offset(3)}\n" + stored(tmp_path / "d.db", 3))


def test_timestamps_beyond_any_date_import_and_export(tmp_path, capsys):
    p = tmp_path / "future.pcapng"
    p.write_bytes(shb() + idb(1, tsresol=0) + epb(0, 2**64 - 1, FRAMES[0]) + epb(0, 2**40, FRAMES[1]))
    code, out, err = cli(capsys, "import", p, "--db", tmp_path / "f.db")
    assert (code, err) == (EXIT_OK, "")
    assert out == (f"{p}: 2 frames (2 IP, 0 non-IP, 0 undecodable), 2 timestamps outside 1970-9999 clamped\n"
                   f"stored: 9999-12-31T23:59:00Z .. 9999-12-31T23:59:59Z, {len(FRAMES[0]) + len(FRAMES[1])} B, 2 hosts, "
                   f"1 flow; to see them: run.py serve --db {tmp_path / 'f.db'}, then "
                   "http://127.0.0.1:8321/?since=9999-12-31T23:59:00Z&until=9999-12-31T23:59:59Z\n")
    assert hosts(capsys, tmp_path / "f.db")["10.0.0.1"] == sent(2)
    code, out, err = cli(capsys, "export", "flows", "--db", tmp_path / "f.db")
    [row] = csv.DictReader(io.StringIO(out))
    assert (code, row["last_seen"]) == (0, "9999-12-31T23:59:59.000000Z")


# ---- export -------------------------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path, capsys):
    p = tmp_path / "ok.pcap"
    p.write_bytes(pcap_bytes(1, [(T0 + 30 * i, f) for i, f in enumerate(FRAMES)]))   # minutes 0, 0, 1, 1, 2, 2
    assert cli(capsys, "import", p, "--db", tmp_path / "e.db")[0] == 0
    return tmp_path / "e.db"


@pytest.mark.parametrize("args, words", [
    (["export", "flows", "--db", "{tmp}/missing.db"], "missing.db: no such database"),
    (["export", "bogus", "--db", "{db}"], "invalid choice: 'bogus'"),
    (["export", "hosts", "--db", "{db}", "--since", "yesterday"], "unreadable time 'yesterday'"),
    (["export", "hosts", "--db", "{db}", "--until", "2023-13-45"], "unreadable time '2023-13-45'"),
    (["export", "hosts", "--db", "{db}", "--format", "xml"], "invalid choice: 'xml'"),
    (["export", "hosts", "--db", "{db}", "-o", "{tmp}/no/such/dir/x.csv"], "cannot write"),
    (["export", "hosts", "--db", "{tmp}/ok.pcap"], "file is not a database"),
    (["import", "--db", "{db}"], "the following arguments are required: FILE"),
])
def test_export_and_usage_errors_are_one_line_and_exit_2(db, tmp_path, capsys, args, words):
    code, out, err = cli(capsys, *[a.format(db=db, tmp=tmp_path) for a in args])
    assert (code, out) == (EXIT_USAGE, "") and words in err and err.count("\n") == 1, err


@pytest.mark.system
def test_export_errors_in_a_subprocess_have_no_traceback(db, tmp_path, run_py):
    for args in (["export", "flows", "--db", tmp_path / "missing.db"], ["export", "hosts", "--db", db, "--since", "x"]):
        code, out, err = sub(run_py, *args)
        assert (code, out) == (EXIT_USAGE, "") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("since, until, want", [
    (None, None, 6), (str(T0 + 60), str(T0 + 120), 2), ("2023-11-14T22:15:00Z", None, 4),
    (None, str(T0 + 60), 2), (str(T0 + 90), None, 4), ("-1e30", "1e30", 6), ("1e30", None, 0),
])
def test_export_since_until(db, capsys, since, until, want):
    args = ["export", "hosts", "--db", db]
    args += ([f"--since={since}"] if since else []) + ([f"--until={until}"] if until else [])
    code, out, err = cli(capsys, *args)
    rows = {r["ip"]: int(r["tx_packets"]) for r in csv.DictReader(io.StringIO(out))}
    assert (code, err) == (0, "") and rows.get("10.0.0.1", 0) == want


@pytest.mark.system
def test_export_rejects_times_that_are_not_numbers(db, run_py):
    code, out, err = sub(run_py, "export", "hosts", "--db", db, "--since", "nan")
    assert code == EXIT_USAGE and err.count("\n") == 1 and "Traceback" not in err


def test_export_to_a_file(db, tmp_path, capsys):
    assert cli(capsys, "export", "hosts", "--db", db, "-o", tmp_path / "h.csv") == (0, "", "")
    assert (tmp_path / "h.csv").read_text().splitlines()[0] == "ip,tx_bytes,rx_bytes,tx_packets,rx_packets,name,mac,vendor"


# ---- make test installs what the tests use -------------------------------------------------------------

def test_makefile_test_target_runs_system_deps():
    make = (ROOT / "Makefile").read_text()
    test_line = next(line for line in make.splitlines() if line.startswith("test:"))
    assert "system-deps" in test_line and os.access(ROOT / "tools" / "system-deps.sh", os.X_OK)


@pytest.mark.system
def test_system_deps_installs_tshark_as_root_on_debian(tmp_path):
    """Runs tools/system-deps.sh with a PATH where tshark is missing and apt-get, id and
    debconf-set-selections are stand-ins that record what they were asked."""
    sh = next((p for p in ("/bin/sh", "/usr/bin/sh") if os.path.exists(p)), None)
    if sh is None:
        pytest.skip("no /bin/sh")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls"
    for name, body in (("apt-get", f'echo "apt-get $*" >> {log}'), ("id", "echo 0"),
                       ("debconf-set-selections", f'while read -r line; do echo "$line" >> {log}; done')):
        (stubs / name).write_text(f"#!{sh}\n{body}\n")
        (stubs / name).chmod(0o755)
    done = subprocess.run([sh, str(ROOT / "tools" / "system-deps.sh")], capture_output=True, text=True,
                          timeout=30, env={"PATH": str(stubs)})
    calls = log.read_text()
    assert done.returncode == 0 and "installing:" in done.stdout and " tshark" in done.stdout
    install = [c for c in calls.splitlines() if c.startswith("apt-get") and " install " in c]
    assert install and " -y " in install[0] and " tshark" in install[0]
    assert "wireshark-common/install-setuid boolean false" in calls


def test_a_large_name_resolution_block_is_not_damage(tmp_path, capsys):
    """Found in review: a valid 400 KB non-packet block was taken for a corrupt length."""
    p = tmp_path / "big-nrb.pcapng"
    p.write_bytes(shb() + idb(1) + epb(0, int(T0 * 1e6), FRAMES[0]) + block(4, b"\x00" * 400_000)
                  + epb(0, int(T0 * 1e6) + 1, FRAMES[1]))
    code, out, err = cli(capsys, "import", p, "--db", tmp_path / "n.db")
    assert (code, out, err) == (EXIT_OK, f"{p}: 2 frames (2 IP, 0 non-IP, 0 undecodable)\n"
                                + stored(tmp_path / "n.db", 2, last=T0), "")


@pytest.mark.system
def test_import_from_a_pipe(tmp_path, run_py):
    """A capture piped in (/dev/stdin) is read once, in order: no peeking at its magic first."""
    p = tmp_path / "in.pcap"
    p.write_bytes(pcap_bytes(1, [(T0 + i, f) for i, f in enumerate(FRAMES[:3])]))
    done = subprocess.run(run_py + ["import", "/dev/stdin", "--db", str(tmp_path / "p.db")], input=p.read_bytes(),
                          capture_output=True, timeout=60)           # input= goes through a pipe
    want = "/dev/stdin: 3 frames (3 IP, 0 non-IP, 0 undecodable)\n" + stored(tmp_path / "p.db", 3)
    assert (done.returncode, done.stdout, done.stderr) == (0, want.encode(), b"")


@pytest.mark.system
def test_a_stopped_import_stores_nothing_and_says_so(tmp_path, run_py):
    """SIGTERM during an import: exit 130, one line saying how far it got and that nothing of the
    file was stored (an import is stored whole or not at all), the ledger row marked interrupted;
    the same file imported again then gives the counts of one clean import."""
    import signal
    import sqlite3
    import time
    from bench import gen_capture
    path, db = tmp_path / "long.pcap", tmp_path / "s.db"
    gen_capture.generate(str(path), packets=600_000, flows=2_000, seconds=1200.0, seed=3)
    proc = subprocess.Popen(run_py + ["import", str(path), "--db", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wal = Path(f"{db}-wal")
    deadline = time.monotonic() + 60
    while not (wal.exists() and wal.stat().st_size > 1 << 20):       # counts are being written
        assert proc.poll() is None and time.monotonic() < deadline, "the import ended before it could be stopped"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "")
    frames = int(re.fullmatch(rf"{re.escape(str(path))}: interrupted after (\d+) frames; nothing of it was stored "
                              r"\(an import is stored whole or not at all\): import it again\n", out).group(1))
    assert 0 < frames < 600_000
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM sources").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM iface_minutes").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM flows").fetchone() == (0,)
    assert con.execute("SELECT state, frames FROM imports").fetchall() == [("interrupted", frames)]
    con.close()
    done = subprocess.run(run_py + ["import", str(path), "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    con = sqlite3.connect(db)
    assert con.execute("SELECT sum(frames) FROM iface_minutes").fetchone() == (600_000,)
    assert con.execute("SELECT frames, damage FROM sources").fetchall() == [(600_000, None)]
    con.close()


def test_help_lists_every_subcommand_and_version_agrees_with_pyproject(capsys):
    import tomllib
    import run
    from runtime.version import VERSION
    with pytest.raises(SystemExit) as done:
        run.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in run.COMMANDS:
        assert re.search(rf"^  {command} +\S", out, re.M), command
    with pytest.raises(SystemExit) as done:
        run.main(["--version"])
    assert (done.value.code, capsys.readouterr().out) == (0, f"NetTally {VERSION}\n")
    assert tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["version"] == VERSION
