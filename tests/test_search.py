"""The search box (`q`) of /api/hosts, /api/processes and /api/flows and their CSVs, over the
named database of tests/web_helpers.py: what a text matches, and hostile text taken literally."""
import csv
import io
from urllib.parse import quote

import pytest

from web_helpers import A, B, C, EVIL_PROCESS, FORMULA_PROCESS, make_db
from web.app import create_app
from web_helpers import NOW


@pytest.fixture
def client(tmp_path):
    app = create_app(test_config={"DB": make_db(tmp_path / "named.db", named=True), "CLOCK": lambda: NOW,
                                  "TOKEN": None, "POOL_SIZE": 2})
    yield app.test_client()
    app.extensions["nettally.pool"].close()


def _get(client, url):
    response = client.get(url)
    assert response.status_code == 200, (url, response.get_json())
    return response.get_json()


def hosts(client, q):
    return sorted(r["ip"] for r in _get(client, f"/api/hosts?q={quote(q, safe='')}")["rows"])


def processes(client, q):
    return sorted(r["pid"] for r in _get(client, f"/api/processes?q={quote(q, safe='')}")["rows"])


def flows(client, q):
    return sorted(r["resp_p"] for r in _get(client, f"/api/flows?q={quote(q, safe='')}")["rows"])


def test_hosts_by_address_prefix_name_app_and_server_name(client):
    assert hosts(client, "10.0.0") == [A, B]
    assert hosts(client, "10.0.0.1") == [A]
    assert hosts(client, "0.0.1") == []                          # an address matches from its start
    assert hosts(client, "HYPERLINK") == [B, "224.0.0.251"]       # B's name; the mDNS flow's server name
    assert hosts(client, "youtube") == [A, B]                     # the service both sides used
    assert hosts(client, "mdns") == [C, "224.0.0.251"]            # the application
    body = _get(client, "/api/hosts?q=10.0.0&sort=ip&order=asc&limit=1")
    assert (body["q"], body["total"], [r["ip"] for r in body["rows"]]) == ("10.0.0", 2, [A])


def test_processes_by_name_command_line_pid_and_app(client):
    assert processes(client, "CURL") == [100]
    assert processes(client, "https://example") == [100]          # the command line
    assert processes(client, "300") == [300]                     # a pid, exactly
    assert processes(client, "=hyper") == [300]
    assert processes(client, "mdns") == [200]                     # the app its flow carried
    by_name = _get(client, "/api/processes?group=name&q=onerror")
    assert [r["process"] for r in by_name["rows"]] == [EVIL_PROCESS]


def test_flows_by_address_app_server_name_process_and_host_name(client):
    assert flows(client, "192.168") == [53, 5353]                 # C on either side
    assert flows(client, "YouTube") == [443]
    assert flows(client, "curl") == [443]
    assert flows(client, "window.") == [53, 443, 5353]            # C's name (53, 5353), the TLS SNI
    assert _get(client, "/api/flows?q=dns&app=dns")["total"] == 1  # q narrows the other filters


@pytest.mark.parametrize("q", ["%", "x_s", "w_ndow", "1%", "\\", "\\%", "'", 'x"y', "' OR 1=1 --", "'; DROP TABLE flows; --",
                               "*", "[a-z]", "x" * 200, "%" * 200])
def test_hostile_text_is_taken_literally(client, q):
    """LIKE wildcards are characters: `x_s` and `w_ndow` would match C's name as patterns; `%`
    everything. Quotes are data. 200 characters are the most a parameter takes."""
    assert hosts(client, q) == [] and processes(client, q) == [] and flows(client, q) == []


def test_underscore_and_quotes_match_themselves(client):
    assert flows(client, "__xss") == [53, 443, 5353]              # 'window.__xss' in C's name and the SNI
    assert hosts(client, "_") == [B, C]                           # C's name; B served the SNI
    assert hosts(client, '("x")') == [B, "224.0.0.251"]


@pytest.mark.parametrize("url", ["/api/hosts", "/api/processes", "/api/flows", "/api/hosts.csv",
                                 "/api/processes.csv", "/api/flows.csv"])
def test_too_long_or_control_characters_are_400(client, url):
    for q in ("x" * 201, "a%01b"):
        response = client.get(f"{url}?q={q}")
        assert response.status_code == 400 and response.get_json()["parameter"] == "q"


def test_blank_is_no_filter_and_csv_takes_q(client):
    assert len(_get(client, "/api/hosts?q=%20%20")["rows"]) == 4
    for url, column, want in (("/api/hosts.csv?q=10.0.0", "ip", [A, B]),
                              ("/api/processes.csv?q=hyperlink", "process", [FORMULA_PROCESS]),
                              ("/api/flows.csv?q=192.168", "resp_p", ["53", "5353"])):
        text = client.get(url).get_data(as_text=True)
        rows = list(csv.DictReader(io.StringIO(text)))
        got = sorted(r[column] for r in rows)
        assert [g.lstrip("'") for g in got] == want, (url, text)
