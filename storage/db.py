"""Connections to the NetTally SQLite file: WAL mode, schema creation and versioning, and the
integrity check a long-running writer does before it trusts a file."""
import logging
import os
import sqlite3
import time
from pathlib import Path

from storage import postgres

SCHEMA_VERSION = 13         # 1: schema.sql; 2: + tiers.sql, alerts.sql; 3: + macs.sql; 4: + names.sql; 5: + imports.sql; 6: + alerts_severity.sql; 7: + health.sql; 8: + seconds.sql; 9: + app_seconds.sql; 10: covering.sql; 11: + status.sql; 12: `agent` in the keys of counts; 13: + forecasts.sql
SCHEMA_FILES = ("schema.sql", "tiers.sql", "alerts.sql", "macs.sql", "names.sql", "imports.sql", "alerts_severity.sql", "health.sql", "seconds.sql", "app_seconds.sql", "covering.sql", "status.sql", "forecasts.sql")   # each step adds tables, columns or indexes (10 also drops the ones it replaced)
# the tables whose keys hold `agent` from schema 12 on (the others are keyed by a flow or a process)
AGENT_TABLES = ("flows", "processes", "iface_seconds", "host_seconds", "app_seconds", "undecodable",
                "undecodable_hours", "undecodable_days", "capture_drops", "capture_drops_hours", "capture_drops_days",
                *(f"{family}_{tier}" for family in ("host", "iface", "attribution", "app", "unnamed", "host_app",
                                                    "host_health", "app_health") for tier in ("minutes", "hours", "days")))
WAL_LIMIT_BYTES = 64 * 1024 * 1024     # WAL file truncated back to this after a checkpoint
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_CHECKED = set()                  # databases this process has checked and opened
# File owners and groups as POSIX has them. Windows has neither (a file there gets its folder's
# access list, which only the owner and administrators can read under %ProgramData%): the mode
# handling below is then skipped, and db_group refused.
_POSIX_OWNERS = hasattr(os, "geteuid") and hasattr(os, "getegid")

log = logging.getLogger("nettally.storage")


class DatabaseError(Exception):
    """The database cannot be opened or has a schema this version does not know."""


def connect(path, readonly=False, migrate=True):
    """Opens (and for a writer, creates and migrates) the database at `path`: an SQLite file,
    or a PostgreSQL server's database given as a postgresql:// URL (storage/postgres.py)."""
    if postgres.is_url(path):
        return _connect_postgres(path, readonly, migrate)
    con = None
    try:
        if readonly:
            if not Path(path).exists():
                raise DatabaseError(f"{path}: no such database")
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            private(path)
            con = sqlite3.connect(path, check_same_thread=False)
        con.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            _check_version(con, path)      # before anything changes the file: a newer one is left as it is
            _wal(con)
            con.execute("PRAGMA synchronous = NORMAL")
            con.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            _migrate(con, path)
            _side_files_follow(path)
        else:
            version = _check_version(con, path)
            if version == 0:
                raise DatabaseError(f"{path}: not a NetTally database (no schema): import a capture or "
                                    "run the capture into it first")
    except sqlite3.DatabaseError as e:
        if con is not None:
            con.close()
        error = DatabaseError(f"{path}: {e}")
        error.sqlite_errorcode = getattr(e, "sqlite_errorcode", None)   # the writer tells "full" from "broken"
        raise error from None
    return con


def shown(path):
    """The database as messages name it: a PostgreSQL URL without its password."""
    return postgres.shown(path) if postgres.is_url(path) else str(path)


def _connect_postgres(url, readonly, migrate):
    here = Path(__file__).parent
    files = [(name, list(_statements((here / name).read_text()))) for name in SCHEMA_FILES]
    try:
        return postgres.connect(url, readonly, SCHEMA_VERSION, files, migrate)
    except ConnectionError as e:
        error = DatabaseError(f"{postgres.shown(url)}: {e}")
        error.stall = getattr(e, "stall", False)     # the server not there (yet): a writer waits
        raise error from None


def private(path):
    """The database holds process command lines, user names and who talked to whom: it is never
    readable by everyone. A new file is made 0600 before SQLite opens it (SQLite gives its -wal and
    -shm files the database's mode); an existing file of ours, and its side files, lose other
    permissions, and group ones too unless the file belongs to a group other than this process's
    own: one the db_group setting gave it (share_with_group), which keeps read. Nothing of another
    owner is touched."""
    if _not_a_file(path) or not _POSIX_OWNERS:
        return
    path = str(path)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return        # a new file: no SQLite connection of ours can hold it, so closing drops no lock
    except FileExistsError:
        pass
    except OSError:
        return        # an unwritable place: SQLite says why in one line
    for suffix in ("", "-wal", "-shm"):
        try:
            st = os.stat(path + suffix)
            keep = 0o740 if st.st_gid != os.getegid() else 0o700
            if st.st_uid == os.geteuid() and st.st_mode & 0o777 & ~keep:
                os.chmod(path + suffix, st.st_mode & keep)   # chmod opens nothing: no lock is dropped
        except OSError:
            pass


def share_with_group(path, group):
    """The db_group setting, applied by the caller before the database is opened: "" keeps the
    database and its side files 0600; a group name (or number) makes them 0640 and that group's
    (created first if missing). DatabaseError in one line for an unknown group, the group this
    process runs as (private() could not tell it from an accident), or one it may not give."""
    if _not_a_file(path) or (not group and not _POSIX_OWNERS):
        return
    if not _POSIX_OWNERS:
        raise DatabaseError(f"db_group {group!r}: this platform has no POSIX file groups")
    path = str(path)
    if not group:
        private(path)
        for suffix in ("", "-wal", "-shm"):
            try:
                st = os.stat(path + suffix)
                if st.st_uid == os.geteuid() and st.st_mode & 0o070:
                    os.chmod(path + suffix, st.st_mode & 0o700)
            except OSError:
                pass
        return
    import grp
    try:
        gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise DatabaseError(f"db_group {group!r}: no such group") from None
    if gid == os.getegid():
        raise DatabaseError(f"db_group {group!r} is the group NetTally runs as: name a group of its own for the readers")
    private(path)
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chown(path + suffix, -1, gid)
            os.chmod(path + suffix, 0o640)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise DatabaseError(f"{path + suffix}: cannot give it to group {group!r}: {e.strerror}") from None


def _side_files_follow(path):
    """-wal and -shm get the database's group and its owner and group-read bits (SQLite gives
    them the group only when it runs as root): a db_group reader needs them. Where the group
    cannot be given they are made 0600."""
    if _not_a_file(path) or not _POSIX_OWNERS:
        return
    path = str(path)
    try:
        main = os.stat(path)
    except OSError:
        return
    for suffix in ("-wal", "-shm"):
        try:
            st = os.stat(path + suffix)
            if st.st_uid != os.geteuid():
                continue
            mode = main.st_mode & 0o740
            if st.st_gid != main.st_gid:
                try:
                    os.chown(path + suffix, -1, main.st_gid)
                except PermissionError:
                    mode = main.st_mode & 0o700
            if st.st_mode & 0o777 != mode:
                os.chmod(path + suffix, mode)
        except OSError:
            pass


def _not_a_file(path):
    return path == ":memory:" or str(path).startswith("file:") or postgres.is_url(path)


def connect_checked(path, now=None):
    """Opens the database for writing after `PRAGMA integrity_check`. A damaged NetTally database
    is moved aside (with its -wal and -shm) to PATH.damaged-<UTC time>, said so in the log, and a
    fresh one created; a file that is not an SQLite database at all is left alone (DatabaseError).
    Raises sqlite3.OperationalError when the file cannot be written (read-only, disk full)."""
    path = str(path)
    if postgres.is_url(path):     # the server checks its own pages
        return connect(path)
    key = os.path.abspath(path)
    if key in _CHECKED:           # once per process: the check reads the whole file
        return connect(path)
    problem = _damage(path)
    if problem:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        aside = f"{path}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        log.error("storage: %s failed its integrity check (%s); moved it to %s and started a new database",
                  path, problem, aside)
    con = connect(path)
    _CHECKED.add(key)
    return con


def _damage(path):
    """Why `path` is not a sound NetTally database, '' if it is (or does not exist yet). Only
    SQLite opens the file: closing a descriptor of our own would drop the POSIX locks of every
    SQLite connection this process holds on it."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return ""
    try:
        con = sqlite3.connect(path)
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check(5)")]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        code = (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == _SQLITE_NOTADB:
            raise DatabaseError(f"{path}: not an SQLite database; refusing to touch it") from None
        if code != _SQLITE_CORRUPT:
            raise            # locked, read-only, I/O: not a verdict on the file's contents
        return str(e)
    return "" if rows == ["ok"] else "; ".join(rows)


def _check_version(con, path):
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DatabaseError(f"{path}: schema version {version} is newer than this NetTally ({SCHEMA_VERSION})")
    return version


def _wal(con):
    """Switches a new database to WAL (persistent: later connections find it set). Switching needs
    the file to itself and SQLite answers 'locked' at once, without waiting out busy_timeout,
    when another connection (the writer thread creating the file, say) has it open: retry."""
    deadline = time.monotonic() + 10
    while con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            con.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _migrate(con, path):
    if _check_version(con, path) == SCHEMA_VERSION:
        return
    here = Path(__file__).parent
    # One immediate transaction (it waits for the write lock): two connections creating the
    # schema at once run one after the other. Every file is applied at every step: CREATE
    # statements are IF NOT EXISTS, and an ADD COLUMN this database already took (SQLite has no
    # IF NOT EXISTS for it) is skipped, so a step adds what it adds whichever version it starts from.
    con.execute("BEGIN IMMEDIATE")
    try:
        aside = _set_aside_for_agents(con)
        for name in SCHEMA_FILES:
            for statement in _statements((here / name).read_text()):
                try:
                    con.execute(statement)
                except sqlite3.OperationalError as e:
                    if "duplicate column name" not in str(e):
                        raise
        _refill(con, aside)
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _set_aside_for_agents(con):
    """Schema 12 puts `agent` into keys, which SQLite cannot change in place: each table of
    AGENT_TABLES without the column is renamed aside (its indexes and triggers dropped, made
    again by the schema files), to be copied into the table the schema files create (_refill).
    Returns the tables set aside."""
    aside = [t for t in AGENT_TABLES
             if (cols := [r[1] for r in con.execute(f"PRAGMA table_info({t})")]) and "agent" not in cols]
    if aside:
        log.warning("storage: adding the agent column to %d tables (schema 12): once, it copies them", len(aside))
    con.execute("PRAGMA legacy_alter_table = ON")     # a rename must not rewrite the others' REFERENCES
    for t in aside:
        for kind, name in con.execute("SELECT type, name FROM sqlite_master WHERE tbl_name = ? "
                                      "AND type IN ('index', 'trigger') AND sql IS NOT NULL", (t,)).fetchall():
            con.execute(f"DROP {kind.upper()} {name}")
        con.execute(f"ALTER TABLE {t} RENAME TO {t}__v11")
    con.execute("PRAGMA legacy_alter_table = OFF")
    return aside


def _refill(con, aside):
    for t in aside:
        cols = ", ".join(r[1] for r in con.execute(f"PRAGMA table_info({t}__v11)"))
        con.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {t}__v11")
        con.execute(f"DROP TABLE {t}__v11")


def _statements(script):
    """The SQL statements of a schema file, one by one (comments stay with the next statement)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


class immediate:
    """A write transaction that takes the write lock at once, so no other writer (an import in
    another process) slips rows in between what this transaction reads and what it writes.
    `exclusive`: one that builds tiers from what writers add (BEGIN EXCLUSIVE; on SQLite the
    same, on PostgreSQL it waits for every other agent's write: storage/postgres.py).
    Inside a transaction already open (an import writes a whole file in one: storage/imports.py)
    it is part of that one: the outer transaction commits or rolls back everything."""

    def __init__(self, con, exclusive=False):
        self.con = con
        self.nested = False
        self.begin = "BEGIN EXCLUSIVE" if exclusive else "BEGIN IMMEDIATE"

    def __enter__(self):
        self.nested = self.con.in_transaction
        if not self.nested:
            self.con.execute(self.begin)
        return self.con

    def __exit__(self, kind, value, tb):
        if self.nested:
            return False
        if kind is None:
            try:
                self.con.commit()
                return False
            except BaseException:
                self.con.rollback()
                raise
        self.con.rollback()
        return False
