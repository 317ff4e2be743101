"""Volumes per UTC day and month (/api/volumes) and the interfaces' 95th percentile, over a real
SQLite file written by the real writer; exact numbers, before and after the tiers are built."""
import pytest

from records import ProcessKey, Rollup
from settings import Settings
from storage import retention, tiers
from storage.db import connect
from storage.store import RollupStore
from storage.volumes import _p95
from web.app import create_app
from web_helpers import A, B, _iface, flow

D1 = 1699920000                   # 2023-11-14 00:00 UTC
D2 = D1 + 86400
NOV, DEC = 1698796800, 1701388800  # 2023-11-01, 2023-12-01
CURL = ProcessKey(100, 1000.0, "curl", "/usr/bin/curl", "curl x", "alice")
POLICY = tiers.RetentionPolicy.from_settings(Settings())


def _rollups():
    tls = flow(6, A, 40000, B, 443, D1 + 601, D1 + 602, 1000, 1, 2000, 2, orig_proc=(100, "curl"))._replace(app="tls")
    return [
        Rollup(D1 + 600, [tls], {A: [1000, 2000, 1, 2], B: [2000, 1000, 2, 1]}, {"eth0": _iface(3000, 3, 1000, 1)}, {},
               {CURL: [1000, 2000, 1, 2]}),
        Rollup(D2 + 3600, [], {A: [100, 500, 1, 1]}, {"eth0": _iface(600, 2, 100, 1), "wlan0": _iface(50, 1, 50, 1)}, {}),
        Rollup(DEC + 60, [], {B: [4000, 6000, 4, 6]}, {"eth0": _iface(10000, 10, 4000, 4)}, {}),
    ]


@pytest.fixture
def path(tmp_path):
    path = str(tmp_path / "volumes.db")
    con = connect(path)
    RollupStore(con).apply(_rollups())
    con.close()
    return path


def _client(path, now):
    return create_app(test_config={"DB": path, "CLOCK": lambda: now, "TOKEN": None, "POOL_SIZE": 2}).test_client()


def _rows(client, query):
    response = client.get(f"/api/volumes?since={D1}&until={DEC + 86400}&{query}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    return [(r["period"], r["subject"], r["tx_bytes"], r["rx_bytes"], r["bytes"]) for r in body["rows"]], body


def test_days_and_months_by_every_subject(path):
    con = connect(path)
    for built in (False, True):
        if built:
            assert retention.maintain(con, POLICY, DEC + 3600)       # days built from hours and minutes
        client = _client(path, DEC + 3600)
        assert _rows(client, "by=iface")[0] == [(D1, "eth0", 1000, 2000, 3000), (D2, "eth0", 100, 500, 600),
                                                 (D2, "wlan0", 50, 0, 50), (DEC, "eth0", 4000, 6000, 10000)]
        assert _rows(client, "by=iface&period=month")[0] == [(NOV, "eth0", 1100, 2500, 3600), (NOV, "wlan0", 50, 0, 50),
                                                              (DEC, "eth0", 4000, 6000, 10000)]
        assert _rows(client, "by=iface&period=month&limit=1")[0] == [(NOV, "eth0", 1100, 2500, 3600),
                                                                      (DEC, "eth0", 4000, 6000, 10000)]
        assert _rows(client, "by=host&period=month")[0] == [(NOV, A, 1100, 2500, 3600), (NOV, B, 2000, 1000, 3000),
                                                             (DEC, B, 4000, 6000, 10000)]
        assert _rows(client, "by=process")[0] == [(D1, "curl", 1000, 2000, 3000)]
        assert _rows(client, "by=app&period=month")[0] == [(NOV, "tls", None, None, 3000)]
    con.close()


def test_default_range_of_an_old_database_is_its_last_30_days(path):
    body = _client(path, DEC + 5 * 365 * 86400).get("/api/volumes").get_json()
    assert (body["until"], body["since"]) == (DEC + 120, DEC + 120 - 30 * 86400)
    assert [r["period"] for r in body["rows"]] == [D1, D2, D2, DEC]


def test_percentile_95_of_five_minute_rates_as_billed(tmp_path):
    """100 five-minute slots of one day received at 1, 2, ... 100 kbit/s, one of them (51) silent:
    the silent slot counts as 0, the top 5 samples are dropped, the 95th is 95 kbit/s."""
    day = D1
    rollups = []
    for i in range(100):
        if i == 50:
            continue
        nbytes = (i + 1) * 1000 * 300 // 8
        rollups.append(Rollup(day + i * 300 + 60, [], {}, {"eth0": _iface(nbytes, 1, 0, 0)}, {}))
    path = str(tmp_path / "p95.db")
    con = connect(path)
    RollupStore(con).apply(rollups)
    now = day + 3 * 86400
    assert retention.maintain(con, POLICY, now)          # 3 days on: other minutes pruned, interfaces' kept
    assert con.execute("SELECT count(*) FROM iface_minutes").fetchone()[0] == 99
    body = _client(path, now).get(f"/api/volumes?by=iface&since={day}&until={day + 86400}").get_json()
    assert body["p95"] == [{"period": day, "iface": "eth0", "in_bps": 95000.0, "out_bps": 0.0, "bps": 95000.0,
                            "samples": 100, "expected": 288, "resolution": 300,
                            "first_sample": day, "last_sample": day + 99 * 300}]
    assert retention.maintain(con, POLICY, day + 40 * 86400)     # past retention_iface_minutes
    con.close()
    body = _client(path, day + 40 * 86400).get(f"/api/volumes?by=iface&since={day}&until={day + 86400}").get_json()
    assert body["rows"][0]["bytes"] == sum(r.interfaces["eth0"][1] for r in rollups)
    assert body["p95"] == [{"period": day, "iface": "eth0", "in_bps": None, "out_bps": None, "bps": None,
                            "samples": 0, "expected": 288, "resolution": 300, "first_sample": None,
                            "last_sample": None}]      # 40 days on: its minutes are gone, and it says so


def test_interface_minutes_outlive_the_other_minutes(tmp_path):
    path = str(tmp_path / "keep.db")
    con = connect(path)
    RollupStore(con).apply([Rollup(D1 + 60, [], {A: [1, 1, 1, 1]}, {"eth0": _iface(2, 2, 1, 1)}, {})])
    assert retention.maintain(con, POLICY, D1 + 10 * 86400)
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("iface_minutes", "host_minutes")]
    assert counts == [1, 0]
    assert retention.maintain(con, POLICY, D1 + 36 * 86400)
    assert con.execute("SELECT count(*) FROM iface_minutes").fetchone()[0] == 0
    assert con.execute("SELECT sum(bytes) FROM iface_days").fetchone()[0] == 2
    con.close()


def test_p95_ranks():
    assert _p95([5]) == 5 and _p95(list(range(1, 21))) == 19 and _p95(list(range(1, 101))) == 95


@pytest.mark.parametrize("query,parameter", [("by=user", "by"), ("period=week", "period"), ("limit=0", "limit"),
                                             ("since=x", "since")])
def test_bad_parameters(path, query, parameter):
    response = _client(path, DEC).get(f"/api/volumes?{query}")
    assert response.status_code == 400 and response.get_json()["parameter"] == parameter
