"""The hosts and processes lists' ranked pages (storage/usage.py rank: the page found from the
next coarser tier's whole buckets and the edges, then read in full) against the full list of
the same range cut to the same page: equal rows, equal totals, for every key the ranking serves,
both orders, pages past the first, a search, both process groupings, hours built and pending.
The history by host or process (top keys ranked the same way, `others` by subtraction) against
every row of its range summed by hand."""
import random

import pytest

from records import ProcessKey, Rollup
from settings import Settings
from storage import tiers
from storage.db import SCHEMA_VERSION, connect
from storage.history import traffic_history
from storage.hosts import host_usage
from storage.processes import process_usage
from storage.reads import choose_tier, source
from storage.store import RollupStore
from storage.tiers import RetentionPolicy
from storage.usage import RANKED

T0 = 1_700_006_400            # a UTC midnight
NOW = T0 + 2 * 86400 - 1500   # 35 minutes short of the end of the second day: a pending hour
POLICY = RetentionPolicy.from_settings(Settings())
PROCESSES = [ProcessKey(100 + i, 1000.0 + i, ("curl", "firefox", "sshd", "nginx")[i % 4]) for i in range(9)]


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    """Two days of minutes for 40 hosts and 9 processes, random gaps and sizes (ties included),
    hours built up to an hour and a half before NOW, the rest pending; seconds for "now"."""
    rng = random.Random(7)
    con = connect(tmp_path_factory.mktemp("rank") / "r.db")
    store = RollupStore(con)
    hosts = [f"10.0.{i // 10}.{i % 10}" for i in range(40)]
    built = False
    for minute in range(T0, NOW, 60):
        if not built and minute >= NOW - 5400:
            tiers.build_pending(con)
            built = True
        active = [h for h in hosts if rng.random() < 0.3]
        procs = [p for p in PROCESSES if rng.random() < 0.3]
        size = rng.choice((100, 1000, 1000))
        store.apply([Rollup(minute, [], {h: [size * rng.randint(1, 5), size, 1, 1] for h in active}, {}, {},
                            {p: [size * rng.randint(1, 3), 7, 1, 1] for p in procs})])
    with con:
        for second in range(NOW - 8, NOW):
            con.executemany("INSERT INTO host_seconds (second, ip, tx_bytes, rx_bytes) VALUES (?, ?, ?, 0)",
                            [(second, h, rng.choice((0, 50, 50))) for h in hosts[:12]])
    assert tiers.pending(con, "hour"), "some hours must be read from their minutes"
    yield con
    con.close()


@pytest.mark.parametrize("since", [T0 - 20 * 86400, T0 - 3600, T0 + 150, NOW - 86400 - 90, NOW - 3 * 3600 - 30])
@pytest.mark.parametrize("sort", sorted(RANKED - {"name", "pid"}))
@pytest.mark.parametrize("descending", [True, False])
def test_hosts_page_is_the_full_lists_slice(con, since, sort, descending):
    whole = host_usage(con, since, NOW, NOW, sort, descending, None, 0, policy=POLICY)
    assert whole["total"] == len(whole["rows"]) > 30
    for limit, offset in ((10, 0), (7, 13), (10, 35), (5, 60)):
        page = host_usage(con, since, NOW, NOW, sort, descending, limit, offset, policy=POLICY)
        assert page["total"] == whole["total"]
        assert page["rows"] == whole["rows"][offset:offset + limit]
    q = host_usage(con, since, NOW, NOW, sort, descending, 5, 2, policy=POLICY, q="10.0.1")
    full_q = host_usage(con, since, NOW, NOW, sort, descending, None, 0, policy=POLICY, q="10.0.1")
    assert q["total"] == full_q["total"] == 10 and q["rows"] == full_q["rows"][2:7]


@pytest.mark.parametrize("since", [T0 - 3600, T0 + 150, NOW - 86400 - 90])
@pytest.mark.parametrize("sort", sorted(RANKED - {"ip"}))
@pytest.mark.parametrize("group", ["instance", "name"])
def test_processes_page_is_the_full_lists_slice(con, since, sort, group):
    for descending in (True, False):
        whole = process_usage(con, since, NOW, NOW, sort, descending, None, 0, group, policy=POLICY)
        assert whole["total"] == len(whole["rows"]) == (9 if group == "instance" else 4)
        for limit, offset in ((3, 0), (2, 3), (4, 7)):
            page = process_usage(con, since, NOW, NOW, sort, descending, limit, offset, group, policy=POLICY)
            assert page["total"] == whole["total"]
            assert page["rows"] == whole["rows"][offset:offset + limit]
        q = process_usage(con, since, NOW, NOW, sort, descending, 1, 1, group, policy=POLICY, q="fire")
        full_q = process_usage(con, since, NOW, NOW, sort, descending, None, 0, group, policy=POLICY, q="fire")
        matched = 2 if group == "instance" else 1          # firefox: pids 101 and 105
        assert q["total"] == full_q["total"] == matched and q["rows"] == full_q["rows"][1:2]


@pytest.mark.parametrize("by", ["host", "process"])
@pytest.mark.parametrize("since, step", [(T0 - 3600, 3600), (T0 + 120, 3600), (NOW - 86400 - 120, 600),
                                         (NOW - 3 * 3600 - 120, 60)])
def test_history_top_and_others_equal_every_row_summed_by_hand(con, by, since, step):
    """traffic_history's series (the top keys found from coarser buckets) and `others` against
    the same range's rows at its tier, summed here in Python."""
    family, columns = {"host": ("host", "ip AS key, tx_bytes AS up, rx_bytes AS down"),
                       "process": ("process", "process_id AS key, tx_bytes AS up, rx_bytes AS down")}[by]
    got = traffic_history(con, by, since, NOW, step, NOW, 3, policy=POLICY)
    step, lo = got["step"], got["buckets"][0]
    tier = choose_tier(POLICY, family, since, NOW, step)
    sub, args = source(con, family, tier, lo, NOW, columns)
    names = dict(con.execute("SELECT id, name FROM processes"))
    per, totals = {}, {}
    for bucket, key, up, down in con.execute(sub, args):
        key = names[key] if by == "process" else key
        b = per.setdefault(key, {}).setdefault(bucket // step * step, [0, 0])
        b[0] += up
        b[1] += down
        totals[key] = totals.get(key, 0) + up + down
    top = sorted(totals, key=lambda k: (-totals[k], k))[:3]
    assert [s["key"] for s in got["series"]] == top
    for s in got["series"]:
        assert s["up"] == [per[s["key"]].get(b, [0, 0])[0] for b in got["buckets"]]
        assert s["down"] == [per[s["key"]].get(b, [0, 0])[1] for b in got["buckets"]]
    rest = [k for k in totals if k not in top]
    assert got["others"]["count"] == len(rest) > 0
    assert got["others"]["up"] == [sum(per[k].get(b, [0, 0])[0] for k in rest) for b in got["buckets"]]
    assert got["others"]["down"] == [sum(per[k].get(b, [0, 0])[1] for k in rest) for b in got["buckets"]]


def test_a_version_9_database_gets_the_counting_indexes_and_keeps_its_rows(tmp_path):
    """Schema 10 replaces the per-subject indexes of hosts and processes by ones that carry the
    counters: a database of version 9 is given them, its old ones dropped, nothing else touched."""
    import storage.db
    path = tmp_path / "v9.db"
    con = connect(path)
    RollupStore(con).apply([Rollup(T0, [], {"10.0.0.1": [5, 6, 1, 1]}, {}, {}, {PROCESSES[0]: [5, 0, 1, 0]})])
    con.executescript("""
        DROP INDEX host_minutes_ip_sums; DROP INDEX host_hours_ip_sums;
        DROP INDEX process_minutes_sums; DROP INDEX process_hours_sums;
        CREATE INDEX host_minutes_ip ON host_minutes (ip, minute); CREATE INDEX host_hours_ip ON host_hours (ip, hour);
        CREATE INDEX process_minutes_process ON process_minutes (process_id, minute);
        CREATE INDEX process_hours_process ON process_hours (process_id, hour);
        PRAGMA user_version = 9;""")
    con.close()
    storage.db._CHECKED.clear()
    con = connect(path)
    names = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"host_minutes_ip_sums", "host_hours_ip_sums", "process_minutes_sums", "process_hours_sums"} <= names
    assert not names & {"host_minutes_ip", "host_hours_ip", "process_minutes_process", "process_hours_process"}
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("SELECT minute, ip, tx_bytes, rx_bytes FROM host_minutes").fetchall() == [(T0, "10.0.0.1", 5, 6)]
    plan = con.execute("EXPLAIN QUERY PLAN SELECT minute, tx_bytes FROM host_minutes WHERE ip = ? AND minute >= ?",
                       ("10.0.0.1", T0)).fetchall()
    assert "COVERING INDEX host_minutes_ip_sums" in plan[0][3]
    con.close()


def test_a_coarser_tier_kept_for_less_time_is_not_ranked_from(tmp_path):
    """Days kept 30 days, hours 90 (retention_days under retention_hours): a 6-day list 40 days
    back is at the hour tier, whose days are pruned; the ranking reads its hours, not the
    missing days (a reviewer's case: ranked from the edges alone, the order came out reversed)."""
    from storage import retention
    now = T0 + 40 * 86400
    con = connect(tmp_path / "short-days.db")
    store = RollupStore(con)
    hosts = [f"10.0.0.{i}" for i in range(4)]
    for t in range(T0, now, 7200):          # days 1-4 favour the last host, the edges the first
        busy = 1 <= (t - T0) // 86400 <= 4
        store.apply([Rollup(t, [], {h: [1000 * (i + 1) if busy else 10 * (4 - i), 0, 1, 1]
                                    for i, h in enumerate(hosts)}, {}, {})])
    policy = RetentionPolicy.from_settings(Settings(retention_days=30.0))
    while not retention.maintain(con, policy, now, budget=5):
        pass
    since, until = T0 + 3600, T0 + 6 * 86400
    whole = host_usage(con, since, until, now, "bytes", True, None, 0, policy=policy)
    page = host_usage(con, since, until, now, "bytes", True, 2, 0, policy=policy)
    assert whole["resolution"] == 3600 and [r["ip"] for r in whole["rows"]][:2] == ["10.0.0.3", "10.0.0.2"]
    assert page["rows"] == whole["rows"][:2]
    history = traffic_history(con, "host", since, until, 3600, now, 2, policy=policy)
    assert [s["key"] for s in history["series"]] == ["10.0.0.3", "10.0.0.2"]
    con.close()
