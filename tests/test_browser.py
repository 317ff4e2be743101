"""The dashboard in Debian's headless Chromium (selenium + chromedriver).

- Live: `run.py -i lo` captures while a test process talks over loopback; the overview loads
  without console errors, its live chart gains points, the host and the process show up in the
  top lists; the flows page filters; its CSV button downloads the rows /api/flows gives.
- Live names: a TLS client resolves a name through a resolver the test runs on loopback and
  connects by that name; the flows page shows the flow's server name and app, the hosts page the
  server's address by the name the DNS answer gave it.
- Hostile text: processes, host names and server names written like an HTML tag or a
  spreadsheet formula are shown as text and exported neutralised.
- Narrow windows: no page is wider than a 760 px window.
- True time axes: buckets at their real times, gaps drawn as zero, a lone bucket as a point.
- An imported capture from years ago is shown on the first open of the overview, hosts and
  history pages (ranges anchor on the data's own span when nothing is live).
- Issue 13: severity badges, the severity filter (and its CSV) and the delivery counts on the
  alerts page, critical alerts first on the overview and in a coloured toast; the overview's slow
  or lossy panel and the flows' round-trip and retransmission columns over TCP health rollups.
- A custom history window in the middle of the data is asked by since/until and draws the
  server's "others".
- Screenshots of every page. They are taken on every run into the test's temporary folder and
  copied into docs/ (docs/screenshots/<page>.png, docs/dashboard.png, docs/flows-names.png) only
  when NETTALLY_SCREENSHOTS=1, so an ordinary run leaves the tree as it was.

Every wait waits for the state it then asserts: list pages set document.body.dataset.shown to
the filter whose rows are on screen.
"""
import csv
import datetime
import errno
import io
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import pytest

from common import IS_ROOT, ROOT
from selenium.webdriver.support.ui import Select
from web_helpers import A, B, C, DELIVERY_ERROR, EVIL_NAME, EVIL_PROCESS, FAST_HOST, FORMULA_NAME, FORMULA_PROCESS, \
    GAP_HOST, GAP_T0, LONE_HOST, LOSSY_PROCESS, SLOW_HOST, add_alerts, answering, chromium_missing, free_port, get_json, \
    health_rollups, http_get, make_db, make_gap_db, showcase_rollups, start_chromium, stop, wait_for

pytestmark = [pytest.mark.system, pytest.mark.skipif(bool(chromium_missing()), reason=str(chromium_missing()))]
TALKER_NAME = "ntwebtalker"
SCREENSHOT = ROOT / "docs" / "dashboard.png"
NAMES_SCREENSHOT = ROOT / "docs" / "flows-names.png"
SCREENSHOTS = ROOT / "docs" / "screenshots"


def screenshot(driver, tmp_path, target):
    """Saves the window into tmp_path, and over `target` (a path under docs/) only when
    NETTALLY_SCREENSHOTS=1: an ordinary test run does not rewrite the documentation's images."""
    shot = tmp_path / target.name
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000
    if os.environ.get("NETTALLY_SCREENSHOTS") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

# A process that names itself (prctl PR_SET_NAME), then sends `count` messages of 2000 bytes over
# one TCP connection on loopback, 40 a second; says "sent", keeps the connection until its stdin
# closes (at most 60 s more), then closes both ends and says "closed".
TALKER = r"""
import ctypes, select, socket, sys, threading, time
ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(1)
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
peer, _ = server.accept()
def drain():
    while peer.recv(65536):
        pass
reader = threading.Thread(target=drain, daemon=True)
reader.start()
for i in range(int(sys.argv[3])):
    client.sendall(b"n" * 2000)
    time.sleep(0.025)
print("sent", flush=True)
select.select([sys.stdin], [], [], 60)
client.close()
reader.join(5)
peer.close()
print("closed", flush=True)
"""


@pytest.fixture
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = start_chromium(tempfile.mkdtemp(dir=tmp_path), downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()


def console_errors(driver):
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def js(driver, script):
    return driver.execute_script(script)


def table_texts(driver, selector):
    return js(driver, f"""return [...document.querySelectorAll("{selector} tbody tr")]
                           .map(tr => [...tr.cells].map(td => td.textContent));""")


def table_dicts(driver, selector):
    """The rows of a table as {header text: cell text} (rows of one cell, a 'nothing here' note,
    left out)."""
    return js(driver, f"""const t = document.querySelector("{selector}");
        const heads = [...t.tHead.rows[0].cells].map(th => th.textContent.trim());
        return [...t.tBodies[0].rows].filter(tr => tr.cells.length > 1)
          .map(tr => Object.fromEntries([...tr.cells].map((td, i) => [heads[i], td.textContent])));""")


def shown(driver, **params):
    """True once the list page shows the rows of a filter with these parameters (and maybe more)."""
    on_screen = dict(urllib.parse.parse_qsl(js(driver, "return document.body.dataset.shown || ''")))
    return all(on_screen.get(k) == str(v) for k, v in params.items())


def download_csv(driver, wait_what):
    """Clicks the page's CSV button; the parsed rows of the file it downloads."""
    for old in driver.downloads.iterdir():
        old.unlink()
    driver.find_element("id", "csv").click()
    files = wait_for(lambda: [f for f in driver.downloads.iterdir() if f.suffix == ".csv"], 15, wait_what)
    return list(csv.DictReader(io.StringIO(files[0].read_text())))


def csv_matches_api(rows, api_rows):
    def cell(v):
        v = "" if v is None else str(v)
        return "'" + v if v.startswith(("=", "+", "-", "@", "\t", "\r")) else v
    return len(rows) == len(api_rows) and all(
        all(line[k] == cell(api[k]) for k in line) for line, api in zip(rows, api_rows))


@pytest.mark.skipif(not IS_ROOT, reason="needs root (live capture on lo)")
def test_live_dashboard_in_chromium(browser, tmp_path, run_py):
    port, talk_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    service = subprocess.Popen(run_py + ["-i", "lo", "--db", str(tmp_path / "live.db"), "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    talker = None
    try:
        wait_for(lambda: answering(base), 30, "the dashboard of the live capture")
        talker = subprocess.Popen([sys.executable, "-c", TALKER, str(talk_port), TALKER_NAME, "400"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        # Overview: the live chart gains points, with the talker's bytes in them.
        browser.get(base + "/")
        times = ("const d = window.nettallyCharts.live.data.datasets;"
                 "return d.length ? d[0].data.map(p => p.x) : []")
        start = wait_for(lambda: js(browser, times), 5, "the live chart's first points")
        wait_for(lambda: js(browser, times)[-1] > start[-1], 5, "the live chart to gain points")
        assert all(b - a == 1000 for a, b in zip(start, start[1:]))          # one point a second, at its time
        # received is drawn below the axis: its values are negative
        wait_for(lambda: min(p["y"] for p in js(browser, "return window.nettallyCharts.live.data.datasets[1].data"))
                 < -8 * 2000, 5, "received bytes of the talker on the live chart")
        wait_for(lambda: any(r[0].split()[-1] == "127.0.0.1" for r in table_texts(browser, "#top-hosts")), 20,
                 "127.0.0.1 in the top hosts")
        wait_for(lambda: any(r[0] == TALKER_NAME for r in table_texts(browser, "#top-processes")), 30,
                 f"{TALKER_NAME} in the top processes")
        browser.set_window_size(1366, 1200)
        wait_for(lambda: js(browser, "return Chart.getChart(document.getElementById('classes-chart'))"
                                     ".data.labels.length") > 0, 35, "the traffic-class doughnut")
        wait_for(lambda: table_dicts(browser, "#classes"), 5, "the classes' bytes and shares")
        screenshot(browser, tmp_path, SCREENSHOT)
        assert console_errors(browser) == []

        # Flows page: filter by the talker's port, then the CSV button gives the same rows.
        assert talker.stdout.readline().strip() == "sent"
        talker.stdin.close()
        assert talker.stdout.readline().strip() == "closed"
        browser.get(base + "/flows")
        field = browser.find_element("name", "port")
        field.send_keys(str(talk_port))
        browser.find_element("id", "apply").click()
        wait_for(lambda: "port=" + str(talk_port) in browser.current_url, 5, "the filter in the address")
        # the address changes before the filtered rows arrive: wait for the table of this filter
        wait_for(lambda: shown(browser, port=talk_port), 10, "the flows table to show the filtered rows")
        rows = table_dicts(browser, "#flows")
        assert all(f":{talk_port}" in r["Originator"] + r["Responder"] for r in rows)
        status, api = get_json(f"{base}/api/flows?port={talk_port}&since=24h&limit=1000")
        assert status == 200 and api["total"] == len(rows) >= 1
        assert any(r["orig_process"] == TALKER_NAME or r["resp_process"] == TALKER_NAME for r in api["rows"])

        def csv_equals_api():           # counts settle within a flush interval after the close
            got = download_csv(browser, "the flows CSV download")
            return csv_matches_api(got, get_json(f"{base}/api/flows?port={talk_port}&since=24h&limit=1000")[1]["rows"])
        wait_for(csv_equals_api, 20, "the CSV rows to equal /api/flows", interval=0.5)
        assert console_errors(browser) == []
    finally:
        if talker is not None:
            stop(talker)
        out, err = stop(service)
    assert service.returncode == 0, err


NAME, NAMED_ADDRESS = "svc.nettally.test", "127.0.0.7"


def dns_answer(query):
    """The answer to a DNS query: NAME's A record is NAMED_ADDRESS, every other name NXDOMAIN;
    None for what is no query."""
    if len(query) < 17 or query[2] & 0x80:
        return None
    labels, at = [], 12
    while query[at] and at < len(query) and len(labels) < 10:
        labels.append(query[at + 1:at + 1 + query[at]].decode("ascii", "replace"))
        at += 1 + query[at]
    question = query[12:at + 5]
    found = ".".join(labels).lower() == NAME and query[at + 1:at + 5] == b"\0\x01\0\x01"
    header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), 0x8180 if found else 0x8183, 1, int(found), 0, 0)
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(NAMED_ADDRESS) if found else b""
    return header + question + record


def serve_until(stop_event, sock, handle):
    """Calls handle(sock) until stop_event is set; sock's timeout bounds each wait."""
    sock.settimeout(0.2)
    while not stop_event.is_set():
        try:
            handle(sock)
        except (TimeoutError, ssl.SSLError, ConnectionError):
            continue


def resolve_one(sock):
    query, peer = sock.recvfrom(512)
    answer = dns_answer(query)
    if answer:
        sock.sendto(answer, peer)


def tls_context(tmp_path):
    """A server context with a self-signed certificate for NAME, made here (no network)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def tls_serve_one(context):
    def handle(listener):
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello " + tls.recv(1024))
    return handle


# The client: asks the resolver on 127.0.0.1:53 for NAME's address (a DNS query by hand, over
# UDP), then connects to that address with TLS, sending NAME as the server name (the
# certificate is not checked: the name on the wire is what counts). Prints the address.
CLIENT = r"""
import random, socket, ssl, struct, sys
name, port = sys.argv[1], int(sys.argv[2])
qid = random.getrandbits(16)
query = (struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
         + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(5)
    s.sendto(query, ("127.0.0.1", 53))
    answer = s.recv(512)
rid, flags, _, count = struct.unpack("!HHHH", answer[:8])
assert rid == qid and flags & 0xF == 0 and count == 1, answer
address = socket.inet_ntoa(answer[-4:])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with socket.create_connection((address, port), timeout=5) as raw, context.wrap_socket(raw, server_hostname=name) as tls:
    tls.sendall(b"nettally")
    assert tls.recv(1024) == b"hello nettally"
print(address, flush=True)
"""


@pytest.mark.skipif(not IS_ROOT, reason="needs root (live capture on lo, a resolver on port 53)")
def test_live_names_on_lo(browser, tmp_path, run_py):
    """Issue 9, "Live on lo": a TLS client connects by a name the test resolves on loopback; within
    5 s the flows page shows the flow's server name and app, and the hosts page names the server."""
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        resolver.bind(("127.0.0.1", 53))
    except OSError as e:
        resolver.close()
        if e.errno != errno.EADDRINUSE:
            raise
        pytest.skip("127.0.0.1:53 is taken: the test's resolver needs it (names are read from port 53)")
    listener = socket.create_server((NAMED_ADDRESS, 0))
    tls_port = listener.getsockname()[1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    done = threading.Event()
    threads = [threading.Thread(target=serve_until, args=(done, resolver, resolve_one), daemon=True),
               threading.Thread(target=serve_until, args=(done, listener, tls_serve_one(tls_context(tmp_path))),
                                daemon=True)]
    service = subprocess.Popen(run_py + ["-i", "lo", "--db", str(tmp_path / "names.db"), "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for t in threads:
            t.start()
        wait_for(lambda: answering(base), 30, "the dashboard of the live capture")
        browser.get(base + "/flows?since=1h&name=nettally.test")
        wait_for(lambda: shown(browser, since="1h", name="nettally.test"), 10, "the flows page, filtered by name")
        client = subprocess.run([sys.executable, "-c", CLIENT, NAME, str(tls_port)], capture_output=True, text=True,
                                timeout=30)
        assert client.returncode == 0 and client.stdout.split() == [NAMED_ADDRESS], client.stderr

        def tls_flow():             # asks again until the flow is in the rows on screen
            rows = [r for r in table_dicts(browser, "#flows")
                    if r["Server name"] == NAME and r["Proto / app"].split() == ["tls", "tcp"]
                    and f":{tls_port}" in r["Responder"]]
            if not rows:
                browser.find_element("id", "apply").click()
            return rows
        (flow,) = wait_for(tls_flow, 5, "the TLS flow with its server name on the flows page", interval=0.25)
        assert flow["Responder"] == f"{NAME} {NAMED_ADDRESS}:{tls_port}"      # the peer by the name DNS gave it
        status, api = get_json(f"{base}/api/flows?name=nettally.test&app=tls&since=1h")
        assert status == 200 and [(r["server_name"], r["app"], r["app_source"], r["resp_name"]) for r in api["rows"]] == [
            (NAME, "tls", "dpi", NAME)]
        screenshot(browser, tmp_path, NAMES_SCREENSHOT)

        browser.get(base + "/hosts?since=1h")
        wait_for(lambda: shown(browser, since="1h"), 10, "the hosts page")
        assert {"Name": NAME, "Address": NAMED_ADDRESS}.items() <= next(
            r for r in table_dicts(browser, "#hosts") if r["Address"] == NAMED_ADDRESS).items()
        assert console_errors(browser) == []
    finally:
        done.set()
        for t in threads:
            t.join(5)
        resolver.close()
        listener.close()
        out, err = stop(service)
    assert service.returncode == 0, err


@pytest.fixture
def named_server(tmp_path, run_py):
    """`run.py serve` over make_db(named=True): hostile names on hosts, flows and processes."""
    db = make_db(tmp_path / "hostile.db", named=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(run_py + ["serve", "--db", db, "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answering(base), 30, "the dashboard")
        yield base
    finally:
        stop(server)


NO_SCRIPT_RAN = "return [document.images.length, window.__xss === undefined]"


def test_hostile_names_are_text_and_csv_is_neutralised(browser, named_server):
    base = named_server
    browser.get(base + "/processes?since=0")
    wait_for(lambda: shown(browser, since="0", group="instance"), 10, "the process rows")
    rows = table_texts(browser, "#processes")
    assert [r[1] for r in rows] == ["curl", FORMULA_PROCESS, EVIL_PROCESS]
    assert rows[2][9] == EVIL_PROCESS + " --flag"                       # its command line, as text
    assert js(browser, NO_SCRIPT_RAN) == [0, True]                      # no <img> was ever made
    browser.find_elements("css selector", "#processes button.linklike")[2].click()     # its classes and services
    wait_for(lambda: js(browser, "return document.getElementById('breakdown').dataset.shown") == f"{EVIL_PROCESS}|0",
             10, "the breakdown of the process")
    assert js(browser, "return document.getElementById('breakdown-name').textContent") == EVIL_PROCESS
    assert table_texts(browser, "#process-classes") == [["system and background", "200 B", "100.0 %"]]
    assert table_texts(browser, "#process-services") == [["no named service", "200 B", "100.0 %"]]
    browser.get(base + "/processes?since=0&group=name")
    wait_for(lambda: shown(browser, since="0", group="name"), 10, "the processes by name")
    assert all(r[0] == "–" for r in table_texts(browser, "#processes"))

    browser.get(base + "/hosts?since=0")
    wait_for(lambda: shown(browser, since="0"), 10, "the host rows")
    assert [(r["Name"], r["Address"]) for r in table_dicts(browser, "#hosts")] == [
        ("–", A), (FORMULA_NAME, B), (EVIL_NAME, C), ("–", "224.0.0.251")]
    assert js(browser, "return [...document.querySelectorAll('#hosts a.clip')].map(a => a.title)") == [
        f"{FORMULA_NAME} ({B})", f"{EVIL_NAME} ({C})"]                  # cut by CSS, whole on hover
    hosts = download_csv(browser, "the hosts CSV")
    assert [r["name"] for r in hosts] == ["", "'" + FORMULA_NAME, EVIL_NAME, ""]

    browser.get(base + "/flows?since=0&sort=resp_p&order=asc")
    wait_for(lambda: shown(browser, since="0", sort="resp_p"), 10, "the flow rows")
    rows = table_dicts(browser, "#flows")
    assert [(r["Proto / app"], r["Server name"], r["Originator"], r["Responder"], r["Class"]) for r in rows] == [
        ("dns guess udp", "–", f"{A}:53000{FORMULA_PROCESS} (300)", f"{EVIL_NAME} {C}:53", "system and background"),
        ("tls tcp", EVIL_NAME, f"{A}:40000curl (100)", f"{FORMULA_NAME} {B}:443", "video streaming"),
        ("mdns udp", FORMULA_NAME, f"{EVIL_NAME} {C}:5353{EVIL_PROCESS} (200)", "224.0.0.251:5353",
         "system and background")]
    assert js(browser, "return document.querySelectorAll('#flows .guess').length") == 1    # dns: from the port alone
    assert js(browser, NO_SCRIPT_RAN) == [0, True]
    exported = download_csv(browser, "the flows CSV")
    assert [(r["orig_process"], r["server_name"]) for r in exported] == [
        ("'" + FORMULA_PROCESS, ""), ("curl", EVIL_NAME), (EVIL_PROCESS, "'" + FORMULA_NAME)]

    # the filters: a name (server name or either side's host name), a class, an app
    browser.find_element("name", "name").send_keys("onerror=window")
    browser.find_element("id", "apply").click()
    wait_for(lambda: shown(browser, name="onerror=window"), 10, "the flows of that name")
    assert [r["Server name"] for r in table_dicts(browser, "#flows")] == ["–", EVIL_NAME, FORMULA_NAME]
    browser.find_element("name", "name").clear()
    Select(browser.find_element("name", "class")).select_by_value("video streaming")
    wait_for(lambda: shown(browser, **{"class": "video streaming"}), 10, "the flows of that class")
    assert [r["Proto / app"] for r in table_dicts(browser, "#flows")] == ["tls tcp"]
    Select(browser.find_element("name", "class")).select_by_value("")
    browser.find_element("name", "app").send_keys("mdns")
    browser.find_element("id", "apply").click()
    wait_for(lambda: shown(browser, app="mdns"), 10, "the flows of that app")
    assert [r["Server name"] for r in table_dicts(browser, "#flows")] == [FORMULA_NAME]

    browser.get(base + f"/hosts/{A}?since=0")
    wait_for(lambda: shown(browser, since="0"), 10, "the host page")
    assert [r[0] for r in table_texts(browser, "#peers")] == [f"{FORMULA_NAME} {B}", f"{EVIL_NAME} {C}"]
    assert table_texts(browser, "#host-classes") == [["video streaming", "6.60 KB", "96.9 %"],
                                                     ["system and background", "210 B", "3.1 %"]]
    assert table_texts(browser, "#host-services") == [["YouTube", "6.60 KB", "96.9 %"],
                                                      ["no named service", "210 B", "3.1 %"]]
    browser.get(base + f"/hosts/{C}?since=0")
    wait_for(lambda: shown(browser, since="0"), 10, "the named host's page")
    assert js(browser, "return document.getElementById('host-name').textContent") == EVIL_NAME
    assert js(browser, NO_SCRIPT_RAN) == [0, True]
    assert console_errors(browser) == []


PAGES = ["/", "/hosts?since=0", "/hosts/10.0.0.1?since=0", "/hosts/192.168.1.9?since=0", "/processes?since=0",
         "/flows?since=0", "/history", "/volumes", "/alerts", "/agents", "/no/such/page"]


def test_no_page_is_wider_than_a_narrow_window(browser, named_server):
    """At 760 px every page fits: no horizontal scrolling of the page nor of its tables."""
    browser.set_window_size(760, 900)
    for page in PAGES:
        browser.get(named_server + page)
        wait_for(lambda: js(browser, "return [...document.querySelectorAll('main table tbody')]"
                                     ".every(b => b.rows.length > 0 || b.offsetParent === null)"), 10,
                 f"the tables of {page}")
        if page.startswith("/processes"):           # and a process's breakdown under them
            browser.find_element("css selector", "#processes button.linklike").click()
            wait_for(lambda: js(browser, "return document.getElementById('breakdown').dataset.shown"), 10,
                     "the breakdown of a process")
        widths = js(browser, """return [document.documentElement.scrollWidth, window.innerWidth,
            ...[...document.querySelectorAll('.table-wrap')].map(w => w.scrollWidth - w.clientWidth)]""")
        assert widths[0] <= widths[1] and not any(widths[2:]), (page, widths)
    assert [e for e in console_errors(browser) if "/no/such/page " not in e] == []       # but the 404 itself


def serve(run_py, db):
    """`run.py serve` over db: (process, base URL) once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(run_py + ["serve", "--db", str(db), "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answering(base), 30, "the dashboard")
    except BaseException:
        stop(server)
        raise
    return server, base


@pytest.fixture
def gap_server(tmp_path, run_py):
    """`run.py serve` over make_gap_db(): hosts with gaps in their minutes."""
    db = make_gap_db(tmp_path / "gaps.db")
    server, base = serve(run_py, db)
    try:
        yield base
    finally:
        stop(server)


def chart_points(driver, chart, dataset):
    return js(driver, f"const d = window.nettallyCharts['{chart}'].data.datasets[{dataset}];"
                      "return d ? d.data.map((p, i) => [p.x, p.y, d.pointRadius[i]]) : []")


def test_charts_draw_buckets_at_their_true_times(browser, gap_server):
    """Issue 11: a host with traffic at minutes 0 and 4 is drawn with zeros in between, at true
    times; a host with one bucket shows its point."""
    since, until = GAP_T0 - 600, GAP_T0 + 900
    browser.get(gap_server + f"/hosts/{GAP_HOST}?since={since}&until={until}")
    wait_for(lambda: shown(browser, since=since, until=until), 10, "the host page of this range")
    sent = wait_for(lambda: chart_points(browser, "host", 0), 10, "the host chart")
    received = chart_points(browser, "host", 1)
    xs = [p[0] for p in sent]
    assert xs == list(range(since * 1000, until * 1000, 60_000))          # every minute of the range, at its time
    by_time = {p[0] // 1000: p[1] for p in sent}
    assert [by_time[GAP_T0 + 60 * m] for m in range(5)] == [3000 * 8 / 60, 0, 0, 0, 3000 * 8 / 60]
    assert {p[0] // 1000: p[1] for p in received}[GAP_T0 + 240] == -1000 * 8 / 60     # received: below the axis
    assert sum(1 for p in sent if p[1]) == 2 and all(p[1] == 0 for p in sent if p[0] // 1000 not in (GAP_T0, GAP_T0 + 240))
    assert js(browser, "return window.nettallyCharts.host.data.datasets.map(d => d.tension)") == [0, 0]
    assert js(browser, "return window.nettallyCharts.host.options.scales.x.type") == "time"
    # the ticks fall on whole minutes
    ticks = js(browser, "return window.nettallyCharts.host.scales.x.ticks.map(t => t.value)")
    assert ticks and all(t % 60_000 == 0 for t in ticks)

    browser.get(gap_server + f"/hosts/{LONE_HOST}?since={since}&until={until}")
    wait_for(lambda: shown(browser, since=since, until=until), 10, "the lone host's page")
    sent = wait_for(lambda: chart_points(browser, "host", 0), 10, "the lone host's chart")
    (lone,) = [p for p in sent if p[1]]
    assert lone[0] == (GAP_T0 + 120) * 1000 and lone[1] == 500 * 8 / 60 and lone[2] > 0     # a visible point
    assert all(p[2] == 0 for p in sent if not p[1])
    assert console_errors(browser) == []


def test_links_carry_the_range(browser, gap_server):
    since, until = GAP_T0 - 600, GAP_T0 + 900
    browser.get(gap_server + f"/hosts?since={since}&until={until}")
    wait_for(lambda: shown(browser, since=since, until=until), 10, "the hosts of this range")
    assert {r["Address"] for r in table_dicts(browser, "#hosts")} == {GAP_HOST, LONE_HOST}
    assert js(browser, "return document.getElementById('range-preset').value") == "custom"
    browser.find_element("css selector", f"#hosts a[href^='/hosts/{GAP_HOST}']").click()
    wait_for(lambda: shown(browser, since=since, until=until), 10, "the host page of the same range")
    assert "No traffic" not in browser.find_element("id", "facts").text
    assert js(browser, "return [...document.querySelectorAll('nav a[data-ranged]')].every("
                       f"a => a.search === '?since={since}&until={until}')")
    assert console_errors(browser) == []


def test_a_custom_range_is_chosen_on_the_page(browser, gap_server):
    browser.get(gap_server + "/hosts")
    wait_for(lambda: table_dicts(browser, "#hosts"), 10, "the host rows")
    Select(browser.find_element("id", "range-preset")).select_by_value("custom")
    assert browser.find_element("id", "range-from").is_displayed()
    since, until = GAP_T0 + 60, GAP_T0 + 180              # the lone host's minute only
    js(browser, f"""const local = (t) => {{ const d = new Date(t * 1000);
                      d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 16); }};
                    document.getElementById('range-from').value = local({since});
                    document.getElementById('range-to').value = local({until});""")
    browser.find_element("id", "range-apply").click()
    wait_for(lambda: shown(browser, since=since, until=until), 10, "the hosts of the custom range")
    assert [r["Address"] for r in table_dicts(browser, "#hosts")] == [LONE_HOST]
    assert f"since={since}&until={until}" in browser.current_url
    assert console_errors(browser) == []


def test_top_lists_sort_by_the_rate_now_and_by_total(browser, named_server):
    browser.get(named_server + "/hosts?since=0")
    wait_for(lambda: shown(browser, since="0", sort="bytes"), 10, "the hosts by total (nothing live)")
    browser.find_element("css selector", "#hosts th[data-key='now']").click()
    wait_for(lambda: shown(browser, since="0", sort="now", order="desc"), 10, "the hosts by the rate now")
    assert js(browser, "return document.querySelector('#hosts th[data-key=now]').getAttribute('aria-sort')") == "descending"
    browser.find_element("css selector", "#hosts th[data-key='bytes']").click()
    wait_for(lambda: shown(browser, since="0", sort="bytes"), 10, "the hosts by total again")
    totals = [r["Total"] for r in table_dicts(browser, "#hosts")]
    assert totals[0] == "6.81 KB"
    assert console_errors(browser) == []


def test_search_boxes_filter_as_one_types(browser, named_server):
    browser.get(named_server + "/hosts?since=0")
    wait_for(lambda: shown(browser, since="0"), 10, "the host rows")
    browser.find_element("name", "q").send_keys(C)
    wait_for(lambda: shown(browser, since="0", q=C), 10, "the hosts matching the search")
    assert "q=" in browser.current_url
    assert C in {r["Address"] for r in table_dicts(browser, "#hosts")}
    browser.find_element("name", "q").send_keys("nothing-like-this")
    wait_for(lambda: shown(browser, q=C + "nothing-like-this"), 10, "the empty search")
    assert "matches" in table_texts(browser, "#hosts")[0][0]              # a sentence, not bare headers


def import_2019(tmp_path, run_py):
    """A capture of 2019 (UDP between two addresses, 40 frames over 4 minutes) imported into a
    fresh database; its path."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from captures import pcap_bytes
    t0 = datetime.datetime(2019, 6, 1, 12, 0, tzinfo=datetime.timezone.utc).timestamp()
    frame = bytes(Ether() / IP(src="192.0.2.19", dst="198.51.100.19") / UDP(sport=40019, dport=5019) / (b"x" * 900))
    capture = tmp_path / "old.pcap"
    capture.write_bytes(pcap_bytes(1, [(t0 + 6 * i, frame) for i in range(40)]))
    db = tmp_path / "old.db"
    done = subprocess.run(run_py + ["import", str(capture), "--db", str(db)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return db


def test_an_old_import_is_shown_on_first_open(browser, tmp_path, run_py):
    """Issue 11: an imported capture from years ago is visible on the first open of the overview,
    hosts and history pages (no parameters given)."""
    server, base = serve(run_py, import_2019(tmp_path, run_py))
    try:
        browser.get(base + "/")
        wait_for(lambda: any(r[0].split()[-1] == "192.0.2.19" for r in table_texts(browser, "#top-hosts")), 10,
                 "the imported sender in the top hosts")
        wait_for(lambda: js(browser, "return document.body.dataset.traffic") == "1", 10, "the traffic chart")
        drawn = [abs(p[1]) for d in (0, 1) for p in chart_points(browser, "traffic", d)]
        assert sum(drawn) > 0
        assert "2019" in browser.find_element("id", "live-empty").text
        browser.get(base + "/hosts")
        wait_for(lambda: table_dicts(browser, "#hosts"), 10, "the host rows")
        assert {r["Address"] for r in table_dicts(browser, "#hosts")} == {"192.0.2.19", "198.51.100.19"}
        browser.get(base + "/history")
        wait_for(lambda: int(js(browser, "return document.body.dataset.total || '0'")) == 40 * 942, 10,
                 "the imported bytes on the history chart")
        assert [r["Series"] for r in table_dicts(browser, "#series")] == ["old.pcap"]     # its interface: the file
        ticks = js(browser, "return window.nettallyCharts.history.scales.x.ticks.map(t => t.value)")
        assert ticks and all(t % 60_000 == 0 for t in ticks)                           # on whole minutes
        # the address the import summary prints: its span, as since/until
        span = get_json(base + "/api/span")[1]
        browser.get(base + f"/history?since={span['first']}&until={span['last']}")
        wait_for(lambda: int(js(browser, "return document.body.dataset.total || '0'")) == 40 * 942, 10,
                 "the imported bytes in the import's own range")
        assert js(browser, "return document.getElementById('range-preset').value") == "custom"
        browser.get(base + "/volumes?period=month&by=host")
        wait_for(lambda: shown(browser, period="month", by="host"), 10, "the monthly volumes of hosts")
        assert {(r["Period"], r["Subject"], r["Total"]) for r in table_dicts(browser, "#volumes")} == {
            ("2019-06", "192.0.2.19", "37.7 KB"), ("2019-06", "198.51.100.19", "37.7 KB")}
        assert console_errors(browser) == []
    finally:
        stop(server)


SCREENSHOT_PAGES = [("overview", "/"), ("hosts", "/hosts"), ("host", f"/hosts/{A}"), ("processes", "/processes"),
                    ("flows", "/flows"), ("history", "/history?by=host"), ("volumes", "/volumes"), ("alerts", "/alerts"),
                    ("agents", "/agents"), ("not-found", "/no/such/page")]


def test_every_page_renders_and_is_photographed(browser, tmp_path, run_py):
    """Each page in a 1366 px window without console errors (the 404 page's own status aside),
    over an hour of traffic with TCP health and alerts of every severity; screenshots into docs/screenshots/ when NETTALLY_SCREENSHOTS=1."""
    db = make_db(tmp_path / "showcase.db", extra=showcase_rollups() + health_rollups(), named=True)
    add_alerts(db)                  # one of each severity, and the delivery counts
    add_agents(db)
    server, base = serve(run_py, db)
    try:
        photograph_every_page(browser, tmp_path, base)
        browser.get(base + "/agents")
        wait_for(lambda: len(table_texts(browser, "#agents")) == 2, 10, "the agents")
        assert [(r[0], r[1], r[2], r[7]) for r in table_texts(browser, "#agents")] == [
            ("db-7", "0.9.0", "ens3", "38"), ("gateway", "0.9.0", "eth0, eth1", "412")]
    finally:
        stop(server)


def add_agents(db):
    """Two collectors' status rows, as their writers note them (storage/status.py), at the server's
    clock (the wall clock: the agents page shows how long ago each wrote)."""
    from storage import status
    from storage.db import connect
    con = connect(str(db))
    wall = time.time()
    try:
        for agent, interfaces, written, rows in (("gateway", "eth0,eth1", wall - 3, 412), ("db-7", "ens3", wall - 95, 38)):
            status.note_write(con, agent, wall - 86400 * 3, written, 4.2, 129_600, rows, 0, "0.9.0", interfaces)
    finally:
        con.close()


def photograph_every_page(browser, tmp_path, base):
    browser.set_window_size(1366, 1000)
    for name, page in SCREENSHOT_PAGES:
        browser.get(base + page)
        wait_for(lambda: js(browser, "return document.readyState") == "complete" and
                 js(browser, "return [...document.querySelectorAll('main table tbody')]"
                             ".every(b => b.rows.length > 0 || b.offsetParent === null)"), 10, f"the tables of {page}")
        height = js(browser, "return document.documentElement.scrollHeight")
        browser.set_window_size(1366, min(max(height, 700) + 140, 2400))
        screenshot(browser, tmp_path, SCREENSHOTS / f"{name}.png")
        browser.set_window_size(1366, 1000)
        errors = [e for e in console_errors(browser) if not (name == "not-found" and "404" in e)]
        assert errors == [], (page, errors)


def test_unknown_pages_are_styled_and_api_paths_stay_json(gap_server):
    status, headers, body = http_get(gap_server + "/no/such/page")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert b"Page not found" in body and b'href="/"' in body and b"nettally.css" in body
    status, _, body = http_get(gap_server + "/hosts/%3Cb%3Enot-an-ip")             # the address is shown, as text
    assert status == 404 and b"&lt;b&gt;not-an-ip" in body and b"<b>" not in body
    status, _, body = http_get(gap_server + "/%3Cscript%3Ex")
    assert status == 404 and b"<script>x" not in body
    status, headers, body = http_get(gap_server + "/api/no/such")
    assert status == 404 and headers["Content-Type"] == "application/json"
    status, headers, body = http_get(gap_server + "/favicon.ico")
    assert status == 200 and headers["Content-Type"].startswith("image/svg+xml") and body.startswith(b"<svg")


# ---- alert severities, delivery, TCP health, custom history windows (issue 13, issue 11) ---------

@pytest.fixture
def health_server(tmp_path, run_py):
    """`run.py serve` over make_db(named=True) plus TCP health rollups and alerts of the three
    severities (tests/web_helpers.py add_alerts, health_rollups): (base URL, {severity: id}, db path)."""
    db = make_db(tmp_path / "health.db", extra=health_rollups(), named=True)
    ids = add_alerts(db)
    server, base = serve(run_py, db)
    try:
        yield base, ids, db
    finally:
        stop(server)


def badges(driver, selector):
    """[(text, class)] of the severity badges in a table's rows, top to bottom."""
    return [tuple(b) for b in js(driver, f"""return [...document.querySelectorAll("{selector} tbody tr")]
        .map(tr => tr.querySelector('.severity')).filter(b => b).map(b => [b.textContent, b.className]);""")]


def test_alert_severities_filter_and_delivery(browser, health_server):
    base, ids, db = health_server
    browser.get(base + "/alerts?since=0")
    wait_for(lambda: shown(browser, since="0"), 10, "the alerts of the whole range")
    assert badges(browser, "#alerts") == [("info", "severity severity-info"), ("warning", "severity severity-warning"),
                                          ("critical", "severity severity-critical")]          # newest first
    assert js(browser, "return getComputedStyle(document.querySelector('#alerts .severity-critical')).backgroundColor") \
        != js(browser, "return getComputedStyle(document.querySelector('#alerts .severity-info')).backgroundColor")
    messages = [r[2] for r in table_texts(browser, "#alerts")]
    assert messages[0] == f"new device {EVIL_NAME} seen (rule new-device)"                     # hostile text, as text
    assert js(browser, NO_SCRIPT_RAN) == [0, True]

    Select(browser.find_element("name", "severity")).select_by_value("critical")
    wait_for(lambda: shown(browser, since="0", severity="critical"), 10, "the critical alerts")
    assert badges(browser, "#alerts") == [("critical", "severity severity-critical")]
    assert "severity=critical" in browser.current_url
    assert "severity=critical" in browser.find_element("id", "csv").get_attribute("href")
    exported = download_csv(browser, "the alerts CSV of the critical ones")
    assert [(r["id"], r["severity"]) for r in exported] == [(str(ids["critical"]), "critical")]

    browser.get(base + "/alerts?since=0&severity=warning,critical")        # the filter from the address
    wait_for(lambda: shown(browser, since="0", severity="warning,critical"), 10, "the warning and critical alerts")
    assert js(browser, "return document.querySelector('select[name=severity]').value") == "warning,critical"
    assert [b[0] for b in badges(browser, "#alerts")] == ["warning", "critical"]
    Select(browser.find_element("name", "severity")).select_by_value("info")
    Select(browser.find_element("name", "state")).select_by_value("closed")
    wait_for(lambda: shown(browser, state="closed", severity="info"), 10, "no closed info alert")
    assert browser.find_element("id", "alerts-empty").text.startswith("No info alert opened in this range")

    # delivery: per channel, the last error as text
    wait_for(lambda: js(browser, "return document.body.dataset.delivery") == "2", 10, "the delivery rows")
    rows = table_dicts(browser, "#delivery")
    assert [(r["Channel"], r["To"], r["Delivered"], r["Failed"], r["Retries"], r["Dropped"], r["Waiting"], r["Last error"])
            for r in rows] == [("email", "mail.example.org:587", "12", "1", "3", "0", "2", DELIVERY_ERROR),
                               ("webhook", "https://hooks.example.org/nettally", "7", "0", "0", "0", "0", "–")]
    assert js(browser, NO_SCRIPT_RAN) == [0, True]
    assert console_errors(browser) == []

    # the overview: open critical alerts first, whatever their age; a new one's toast says its level
    browser.get(base + "/")
    wait_for(lambda: js(browser, "return document.body.dataset.alertsKnown") == str(max(ids.values())), 10,
             "the overview to hear the alerts")
    wait_for(lambda: badges(browser, "#recent-alerts"), 10, "the alerts panel")
    assert [b[0] for b in badges(browser, "#recent-alerts")] == ["critical", "warning", "info"]
    from storage import alert_log
    from storage.db import connect
    con = connect(db)
    try:
        new = alert_log.open_alert(con, "database-writable", "storage", "all", "disk", "live", time.time(), 1.0, 0.0, "",
                                   0, f"{EVIL_NAME}: database cannot be written", "critical")
    finally:
        con.close()
    toast = "document.querySelector('#toasts .toast')"
    wait_for(lambda: js(browser, f"return {toast} && {toast}.dataset.alert") == str(new), 10, "the toast")
    assert js(browser, f"return [{toast}.className, {toast}.querySelector('.severity').textContent]") == [
        "toast toast-critical", "critical"]
    assert js(browser, f"return {toast}.querySelector('.toast-message').textContent") == \
        f"{EVIL_NAME}: database cannot be written"
    assert js(browser, NO_SCRIPT_RAN) == [0, True]
    assert console_errors(browser) == []


def test_slow_or_lossy_panel_and_flow_health_columns(browser, health_server, named_server):
    base = health_server[0]
    browser.get(base + "/?since=0")
    wait_for(lambda: js(browser, "return document.body.dataset.health") == "host|since=0", 10, "the slow-or-lossy panel")
    slow = table_dicts(browser, "#health-rtt")
    assert [r["Who"] for r in slow] == [A, SLOW_HOST, FAST_HOST]       # by RTT p95 (A's is SLOW_HOST's), then segments
    assert slow[1]["RTT p95"].endswith(" ms") and float(slow[1]["RTT p95"].split()[0]) == pytest.approx(190, rel=0.13)
    assert float(slow[-1]["RTT p95"].split()[0]) == pytest.approx(1.3, rel=0.13)
    lossy = table_dicts(browser, "#health-loss")
    assert [(r["Who"], r["Rate"], r["Retransmitted"], r["Data segments"]) for r in lossy] == [
        (SLOW_HOST, "3.5 %", "14", "400"), (A, "2.2 %", "14", "650")]             # FAST_HOST: none retransmitted
    Select(browser.find_element("id", "health-by")).select_by_value("process")
    wait_for(lambda: js(browser, "return document.body.dataset.health") == "process|since=0", 10, "the processes")
    assert [r["Who"] for r in table_dicts(browser, "#health-rtt")] == [LOSSY_PROCESS, "firefox"]
    assert [r["Who"] for r in table_dicts(browser, "#health-loss")] == [LOSSY_PROCESS]
    assert js(browser, NO_SCRIPT_RAN) == [0, True]
    assert console_errors(browser) == []

    # the flows page: round trip and retransmissions, sortable
    browser.get(base + "/flows?since=0&proto=tcp")
    wait_for(lambda: shown(browser, since="0", proto="tcp"), 10, "the TCP flows")
    browser.find_element("css selector", "#flows th[data-key='rtt_ms']").click()
    wait_for(lambda: shown(browser, since="0", sort="rtt_ms", order="desc"), 10, "the flows by round trip")
    rows = table_dicts(browser, "#flows")
    assert [(r["RTT"], r["Retrans."]) for r in rows][:2] == [("182 ms", "14"), ("1.20 ms", "0")]
    browser.find_element("css selector", "#flows th[data-key='retransmits']").click()
    wait_for(lambda: shown(browser, sort="retransmits"), 10, "the flows by retransmissions")
    assert table_dicts(browser, "#flows")[0]["Retrans."] == "14"
    assert console_errors(browser) == []

    # a database whose TCP flows carry no health measures: a sentence, not empty frames
    browser.get(named_server + "/?since=0")
    wait_for(lambda: js(browser, "return document.body.dataset.health") == "host|since=0", 10, "the panel, empty")
    assert browser.find_element("id", "health-empty").text.startswith("Nothing slow or lossy to show")
    assert not browser.find_element("id", "health-tables").is_displayed()
    assert console_errors(browser) == []


def test_history_of_a_custom_window_asks_since_until_and_shows_others(browser, tmp_path, run_py):
    """A window in the middle of the data (no preset ending at the data's end covers it) is asked
    for by since/until, and the hosts beyond the top 8 are drawn as the server's "others"."""
    rollups = showcase_rollups()
    server, base = serve(run_py, make_db(tmp_path / "history.db", extra=rollups))
    try:
        since, until = rollups[10].bucket, rollups[40].bucket
        expected = {}
        for r in rollups[10:40]:
            for ip, (tx, rx, *_) in r.hosts.items():
                expected[ip] = expected.get(ip, 0) + tx + rx
        browser.get(base + f"/history?by=host&since={since}&until={until}")
        wait_for(lambda: shown(browser, by="host", since=since, until=until), 10, "the history of the window")
        asked = js(browser, "return performance.getEntriesByType('resource').map(e => e.name)"
                            ".filter(n => n.includes('/api/historical'))")
        assert [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(u).query)) for u in asked] == [
            {"by": "host", "limit": "8", "since": str(since), "until": str(until)}]
        assert int(js(browser, "return document.body.dataset.total")) == sum(expected.values())
        names = [r["Series"] for r in table_dicts(browser, "#series")]
        assert len(names) == 9 and names[-1] == f"others ({len(expected) - 8})"
        labels = js(browser, "return window.nettallyCharts.history.data.datasets.map(d => d.name)")
        assert f"others ({len(expected) - 8})" in labels
        first, last = js(browser, "const x = window.nettallyCharts.history.options.scales.x; return [x.min, x.max]")
        assert (first, last) == (since * 1000, until * 1000)

        Select(browser.find_element("name", "by")).select_by_value("app")
        wait_for(lambda: shown(browser, by="app"), 10, "the history by app")
        assert {r["Series"] for r in table_dicts(browser, "#series")} == {"tls", "quic", "dns", "ssh", "http"}
        assert {r["Sent"] for r in table_dicts(browser, "#series")} == {"–"}          # apps have no direction
        assert console_errors(browser) == []
    finally:
        stop(server)


def test_the_agent_picker_shows_one_collectors_counts(browser, tmp_path, run_py):
    """Two agents in one database (docs/FLEET.md): the header's picker lists them; choosing one
    reloads the page with agent=NAME, its lists show that agent's hosts only, and the page's
    links and CSV carry it."""
    from records import Rollup
    from storage import status
    from storage.db import connect
    from storage.store import RollupStore
    db = tmp_path / "fleet.db"
    con = connect(str(db))
    minute = int(time.time() // 60 * 60) - 600
    for agent, host in (("alpha", "10.1.0.7"), ("beta", "10.2.0.9")):
        RollupStore(con, agent).apply([Rollup(minute, [], {host: [5000, 100, 5, 1]},
                                              {"eth0": [6, 5100, 6, 5100, 0, 0, 0, 0, 5, 5000]}, {})])
        status.note_write(con, agent, time.time() - 3600, time.time() - 5, 2.0, 10, 1, 0, "0.9.0", "eth0")
    con.close()
    server, base = serve(run_py, db)
    try:
        browser.get(base + "/hosts?since=1h")
        wait_for(lambda: len(table_dicts(browser, "#hosts")) == 2, 10, "both agents' hosts")
        pick = wait_for(lambda: js(browser, "const p = document.getElementById('agent-pick'); "
                                            "return p.hidden ? null : [...p.options].map(o => o.value)"),
                        10, "the agent picker")
        assert pick == ["", "alpha", "beta"]
        Select(browser.find_element("id", "agent-pick")).select_by_value("beta")
        wait_for(lambda: shown(browser, agent="beta"), 10, "the page reloaded for agent beta")
        assert [r["Address"] for r in table_dicts(browser, "#hosts")] == ["10.2.0.9"]
        assert js(browser, "return document.getElementById('agent-pick').value") == "beta"
        assert js(browser, "return [...document.querySelectorAll('nav a[data-ranged]')]"
                           ".every(a => new URLSearchParams(a.search).get('agent') === 'beta')")
        assert "agent=beta" in js(browser, "return document.getElementById('csv').getAttribute('href')")
        assert console_errors(browser) == []
    finally:
        stop(server)
