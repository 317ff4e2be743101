"""Rollup tiers: hours and days built from minutes, late data, crash in a rebuild, and the
rates and history read back from them."""
import pytest

from records import FlowDelta, Rollup
from settings import Settings
from storage import tiers
from storage.db import connect, immediate
from storage.history import traffic_history
from storage.hosts import host_usage
from storage.interfaces import interface_rates, live_seconds_by_agent
from storage.reads import choose_tier
from storage.retention import maintain
from storage.tiers import RetentionPolicy
from storage.store import RollupStore

T0 = 1_700_006_400            # a UTC midnight (2023-11-15)


def host_rollup(minute, hosts, iface_bytes=0):
    """hosts: {ip: (tx_bytes, rx_bytes)}; one packet each way."""
    interfaces = {"eth0": [1, iface_bytes, 1, iface_bytes, 0, 0, 0, 0, 0, 0]} if iface_bytes else {}
    return Rollup(minute, [], {ip: [tx, rx, 1, 1] for ip, (tx, rx) in hosts.items()}, interfaces, {})


def totals(con, table, bucket_col):
    return dict(((b, ip), (tx, rx)) for b, ip, tx, rx in
                con.execute(f"SELECT {bucket_col}, ip, tx_bytes, rx_bytes FROM {table}"))


@pytest.fixture
def store(tmp_path):
    con = connect(tmp_path / "t.db")
    yield RollupStore(con)
    con.close()


def test_family_spec_matches_schema(store):
    for family in tiers.FAMILIES.values():
        for tier, name in zip(tiers.TIERS, family.tables):
            cols = {row[1] for row in store.con.execute(f"PRAGMA table_info({name})")}
            assert cols == {tier, *family.grouped, *family.sums}, name


def test_hours_and_days_equal_the_minutes_they_came_from(store):
    minutes = [T0 + 60 * k for k in (0, 1, 59, 60, 61, 24 * 60 + 5)]
    for i, m in enumerate(minutes):
        store.apply([host_rollup(m, {"10.0.0.1": (100 + i, 7), "10.0.0.2": (5, 1000 * i)})])
    assert tiers.pending(store.con, "hour") == [T0, T0 + 3600, T0 + 86400]
    assert tiers.build_pending(store.con)
    assert tiers.pending(store.con, "hour") == tiers.pending(store.con, "day") == []
    hours = totals(store.con, "host_hours", "hour")
    assert hours == {
        (T0, "10.0.0.1"): (100 + 101 + 102, 21), (T0, "10.0.0.2"): (15, 3000),
        (T0 + 3600, "10.0.0.1"): (103 + 104, 14), (T0 + 3600, "10.0.0.2"): (10, 7000),
        (T0 + 86400, "10.0.0.1"): (105, 7), (T0 + 86400, "10.0.0.2"): (5, 5000)}
    assert totals(store.con, "host_days", "day") == {
        (T0, "10.0.0.1"): (510, 35), (T0, "10.0.0.2"): (25, 10000),
        (T0 + 86400, "10.0.0.1"): (105, 7), (T0 + 86400, "10.0.0.2"): (5, 5000)}


def test_rebuild_after_more_minutes_replaces_not_adds(store):
    store.apply([host_rollup(T0, {"10.0.0.1": (10, 0)})])
    tiers.build_pending(store.con)
    store.apply([host_rollup(T0, {"10.0.0.1": (5, 0)}), host_rollup(T0 + 60, {"10.0.0.1": (1, 0)})])
    tiers.build_pending(store.con)
    assert totals(store.con, "host_hours", "hour") == {(T0, "10.0.0.1"): (16, 0)}
    assert totals(store.con, "host_days", "day") == {(T0, "10.0.0.1"): (16, 0)}


def test_a_rebuild_that_dies_leaves_the_bucket_pending(store):
    store.apply([host_rollup(T0, {"10.0.0.1": (10, 0)})])

    class Boom(Exception):
        pass
    with pytest.raises(Boom):
        with immediate(store.con):
            tiers.rebuild(store.con, "hour", T0, {})
            raise Boom()         # a crash before commit: nothing of the rebuild remains
    assert tiers.pending(store.con, "hour") == [T0]
    assert totals(store.con, "host_hours", "hour") == {}
    tiers.build_pending(store.con)
    assert totals(store.con, "host_hours", "hour") == {(T0, "10.0.0.1"): (10, 0)}


def test_late_data_goes_to_the_tier_that_still_holds_its_bucket(store):
    policy = RetentionPolicy.from_settings(Settings())._replace(minute=3600, hour=86400, day=10 * 86400)
    store.apply([host_rollup(T0 + 60, {"10.0.0.1": (10, 0)})])
    now = T0 + 3 * 86400
    assert maintain(store.con, policy, now, budget=60)
    assert store.con.execute("SELECT count(*) FROM host_minutes").fetchone() == (0,)
    assert store.con.execute("SELECT count(*) FROM host_hours").fetchone() == (0,)
    # minutes of day 2 are pruned (kept 1 h), its hours are not: late minutes land in the hour
    store.apply([host_rollup(T0 + 2 * 86400 + 120, {"10.0.0.1": (3, 4)})])
    # day 0's hours are pruned too: late minutes land in the day
    store.apply([host_rollup(T0 + 180, {"10.0.0.1": (1, 2)})])
    assert store.con.execute("SELECT count(*) FROM host_minutes").fetchone() == (0,)
    assert totals(store.con, "host_hours", "hour") == {(T0 + 2 * 86400, "10.0.0.1"): (3, 4)}
    assert maintain(store.con, policy, now, budget=60)
    assert totals(store.con, "host_days", "day") == {(T0, "10.0.0.1"): (11, 2), (T0 + 2 * 86400, "10.0.0.1"): (3, 4)}


def test_flow_tiers_and_flow_ids(store):
    flow = FlowDelta(6, "10.0.0.1", 40000, "10.0.0.2", 443, T0 + 1.5, T0 + 2.0, 100, 1, 200, 2, 0x12, "eth0", False)
    later = flow._replace(last_seen=T0 + 3700.0, orig_bytes=50, resp_bytes=0, orig_packets=1, resp_packets=0,
                          closed=True)
    store.apply([Rollup(T0, [flow], {}, {}, {})])
    store.apply([Rollup(T0 + 3660, [later], {}, {}, {})])
    tiers.build_pending(store.con)
    assert store.con.execute("SELECT orig_bytes, resp_bytes, closed FROM flows").fetchall() == [(150, 200, 1)]
    assert store.con.execute("SELECT hour, orig_bytes, resp_bytes FROM flow_hours ORDER BY hour").fetchall() == [
        (T0, 100, 200), (T0 + 3600, 50, 0)]
    assert store.con.execute("SELECT day, orig_bytes, resp_bytes, orig_packets, resp_packets FROM flow_days"
                             ).fetchall() == [(T0, 150, 200, 2, 2)]


def test_host_usage_states_average_and_peak_and_history_the_minutes_behind_them(store):
    policy = RetentionPolicy.from_settings(Settings())
    now = T0 + 3600 + 30                     # half a minute into the hour after
    for k in range(60):                      # 10.0.0.1: 6000 bytes a minute, 60000 in minute 17
        store.apply([host_rollup(T0 + 60 * k, {"10.0.0.1": (60000 if k == 17 else 6000, 0)})])
    store.apply([host_rollup(T0 + 3600, {"10.0.0.1": (999, 0)})])     # the current, incomplete minute
    store.apply([host_rollup(T0 + 60 * 59, {"10.0.0.2": (0, 600)})])
    usage = host_usage(store.con, T0, T0 + 3600, now, policy=policy)
    assert [r["ip"] for r in usage["rows"]] == ["10.0.0.1", "10.0.0.2"]
    a, b = usage["rows"]
    assert a["bytes"] == 59 * 6000 + 60000
    assert usage["resolution"] == 60
    assert a["avg_bps"] == (59 * 6000 + 60000) * 8 / 3600
    assert a["peak_bps"] == 60000 * 8 / 60
    assert b["bytes"] == 600
    # the same hour minute by minute: where the peak was, and the last complete minute
    history = traffic_history(store.con, "host", T0, T0 + 3600, 60, now, policy=policy)
    buckets = history["buckets"]
    assert history["resolution"] == 60 and buckets[0] == T0 and len(buckets) * history["step"] == 3600
    per_minute = {s["key"]: [up + down for up, down in zip(s["up"], s["down"])] for s in history["series"]}
    assert buckets[per_minute["10.0.0.1"].index(max(per_minute["10.0.0.1"]))] == T0 + 17 * 60
    assert per_minute["10.0.0.1"][-1] * 8 / 60 == 6000 * 8 / 60
    assert per_minute["10.0.0.2"][-1] * 8 / 60 == 600 * 8 / 60


def test_interface_seconds_give_the_peak_second_and_the_current_rate(store):
    now = T0 + 100.5
    store.add_seconds([(T0 + s, "eth0", 1, 1000 if s != 42 else 125000, 0, 0) for s in range(100)])
    points = [(second, iface, up, down)                      # the last 60 whole seconds, one agent
              for second, _, iface, up, down in live_seconds_by_agent(store.con, T0 + 40)]
    assert [second for second, *_ in points] == list(range(T0 + 40, T0 + 100))
    assert {iface for _, iface, _, _ in points} == {"eth0"}
    assert sum(up + down for _, _, up, down in points) == 59 * 1000 + 125000
    second, _, up, down = max(points, key=lambda p: p[2] + p[3])
    assert (up + down) * 8 == 125000 * 8 and second == T0 + 42
    assert sum(interface_rates(store.con, now)["eth0"]) == 8000


def test_history_picks_the_finest_tier_that_holds_the_range(store):
    policy = RetentionPolicy.from_settings(Settings())
    now = T0 + 10 * 86400
    assert choose_tier(policy, "host", now - 3600, now) == "minute"
    assert choose_tier(policy, "host", now - 86400, now) == "minute"
    assert choose_tier(policy, "host", now - 7 * 86400, now) == "hour"
    assert choose_tier(policy, "host", now - 30 * 86400, now) == "hour"
    assert choose_tier(policy, "host", now - 365 * 86400, now) == "day"
    for k in range(3):
        store.apply([host_rollup(now - 3600 + 60 * k, {"10.0.0.1": (10 * k, 1)}, iface_bytes=100 + k)])
    tiers.build_pending(store.con)

    def points(history):
        """Buckets with traffic: {t, bytes, tx_bytes}, all series summed."""
        out = []
        for i, t in enumerate(history["buckets"]):
            up, down = (sum(s[d][i] for s in history["series"]) for d in ("up", "down"))
            if up or down:
                out.append({"t": t, "bytes": up + down, "tx_bytes": up})
        return out
    h = traffic_history(store.con, "host", now - 3600, now, 60, now, policy=policy)
    assert h["resolution"] == 60 and [s["key"] for s in h["series"]] == ["10.0.0.1"]
    assert points(h) == [{"t": now - 3600 + 60 * k, "bytes": 10 * k + 1, "tx_bytes": 10 * k} for k in range(3)]
    week = traffic_history(store.con, "interface", now - 7 * 86400, now, 3600, now, policy=policy)
    assert week["resolution"] == 3600 and points(week) == [{"t": now - 3600, "bytes": 303, "tx_bytes": 0}]
