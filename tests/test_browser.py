"""The dashboard in Debian's headless Chromium (selenium + chromedriver).

- Live: `run.py -i lo` captures while a test process talks over loopback; the overview loads
  without console errors, its live chart gains points, the host and the process show up in the
  top lists; the flows page filters; its CSV button downloads the rows /api/flows gives.
  Saves docs/dashboard.png.
- Live names: a TLS client resolves a name through a resolver the test runs on loopback and
  connects by that name; the flows page shows the flow's server name and app, the hosts page the
  server's address by the name the DNS answer gave it. Saves docs/flows-names.png.
- Hostile text: processes, host names and server names written like an HTML tag or a
  spreadsheet formula are shown as text and exported neutralised.
- Narrow windows: no page is wider than a 760 px window.

Every wait waits for the state it then asserts: list pages set document.body.dataset.shown to
the filter whose rows are on screen.
"""
import csv
import datetime
import errno
import io
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.parse

import pytest

from common import IS_ROOT, ROOT
from selenium.webdriver.support.ui import Select
from web_helpers import A, B, C, EVIL_NAME, EVIL_PROCESS, FORMULA_NAME, FORMULA_PROCESS, answering, \
    chromium_missing, free_port, get_json, make_db, start_chromium, stop, wait_for

pytestmark = [pytest.mark.system, pytest.mark.skipif(bool(chromium_missing()), reason=str(chromium_missing()))]
TALKER_NAME = "ntwebtalker"
SCREENSHOT = ROOT / "docs" / "dashboard.png"
NAMES_SCREENSHOT = ROOT / "docs" / "flows-names.png"

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
        labels = "return Chart.getChart(document.getElementById('live-chart')).data.labels"
        start = wait_for(lambda: js(browser, labels), 5, "the live chart's first points")
        wait_for(lambda: len(js(browser, labels)) > len(start) and js(browser, labels)[-1] != start[-1], 5,
                 "the live chart to gain points")
        wait_for(lambda: max(js(browser, "return Chart.getChart(document.getElementById('live-chart'))"
                                         ".data.datasets[1].data") or [0]) > 8 * 2000, 5,
                 "received bytes of the talker on the live chart")
        wait_for(lambda: any(r[0].split()[-1] == "127.0.0.1" for r in table_texts(browser, "#top-hosts")), 20,
                 "127.0.0.1 in the top hosts")
        wait_for(lambda: any(r[0] == TALKER_NAME for r in table_texts(browser, "#top-processes")), 30,
                 f"{TALKER_NAME} in the top processes")
        browser.set_window_size(1366, 1200)
        wait_for(lambda: js(browser, "return Chart.getChart(document.getElementById('classes-chart'))"
                                     ".data.labels.length") > 0, 35, "the traffic-class doughnut")
        wait_for(lambda: table_dicts(browser, "#classes"), 5, "the classes' bytes and shares")
        browser.save_screenshot(str(SCREENSHOT))
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
        browser.save_screenshot(str(NAMES_SCREENSHOT))

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
         "/flows?since=0", "/history", "/alerts"]


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
    assert console_errors(browser) == []
