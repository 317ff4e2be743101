"""The JSON API and CSV exports through Flask's test client, over a real SQLite file written by
the real writer (tests/web_helpers.py says what is in it). Numbers are exact."""
import csv
import io

import pytest

from settings import Settings
from storage import retention, tiers
from storage.db import connect
from storage.store import RollupStore
from web_helpers import A, B, C, EVIL_NAME, EVIL_PROCESS, FORMULA_NAME, FORMULA_PROCESS, MINUTE, NOW, make_db, rollups
from web.app import create_app

T0 = MINUTE - 120


@pytest.fixture
def db_path(tmp_path):
    return make_db(tmp_path / "web.db")


def _app(path, now=NOW, **config):
    return create_app(test_config={"DB": path, "CLOCK": lambda: now, "TOKEN": None, "POOL_SIZE": 2, **config})


@pytest.fixture
def client(db_path):
    app = _app(db_path)
    yield app.test_client()
    app.extensions["nettally.pool"].close()


def get(client, url):
    response = client.get(url)
    assert response.status_code == 200, (url, response.get_json())
    return response.get_json()


def test_current_usage(client):
    u = get(client, "/api/current_usage")
    eth0, lo = u["interfaces"]
    assert eth0 == {"iface": "eth0", "up_bps": 5600.0, "down_bps": 2560.0, "up_bytes": 1690, "down_bytes": 5320,
                    "bytes": 7010, "frames": 30, "drops": 4}
    assert lo == {"iface": "lo", "up_bps": 0.0, "down_bps": 128.0, "up_bytes": 0, "down_bytes": 0, "bytes": 0,
                  "frames": 0, "drops": 0}
    assert u["total"] == {"up_bps": 5600.0, "down_bps": 2688.0, "up_bytes": 1690, "down_bytes": 5320, "bytes": 7010,
                          "frames": 30, "counted_since": int(T0 // 86400 * 86400)}
    assert u["drops"] == {"frames": 4, "last_hour": 4}
    assert u["coverage"] == {"since": int((NOW - 3600) // 60 * 60), "attributed_bytes": 6890, "unattributed_bytes": 120,
                             "ratio": 0.9829,
                             "reasons": {"no_local_endpoint": 300, "socket_closed_before_lookup": 120}}


def test_hosts_rates_and_order(client):
    h = get(client, "/api/hosts?sort=bytes")
    assert h["total"] == 4 and h["resolution"] == 60 and (h["sort"], h["order"]) == ("bytes", "desc")
    assert [r["ip"] for r in h["rows"]] == [A, B, C, "224.0.0.251"]
    assert h["rows"][0] == {"ip": A, "name": None, "mac": None, "vendor": "", "tx_bytes": 1690, "rx_bytes": 5120, "tx_packets": 15,
                            "rx_packets": 13, "bytes": 6810, "current_bps": 0.0, "avg_bps": 302.7,
                            "peak_bps": 800.0, "peak_at": T0, "resolution": 60, "first_seen": T0, "last_seen": MINUTE}
    by_rx = get(client, "/api/hosts?sort=rx&order=asc&limit=2&offset=1")
    assert [r["ip"] for r in by_rx["rows"]] == ["224.0.0.251", B] and by_rx["total"] == 4


def test_one_host(client):
    h = get(client, f"/api/hosts/{A}?since=1h")
    assert h["bytes"] == 6810 and h["history"]["step"] == 60
    assert list(zip(h["history"]["buckets"], h["history"]["tx"], h["history"]["rx"])) == [
        (T0, 1000, 5000), (MINUTE, 690, 120)]
    assert h["peers"] == [{"peer": B, "tx_bytes": 1600, "rx_bytes": 5000, "flows": 1, "name": None},
                          {"peer": C, "tx_bytes": 90, "rx_bytes": 120, "flows": 1, "name": None}]
    assert [f["resp_p"] for f in h["flows"]] == [443, 53]
    missing = client.get("/api/hosts/10.9.9.9")
    assert missing.status_code == 404 and "10.9.9.9" in missing.get_json()["error"]


def test_processes(client):
    p = get(client, "/api/processes?sort=bytes")
    assert [(r["pid"], r["process"], r["tx_bytes"], r["rx_bytes"]) for r in p["rows"]] == [
        (100, "curl", 1600, 5000), (300, FORMULA_PROCESS, 90, 120), (200, EVIL_PROCESS, 200, 0)]
    assert p["rows"][0]["cmdline"] == "curl https://example" and p["rows"][0]["username"] == "alice"
    named = get(client, "/api/processes?group=name&sort=name&order=asc")
    assert [(r["pid"], r["process"]) for r in named["rows"]] == [
        (None, EVIL_PROCESS), (None, FORMULA_PROCESS), (None, "curl")]


def test_flows_filter_sort_page(client):
    f = get(client, "/api/flows")
    assert f["total"] == 3
    first = f["rows"][0]
    assert {k: first[k] for k in ("proto", "orig_h", "orig_p", "resp_h", "resp_p", "orig_bytes", "resp_bytes",
                                  "orig_packets", "resp_packets", "orig_pid", "orig_process", "bytes")} == {
        "proto": "tcp", "orig_h": A, "orig_p": 40000, "resp_h": B, "resp_p": 443, "orig_bytes": 1600,
        "resp_bytes": 5000, "orig_packets": 14, "resp_packets": 12, "orig_pid": 100, "orig_process": "curl",
        "bytes": 6600}
    assert [r["resp_p"] for r in get(client, f"/api/flows?host={C}")["rows"]] == [53, 5353]
    assert [r["resp_p"] for r in get(client, "/api/flows?port=53")["rows"]] == [53]
    assert [r["resp_p"] for r in get(client, "/api/flows?proto=udp&sort=bytes&order=asc")["rows"]] == [5353, 53]
    assert [r["orig_process"] for r in get(client, "/api/flows?process=IMG")["rows"]] == [EVIL_PROCESS]
    assert [r["orig_pid"] for r in get(client, "/api/flows?process=300")["rows"]] == [300]
    page = get(client, "/api/flows?limit=1&offset=1")
    assert page["total"] == 3 and [r["resp_p"] for r in page["rows"]] == [53]
    assert get(client, "/api/flows?process=50%25")["total"] == 0        # % is a character, not a wildcard


def test_flows_csv_is_streamed_in_pieces_and_matches_one_piece_rendering():
    """Found in review: a CSV of every flow was built whole in memory; it now streams from the cursor."""
    from storage.export import render, render_csv_chunks
    rows = [{"proto": "udp", "orig_h": f"10.0.{i // 250}.{i % 250}", "orig_p": i, "orig_process": "=x" if i % 7 else None}
            for i in range(2500)]
    pieces = list(render_csv_chunks("flows", iter(rows), rows_per_chunk=1000))
    assert len(pieces) == 3 and "".join(pieces) == render("flows", rows, "csv")


def test_flows_csv_is_the_json_rows_neutralised(client):
    rows = get(client, "/api/flows?proto=udp")["rows"]
    response = client.get("/api/flows.csv?proto=udp")
    assert response.status_code == 200 and response.mimetype == "text/csv" and response.is_streamed
    assert response.headers["Content-Disposition"].startswith('attachment; filename="nettally-flows-')
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["resp_p"] for r in table] == [str(r["resp_p"]) for r in rows]
    assert table[0]["orig_process"] == "'" + FORMULA_PROCESS            # =HYPERLINK(...) cannot run
    assert table[1]["orig_process"] == EVIL_PROCESS                       # plain text in CSV
    for line, row in zip(table, rows):
        for key, value in line.items():
            expected = row[key]
            expected = "" if expected is None else str(expected)
            assert value == ("'" + expected if expected.startswith(("=", "+", "-", "@")) else expected), key


def test_hosts_and_processes_csv(client):
    hosts = client.get("/api/hosts.csv?sort=ip&order=asc").get_data(as_text=True)
    assert hosts == ("ip,tx_bytes,rx_bytes,tx_packets,rx_packets,name,mac,vendor\n"
                     f"{A},1690,5120,15,13,,,\n{B},5000,1600,12,14,,,\n{C},320,90,3,1,,,\n224.0.0.251,0,200,0,2,,,\n")
    procs = client.get("/api/processes.csv?sort=bytes").get_data(as_text=True)
    assert procs == ("pid,process,tx_bytes,rx_bytes,tx_packets,rx_packets\n100,curl,1600,5000,14,12\n"
                     f"300,\"'=HYPERLINK(\"\"x\"\")\",90,120,1,1\n200,{EVIL_PROCESS},200,0,2,0\n")


def test_history_by_interface_host_process(client):
    h = get(client, "/api/historical?range=1h")
    assert (h["step"], len(h["buckets"]), h["buckets"][-1], h["until"]) == (60, 60, MINUTE, MINUTE + 60)
    (eth0,) = h["series"]
    assert eth0["key"] == "eth0" and eth0["total"] == 7010
    assert {h["buckets"][i]: (u, d) for i, (u, d) in enumerate(zip(eth0["up"], eth0["down"])) if u or d} == {
        T0: (1000, 5000), MINUTE: (690, 320)}
    hosts = get(client, "/api/historical?range=24h&by=host&limit=2")
    assert hosts["step"] == 300 and [s["key"] for s in hosts["series"]] == [A, B]
    procs = get(client, "/api/historical?range=7d&by=process")
    assert procs["step"] == 3600 and [(s["key"], s["total"]) for s in procs["series"]] == [
        ("curl", 6600), (FORMULA_PROCESS, 210), (EVIL_PROCESS, 200)]


def test_history_reads_tiers_exactly(tmp_path):
    """Data older than the minute tier's retention lives in hour rows; the current hour is read
    from minutes until it is built. Building it changes nothing in the answer."""
    old_hour = int(NOW // 3600 * 3600) - 3 * 86400
    path = str(tmp_path / "tiers.db")
    con = connect(path)
    retention.maintain(con, tiers.RetentionPolicy.from_settings(Settings()), NOW)          # watermarks: minutes before -48 h go to hours
    old = [r._replace(bucket=old_hour + i * 60, flows=[]) for i, r in enumerate(rollups())]
    RollupStore(con).apply(old + [r._replace(flows=[]) for r in rollups()])
    app = _app(path)
    client = app.test_client()
    before = get(client, "/api/historical?range=7d")
    series = before["series"][0]
    got = {b: (u, d) for b, u, d in zip(before["buckets"], series["up"], series["down"]) if u or d}
    assert got == {old_hour: (1690, 5320), int(NOW // 3600 * 3600): (1690, 5320)}
    assert get(client, "/api/hosts?since=7d")["rows"][0]["bytes"] == 2 * 6810
    assert retention.maintain(con, tiers.RetentionPolicy.from_settings(Settings()), NOW)     # builds the pending hour and days
    assert get(client, "/api/historical?range=7d") == before
    assert get(client, "/api/current_usage")["total"]["bytes"] == 2 * 7010
    con.close()


def test_interfaces_and_traffic_types(client):
    (eth0,) = get(client, "/api/interfaces")["rows"]
    assert (eth0["bytes"], eth0["drops"], eth0["undecodable_reasons"]) == (
        7010, 4, {"ipv4_truncated": {"frames": 1, "bytes": 60}})
    types = get(client, "/api/traffic_types")["rows"]
    assert types == [{"class": "https (tcp/443)", "bytes": 6600}, {"class": "dns (udp/53)", "bytes": 210},
                     {"class": "mdns (udp/5353)", "bytes": 200}]


@pytest.fixture
def named(tmp_path):
    app = _app(make_db(tmp_path / "named.db", named=True))
    yield app.test_client()
    app.extensions["nettally.pool"].close()


def test_flows_name_both_sides_for_the_flows_page(named, client):
    rows = get(named, "/api/flows?sort=resp_p&order=asc")["rows"]
    assert [(r["resp_p"], r["orig_name"], r["resp_name"], r["app"], r["app_source"], r["server_name"], r["service"],
             r["class"]) for r in rows] == [
        (53, None, EVIL_NAME, "dns", "port", "", "", "system and background"),
        (443, None, FORMULA_NAME, "tls", "dpi", EVIL_NAME, "YouTube", "video streaming"),
        (5353, EVIL_NAME, None, "mdns", "dpi", FORMULA_NAME, "", "system and background")]
    assert {(r["orig_name"], r["resp_name"]) for r in get(client, "/api/flows")["rows"]} == {(None, None)}


def test_flows_filter_by_app_class_and_name(named):
    def ports(query):
        return [r["resp_p"] for r in get(named, f"/api/flows?sort=resp_p&order=asc&{query}")["rows"]]
    assert ports("app=dns") == [53] and ports("app=tl") == []               # app: exact
    assert ports("class=system%20and%20background") == [53, 5353] and ports("class=gaming") == []
    assert ports("name=hyperlink") == [443, 5353]      # B's host name (443) and the mDNS flow's server name
    assert ports("name=onerror") == [53, 443, 5353]    # C's name (53, 5353) and the TLS flow's SNI
    assert ports("name=50%25") == []                   # % is a character, not a wildcard


def test_hosts_named_and_apps_by_class_service_host_and_process(named):
    hosts = get(named, "/api/hosts?sort=ip&order=asc")["rows"]
    assert [(h["ip"], h["name"], h["vendor"]) for h in hosts] == [
        (A, None, ""), (B, FORMULA_NAME, ""), (C, EVIL_NAME, ""), ("224.0.0.251", None, "")]
    assert get(named, f"/api/hosts/{A}")["peers"][1]["name"] == EVIL_NAME

    def shares(query):          # (total, [(the group's keys..., bytes, share)])
        a = get(named, f"/api/apps?{query}")
        keys = {"all": ("app", "service", "class")}.get(a["by"], (a["by"],)) + ("bytes", "share")
        return a["total_bytes"], [tuple(r[k] for k in keys) for r in a["rows"]]
    assert shares("by=class") == (7010, [("video streaming", 6600, 0.9415), ("system and background", 410, 0.0585)])
    assert shares("by=service") == (7010, [("YouTube", 6600, 0.9415), ("", 410, 0.0585)])
    assert shares(f"by=class&host={C}&since=0") == (410, [("system and background", 410, 1.0)])
    assert shares(f"by=service&host={B}&since=0") == (6600, [("YouTube", 6600, 1.0)])
    assert shares("by=class&process=curl&since=0") == (6600, [("video streaming", 6600, 1.0)])
    assert shares(f"by=all&process={EVIL_PROCESS}&since=0") == (200, [("mdns", "", "system and background", 200, 1.0)])
    assert shares("by=class&process=nobody&since=0") == (0, [])


def test_names_in_csv_are_formula_safe(named):
    hosts = named.get("/api/hosts.csv?sort=ip&order=asc").get_data(as_text=True)
    assert hosts == ("ip,tx_bytes,rx_bytes,tx_packets,rx_packets,name,mac,vendor\n"
                     f"{A},1690,5120,15,13,,,\n{B},5000,1600,12,14,\"'=HYPERLINK(\"\"x\"\")\",,\n"
                     f"{C},320,90,3,1,{EVIL_NAME},,\n224.0.0.251,0,200,0,2,,,\n")
    flows = list(csv.DictReader(io.StringIO(named.get("/api/flows.csv?sort=resp_p&order=asc").get_data(as_text=True))))
    assert [(f["app"], f["app_source"], f["server_name"], f["service"], f["class"]) for f in flows] == [
        ("dns", "port", "", "", "system and background"), ("tls", "dpi", EVIL_NAME, "YouTube", "video streaming"),
        ("mdns", "dpi", "'" + FORMULA_NAME, "", "system and background")]


def test_alerts_list(client):
    a = get(client, "/api/alerts?state=open")
    assert a["rows"] == []


# Every endpoint, with parameters it must refuse: (url, the parameter the 400 must name).
BAD = [
    ("/api/current_usage?x=1", "x"), ("/api/agents?x=1", "x"),
    ("/api/historical?range=2h", "range"), ("/api/historical?by=port", "by"), ("/api/historical?limit=51", "limit"),
    ("/api/historical?range=1h&range=7d", "range"),
    ("/api/hosts?since=yesterday", "since"), ("/api/hosts?sort=ip;drop", "sort"), ("/api/hosts?order=up", "order"),
    ("/api/hosts?limit=abc", "limit"), ("/api/hosts?offset=-1", "offset"), ("/api/hosts?since=1h&until=2h", "since"),
    ("/api/hosts.csv?limit=0", "limit"), ("/api/hosts/10.0.0.300", "ip"), ("/api/hosts/10.0.0.1?since=x", "since"),
    ("/api/processes?group=user", "group"), ("/api/processes?sort=cpu", "sort"), ("/api/processes.csv?foo=1", "foo"),
    ("/api/flows?host=example.com", "host"), ("/api/flows?port=65536", "port"), ("/api/flows?proto=tcpx", "proto"),
    ("/api/flows?process=%01", "process"), ("/api/flows?limit=1001", "limit"), ("/api/flows?sort=id", "sort"),
    ("/api/flows.csv?port=-1", "port"), ("/api/flows?process=" + "x" * 201, "process"),
    ("/api/interfaces?until=soon", "until"), ("/api/traffic_types?limit=99", "limit"),
    ("/api/apps?by=colour", "by"), ("/api/apps?host=nas.local", "host"), ("/api/flows?class=%01", "class"),
    ("/api/alerts?state=maybe", "state"), ("/api/stream?since=1", "since"), ("/api/span?since=1h", "since"),
    ("/api/volumes?period=week", "period"), ("/api/forecast?horizon=1y", "horizon"), ("/api/forecast?subject=host", "subject"),
    ("/api/alerts/delivery?x=1", "x"), ("/api/health?by=planet", "by"),
    ("/api/alerts.csv?state=maybe", "state"), ("/api/alerts/rules?x=1", "x"), ("/api/alerts/rules/x%20y", "name"),
]
CHANGE_ONLY = {"/api/alerts/<alert_id>/acknowledge"}      # POST only: tests/test_web_alerts.py


@pytest.mark.parametrize("url,parameter", BAD)
def test_bad_parameters_are_400_naming_them(client, url, parameter):
    response = client.get(url)
    assert response.status_code == 400
    body = response.get_json()
    assert body["parameter"] == parameter and body["error"].startswith(parameter + ":")


def test_every_api_endpoint_is_covered_by_the_bad_parameter_list(client):
    rules = {r.rule for r in client.application.url_map.iter_rules() if r.rule.startswith("/api/")}
    tested = {url.split("?")[0].replace("10.0.0.300", "<ip>").replace("10.0.0.1", "<ip>").replace("x%20y", "<name>")
              for url, _ in BAD}
    assert rules == tested | CHANGE_ONLY


def test_unknown_api_path_is_json_404(client):
    response = client.get("/api/nothing")
    assert response.status_code == 404 and "error" in response.get_json()


def test_empty_database(tmp_path):
    path = str(tmp_path / "empty.db")
    connect(path).close()
    client = _app(path).test_client()
    u = get(client, "/api/current_usage")
    assert u["interfaces"] == [] and u["coverage"]["ratio"] is None and u["total"]["counted_since"] is None
    assert get(client, "/api/hosts")["rows"] == [] and get(client, "/api/flows")["total"] == 0
    assert all(s == [] for s in (get(client, "/api/historical?range=30d&by=host")["series"],
                                 get(client, "/api/traffic_types")["rows"]))


@pytest.mark.parametrize("url,parameter", [
    ("/api/hosts?since=-1e20", "since"), ("/api/hosts?until=99999999999999999999", "until"),
    ("/api/hosts?since=99999999999999999999d", "since"), ("/api/hosts?since=%D9%A1h", "since"),
    ("/api/hosts?limit=%EF%BC%91", "limit"), ("/api/hosts?limit=1_0", "limit"), ("/api/flows?host=fe80::1%25eth0", "host"),
])
def test_odd_numbers_and_scripts_are_400_not_500(client, url, parameter):
    """Found in review: huge times overflowed SQLite's INTEGER, non-ASCII digits passed isdigit()."""
    response = client.get(url)
    assert response.status_code == 400 and response.get_json()["parameter"] == parameter


def test_process_filter_and_last_event_id_with_unicode_digits_are_no_error(client):
    assert client.get("/api/flows?process=%C2%B2").status_code == 200          # '²': a name, not a pid
    assert client.get("/api/flows?process=99999999999999999999").status_code == 200


# ---- the data's span, and ranges anchored on it when no live capture feeds the database ----------

YEARS_LATER = NOW + 3 * 365 * 86400       # the clock of someone opening an old import


def test_span_of_live_data(client):
    assert get(client, "/api/span") == {"first": T0, "last": MINUTE + 60, "live": True}


def test_span_of_an_empty_database_and_of_a_live_run_without_traffic(tmp_path):
    path = str(tmp_path / "empty.db")
    con = connect(path)
    client = _app(path).test_client()
    assert get(client, "/api/span") == {"first": None, "last": None, "live": False}
    RollupStore(con).begin_source("live", "lo", started=NOW - 10)      # capturing, nothing seen yet
    assert get(client, "/api/span")["live"] is True
    con.close()


def test_an_old_import_is_seen_by_default_ranges(db_path):
    """Years later, with no live data, every range ends at the data's end and spans count back
    from it: the default hosts, processes, flows, interfaces, history and one host show the data."""
    client = _app(db_path, now=YEARS_LATER).test_client()
    assert get(client, "/api/span") == {"first": T0, "last": MINUTE + 60, "live": False}
    hosts = get(client, "/api/hosts")
    assert (hosts["since"], hosts["until"], hosts["total"]) == (MINUTE + 60 - 86400, MINUTE + 60, 4)
    assert hosts["sort"] == "bytes"                  # no live capture: nothing is "now"
    assert hosts["rows"][0]["bytes"] == 6810 and hosts["rows"][0]["current_bps"] == 0.0
    assert get(client, "/api/hosts?since=1h")["total"] == 4            # a span counts back from the data's end
    assert get(client, "/api/hosts?since=90s")["total"] == 4            # the last minute: A, B, C, 224.0.0.251
    assert get(client, "/api/hosts?since=90s")["rows"][0]["bytes"] == 810
    assert [r["pid"] for r in get(client, "/api/processes")["rows"]] == [100, 300, 200]
    assert get(client, "/api/flows")["total"] == 3
    assert get(client, f"/api/hosts/{A}")["bytes"] == 6810
    assert [r["iface"] for r in get(client, "/api/interfaces")["rows"]] == ["eth0"]
    h = get(client, "/api/historical?range=1h")
    assert (h["until"], h["series"][0]["total"]) == (MINUTE + 60, 7010)
    # explicit times are the user's: nothing is moved
    assert get(client, f"/api/hosts?since={YEARS_LATER - 3600:.0f}")["total"] == 0


def test_live_data_keeps_ranges_on_now(db_path):
    """With 1-second points within retention_seconds the ranges count back from now."""
    hosts = get(_app(db_path, now=NOW + 600).test_client(), "/api/hosts?since=5m")
    assert (hosts["since"], hosts["until"], hosts["total"]) == (NOW + 300, NOW + 660, 0)


def test_span_is_exact_after_tiers_are_built_and_minutes_pruned(tmp_path):
    """Hour and day rows start at the hour and midnight; the span still says the first minute
    and the end of the last, and once minutes are pruned it says the first hour."""
    path = make_db(tmp_path / "built.db")
    con = connect(path)
    policy = tiers.RetentionPolicy.from_settings(Settings())
    assert retention.maintain(con, policy, NOW)
    client = _app(path, now=YEARS_LATER).test_client()
    assert get(client, "/api/span") == {"first": T0, "last": MINUTE + 60, "live": False}
    assert retention.maintain(con, policy, NOW + 40 * 86400)     # minutes gone (interfaces' after 35 days), hours kept
    assert get(client, "/api/span") == {"first": int(T0 // 3600 * 3600), "last": int(MINUTE // 3600 * 3600) + 3600,
                                        "live": False}
    con.close()


def test_now_and_peak_from_the_seconds_kept(tmp_path):
    """Issue 11: current_bps is the last 5 whole seconds (ending 1 s before now); peak_bps the
    highest 1-second rate where seconds are kept (resolution 1, peak_at its second), else the
    busiest bucket; sort=now (alias current) ranks by the rate now."""
    from records import ProcessKey
    path = make_db(tmp_path / "now.db")
    curl = ProcessKey(100, 1000.0, "curl", "/usr/bin/curl", "curl https://example", "alice")
    end = int(NOW) - 1                   # the newest second may still be arriving: not in the window
    con = connect(path)
    RollupStore(con).add_activity(
        [(end - 5, B, 1000, 0), (end - 4, B, 1000, 500), (end - 1, B, 0, 1000), (end, B, 99_999, 0),   # 3500 B in 5 s
         (end - 30, A, 40_000, 10_000)],                                                               # idle now
        [(end - 2, curl, 2000, 500), (end - 30, curl, 30_000, 0)])
    con.close()
    app = _app(path)
    try:
        client = app.test_client()
        answer = get(client, "/api/hosts")
        assert answer["sort"] == "now"                    # live data: the rate now ranks by default
        rows = {r["ip"]: r for r in answer["rows"]}
        assert (rows[B]["current_bps"], rows[A]["current_bps"]) == (3500 * 8 / 5, 0.0)
        assert (rows[A]["peak_bps"], rows[A]["resolution"], rows[A]["peak_at"]) == (400_000.0, 1, end - 30)
        assert (rows[B]["peak_bps"], rows[B]["resolution"], rows[B]["peak_at"]) == (99_999 * 8.0, 1, end)
        assert (rows[C]["peak_bps"], rows[C]["resolution"], rows[C]["peak_at"]) == (54.7, 60, MINUTE)   # no seconds: 410 B
        one = get(client, f"/api/hosts/{B}")
        assert (one["current_bps"], one["peak_bps"], one["resolution"], one["peak_at"]) == (5600.0, 799_992.0, 1, end)
        for key in ("now", "current"):
            assert [r["ip"] for r in get(client, f"/api/hosts?sort={key}")["rows"]][0] == B
        assert [r["ip"] for r in get(client, "/api/hosts?sort=peak")["rows"]][:2] == [B, A]
        # seconds outside the range are not its peak
        assert get(client, f"/api/hosts?since={MINUTE + 60}&until={MINUTE + 120}")["rows"] == []
        procs = {r["process"]: r for r in get(client, "/api/processes?sort=now")["rows"]}
        assert (procs["curl"]["current_bps"], procs["curl"]["peak_bps"]) == (2500 * 8 / 5, 240_000.0)
        assert (procs["curl"]["resolution"], procs["curl"]["peak_at"]) == (1, end - 30)
        assert get(client, "/api/processes?sort=now")["rows"][0]["process"] == "curl"
        named = {r["process"]: r for r in get(client, "/api/processes?group=name")["rows"]}
        assert named["curl"]["peak_bps"] == 240_000.0
    finally:
        app.extensions["nettally.pool"].close()
