"""Test data and helpers for the web tests (test_web_*.py, test_browser.py): a database with known
counts, written through the real writer (storage.writer.RollupStore), and small HTTP helpers."""
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

from records import FlowDelta, Rollup
from records import ProcessKey
from storage.db import connect
from storage.store import RollupStore
from common import wait_for  # noqa: F401  (re-exported: the web tests import it from here)

NOW = 1_700_000_000 // 3600 * 3600 + 1830.5      # 30 min 30.5 s into an hour
MINUTE = int(NOW // 60 * 60)                       # the current minute
EVIL_PROCESS = "<img src=x onerror=alert(1)>"
FORMULA_PROCESS = '=HYPERLINK("x")'
EVIL_NAME = "<img src=x onerror=window.__xss=1>"      # a host name and a server name others wrote
FORMULA_NAME = '=HYPERLINK("x")'

A, B, C = "10.0.0.1", "10.0.0.2", "192.168.1.9"


def _iface(nbytes, frames, out_bytes, out_frames):
    # IFACE_FIELDS order: frames, bytes, ip_frames, ip_bytes, non_ip_*, undecodable_*, out_frames, out_bytes
    return [frames, nbytes, frames, nbytes, 0, 0, 0, 0, out_frames, out_bytes]


def flow(proto, orig, orig_p, resp, resp_p, first, last, ob, op, rb, rp, closed=False, orig_proc=None, resp_proc=None):
    return FlowDelta(proto, orig, orig_p, resp, resp_p, first, last, ob, op, rb, rp, 0x12 if proto == 6 else 0,
                     "eth0", closed, *(orig_proc or (None, None)), *(resp_proc or (None, None)))


def rollups():
    """Two minutes of traffic: 2 minutes ago and the current minute.

    minute MINUTE-120: A:40000 -> B:443 tcp, A sent 1000 B in 10 frames, B sent 5000 B in 12 (process `curl`, pid 100)
    minute MINUTE:     A:40000 -> B:443 again, A sent 600 B in 4 frames;
                       C:5353 -> 224.0.0.251:5353 udp, 200 B in 2 frames (process EVIL_PROCESS, pid 200);
                       A:53000 -> C:53 udp, 90 B / 120 B (process FORMULA_PROCESS, pid 300)
    """
    curl = ProcessKey(100, 1000.0, "curl", "/usr/bin/curl", "curl https://example", "alice")
    evil = ProcessKey(200, 2000.0, EVIL_PROCESS, "/tmp/x", EVIL_PROCESS + " --flag", "mallory")
    formula = ProcessKey(300, 3000.0, FORMULA_PROCESS, "", FORMULA_PROCESS, "bob")
    t0 = MINUTE - 120
    first = Rollup(t0, [flow(6, A, 40000, B, 443, t0 + 1.25, t0 + 7.5, 1000, 10, 5000, 12, orig_proc=(100, "curl"))],
                   {A: [1000, 5000, 10, 12], B: [5000, 1000, 12, 10]},
                   {"eth0": _iface(6000, 22, 1000, 10)}, {("eth0", "ipv4_truncated"): [1, 60]},
                   {curl: [1000, 5000, 10, 12]}, {"attributed": [6000, 22]})
    second = Rollup(MINUTE, [
        flow(6, A, 40000, B, 443, t0 + 1.25, MINUTE + 20.0, 600, 4, 0, 0, orig_proc=(100, "curl")),
        flow(17, C, 5353, "224.0.0.251", 5353, MINUTE + 2.0, MINUTE + 3.0, 200, 2, 0, 0, True, (200, EVIL_PROCESS)),
        flow(17, A, 53000, C, 53, MINUTE + 4.0, MINUTE + 4.5, 90, 1, 120, 1, True, (300, FORMULA_PROCESS)),
    ], {A: [690, 120, 5, 1], B: [0, 600, 0, 4], C: [320, 90, 3, 1], "224.0.0.251": [0, 200, 0, 2]},
        {"eth0": _iface(1010, 8, 690, 5)}, {},
        {curl: [600, 0, 4, 0], evil: [200, 0, 2, 0], formula: [90, 120, 1, 1]},
        {"attributed": [890, 7], "socket_closed_before_lookup": [120, 1], "no_local_endpoint": [300, 2]})
    return [first, second]


# What make_db(named=True) adds: labels on every flow and names for B and C.
#   A:40000 -> B:443   tls (read: dpi), server_name EVIL_NAME, service YouTube, video streaming
#   C:5353  -> 224.0.0.251:5353  mdns (dpi), server_name FORMULA_NAME, system and background
#   A:53000 -> C:53    dns guessed from the port, system and background
#   B is named FORMULA_NAME (DNS), C is named EVIL_NAME (mDNS)
FLOW_LABELS = {443: dict(app="tls", app_source="dpi", server_name=EVIL_NAME, service="YouTube",
                         traffic_class="video streaming"),
               5353: dict(app="mdns", app_source="dpi", server_name=FORMULA_NAME, traffic_class="system and background"),
               53: dict(app="dns", app_source="port", traffic_class="system and background")}
HOST_NAMES = {B: (FORMULA_NAME, "dns", MINUTE - 119.0), C: (EVIL_NAME, "mdns", MINUTE - 118.0)}


def named_rollups():
    """rollups() with FLOW_LABELS on the flows and HOST_NAMES learnt in the first minute."""
    out = [r._replace(flows=[f._replace(**FLOW_LABELS[f.resp_p]) for f in r.flows]) for r in rollups()]
    out[0] = out[0]._replace(names=HOST_NAMES)
    return out


SECONDS = [(int(NOW) - 3, "eth0", 2, 2000, 1, 500), (int(NOW) - 2, "eth0", 1, 100, 0, 0),
           (int(NOW) - 1, "eth0", 3, 3000, 3, 3000), (int(NOW) - 1, "lo", 1, 80, 0, 0)]


def make_db(path, extra=None, named=False):
    """The database of `rollups()` (`named_rollups()` if named; plus `extra` rollups), SECONDS
    and 4 dropped frames."""
    con = connect(str(path))
    store = RollupStore(con)
    store.apply((named_rollups() if named else rollups()) + list(extra or []))
    store.add_seconds(SECONDS)
    store.add_drops(MINUTE, {"eth0": 4})
    con.close()
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, headers=None, timeout=10):
    """(status, headers, body bytes) of a GET; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get_json(url, headers=None):
    status, _, body = http_get(url, headers)
    return status, json.loads(body)



def listening_pid(port):
    """Pid of the process listening on 127.0.0.1/0.0.0.0 `port` (from /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except FileNotFoundError:
            pass
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def uids_of(pid):
    """(real, effective, saved, filesystem) uid of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:5])
    raise AssertionError(f"no Uid line for pid {pid}")


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium_missing():
    """Why Debian's Chromium cannot be driven here, or None."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "chromium and chromium-driver are not installed (make test installs them as root on Debian)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def start_chromium(profile_dir, downloads=None):
    """Headless Chromium under chromedriver with a fresh profile and no background networking
    (this machine's network is closed); downloads, if a folder is given, land there unasked."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile_dir}", "--window-size=1366,900"):
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    if downloads is not None:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def answering(base):
    """True once the dashboard at `base` answers its API (for wait_for)."""
    try:
        return get_json(base + "/api/current_usage")[0] == 200
    except OSError:
        return False


def stop(proc, timeout=20):
    """SIGTERM, then (stdout, stderr) once it has exited; killed if it will not within `timeout`."""
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


# Charts on true time axes (test_browser.py): hosts whose buckets have gaps, far from NOW.
GAP_T0 = 1_600_000_020 // 3600 * 3600 + 600         # a minute at 10 past some hour in 2020
GAP_HOST, LONE_HOST = "10.9.0.1", "10.9.0.2"


def gap_rollups(t0=GAP_T0):
    """GAP_HOST sends 3000 B and receives 1000 B at minute t0 and again at t0 + 4 min (nothing
    between); LONE_HOST sends 500 B at t0 + 2 min only."""
    def minute(bucket, hosts):
        sent = sum(v[0] for v in hosts.values())
        return Rollup(bucket, [], hosts, {"eth0": _iface(sent, 10, sent // 2, 5)}, {}, {}, {})
    return [minute(t0, {GAP_HOST: [3000, 1000, 6, 4]}),
            minute(t0 + 120, {LONE_HOST: [500, 0, 1, 0]}),
            minute(t0 + 240, {GAP_HOST: [3000, 1000, 6, 4]})]


def make_gap_db(path):
    """A database of gap_rollups() only."""
    con = connect(str(path))
    RollupStore(con).apply(gap_rollups())
    con.close()
    return str(path)


# A livelier database for the screenshots of every page (test_browser.py): an hour of traffic.
SHOWCASE_HOSTS = [f"192.168.1.{n}" for n in (10, 11, 12, 20, 23, 31, 40, 54, 77, 101)] + ["10.0.0.1", "10.0.0.2"]
SHOWCASE_APPS = [("tls", "web browsing", 443), ("quic", "video streaming", 443), ("dns", "system and background", 53),
                 ("ssh", "other", 22), ("http", "file transfer and downloads", 80)]


def showcase_rollups(end=MINUTE - 180, minutes=60):
    """`minutes` minutes before `end`: hosts whose traffic rises and falls (one idle for a while),
    two processes, flows of a few apps."""
    import math
    browser = ProcessKey(400, 4000.0, "firefox", "/usr/lib/firefox/firefox", "firefox", "alice")
    backup = ProcessKey(401, 4001.0, "rsync", "/usr/bin/rsync", "rsync -a /home backup:", "root")
    out = []
    for m in range(minutes):
        bucket = end - (minutes - m) * 60
        hosts, flows = {}, []
        for i, ip in enumerate(SHOWCASE_HOSTS):
            if i == 3 and 20 <= m < 32:          # a gap: this host is silent for 12 minutes
                continue
            level = (12 - i) * 40_000 * (1.2 + math.sin((m + 7 * i) / 6))
            tx, rx = int(level * 0.3), int(level)
            hosts[ip] = [tx, rx, tx // 900 + 1, rx // 1200 + 1]
            if m % 10 == 0:
                app, cls, port = SHOWCASE_APPS[i % len(SHOWCASE_APPS)]
                flows.append(flow(6 if app != "quic" else 17, ip, 40000 + m, "10.0.0.2", port, bucket + 1.0, bucket + 50.0,
                                  tx, tx // 900 + 1, rx, rx // 1200 + 1)._replace(app=app, app_source="dpi",
                                                                                  traffic_class=cls))
        sent, received = sum(v[0] for v in hosts.values()), sum(v[1] for v in hosts.values())
        procs = {browser: [sent // 3, received // 2, 10, 20], backup: [sent // 2, received // 10, 30, 5]}
        out.append(Rollup(bucket, flows, hosts, {"eth0": _iface(sent + received, 900, sent, 300),
                                                 "wlan0": _iface((sent + received) // 5, 200, sent // 6, 60)},
                          {}, procs, {"attributed": [sent + received, 1000]}))
    return out


# Alert severities and TCP health (test_browser.py): alerts of the three levels with hostile text,
# the delivery counts of both channels, and TCP flows with round trips and retransmissions.
SLOW_HOST, FAST_HOST = "203.0.113.80", "198.51.100.7"
LOSSY_PROCESS = EVIL_PROCESS                          # a process name written like an HTML tag
DELIVERY_ERROR = "<img src=x onerror=window.__xss=1> 451 4.3.0 try again later"


def add_alerts(path, opened=MINUTE - 600):
    """Opens three alerts in the database at `path`, oldest first: critical (database-writable),
    warning (a host's bytes), info (a new device whose subject and message are hostile); and
    writes the delivery counts of an e-mail and a webhook channel (the e-mail's last error hostile).
    {severity: alert id}."""
    from storage import alert_log
    con = connect(str(path))
    try:
        ids = {
            "critical": alert_log.open_alert(con, "database-writable", "storage", "all", "all", "live", opened, 1.0,
                                             0.0, "", 0, "database cannot be written: disk full", "critical"),
            "warning": alert_log.open_alert(con, "host-bytes-hour", "bytes", "host", A, "live", opened + 60, 1.5e8, 1e8,
                                            "bytes", 3600, f"host {A}: 150 MB in 1 h (limit 100 MB, rule host-bytes-hour)",
                                            "warning"),
            "info": alert_log.open_alert(con, "new-device", "new_device", "host", EVIL_NAME, "live", opened + 120, 1.0,
                                         0.0, "", 3600, f"new device {EVIL_NAME} seen (rule new-device)", "info"),
        }
        counts = dict(delivered=12, failed=1, retries=3, dropped=0, filtered=40, waiting=2)
        alert_log.save_delivery_status(con, "email", "mail.example.org:587", counts, DELIVERY_ERROR, opened + 200,
                                       opened - 3600, opened + 300)
        alert_log.save_delivery_status(con, "webhook", "https://hooks.example.org/nettally",
                                       dict(delivered=7, failed=0, retries=0, dropped=0, filtered=0, waiting=0), None,
                                       None, opened - 3600, opened + 300)
    finally:
        con.close()
    return ids


def health_rollups(bucket=MINUTE - 600):
    """One minute of TCP flows with health measured: 10.0.0.1 (process LOSSY_PROCESS, pid 402) to
    SLOW_HOST:443, handshake 182 ms (running 175/190/260 ms), 14 of 400 data segments
    retransmitted, 2 out of order, 1 reset; 10.0.0.1 (firefox, pid 400) to FAST_HOST:22, 1.2 ms,
    250 data segments, none retransmitted."""
    lossy = ProcessKey(402, 4002.0, LOSSY_PROCESS, "/tmp/x", LOSSY_PROCESS, "mallory")
    firefox = ProcessKey(400, 4000.0, "firefox", "/usr/lib/firefox/firefox", "firefox", "alice")
    slow = flow(6, A, 41000, SLOW_HOST, 443, bucket + 1.0, bucket + 50.0, 40_000, 420, 600_000, 500,
                orig_proc=(402, LOSSY_PROCESS))._replace(
        rtt_ms=182.0, rtt_min_ms=175.0, rtt_avg_ms=190.0, rtt_max_ms=260.0, data_segments=400, retransmits=14,
        out_of_order=2, resets=1)
    fast = flow(6, A, 41001, FAST_HOST, 22, bucket + 2.0, bucket + 40.0, 30_000, 260, 90_000, 250,
                orig_proc=(400, "firefox"))._replace(
        rtt_ms=1.2, rtt_min_ms=1.0, rtt_avg_ms=1.3, rtt_max_ms=2.0, data_segments=250)
    hosts = {A: [70_000, 690_000, 680, 750], SLOW_HOST: [600_000, 40_000, 500, 420], FAST_HOST: [90_000, 30_000, 250, 260]}
    return [Rollup(bucket, [slow, fast], hosts, {"eth0": _iface(760_000, 1430, 70_000, 680)}, {},
                   {lossy: [40_000, 600_000, 420, 500], firefox: [30_000, 90_000, 260, 250]}, {"attributed": [760_000, 1430]})]
