"""A real "now" and peak for apps (issue 11): flow-side points counted by the app their labelled
rollups carry (collector/seconds.py SecondApps), app_seconds through the writer and retention,
and /api/apps rows with current_bps, peak_bps, resolution and peak_at. Numbers are exact."""
import pytest

from collector import seconds as seconds_module
from collector.seconds import SecondApps
from records import FlowDelta, Rollup
from storage import retention, tiers
from storage.db import connect
from storage.store import RollupStore
from web.app import create_app
from web_helpers import B, C, MINUTE, NOW, make_db

T0 = 1_700_000_040
A, D = "10.0.0.1", "10.0.0.4"
TLS = ("tls", "YouTube", "video streaming")
DNS = ("dns", "", "system and background")


def delta(proto, orig, orig_p, resp, resp_p, app=("", "", ""), closed=False):
    return FlowDelta(proto, orig, orig_p, resp, resp_p, T0, T0 + 1, 100, 1, 50, 1, 0, "eth0", closed)._replace(
        app=app[0], service=app[1], traffic_class=app[2])


def rollup(*flows):
    return Rollup(T0, list(flows), {}, {}, {})


# ---- flow sides -> apps (pure) -------------------------------------------------------------------

def test_points_are_counted_by_the_labels_of_the_flows_rollups():
    apps = SecondApps()
    s = T0
    # seconds before the flow's first rollup are held, then counted once a rollup names it
    assert apps.charge([(s, 6, A, 5000, B, 443, 100), (s, 6, B, 443, A, 5000, 900)]) == []
    assert apps.learn([rollup(delta(6, A, 5000, B, 443, TLS))]) == [(s, *TLS, 1000)]
    # later seconds at once, both sides of a flow adding to its app; flows of one app add up
    assert sorted(apps.charge([(s + 1, 6, B, 443, A, 5000, 7), (s + 1, 6, A, 5000, B, 443, 3),
                               (s + 1, 17, A, 40000, C, 53, 60)])) == [(s + 1, *TLS, 10)]
    # the DNS point waited for its flow's rollup
    assert apps.learn([rollup(delta(17, A, 40000, C, 53, DNS), delta(6, A, 5001, B, 443, TLS))]) == \
        [(s + 1, *DNS, 60)]
    assert sorted(apps.charge([(s + 2, 17, C, 53, A, 40000, 90), (s + 2, 6, A, 5001, B, 443, 5),
                               (s + 2, 6, A, 5000, B, 443, 6)])) == [(s + 2, *DNS, 90), (s + 2, *TLS, 11)]
    # a flow no rollup carries is held, then left out at the next rollups
    assert apps.charge([(s + 3, 17, D, 1, C, 2, 5)]) == [] and apps.held
    assert apps.learn([]) == [] and apps.left_out == 1 and apps.held == []


def test_held_points_are_returned_by_learn_and_a_later_label_wins():
    apps = SecondApps()
    s = T0
    assert apps.charge([(s, 17, A, 40000, C, 53, 60), (s, 17, C, 53, A, 40000, 40)]) == []
    assert apps.learn([rollup(delta(17, A, 40000, C, 53))]) == [(s, "", "", "", 100)]      # no label yet
    # a later rollup carries what the capture read since: its later seconds count there, as the
    # app tier counts that rollup's bytes
    apps.learn([rollup(delta(17, A, 40000, C, 53, DNS))])
    assert apps.charge([(s + 1, 17, A, 40000, C, 53, 8)]) == [(s + 1, *DNS, 8)]


def test_a_closed_flow_is_forgotten_after_one_round_unless_its_5_tuple_came_back():
    apps = SecondApps()
    s = T0
    apps.learn([rollup(delta(6, A, 5000, B, 443, TLS, closed=True), delta(6, A, 5002, B, 443, TLS, closed=True))])
    # its last seconds come after its last rollup: still counted in the next round
    assert apps.charge([(s, 6, A, 5000, B, 443, 1)]) == [(s, *TLS, 1)]
    apps.learn([rollup(delta(6, A, 5002, B, 443, DNS))])       # 5002: the same 5-tuple, a new flow
    assert apps.charge([(s + 1, 6, A, 5000, B, 443, 1)]) == [] and len(apps.held) == 1
    assert apps.charge([(s + 1, 6, A, 5002, B, 443, 4)]) == [(s + 1, *DNS, 4)]
    assert sorted(apps.apps) == [(6, A, 5002, B, 443)]
    # ended and begun again within one round: the new flow stays
    apps.learn([rollup(delta(6, A, 5002, B, 443, DNS, closed=True), delta(6, A, 5002, B, 443, TLS))])
    apps.learn([])
    assert apps.apps == {(6, A, 5002, B, 443): TLS}


def test_held_points_are_bounded(monkeypatch):
    monkeypatch.setattr(seconds_module, "HELD_MAX", 3)
    apps = SecondApps()
    apps.charge([(T0, 17, A, port, C, 53, 1) for port in range(5)])
    assert (len(apps.held), apps.left_out) == (3, 2)
    assert apps.learn([rollup(delta(17, A, 0, C, 53, DNS))]) == [(T0, *DNS, 1)]
    assert (apps.held, apps.left_out) == ([], 4)


# ---- storage ---------------------------------------------------------------------------------------

class _Settings:
    maintenance_interval = 3600
    writer_backlog_rows = 100_000
    retention_seconds, retention_minutes, retention_hours, retention_days, retention_flows = 900, 1, 90, 730, 90
    retention_iface_minutes = 35


def test_app_seconds_through_the_writer_add_up_and_leave_with_retention_seconds(tmp_path):
    from storage.writer import WriterThread
    db = str(tmp_path / "a.db")
    writer = WriterThread(db, _Settings(), clock=lambda: 1100)
    writer.start()
    writer.submit_activity([(1000, A, 1, 2)], [], [(100, *TLS, 10), (1000, *TLS, 1)])
    writer.submit_activity([], [], [(1000, *TLS, 3), (1000, *DNS, 5)])
    writer.close(frames=0)
    con = connect(db)
    assert con.execute("SELECT second, app, service, traffic_class, bytes FROM app_seconds "
                       "ORDER BY second, app").fetchall() == [
        (100, *TLS, 10), (1000, *DNS, 5), (1000, *TLS, 4)]
    assert con.execute("SELECT second, ip FROM host_seconds").fetchall() == [(1000, A)]
    policy = tiers.RetentionPolicy(seconds=900, minute=86400, hour=86400, day=86400, flows=86400)
    assert retention.maintain(con, policy, now=1500)
    assert con.execute("SELECT second, app FROM app_seconds ORDER BY app").fetchall() == [(1000, "dns"), (1000, "tls")]
    assert retention.maintain(con, policy, now=2000)
    assert con.execute("SELECT count(*) FROM app_seconds").fetchone() == (0,)
    con.close()


# ---- /api/apps ------------------------------------------------------------------------------------

@pytest.fixture
def client(tmp_path):
    """make_db(named=True) (tls/YouTube 6000 B two minutes ago and 600 B this minute, dns 210 B and
    mdns 200 B this minute) plus per-second app points around now."""
    path = make_db(tmp_path / "apps.db", named=True)
    end = int(NOW) - 1                  # the newest second may still be arriving: not in the window
    mdns = ("mdns", "", "system and background")
    con = connect(path)
    RollupStore(con).add_activity([], [], [
        (end - 5, *TLS, 1000), (end - 1, *TLS, 2500), (end, *TLS, 99_999),      # 3500 B in the window
        (end - 2, *DNS, 5000), (end - 30, *DNS, 50),
        (end - 30, *mdns, 25),
        (end - 1, "quic", "", "web", 7777)])                                     # no bytes in the tier
    con.close()
    app = create_app(test_config={"DB": path, "CLOCK": lambda: NOW, "TOKEN": None, "POOL_SIZE": 2})
    yield app.test_client()
    app.extensions["nettally.pool"].close()


def get(client, url):
    response = client.get(url)
    assert response.status_code == 200, (url, response.get_json())
    return response.get_json()


def _rates(answer, key="app"):
    return {r[key]: (r["current_bps"], r["peak_bps"], r["resolution"], r["peak_at"]) for r in answer["rows"]}


def test_apps_now_and_peak_from_the_seconds_kept(client):
    end = int(NOW) - 1
    a = get(client, "/api/apps")
    assert (a["sort"], a["order"], a["resolution"]) == ("bytes", "desc", 60)
    assert [r["app"] for r in a["rows"]] == ["tls", "dns", "mdns"]            # rows come from the tier
    assert a["rows"][0] == {"app": "tls", "service": "YouTube", "class": "video streaming", "bytes": 6600,
                            "packets": 26, "share": 0.9415, "current_bps": 3500 * 8 / 5, "peak_bps": 99_999 * 8.0,
                            "resolution": 1, "peak_at": end}
    assert _rates(a) == {"tls": (5600.0, 799_992.0, 1, end), "dns": (8000.0, 40_000.0, 1, end - 2),
                         "mdns": (0.0, 200.0, 1, end - 30)}
    # grouped: the seconds of a group add up per second before the highest is taken
    assert _rates(get(client, "/api/apps?by=class"), "class") == {
        "video streaming": (5600.0, 799_992.0, 1, end), "system and background": (8000.0, 40_000.0, 1, end - 2)}
    # sort=now (current the same) and peak rank by those rates; ties stay busiest first
    for key in ("now", "current"):
        assert [r["app"] for r in get(client, f"/api/apps?sort={key}")["rows"]] == ["dns", "tls", "mdns"]
    assert [r["app"] for r in get(client, "/api/apps?sort=now&order=asc")["rows"]] == ["mdns", "tls", "dns"]
    assert [r["app"] for r in get(client, "/api/apps?sort=peak&limit=2")["rows"]] == ["tls", "dns"]
    # seconds outside the range are not its peak; the bucket is where no second beats it
    assert get(client, f"/api/apps?since={MINUTE + 60}&until={MINUTE + 120}")["rows"] == []
    old = _rates(get(client, f"/api/apps?since={MINUTE - 120}&until={MINUTE - 60}"))
    assert old == {"tls": (5600.0, 800.0, 60, MINUTE - 120)}


def test_apps_of_a_host_or_process_peak_at_the_tier_and_have_no_now(client):
    host = get(client, f"/api/apps?host={C}")
    assert _rates(host) == {"dns": (None, 28.0, 60, MINUTE), "mdns": (None, 26.7, 60, MINUTE)}
    both = get(client, f"/api/apps?host={C}&process=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert _rates(both) == {"mdns": (None, None, None, None)}
    response = client.get("/api/apps?sort=rate")
    assert response.status_code == 400 and response.get_json()["parameter"] == "sort"
