"""PostgreSQL as the store (issue 14): a real server (tests/postgres_server.py), the same captures
imported into it and into an SQLite file, and everything read back compared, byte for byte:
the exports, the API's answers, /metrics. Faults: a server that is not there, a wrong password,
a schema newer than the program's, each one line and exit 2. The dialect seam's rewrites
(storage/postgres.py) are checked without a server."""
import csv
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from common import ROOT, needs_root, system, wait_for
from postgres_server import Server, why_not
from storage.db import SCHEMA_VERSION

SHARED = ROOT.parent / "shared" / "captures"
SINCE = "since=2020-01-01T00:00:00Z&until=2030-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def pg():
    problem = why_not()
    if problem:
        pytest.skip(problem)
    server = Server()
    yield server
    server.close()


def run_py(*argv, check=True):
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, argv)], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def write_day(path, net="10.1", t0=1_700_000_000.0):
    """A capture of three hours: TCP conversations with a handshake, data both ways and a FIN,
    DNS over UDP with the name answered, IPv6 UDP (fd00::2 to fd00::1 in every such capture);
    several hosts of `net`, minutes and hours."""
    from scapy.all import DNS, DNSQR, DNSRR, IP, TCP, UDP, Ether, IPv6, Raw, wrpcap
    frames = []

    def add(t, frame):
        frame.time = t
        frames.append(frame)

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    for k in range(36):                       # one conversation every 5 minutes over 3 hours
        t = t0 + 300 * k
        client, server, port = f"{net}.0.{k % 5 + 2}", f"192.0.2.{k % 3 + 10}", 40000 + k
        add(t, eth / IP(src=client, dst=f"{net}.0.1") / UDP(sport=port, dport=53) / DNS(rd=1, qd=DNSQR(qname=f"s{k % 3}.example.net")))
        add(t + 0.01, eth / IP(src=f"{net}.0.1", dst=client) / UDP(sport=53, dport=port) /
            DNS(qr=1, qd=DNSQR(qname=f"s{k % 3}.example.net"), an=DNSRR(rrname=f"s{k % 3}.example.net", rdata=server)))
        add(t + 0.1, eth / IP(src=client, dst=server) / TCP(sport=port, dport=443, flags="S", seq=1000))
        add(t + 0.12, eth / IP(src=server, dst=client) / TCP(sport=443, dport=port, flags="SA", seq=5000, ack=1001))
        add(t + 0.14, eth / IP(src=client, dst=server) / TCP(sport=port, dport=443, flags="A", seq=1001, ack=5001))
        for j in range(k % 4 + 1):
            add(t + 1 + j, eth / IP(src=client, dst=server) / TCP(sport=port, dport=443, flags="PA", seq=1001 + 100 * j, ack=5001) / Raw(b"q" * 100))
            add(t + 1.02 + j, eth / IP(src=server, dst=client) / TCP(sport=443, dport=port, flags="PA", seq=5001 + 1200 * j, ack=1101 + 100 * j) / Raw(b"r" * 1200))
        add(t + 90, eth / IP(src=client, dst=server) / TCP(sport=port, dport=443, flags="FA", seq=9000, ack=9000))
        add(t + 150, eth / IPv6(src="fd00::2", dst="fd00::1") / UDP(sport=5000 + k, dport=9999) / Raw(b"v" * (50 + k)))
    wrpcap(str(path), frames)


def captures(tmp_path):
    day = tmp_path / "day.pcap"
    write_day(day)
    shared = [SHARED / "ppp_sll.pcap"] if (SHARED / "ppp_sll.pcap").exists() else []
    return [day, *shared]


def exports(db):
    """Every export as sorted lines (flows of one first_seen tie by id, and ids are the
    engine's own: the set is what must be equal)."""
    out = {}
    for what in ("flows", "hosts", "processes", "alerts"):
        text = run_py("export", what, "--db", db, "--since", "1970-01-01").stdout
        header, *rows = text.splitlines()
        if what == "alerts":      # opened: the import's clock; ids: the engine's
            rows = [",".join(r[2:6] + r[8:]) for r in csv.reader(rows)]
        out[what] = [header, sorted(rows)]
    return out


@system
def test_imports_into_postgres_export_what_sqlite_exports(pg, tmp_path):
    url, sqlite = pg.new_database(), tmp_path / "same.db"
    files = captures(tmp_path)
    for f in files:
        said = run_py("import", f, "--db", url).stdout
        assert "nettally-test" not in said      # the password is never shown
        run_py("import", f, "--db", sqlite)
    theirs, ours = exports(url), exports(sqlite)
    assert ours["flows"][1] and ours["hosts"][1]
    assert theirs == ours
    # imported once: the ledger on the server refuses the same content again, in one line
    again = run_py("import", files[0], "--db", url, check=False)
    assert again.returncode == 2 and "already imported" in again.stderr and "Traceback" not in again.stderr


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return r.read().decode()


def _serve(db, port):
    p = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve", "--db", str(db), "--port", str(port)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def up():
        try:
            return _get(port, "/health")
        except OSError:
            assert p.poll() is None, p.stderr.read()
            return None
    wait_for(up, 60, f"the dashboard on port {port}")
    return p


def _without_ids(value):
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    return [_without_ids(v) for v in value] if isinstance(value, list) else value


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PATHS = [f"/api/historical?{SINCE}", f"/api/historical?{SINCE}&by=host", f"/api/historical?{SINCE}&by=process",
         f"/api/hosts?{SINCE}", f"/api/hosts?{SINCE}&sort=peak", f"/api/hosts?{SINCE}&q=10.1", f"/api/hosts.csv?{SINCE}",
         f"/api/hosts/10.1.0.2?{SINCE}", f"/api/processes?{SINCE}", f"/api/flows?{SINCE}", f"/api/flows?{SINCE}&port=443",
         f"/api/flows.csv?{SINCE}", f"/api/interfaces?{SINCE}", f"/api/traffic_types?{SINCE}", f"/api/apps?{SINCE}",
         f"/api/apps?{SINCE}&host=10.1.0.2", f"/api/volumes?{SINCE}", "/api/span", "/api/alerts.csv", "/api/alerts/delivery"]


@system
def test_the_dashboard_over_postgres_answers_as_over_sqlite(pg, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    url, sqlite = pg.new_database(), tmp_path / "same.db"
    for f in captures(tmp_path):
        run_py("import", f, "--db", url)
        run_py("import", f, "--db", sqlite)
    ports = _free_port(), _free_port()
    servers = [_serve(sqlite, ports[0]), _serve(url, ports[1])]
    try:
        for path in PATHS:
            ours, theirs = (_get(port, path) for port in ports)
            if "/flows?" in path or "/hosts/" in path:    # flow ids: each engine's own, in write order
                ours, theirs = _without_ids(json.loads(ours)), _without_ids(json.loads(theirs))
            assert theirs == ours, path
        hosts = json.loads(_get(ports[1], f"/api/hosts?{SINCE}"))
        assert {"10.1.0.2", "192.0.2.10", "fd00::2"} <= {h["ip"] for h in hosts["rows"]}
        # prometheus_client's own parser reads it; NetTally's families as over SQLite (the
        # counters count from the server's start: imported buckets are older, and not in them)
        theirs, ours = ({f.name: f.samples for f in text_string_to_metric_families(_get(port, "/metrics"))
                         if f.name.startswith("nettally_") and "writer_last" not in f.name} for port in ports)
        assert "nettally_open_alerts" in theirs and theirs == ours
        rules = json.loads(_get(ports[1], "/api/alerts/rules"))
        assert rules["writable"] is True
    finally:
        for s in servers:
            s.terminate()
            s.wait(30)


@needs_root
def test_live_capture_writes_to_postgres(pg, tmp_path):
    import socket
    url, port = pg.new_database(), _free_port()
    p = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-i", "lo", "-f", f"udp port {port}", "--no-web",
                          "--db", url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = p.stdout.readline()
        assert "capturing on lo" in started and "nettally-test" not in started, started
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(50):
                s.sendto(b"x" * 100, ("127.0.0.1", port))
    finally:
        p.terminate()
        out = p.communicate(timeout=60)[0]
    assert p.returncode == 0, out
    assert "50 frames counted" in out
    rows = list(csv.DictReader(io.StringIO(run_py("export", "flows", "--db", url, "--since", "1970-01-01").stdout)))
    assert [(r["resp_p"], r["orig_packets"], r["orig_bytes"]) for r in rows] == [(str(port), "50", str(50 * 142))]
    assert rows[0]["orig_process"]         # the sending process, through the kernel's socket table


@system
def test_a_server_that_is_not_there_or_refuses_is_one_line(pg):
    closed = _free_port()
    cases = [f"postgresql://postgres@127.0.0.1:{closed}/x", pg.url(password="wrong"), pg.url("no_such_db"),
             "postgresql://a:b@[::1/x"]
    for url in cases:
        for argv in (["export", "hosts"], ["serve", "--port", str(_free_port())]):
            p = run_py(*argv, "--db", url, check=False)
            assert p.returncode == 2, (url, p.stderr)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
            assert "wrong" not in lines[0] and "nettally-test" not in lines[0]   # no password in messages
    assert "password authentication failed" in run_py("export", "hosts", "--db", pg.url(password="wrong"),
                                                      check=False).stderr


@system
def test_a_newer_schema_is_refused_in_one_line(pg, tmp_path):
    import psycopg
    url = pg.new_database()
    run_py("export", "hosts", "--db", url, check=False)          # no schema yet: one line
    day = tmp_path / "day.pcap"
    write_day(day)
    run_py("import", day, "--db", url)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("UPDATE nettally_schema SET version = 999")
    for argv in (["export", "hosts"], ["import", day, "--force"]):
        p = run_py(*argv, "--db", url, check=False)
        assert p.returncode == 2 and p.stderr.strip().endswith(f"schema version 999 is newer than this NetTally ({SCHEMA_VERSION})") \
            and len(p.stderr.strip().splitlines()) == 1, p.stderr


# ---- the dialect seam, without a server -------------------------------------------------------------

def test_statements_are_rewritten_where_the_dialects_differ():
    from storage.postgres import translate
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE ? ESCAPE '\\'") == \
        "SELECT a FROM t WHERE b = %s AND c ILIKE %s ESCAPE '\\'"
    assert translate("SELECT '50%?' , x % 2 FROM t WHERE y = ?") == "SELECT '50%%?' , x %% 2 FROM t WHERE y = %s"
    assert translate("SELECT '50%' FROM t", with_params=False) == "SELECT '50%' FROM t"
    assert translate("SELECT * FROM flows WHERE orig_h = :ip AND x NOT LIKE 'a'") == \
        "SELECT * FROM flows WHERE orig_h = %(ip)s AND x NOT ILIKE 'a'"
    assert translate("INSERT OR IGNORE INTO p (a) VALUES (?)") == "INSERT INTO p (a) VALUES (%s) ON CONFLICT DO NOTHING"
    assert translate("SELECT s FROM (SELECT s FROM (SELECT 1 AS s) GROUP BY s) WHERE s > 0") == \
        "SELECT s FROM (SELECT s FROM (SELECT 1 AS s) AS _q1_1 GROUP BY s) AS _q1_1 WHERE s > 0"
    assert translate("SELECT m.a FROM (SELECT 1 AS a) m") == "SELECT m.a FROM (SELECT 1 AS a) m"
    assert translate("SELECT window, rule FROM alerts") == 'SELECT "window", rule FROM alerts'


def test_many_rows_go_by_copy_and_add_as_row_by_row(pg):
    """storage/pg_bulk.py: a flush's upserts by COPY add exactly what they add one at a time,
    floats in BIGINT columns included; rows repeating a key, and small batches, go row by row."""
    from storage import pg_bulk
    from storage.db import connect
    from storage.postgres import translate
    con = connect(pg.new_database())
    upsert = ("INSERT INTO host_minutes (minute, ip, agent, tx_bytes, rx_bytes, tx_packets, rx_packets) "
              "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (minute, ip, agent) DO UPDATE SET "
              "tx_bytes = host_minutes.tx_bytes + excluded.tx_bytes, rx_bytes = host_minutes.rx_bytes + excluded.rx_bytes, "
              "tx_packets = host_minutes.tx_packets + excluded.tx_packets, "
              "rx_packets = host_minutes.rx_packets + excluded.rx_packets")
    rows = [(60 * (k % 7), f"10.0.{k // 250}.{k % 250}", "a", k, 2 * k, 1, 1) for k in range(1000)]
    assert pg_bulk.plan(translate(upsert), rows) is not None
    assert pg_bulk.plan(translate(upsert), rows[:10]) is None                  # small: row by row
    assert pg_bulk.plan(translate(upsert), rows + rows[:1]) is None            # a key twice: row by row
    assert pg_bulk.plan(translate("INSERT OR IGNORE INTO tier_pending (tier, bucket) VALUES (?, ?)"),
                        [("hour", 0)] * 200) is not None                       # DO NOTHING takes repeats
    floats = [(120.0, f"10.9.{k}.1", "a", 5.0, 0, 0, 0) for k in range(150)]
    for batch in (rows, rows, rows[:10], [(60.0, "10.9.9.9", "a", 5.0, 0, 0, 0)] * 150 + rows[:1], floats):
        con.executemany(upsert, batch)
    con.commit()
    got = {(m, ip): (tx, rx, n) for m, ip, tx, rx, n in con.execute(
        "SELECT minute, ip, tx_bytes, rx_bytes, tx_packets FROM host_minutes")}
    want = {}
    for batch in (rows, rows, rows[:10], [(60, "10.9.9.9", "a", 5, 0, 0, 0)] * 150 + rows[:1], floats):
        for m, ip, _, tx, rx, n, _ in batch:
            old = want.get((m, ip), (0, 0, 0))
            want[(m, ip)] = (old[0] + tx, old[1] + rx, old[2] + n)
    assert got == want and len(got) == 1151
    con.close()


def test_a_flush_of_many_new_flows_gets_each_its_own_id(pg, tmp_path):
    """New flows' upserts by COPY (storage/pg_bulk.py, RETURNING id matched by the flow's key):
    each flow's minutes, labels and later updates land on its own row, as in SQLite."""
    from records import FlowDelta, Rollup
    from storage.db import connect
    from storage.store import RollupStore

    def flows(first, n, t):
        return [FlowDelta(6, f"10.0.{k // 200}.{k % 200}", 40000 + k, "10.9.0.1", 443, first + k / 8, t,
                          k + 1, 1, 2 * k, 2, 0x18, "eth0", False, app="tls", service="https") for k in range(n)]
    t0 = 1_700_000_040.0
    rollups = [Rollup(1_700_000_040, flows(t0, 300, t0 + 50), {}, {}, {}),
               Rollup(1_700_000_100, flows(t0, 300, t0 + 100) + flows(t0 + 60, 250, t0 + 110)[50:], {}, {}, {})]
    stores = []
    for target in (str(tmp_path / "one.db"), pg.new_database()):
        store = RollupStore(connect(target), "a")
        for rollup in rollups:
            store.apply([rollup])
        stores.append(sorted(tuple(r) for r in store.con.execute(
            "SELECT f.orig_h, f.orig_p, f.first_seen, f.orig_bytes, f.resp_bytes, m.minute, m.orig_bytes, n.app "
            "FROM flows f JOIN flow_minutes m ON m.flow_id = f.id JOIN flow_names n ON n.flow_id = f.id")))
        store.con.close()
    assert len(stores[0]) == 300 * 2 + 200 and stores[0] == stores[1]


def test_schema_statements_get_postgres_types():
    from storage.postgres import schema_statement
    assert schema_statement("CREATE TABLE IF NOT EXISTS t (\n  id INTEGER PRIMARY KEY, -- the id\n  v REAL NOT NULL,\n"
                            "  f INTEGER NOT NULL REFERENCES flows (id)\n) WITHOUT ROWID;") == [
        "CREATE TABLE IF NOT EXISTS t (\n  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \n"
        "  v DOUBLE PRECISION NOT NULL,\n  f BIGINT NOT NULL\n)"]
    assert schema_statement("ALTER TABLE flows ADD COLUMN rtt_ms REAL;") == \
        ["ALTER TABLE flows ADD COLUMN IF NOT EXISTS rtt_ms DOUBLE PRECISION"]
    trigger = schema_statement("CREATE TRIGGER IF NOT EXISTS flow_names_follow_flows AFTER DELETE ON flows\n"
                               "BEGIN DELETE FROM flow_names WHERE flow_id = old.id; END;")
    assert len(trigger) == 2 and "plpgsql" in trigger[0]


def test_urls_are_shown_without_their_password():
    from storage.postgres import is_url, shown
    assert shown("postgresql://agent:s3cret@db.example:5433/nettally") == "postgresql://agent@db.example:5433/nettally"
    assert is_url("postgres://x/y") and not is_url("nettally.db") and not is_url(Path("postgresql:/x"))
    assert shown("postgresql://u:pw@[bad") == "postgresql://(unreadable URL)"


def _pcap_frames(path):
    """(frames, bytes on the wire) of a classic pcap file (tcpdump's), read by hand."""
    import struct
    data = Path(path).read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off, frames, nbytes = 24, 0, 0
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack_from(endian + "IIII", data, off)
        off += 16 + incl
        frames, nbytes = frames + 1, nbytes + orig
    return frames, nbytes


@needs_root
def test_the_server_going_away_mid_capture_loses_nothing_and_counts_nothing_twice(pg, tmp_path):
    """The live capture writes to PostgreSQL; the server is stopped, traffic goes on, the server
    comes back: the counts held in memory are written, an alert opened and closed, and the totals
    equal a parallel tcpdump's."""
    import shutil
    import socket
    import threading
    import psycopg
    if not shutil.which("tcpdump"):
        pytest.skip("tcpdump is not installed (make test installs it when run as root on Debian)")
    url, port, oracle = pg.new_database(), _free_port(), tmp_path / "oracle.pcap"
    tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "-w", str(oracle), f"udp port {port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert "listening on" in tcpdump.stderr.readline()
    p = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-i", "lo", "-f", f"udp port {port}", "--no-web",
                          "--db", url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = []
    reader = threading.Thread(target=lambda: said.extend(iter(p.stdout.readline, "")), daemon=True)
    reader.start()
    sent = [0]

    def send(n, size):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(b"x" * (size + i), ("127.0.0.1", port))
        sent[0] += n

    def stored():
        try:
            with psycopg.connect(url, connect_timeout=5) as con:
                return con.execute("SELECT coalesce(sum(orig_packets), 0) FROM flows").fetchone()[0]
        except psycopg.OperationalError:
            return None

    try:
        wait_for(lambda: any("capturing on lo" in line for line in said), 60, "the capture to start")
        send(30, 100)
        wait_for(lambda: stored() == 30, 60, "the first 30 datagrams in the database")
        pg.stop()
        send(40, 300)
        wait_for(lambda: any("holding counts in memory" in line for line in said), 60, "the writer to hold counts")
        pg.start()
        wait_for(lambda: any("again after" in line for line in said), 60, "the writer to write again")
        send(20, 700)
        wait_for(lambda: stored() == 90, 60, "all 90 datagrams in the database")

        def storage_alert():
            with psycopg.connect(url) as con:
                return con.execute("SELECT state, message FROM alerts WHERE kind = 'storage'").fetchall()
        alerts = wait_for(lambda: [a for a in storage_alert() if a[0] == "closed"], 60, "the storage alert to close")
        assert len(alerts) == 1 and "nettally-test" not in alerts[0][1]
    finally:
        p.terminate()
        p.wait(60)
        reader.join(10)
        tcpdump.terminate()
        tcpdump.wait(30)
    assert p.returncode == 0, "".join(said)
    frames, nbytes = _pcap_frames(oracle)
    assert frames == sent[0] == 90
    with psycopg.connect(url) as con:
        assert con.execute("SELECT sum(orig_packets), sum(orig_bytes) FROM flows").fetchone() == (frames, nbytes)
        # the hosts' minutes, built from the same rollups, hold the same bytes
        assert con.execute("SELECT sum(tx_bytes) FROM host_minutes WHERE ip = '127.0.0.1'").fetchone()[0] == nbytes
    assert not any("Traceback" in line for line in said), "".join(said)


@system
def test_two_agents_one_store(pg, tmp_path):
    """Two agents import two captures into one PostgreSQL database: each agent's exports equal a
    plain SQLite import of its capture, the exports of all are their sum, and the dashboard
    answers agent=NAME with that agent's hosts."""
    url = pg.new_database()
    captured = {"alpha": tmp_path / "alpha.pcap", "beta": tmp_path / "beta.pcap"}
    write_day(captured["alpha"], "10.1")
    write_day(captured["beta"], "10.2", t0=1_700_003_600.0)     # an hour later; fd00:: and 192.0.2.x in both
    alone = {}
    for agent, capture in captured.items():
        run_py("import", capture, "--db", url, "--agent", agent)
        alone[agent] = tmp_path / f"{agent}.db"
        run_py("import", capture, "--db", alone[agent])

    def export(what, db, *more):
        text = run_py("export", what, "--db", db, "--since", "1970-01-01", *more).stdout
        return list(csv.DictReader(io.StringIO(text)))
    for what in ("flows", "hosts", "processes"):
        for agent in captured:
            assert export(what, url, "--agent", agent) == export(what, alone[agent]), (what, agent)
    # without --agent: their sum
    summed = {}
    for agent in captured:
        for row in export("hosts", alone[agent]):
            have = summed.setdefault(row["ip"], dict.fromkeys(("tx_bytes", "rx_bytes", "tx_packets", "rx_packets"), 0))
            for k in have:
                have[k] += int(row[k])
    both = {r["ip"]: {k: int(r[k]) for k in ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")}
            for r in export("hosts", url)}
    assert both == summed and both["fd00::1"]["rx_packets"] == 72
    flows = sorted(tuple(r.values()) for r in export("flows", url))
    assert flows == sorted(tuple(r.values()) for agent in captured for r in export("flows", alone[agent]))
    # the dashboard over the shared database: agent=NAME is that agent's hosts, as its own file's
    ports = _free_port(), _free_port()
    servers = [_serve(url, ports[0]), _serve(alone["alpha"], ports[1])]
    try:
        for path in (f"/api/hosts?{SINCE}", f"/api/historical?{SINCE}&by=host", f"/api/interfaces?{SINCE}"):
            sep = "&" if "?" in path else "?"
            assert _get(ports[0], f"{path}{sep}agent=alpha") == _get(ports[1], path), path
        hosts = {h["ip"] for h in json.loads(_get(ports[0], f"/api/hosts?{SINCE}&agent=beta"))["rows"]}
        assert "10.2.0.2" in hosts and not any(ip.startswith("10.1.") for ip in hosts)
        nobody = json.loads(_get(ports[0], f"/api/hosts?{SINCE}&agent=gamma"))
        assert nobody["rows"] == [] and nobody["total"] == 0
        with pytest.raises(urllib.error.HTTPError) as bad:
            _get(ports[0], f"/api/hosts?agent={'x' * 65}")
        assert bad.value.code == 400
    finally:
        for s in servers:
            s.terminate()
            s.wait(30)
