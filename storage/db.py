"""Connections to the NetTally SQLite file: WAL mode, schema creation and versioning."""
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA_FILES = ("schema.sql",)


class DatabaseError(Exception):
    """The database cannot be opened or has a schema this version does not know."""


def connect(path, readonly=False):
    """Opens (and for a writer, creates and migrates) the database at `path`."""
    try:
        if readonly:
            if not Path(path).exists():
                raise DatabaseError(f"{path}: no such database")
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            con = sqlite3.connect(path, check_same_thread=False)
        con.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            _migrate(con, path)
        else:
            _check_version(con, path)
    except sqlite3.DatabaseError as e:
        raise DatabaseError(f"{path}: {e}") from None
    return con


def _check_version(con, path):
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DatabaseError(f"{path}: schema version {version} is newer than this NetTally ({SCHEMA_VERSION})")
    return version


def _migrate(con, path):
    if _check_version(con, path) == SCHEMA_VERSION:
        return
    here = Path(__file__).parent
    with con:
        for name in SCHEMA_FILES:
            con.executescript((here / name).read_text())
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
