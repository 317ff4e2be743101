"""The collector's own state, for /health and /metrics: its writer notes each write here
(status.sql), and the web process, which has only the database, reads it back."""
from storage import coverage
from storage.db import immediate
from storage.interfaces import interface_totals, undecodable_reasons
from storage.reads import dict_rows, finest


def note_write(con, agent, started, written, write_ms, writes, backlog_rows, dropped_bytes):
    """One write done: the agent's row, replaced (its own small transaction)."""
    with immediate(con):
        con.execute("INSERT OR REPLACE INTO writer_status (agent, started, written, write_ms, writes, backlog_rows, "
                    "dropped_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (agent, started, written, write_ms, writes, backlog_rows, dropped_bytes))


def writer_status(con):
    """[{agent, started, written, write_ms, writes, backlog_rows, dropped_bytes}] by agent."""
    return dict_rows(con, "SELECT * FROM writer_status ORDER BY agent")


def counters(con):
    """Everything /metrics exposes from the database, all time (each bucket from the finest tier
    still holding it), keyed by bounded labels only: interfaces, reasons, severities; never an
    address, a flow or a process (their number has no bound)."""
    drops, params = finest(con, "drops", None, None)
    return {
        "interfaces": interface_totals(con),
        "drops": dict(con.execute(f"SELECT iface, sum(frames) FROM ({drops}) GROUP BY iface", params).fetchall()),
        "undecodable": undecodable_reasons(con),
        "attribution": coverage.read(con, *finest(con, "attribution", None, None)).reasons,
        "open_alerts": dict(con.execute("SELECT coalesce(severity, 'warning'), count(*) FROM alerts "
                                        "WHERE state = 'open' GROUP BY 1").fetchall()),
        "writers": writer_status(con),
    }
