"""The hosts and processes lists' ranked pages (storage/usage.py rank: the page found from the
next coarser tier's whole buckets and the edges, then read in full) against the full list of
the same range cut to the same page: equal rows, equal totals, for every key the ranking serves,
both orders, pages past the first, a search, both process groupings, hours built and pending."""
import random

import pytest

from records import ProcessKey, Rollup
from settings import Settings
from storage import tiers
from storage.db import connect
from storage.hosts import host_usage
from storage.processes import process_usage
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


@pytest.mark.parametrize("since", [T0 - 3600, T0 + 150, NOW - 86400 - 90, NOW - 3 * 3600 - 30])   # hours, minutes
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
