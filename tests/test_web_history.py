"""/api/historical over a custom window (since/until, in the middle of the data), its "others"
series and by=app, through Flask's test client over the showcase database of tests/web_helpers.py
(an hour of twelve hosts, three hours before NOW, plus make_db's two minutes). Numbers exact."""
import pytest

from web_helpers import MINUTE, NOW, SHOWCASE_HOSTS, make_db, showcase_rollups
from web.app import create_app

ROLLUPS = showcase_rollups()
FIRST = ROLLUPS[0].bucket          # the showcase's first minute: MINUTE - 180 - 3600


@pytest.fixture
def client(tmp_path):
    app = create_app(test_config={"DB": make_db(tmp_path / "h.db", extra=ROLLUPS), "CLOCK": lambda: NOW,
                                  "TOKEN": None, "POOL_SIZE": 2})
    yield app.test_client()
    app.extensions["nettally.pool"].close()


def get(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, (url, response.get_json())
    return response.get_json()


def host_bytes(since, until):
    """{ip: bytes} of the showcase's minutes in [since, until)."""
    out = {}
    for r in ROLLUPS:
        if since <= r.bucket < until:
            for ip, (tx, rx, *_) in r.hosts.items():
                out[ip] = out.get(ip, 0) + tx + rx
    return out


def test_a_custom_window_in_the_middle_of_the_data(client):
    since, until = FIRST + 600, FIRST + 1800                 # 20 minutes, an hour before the data's end
    h = get(client, f"/api/historical?by=host&limit=3&since={since}&until={until}")
    assert (h["range"], h["since"], h["until"], h["step"], h["resolution"]) == (None, since, until, 60, 60)
    assert h["buckets"] == list(range(since, until, 60))
    expected = host_bytes(since, until)
    top = sorted(expected, key=lambda ip: (-expected[ip], ip))[:3]
    assert [(s["key"], s["total"]) for s in h["series"]] == [(ip, expected[ip]) for ip in top]
    others = h["others"]
    assert others["count"] == len(expected) - 3 == len(SHOWCASE_HOSTS) - 3
    assert others["total"] == sum(v for ip, v in expected.items() if ip not in top)
    assert sum(others["up"]) + sum(others["down"]) == others["total"] and len(others["up"]) == len(h["buckets"])
    # every byte of the window is in a series or in others
    assert sum(s["total"] for s in h["series"]) + others["total"] == sum(expected.values())


def test_a_window_selects_whole_buckets_and_at_most_300(client):
    h = get(client, f"/api/historical?since={FIRST + 90}&until={FIRST + 200}")       # minutes 1 to 3
    assert (h["since"], h["until"], h["step"]) == (FIRST + 60, FIRST + 240, 60)
    week = get(client, f"/api/historical?since={MINUTE - 7 * 86400}&until={MINUTE}")
    assert week["step"] == 3600 and len(week["buckets"]) <= 300
    years = get(client, f"/api/historical?since=1&until={MINUTE}")
    assert years["step"] % 86400 == 0 and len(years["buckets"]) <= 300


def test_everything_starts_at_the_data(client):
    h = get(client, "/api/historical?since=0&by=interface")
    assert h["since"] == FIRST and h["others"] is None
    assert sum(s["total"] for s in h["series"]) == sum(
        sum(r.interfaces[i][1] for i in r.interfaces) for r in ROLLUPS) + 7010


def test_apps_have_bytes_without_direction(client):
    h = get(client, f"/api/historical?by=app&limit=2&since={FIRST}&until={FIRST + 3600}")
    assert [s["key"] for s in h["series"]] == ["tls", "quic"]
    assert all("up" not in s and "down" not in s and sum(s["bytes"]) == s["total"] for s in h["series"])
    assert h["others"]["count"] == 3 and sum(h["others"]["bytes"]) == h["others"]["total"] > 0


def test_presets_are_unchanged_and_a_preset_with_a_window_is_refused(client):
    h = get(client, "/api/historical?range=1h&by=host&limit=2")
    assert (h["range"], h["step"], len(h["buckets"])) == ("1h", 60, 60) and h["others"]["count"] >= 1
    assert get(client, "/api/historical?range=1h&since=0", 400)["parameter"] == "range"
    assert get(client, "/api/historical?since=1h&until=nonsense", 400)["parameter"] == "until"
    assert get(client, f"/api/historical?since={MINUTE}&until={MINUTE - 60}", 400)["parameter"] == "since"
