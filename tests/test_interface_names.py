"""Interface names come from outside (a pcapng's if_name, a capture file's name, the host's
interface list) and are made safe once, where they enter: no controls, NUL or bidi characters,
at most 64 characters, a readable fallback when nothing is left. What is stored, exported and
served is that clean form."""
import csv
import io
import json

import pytest
from scapy.all import IP, UDP, Ether

from captures import epb, idb, shb
from capture.capfile import CaptureFile
from capture.ring import Interface, shown_name
from common import cli
from records import MAX_INTERFACE_NAME, interface_name
from storage.db import connect
from storage.interfaces import interface_totals

T = 1_700_000_000


@pytest.mark.parametrize("raw, shown", [
    ("eth0", "eth0"),
    ("\x00", "if0"),
    ("eth\x000", "eth0"),
    ("\u202eexe.txt", "exe.txt"),                                  # right-to-left override
    ("a\u202ab\u202bc\u202cd\u202de\u2066f\u2067g\u2068h\u2069i\u200ej\u200fk\u061cl", "abcdefghijkl"),
    ("lan\x1b[31m\x7f\x85\x9b", "lan[31m"),                       # C0, DEL, C1
    ("one\u2028two\nthree\r", "onetwothree"),
    ("x" * 10_000, "x" * MAX_INTERFACE_NAME),
    ("  \x01 ", "if0"),
    ("\\Device\\NPF_{3A6E}", "\\Device\\NPF_{3A6E}"),              # Windows names stay as they are
    ("WLAN 2", "WLAN 2"),
    ("Ethernet \u00e9t\u00e9 \u4ee5\u592a", "Ethernet \u00e9t\u00e9 \u4ee5\u592a"),
    ("bad\udcff", "bad"),                                          # a file name's undecodable byte
])
def test_interface_name(raw, shown):
    assert interface_name(raw, "if0") == shown


def test_live_interface_names_are_shown_clean_and_bound_by_their_real_name():
    iface = Interface("eth\u202e0\x01", 7, 1, 1, False, False)
    assert shown_name(iface) == "eth0" and iface.name == "eth\u202e0\x01"
    assert shown_name(Interface("\u2066\x7f", 9, 1, 1, False, False)) == "if9"


NAMES = ["\x00", "wlan\u202e0", "x" * 10_000, "lan\x00\x1b[31m"]
CLEAN = ["names.pcapng#0", "wlan0", "x" * 64, "lan[31m"]


def _capture(path):
    blocks = [shb()] + [idb(1, name=n) for n in NAMES]
    for i in range(len(NAMES)):
        frame = Ether() / IP(src=f"10.0.0.{i + 1}", dst="10.0.9.9") / UDP(sport=1000 + i, dport=53) / b"q"
        blocks.append(epb(i, (T + i) * 10**6, bytes(frame)))
    path.write_bytes(b"".join(blocks))
    return path


def test_pcapng_if_names_are_stored_exported_and_served_clean(tmp_path, capsys, clean_env):
    path, db = _capture(tmp_path / "names.pcapng"), tmp_path / "d.db"
    capture = CaptureFile(str(path))
    list(capture.batches())
    capture.close()
    assert [i.name for i in capture.interfaces] == CLEAN
    code, out, err = cli(capsys, "import", path, "--db", db)
    assert (code, err) == (0, "") and out.count("\n") == 2 and out.splitlines()[1].startswith("stored: ")
    con = connect(db, readonly=True)
    try:
        assert sorted(r["iface"] for r in interface_totals(con)) == sorted(CLEAN)
        stored = {row[0] for row in con.execute("SELECT DISTINCT iface FROM flows")}
    finally:
        con.close()
    assert stored == set(CLEAN)
    code, out, err = cli(capsys, "export", "flows", "--db", db, "--format", "csv")
    assert (code, err) == (0, "")
    by_host = {r["orig_h"]: r["iface"] for r in csv.DictReader(io.StringIO(out))}
    assert by_host == {f"10.0.0.{i + 1}": CLEAN[i] for i in range(len(NAMES))}
    code, out, err = cli(capsys, "export", "flows", "--db", db, "--format", "json")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert {r["orig_h"]: r["iface"] for r in rows} == by_host

    from web.app import create_app
    app = create_app(test_config={"DB": str(db), "CLOCK": lambda: T + 60, "TOKEN": None, "POOL_SIZE": 2})
    try:
        client = app.test_client()
        served = client.get("/api/interfaces?since=0").get_json()["rows"]
        assert sorted(r["iface"] for r in served) == sorted(CLEAN)
        flows = client.get("/api/flows?since=0").get_json()["rows"]
        assert {r["orig_h"]: r["iface"] for r in flows} == by_host
        # the dashboard's pages show interface names from these JSON answers (overview.js): no
        # page is rendered with them on the server
        page = client.get("/").get_data(as_text=True)
        assert not any(c in page for c in "\u202e\x00\x1b")
    finally:
        app.extensions["nettally.pool"].close()
