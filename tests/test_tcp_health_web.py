"""GET /api/health through Flask's test client over a real SQLite file: per host, process and
app, sorted, filtered by min_segments, bad parameters refused; /api/flows carries the health
columns."""
import pytest

from records import FlowDelta, ProcessKey, Rollup
from storage import health
from storage.db import connect
from storage.store import RollupStore
from web.app import create_app

T0 = 1_700_000_040
NOW = T0 + 600
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


@pytest.fixture
def client(tmp_path):
    path = tmp_path / "h.db"
    con = connect(str(path))
    flows = [FlowDelta(6, A, 40000, B, 443, T0 + 1, T0 + 2, 9000, 10, 90000, 70, 0x1A, "eth0", True,
                       4242, "curl", None, None, "tls", "dpi", "", "Example", "", rtt_ms=180.0,
                       rtt_min_ms=179.0, rtt_avg_ms=185.0, rtt_max_ms=250.0, data_segments=75, retransmits=3),
             FlowDelta(6, A, 40001, C, 80, T0 + 3, T0 + 4, 500, 5, 600, 5, 0x1A, "eth0", True,
                       rtt_ms=2.0, data_segments=4)]
    RollupStore(con).apply([Rollup(T0, flows, {}, {}, {}, {ProcessKey(4242, 1.0, "curl"): [1, 1, 1, 1]})])
    con.close()
    app = create_app(test_config={"DB": path, "CLOCK": lambda: NOW, "TOKEN": None, "POOL_SIZE": 2})
    yield app.test_client()
    app.extensions["nettally.pool"].close()


def get(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, (url, response.get_json())
    return response.get_json()


def test_health_by_host_sorted_by_retransmission_rate(client):
    answer = get(client, f"/api/health?since={T0}&until={NOW}")
    assert (answer["by"], answer["sort"], answer["resolution"]) == ("host", "retransmit_rate", 60)
    rows = answer["rows"]
    assert [r["ip"] for r in rows] == [B, A, C]
    assert rows[0] == dict(ip=B, tcp_flows=1, data_segments=75, retransmits=3, retransmit_rate=0.04, out_of_order=0,
                           zero_windows=0, resets=0, rtt_flows=1, rtt_p50_ms=health.bin_value(health.rtt_bin(185.0)),
                           rtt_p95_ms=health.bin_value(health.rtt_bin(185.0)))
    assert rows[1]["rtt_p50_ms"] == health.bin_value(health.rtt_bin(2.0))        # half its flows' RTTs
    assert rows[1]["rtt_p95_ms"] == health.bin_value(health.rtt_bin(185.0))


def test_health_by_process_and_app_and_min_segments(client):
    [curl] = get(client, f"/api/health?by=process&since={T0}&until={NOW}")["rows"]
    assert (curl["process"], curl["retransmits"], curl["data_segments"]) == ("curl", 3, 75)
    apps = get(client, f"/api/health?by=app&sort=rtt_p95_ms&since={T0}&until={NOW}")["rows"]
    assert [(r["app"], r["service"]) for r in apps] == [("tls", "Example"), ("", "")]
    assert [r["ip"] for r in get(client, f"/api/health?min_segments=50&since={T0}&until={NOW}")["rows"]] == [B, A]


@pytest.mark.parametrize("query", ["by=flow", "sort=bytes", "min_segments=-1", "limit=0", "color=red"])
def test_bad_parameters_are_refused(client, query):
    assert "error" in get(client, f"/api/health?{query}", 400)


def test_flows_api_has_the_health_columns(client):
    rows = get(client, f"/api/flows?since={T0}&until={NOW}&sort=rtt_ms")["rows"]
    assert [(r["rtt_ms"], r["retransmits"], r["rtt_avg_ms"]) for r in rows] == [(180.0, 3, 185.0), (2.0, 0, None)]
