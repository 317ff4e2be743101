"""The collector's own state, for /health and /metrics: its writer notes each write here
(status.sql), and the web process, which has only the database, reads it back."""
import sqlite3

from storage import coverage
from storage.db import immediate
from storage.interfaces import interface_totals, undecodable_reasons
from storage.reads import consistent, dict_rows, finest


FORGET_AFTER = 7 * 86400       # a writer silent this long is gone (a container's host name changes
                               # with every new container: its old rows would stay forever)


def note_write(con, agent, started, written, write_ms, writes, rows, dropped_bytes, version, interfaces):
    """One write done: the agent's row, replaced (its own small transaction); `rows`: the rows
    it took from memory (after a stall, the backlog)."""
    with immediate(con):
        con.execute("INSERT INTO writer_status (agent, started, written, write_ms, writes, rows, dropped_bytes, "
                    "version, interfaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent) DO UPDATE SET "
                    "started = excluded.started, written = excluded.written, write_ms = excluded.write_ms, "
                    "writes = excluded.writes, rows = excluded.rows, dropped_bytes = excluded.dropped_bytes, "
                    "version = excluded.version, interfaces = excluded.interfaces",
                    (agent, started, written, write_ms, writes, rows, dropped_bytes, version, interfaces))
        con.execute("DELETE FROM writer_status WHERE written < ?", (written - FORGET_AFTER,))


def writer_status(con):
    """[{agent, started, written, write_ms, writes, rows, dropped_bytes, version, interfaces}] by
    agent; [] from a database older than schema 11 (read-only, the web process cannot update it)."""
    try:
        return dict_rows(con, "SELECT * FROM writer_status ORDER BY agent")
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


def interface_drops(con, since):
    """{interface: frames the capture dropped} from `since` on."""
    drops, params = finest(con, "drops", since, None)
    return dict(con.execute(f"SELECT iface, sum(frames) FROM ({drops}) GROUP BY iface", params).fetchall())


@consistent
def counters(con, since):
    """Everything /metrics exposes from the database, counted from `since` on (each bucket from
    the finest tier still holding it: retention, which prunes old buckets, never makes a count
    go down), keyed by bounded labels only: interfaces, reasons, severities; never an address,
    a flow or a process (their number has no bound)."""
    return {
        "interfaces": interface_totals(con, since),
        "drops": interface_drops(con, since),
        "undecodable": undecodable_reasons(con, since),
        "attribution": coverage.read(con, *finest(con, "attribution", since, None)).reasons,
        "open_alerts": dict(con.execute("SELECT coalesce(severity, 'warning'), count(*) FROM alerts "
                                        "WHERE state = 'open' GROUP BY 1").fetchall()),
        "writers": writer_status(con),
    }
