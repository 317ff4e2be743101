"""Agents in one SQLite file (schema 12): every count row carries the collector that counted it;
counts of two agents add up and never overwrite; a read inside agents.only(NAME) sees that
agent's alone; a database of schema 11 gets the column with its counts kept. (The same on
PostgreSQL, with two importing agents: tests/test_postgres.py.)"""
import re

from records import ProcessKey, Rollup
from storage import agents
from storage.db import AGENT_TABLES, SCHEMA_VERSION, connect
from storage.flows import flows_between
from storage.hosts import top_hosts
from storage.processes import process_totals
from storage.store import RollupStore
from web_helpers import flow as _delta

T = 1_700_000_040


def flow(a, b, n):
    return _delta(6, a, 40000, b, 443, T + 1.0, T + 2.0, n, 1, 0, 0)


def _rollup(minute, hosts, flows=(), processes=None):
    return Rollup(minute, list(flows), hosts, {"eth0": [2, 200, 2, 0, 0, 0, 0, 0, 1, 100]}, {}, processes or {})


def _write(path):
    """Two agents' counts of the same host, minute and interface, and a flow each."""
    for agent, n in (("alpha", 100), ("beta", 7)):
        con = connect(path)
        store = RollupStore(con, agent)
        store.apply([_rollup(T, {"10.0.0.1": [n, 0, 1, 0]}, [flow("10.0.0.1", "10.0.0.2", n)],
                             {ProcessKey(42, 1.0, "curl"): [n, 0, 1, 0]})])
        store.add_seconds([(T + 1, "eth0", 1, n, 1, n)])
        con.close()


def test_two_agents_add_up_and_each_reads_its_own(tmp_path):
    path = str(tmp_path / "n.db")
    _write(path)
    con = connect(path)
    assert {r["ip"]: r["tx_bytes"] for r in top_hosts(con)} == {"10.0.0.1": 107}
    assert len(flows_between(con)) == 2 and len(process_totals(con)) == 2
    for agent, n in (("alpha", 100), ("beta", 7)):
        with agents.only(agent):
            assert {r["ip"]: r["tx_bytes"] for r in top_hosts(con)} == {"10.0.0.1": n}
            assert [f["orig_bytes"] for f in flows_between(con)] == [n]
            assert [f["orig_bytes"] for f in flows_between(con, 0, T + 3600)] == [n]
            assert [p["tx_bytes"] for p in process_totals(con)] == [n]
    with agents.only("gamma"):
        assert top_hosts(con) == [] and flows_between(con) == []
    assert agents.current() is None
    rows = con.execute("SELECT agent, tx_bytes FROM host_minutes WHERE ip = '10.0.0.1' ORDER BY agent").fetchall()
    assert rows == [("alpha", 100), ("beta", 7)]


def test_the_condition_for_rows_with_and_without_an_agent_column():
    assert agents.condition() == ("", [])
    with agents.only("a"):
        assert agents.condition() == (" AND agent = ?", ["a"])
        assert agents.condition("flow", "m") == (" AND m.flow_id IN (SELECT id FROM flows WHERE agent = ?)", ["a"])
        assert agents.condition("process") == (" AND process_id IN (SELECT id FROM processes WHERE agent = ?)", ["a"])
        assert agents.clause(alias="f") == ("f.agent = ?", ["a"])
    assert agents.clause() == (None, [])


def test_a_hosts_peers_are_of_the_agent_read(tmp_path):
    from settings import Settings
    from storage.hosts import host_detail
    from storage.tiers import RetentionPolicy
    path = str(tmp_path / "n.db")
    _write(path)
    con = connect(path)
    policy = RetentionPolicy.from_settings(Settings())

    def peers():
        detail = host_detail(con, "10.0.0.1", T - 60, T + 3600, T + 600, 60, policy)
        return [(p["peer"], p["tx_bytes"], p["flows"]) for p in detail["peers"]]
    assert peers() == [("10.0.0.2", 107, 2)]
    for agent, n in (("alpha", 100), ("beta", 7)):
        with agents.only(agent):
            assert peers() == [("10.0.0.2", n, 1)]


def _as_schema_11(path):
    """The database as schema 11 had it: no agent column, keys without it."""
    import sqlite3
    con = sqlite3.connect(path)
    for table in AGENT_TABLES:
        sql = con.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        old = re.sub(r"--[^\n]*", "", re.sub(r"\bagent\s+TEXT\s+NOT NULL DEFAULT '',", "", sql)).replace(", agent)", ")")
        assert "agent" not in old, old
        cols = ", ".join(r[1] for r in con.execute(f"PRAGMA table_info({table})") if r[1] != "agent")
        indexes = [r[0] for r in con.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type = 'index' "
                                             "AND sql IS NOT NULL", (table,))]
        con.execute(f"ALTER TABLE {table} RENAME TO old_t")
        con.execute(old)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM old_t")
        con.execute("DROP TABLE old_t")
        for index in indexes:
            con.execute(index.replace(", agent,", ","))      # schema 11's indexes had no agent
    con.execute("PRAGMA user_version = 11")
    con.commit()
    con.close()


def test_a_schema_11_database_gets_the_agent_column_and_keeps_its_counts(tmp_path):
    path = str(tmp_path / "n.db")
    con = connect(path)
    RollupStore(con).apply([_rollup(T + 60 * k, {f"10.0.0.{k}": [k, 1, 1, 1]}, [flow("10.0.0.9", "10.0.0.8", k + 1)])
                            for k in range(1, 4)])
    before_hosts, before_flows = top_hosts(con), flows_between(con)
    con.close()
    _as_schema_11(path)
    con = connect(path)             # migrates
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
    assert top_hosts(con) == before_hosts and flows_between(con) == before_flows
    for table in AGENT_TABLES:
        assert "agent" in [r[1] for r in con.execute(f"PRAGMA table_info({table})")], table
        assert not con.execute("SELECT name FROM sqlite_master WHERE name LIKE '%__v11'").fetchall()
    # the trigger and the indexes came back with their tables
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'flows'").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'host_minutes_ip_sums'").fetchone()[0] == 1
    # the old rows are agent ''; a new agent's counts of the same minute and host add beside them
    RollupStore(con, "alpha").apply([_rollup(T + 60, {"10.0.0.1": [5, 0, 1, 0]})])
    assert con.execute("SELECT agent, tx_bytes FROM host_minutes WHERE ip = '10.0.0.1' ORDER BY agent").fetchall() == \
        [("", 1), ("alpha", 5)]


def test_every_table_with_an_agent_passes_the_integrity_check(tmp_path):
    """SQLite 3.40 reports NULLs that are not there in a WITHOUT ROWID table whose key columns do
    not all come first; a collector would then move a sound database aside at its start."""
    con = connect(str(tmp_path / "n.db"))
    for table in AGENT_TABLES:
        cols = [(r[1], r[2]) for r in con.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
        values = ["x" if kind == "TEXT" else 1 for _, kind in cols]
        con.execute(f"INSERT INTO {table} ({', '.join(c for c, _ in cols)}) VALUES ({', '.join('?' * len(cols))})",
                    values)
    con.commit()
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
