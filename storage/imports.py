"""The imports ledger: which files were imported, by content, so that an import is stored exactly
once (imports.sql says how). The caller hashes files and tells whether a process still runs;
this module only reads and writes the rows."""
import time

from storage.db import immediate

RUNNING, STORED, INTERRUPTED, FAILED, ABANDONED, REFUSED = (
    "running", "stored", "interrupted", "failed", "abandoned", "refused")


def stored(con, sha256, other_than=None):
    """(name, finished, frames) of the latest stored import of this content (other than the
    import `other_than`, which may have just stored it), or None."""
    return con.execute("SELECT name, finished, frames FROM imports WHERE sha256 = ? AND state = ? AND id IS DISTINCT FROM ? "
                       "ORDER BY id DESC LIMIT 1", (sha256, STORED, other_than)).fetchone()


def running(con, sha256=None):
    """[(id, name, started, pid, pid_started)] of imports marked running (maybe cut off)."""
    sql = "SELECT id, name, started, pid, pid_started FROM imports WHERE state = ?"
    args = (RUNNING,)
    if sha256 is not None:
        sql, args = sql + " AND sha256 = ?", args + (sha256,)
    return con.execute(sql + " ORDER BY id", args).fetchall()


def begin(con, sha256, name, size, pid, pid_started, started=None):
    """Commits a 'running' row before any count is written; returns its id."""
    with immediate(con):
        return con.execute("INSERT INTO imports (sha256, name, size, started, pid, pid_started, state) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                           (sha256, name, size, time.time() if started is None else started,
                            pid, pid_started, RUNNING)).fetchone()[0]


def end(con, import_id, state, frames=None, source_id=None, sha256=None):
    """Marks the row; in the import's own transaction when that is open (state 'stored'), so the
    counts and the mark commit together."""
    with immediate(con):
        con.execute("UPDATE imports SET state = ?, finished = ?, frames = ?, source_id = ?, "
                    "sha256 = coalesce(?, sha256) WHERE id = ?",
                    (state, time.time(), frames, source_id, sha256, import_id))
