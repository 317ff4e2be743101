"""The dashboard in Debian's headless Chromium (selenium + chromedriver).

- Live: `run.py -i lo` captures while a test process talks over loopback; the overview loads
  without console errors, its live chart gains points, the host and the process show up in the
  top lists; the flows page filters; its CSV button downloads the rows /api/flows gives.
  Saves docs/dashboard.png.
- Hostile text: a process named like an HTML tag and one named like a spreadsheet formula are
  shown as text and exported neutralised.
"""
import csv
import io
import subprocess
import sys
import tempfile

import pytest

from common import IS_ROOT, ROOT
from web_helpers import EVIL_PROCESS, FORMULA_PROCESS, answering, chromium_missing, free_port, get_json, \
    make_db, start_chromium, stop, wait_for

pytestmark = [pytest.mark.system, pytest.mark.skipif(bool(chromium_missing()), reason=str(chromium_missing()))]
TALKER_NAME = "ntwebtalker"
SCREENSHOT = ROOT / "docs" / "dashboard.png"

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
        wait_for(lambda: any(r[0] == "127.0.0.1" for r in table_texts(browser, "#top-hosts")), 20,
                 "127.0.0.1 in the top hosts")
        wait_for(lambda: any(r[0] == TALKER_NAME for r in table_texts(browser, "#top-processes")), 30,
                 f"{TALKER_NAME} in the top processes")
        browser.set_window_size(1366, 1200)
        wait_for(lambda: js(browser, "return Chart.getChart(document.getElementById('types-chart'))"
                                     ".data.labels.length") > 0, 35, "the traffic-type pie")
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
        wait_for(lambda: f"port={talk_port}" in js(browser, "return document.body.dataset.shown || ''"), 10,
                 "the flows table to show the filtered rows")
        rows = [r for r in table_texts(browser, "#flows") if len(r) > 1]
        assert all(f":{talk_port}" in r[1] + r[2] for r in rows)
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


def test_hostile_names_are_text_and_csv_is_neutralised(browser, tmp_path, run_py):
    db = make_db(tmp_path / "hostile.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(run_py + ["serve", "--db", db, "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: answering(base), 30, "the dashboard")
        js_probe = "return [document.images.length, window.__xss === undefined]"
        browser.get(base + "/processes?since=0")
        rows = wait_for(lambda: [r for r in table_texts(browser, "#processes") if len(r) > 1], 10, "process rows")
        assert [r[1] for r in rows] == ["curl", FORMULA_PROCESS, EVIL_PROCESS]
        assert rows[2][9] == EVIL_PROCESS + " --flag"                       # its command line, as text
        assert js(browser, js_probe) == [0, True]                           # no <img> was ever made
        browser.get(base + "/processes?since=0&group=name")
        wait_for(lambda: [r for r in table_texts(browser, "#processes") if len(r) > 1 and r[0] == "–"], 10, "names")
        browser.get(base + "/flows?since=0")
        rows = wait_for(lambda: [r for r in table_texts(browser, "#flows") if len(r) > 1], 10, "flow rows")
        assert sorted(r[6] for r in rows) == sorted(["curl (100)", f"{EVIL_PROCESS} (200)", f"{FORMULA_PROCESS} (300)"])
        assert js(browser, js_probe) == [0, True]
        exported = download_csv(browser, "the flows CSV")
        assert sorted(r["orig_process"] for r in exported) == sorted(["curl", EVIL_PROCESS, "'" + FORMULA_PROCESS])
        assert console_errors(browser) == []
    finally:
        stop(server)
