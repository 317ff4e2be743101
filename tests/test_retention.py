"""Retention with an injected clock: three simulated days of 1,000 hosts through the writer's
store and housekeeping, then every tier holds exactly what the policy says, and hour and day
totals equal the sum of the minute data they were built from."""
import pytest

from records import FlowDelta, Rollup
from storage import retention
from storage.db import connect
from storage.retention import maintain
from storage.tiers import RetentionPolicy
from storage.store import RollupStore

T0 = 1_700_006_400            # a UTC midnight
DAYS, HOSTS, FLOWS_PER_HOUR = 3, 1000, 10
POLICY = RetentionPolicy(seconds=900, minute=6 * 3600, hour=36 * 3600, day=730 * 86400, flows=2 * 86400)


def host_counts(i, k):
    """Bytes of host i in minute k, or None when the host is silent then (a fifth of them talk
    each minute, so every host talks in every hour)."""
    if (i + k) % 5:
        return None
    return (i % 97 + 1) * 1000 + k % 13, (i % 89 + 1) * 10 + k % 7


def flow_delta(hour, f, k, last):
    first = T0 + hour * 3600 + f
    return FlowDelta(17, f"10.1.0.{f}", 5000 + f, f"10.2.0.{f}", 53, float(first), float(T0 + 60 * k + 30),
                     100 + f, 1, 200, 2, 0, "eth0", last)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """The database after 3 days; what was written per (minute, ip) and per flow."""
    con = connect(tmp_path_factory.mktemp("retention") / "r.db")
    store = RollupStore(con)
    ips = [f"10.{i // 250}.{i % 250}.1" for i in range(HOSTS)]
    truth = {}                                    # (minute, ip) -> (tx, rx)
    rounds, batch = [], []
    for k in range(DAYS * 1440):
        minute = T0 + 60 * k
        hosts = {}
        for i in range(-k % 5, HOSTS, 5):
            c = host_counts(i, k)
            hosts[ips[i]] = [c[0], c[1], 1, 1]
            truth[(minute, ips[i])] = c
        hour, in_hour = divmod(k, 60)
        flows = [flow_delta(hour, f, k, in_hour == 59) for f in range(FLOWS_PER_HOUR)]
        batch.append(Rollup(minute, flows, hosts, {"eth0": [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]}, {}))
        if in_hour == 59:          # an hour per transaction (the test's speed), then housekeeping
            store.apply(batch)
            batch = []
            now = minute + 60
            rounds.append(maintain(con, POLICY, now, budget=60))
    end = T0 + DAYS * 86400
    store.add_seconds([(end - s, "eth0", 1, 100, 0, 0) for s in range(1, 1201)])   # the last 20 minutes
    assert maintain(con, POLICY, end, budget=60)
    yield con, truth, end, rounds
    con.close()


@pytest.mark.slow         # days of simulated housekeeping (the module's fixture)
def test_every_housekeeping_round_finished(simulated):
    _, _, _, rounds = simulated
    assert len(rounds) == DAYS * 24 and all(rounds)


@pytest.mark.slow         # days of simulated housekeeping (the module's fixture)
def test_tier_sizes_are_as_configured(simulated):
    con, truth, end, _ = simulated
    def count(sql):
        return con.execute(sql).fetchone()[0]
    # minutes: 6 h kept (cut at an hour boundary): 360 minutes, a fifth of the hosts in each
    assert count("SELECT min(minute) FROM host_minutes") == end - 6 * 3600
    assert count("SELECT count(*) FROM host_minutes") == 360 * HOSTS // 5
    # hours: 36 h kept, cut at a day boundary: the last 2 days, every host in every hour
    assert count("SELECT min(hour) FROM host_hours") == T0 + 86400
    assert count("SELECT count(*) FROM host_hours") == 48 * HOSTS
    # days: 2 years kept: all three
    assert count("SELECT count(*) FROM host_days") == DAYS * HOSTS
    assert count("SELECT count(*) FROM iface_minutes") == 360
    assert count("SELECT count(*) FROM iface_hours") == 48
    assert count("SELECT count(*) FROM iface_days") == DAYS
    # 1-second points: 900 s
    assert count("SELECT count(*) FROM iface_seconds") == 900
    assert count("SELECT min(second) FROM iface_seconds") == end - 900
    # flows: kept 2 days in every tier; minutes still only 6 h
    assert count("SELECT count(*) FROM flows") == 48 * FLOWS_PER_HOUR
    assert count("SELECT count(*) FROM flow_minutes") == 360 * FLOWS_PER_HOUR
    assert count("SELECT count(*) FROM flow_hours") == 48 * FLOWS_PER_HOUR
    assert count("SELECT count(*) FROM flow_days") == 48 * FLOWS_PER_HOUR
    assert count("SELECT count(*) FROM tier_pending") == 0


@pytest.mark.slow         # days of simulated housekeeping (the module's fixture)
def test_hour_and_day_totals_equal_the_minutes_they_came_from(simulated):
    con, truth, end, _ = simulated
    want_hours, want_days = {}, {}
    for (minute, ip), (tx, rx) in truth.items():
        for want, size in ((want_hours, 3600), (want_days, 86400)):
            key = (minute // size * size, ip)
            have = want.get(key, (0, 0))
            want[key] = (have[0] + tx, have[1] + rx)
    hours = {(h, ip): (tx, rx) for h, ip, tx, rx in con.execute("SELECT hour, ip, tx_bytes, rx_bytes FROM host_hours")}
    assert hours == {k: v for k, v in want_hours.items() if k[0] >= T0 + 86400}
    days = {(d, ip): (tx, rx) for d, ip, tx, rx in con.execute("SELECT day, ip, tx_bytes, rx_bytes FROM host_days")}
    assert days == want_days
    # where minutes remain, the hour is their sum in the database itself
    assert con.execute("""
        SELECT count(*) FROM host_hours h JOIN (
            SELECT minute / 3600 * 3600 AS hour, ip, sum(tx_bytes) AS tx, sum(rx_bytes) AS rx
            FROM host_minutes GROUP BY 1, 2) m ON m.hour = h.hour AND m.ip = h.ip
        WHERE m.tx = h.tx_bytes AND m.rx = h.rx_bytes""").fetchone()[0] == 6 * HOSTS
    flows_by_day = dict(con.execute("SELECT day, sum(orig_bytes) FROM flow_days GROUP BY day"))
    per_day = sum(60 * (100 + f) for f in range(FLOWS_PER_HOUR)) * 24
    assert flows_by_day == {T0 + 86400: per_day, T0 + 2 * 86400: per_day}
    assert con.execute("SELECT sum(orig_bytes) FROM flows").fetchone()[0] == 2 * per_day


def test_pruning_goes_in_small_batches(tmp_path, monkeypatch):
    con = connect(tmp_path / "b.db")
    store = RollupStore(con)
    store.apply([Rollup(T0 + 60 * k, [], {f"10.0.0.{i}": [1, 1, 1, 1] for i in range(50)}, {}, {})
                 for k in range(60)])
    monkeypatch.setattr(retention, "BATCH_ROWS", 500)
    rounds = 0
    while not maintain(con, POLICY, T0 + 86400, budget=0):
        rounds += 1
        assert rounds < 100
    # 3000 minute rows at 500 a transaction: the first round stops after one batch
    assert rounds >= 5
    assert con.execute("SELECT count(*) FROM host_minutes").fetchone() == (0,)
    assert con.execute("SELECT sum(tx_bytes) FROM host_hours").fetchone() == (3000,)


@pytest.mark.slow         # days of simulated housekeeping (the module's fixture)
def test_exports_read_every_tier_after_retention(simulated):
    """After the minute rows of days 1-2 are pruned, the hosts export over all time and over a
    range reaching back past the minute retention still equals what was written: hour and day
    buckets stand in for the pruned minutes."""
    from storage.hosts import top_hosts
    con, truth, end, _ = simulated
    assert con.execute("SELECT min(minute) FROM host_minutes").fetchone()[0] >= end - POLICY.minute - 3600

    def want(since):
        total = {}
        for (minute, ip), (tx, rx) in truth.items():
            if minute >= since:
                t = total.setdefault(ip, [0, 0])
                t[0] += tx
                t[1] += rx
        return total

    for since in (None, T0 + 86400, end - 12 * 3600):   # everything; from day 2 (hours); last 12 h (hours + minutes)
        got = {r["ip"]: [r["tx_bytes"], r["rx_bytes"]] for r in top_hosts(con, since=since)}
        assert got == want(since or T0), since
