"""PostgreSQL as NetTally's store, for many agents writing one database (`--db postgresql://...`).

The rest of storage/ is written once, in SQL both engines take: upserts name the table's own
columns (`flows.orig_bytes + excluded.orig_bytes`), ids come back with RETURNING. What still
differs is handled here, and only here (`translate` for statements, `schema_statement` for the
schema files), so the two stay one source:

- placeholders: `?` and `:name` become `%s` and `%(name)s` (and a literal `%` doubles);
- a write transaction (`BEGIN IMMEDIATE`, or a write outside one) takes an advisory lock in
  shared mode, `BEGIN EXCLUSIVE` (building tiers) alone: agents' upserts that add counts run
  side by side, but building an hour reads what the writers add, and a pending mark one of them
  sets must not be lost to a rebuild that deletes it (SQLite has one writer at a time anyway);
- `INSERT OR IGNORE` is `ON CONFLICT DO NOTHING`;
- SQLite's LIKE ignores ASCII case: ILIKE;
- SQLite's two-argument min() and max() are functions the schema creates;
- the PRAGMAs the program reads (user_version, table_info) are answered from the catalog;
- a column named with a word PostgreSQL reserves (`window`) is quoted;
- types: INTEGER is 64 bits (BIGINT), REAL is DOUBLE PRECISION, an INTEGER PRIMARY KEY an
  identity column; foreign keys are not enforced by SQLite as NetTally opens it, so they are
  left out here too (a flow's labels follow it through the trigger, as in SQLite).

Connections look like sqlite3's (execute, executemany, cursor, commit, rollback, in_transaction,
the same implicit transaction before a write), and raise sqlite3's exception classes, so the
callers' error handling (a full disk, a server gone: the writer holds counts and retries) is one.
"""
import contextlib
import functools
import re
import sqlite3
from urllib.parse import urlsplit

from storage import pg_bulk

SCHEMES = ("postgresql://", "postgres://")
_SCHEMA_LOCK = 0x6E657474616C6C79      # pg_advisory_xact_lock key of schema creation ("nettally")
_WRITE_LOCK = _SCHEMA_LOCK + 1          # write transactions share it, tier building holds it alone
_HOUSEKEEPING_LOCK = _SCHEMA_LOCK + 2   # held by the agent building tiers and pruning
_LOCKS = {"ledger": _SCHEMA_LOCK + 3}   # `serialize`: the imports ledger's check and mark
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_RESERVED = re.compile(r'(?<![\w."])(window)(?![\w"(])')   # column names PostgreSQL reserves: quoted

# SQLite's scalar min(a, b) and max(a, b) (the aggregate versions take one argument)
_FUNCTIONS = [
    f"CREATE OR REPLACE FUNCTION {name}(a {t}, b {t}) RETURNS {t} LANGUAGE sql IMMUTABLE PARALLEL SAFE "
    f"AS 'SELECT {pg}(a, b)'"
    for name, pg in (("min", "LEAST"), ("max", "GREATEST")) for t in ("bigint", "double precision")]
_TRIGGERS = {
    "flow_names_follow_flows": [
        "CREATE OR REPLACE FUNCTION flow_names_follow_flows() RETURNS trigger LANGUAGE plpgsql AS "
        "'BEGIN DELETE FROM flow_names WHERE flow_id = OLD.id; RETURN NULL; END'",
        "CREATE OR REPLACE TRIGGER flow_names_follow_flows AFTER DELETE ON flows "
        "FOR EACH ROW EXECUTE FUNCTION flow_names_follow_flows()"],
}


def at_max(con, value, at):
    """A GROUP BY's column: `at` of the row with the highest `value`. SQLite gives a bare column
    beside a lone max() from that row (the first met on a tie); PostgreSQL has no bare columns:
    the max of [value, -at] pairs (a tie: the earliest `at`)."""
    if not isinstance(con, Connection) or at == "NULL":
        return at
    return f"-(max(CASE WHEN ({value}) IS NOT NULL THEN ARRAY[({value}), -({at})] END))[2]"


def serialize(con, name):
    """Inside a transaction: waits until no other agent's transaction holds `name` ("ledger"),
    and holds it to the commit. SQLite's write lock already does it: nothing to do there."""
    if isinstance(con, Connection):
        con.raw.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCKS[name],))


@contextlib.contextmanager
def one_agent(con):
    """Whether this agent does the housekeeping now (tier building, retention): on PostgreSQL the
    one that holds an advisory lock, tried and not waited for, so it runs once across agents;
    on SQLite, always (an SQLite file has one collector)."""
    if not isinstance(con, Connection):
        yield True
        return
    con.ensure_live()
    got = con.raw.execute("SELECT pg_try_advisory_lock(%s)", (_HOUSEKEEPING_LOCK,)).fetchone()[0]
    try:
        yield got
    finally:
        if got and not (con.raw.closed or con.raw.broken):
            con.raw.execute("SELECT pg_advisory_unlock(%s)", (_HOUSEKEEPING_LOCK,))


def upsert_ids(con, sql, rows):
    """The id each row's upsert gives (`sql` ends with RETURNING id), in the order of `rows`: a
    statement a row, or on PostgreSQL one COPY for many (storage/pg_bulk.py)."""
    if isinstance(con, Connection) and (ids := con.upsert_ids(sql, rows)) is not None:
        return ids
    return [con.execute(sql, row).fetchone()[0] for row in rows]


def is_url(target):
    return isinstance(target, str) and target.startswith(SCHEMES)


def shown(url):
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://(unreadable URL)"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


@functools.lru_cache(maxsize=2048)
def translate(sql, with_params=True):
    """One statement in SQLite's dialect, in PostgreSQL's."""
    out, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":                                   # a literal or quoted name: as it is
            j = sql.index(c, i + 1) + 1 if c in sql[i + 1:] else n
            out.append(sql[i:j].replace("%", "%%") if with_params else sql[i:j])
            i = j
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_") \
                and (i == 0 or sql[i - 1] != ":"):
            m = re.match(r"[A-Za-z_]\w*", sql[i + 1:])
            out.append(f"%({m.group(0)})s")
            i += 1 + m.end()
        elif c == "%" and with_params:
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    text = "".join(out)
    text = _RESERVED.sub(r'"\1"', _alias_subqueries(text))
    text = re.sub(r"\bNOT\s+LIKE\b", "NOT ILIKE", re.sub(r"(?<!NOT )\bLIKE\b", "ILIKE", text))
    text = re.sub(r"\bFROM\s+sqlite_master\b", "FROM pg_catalog.pg_tables", text)
    if re.match(r"\s*INSERT\s+OR\s+IGNORE\b", text, re.I):
        text = re.sub(r"INSERT\s+OR\s+IGNORE", "INSERT", text, count=1, flags=re.I) + " ON CONFLICT DO NOTHING"
    return text


_CLAUSES = {"WHERE", "GROUP", "ORDER", "UNION", "LIMIT", "OFFSET", "JOIN", "LEFT", "INNER", "CROSS", "ON",
            "HAVING", "EXCEPT", "INTERSECT", "NATURAL"}


def _alias_subqueries(text):
    """`FROM (SELECT ...)` with no name after it gets one: PostgreSQL before 16 requires it."""
    out, start, names = [], 0, iter(range(1, 1 << 30))
    for m in re.finditer(r"\bFROM\s*\(", text, re.I):
        if m.start() < start:
            continue              # inside a subquery already handled (by the recursion below)
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[start:m.end()] + _alias_subqueries(text[m.end():i]))
        after = re.match(r"\s*(\w+)?", text[i:]).group(1)
        if after is None or after.upper() in _CLAUSES:
            out.append(f" AS _q{next(names)}_{len(out)}")
        start = i
    out.append(text[start:])
    return "".join(out)


def schema_statement(statement):
    """A statement of storage/*.sql, as PostgreSQL statements (a list: a trigger is two)."""
    body = "\n".join(line.split("--", 1)[0] for line in statement.splitlines()).strip()
    if not body:
        return []
    trigger = re.match(r"CREATE TRIGGER IF NOT EXISTS (\w+)", body)
    if trigger:
        return _TRIGGERS[trigger.group(1)]
    body = re.sub(r"\bINTEGER\s+PRIMARY\s+KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", body)
    body = re.sub(r"\bINTEGER\b", "BIGINT", body)
    body = re.sub(r"\bREAL\b", "DOUBLE PRECISION", body)
    body = re.sub(r"\)\s*WITHOUT\s+ROWID", ")", body)
    body = re.sub(r"\s+REFERENCES\s+\w+\s*\(\w+\)", "", body)
    body = re.sub(r"\bADD\s+COLUMN\b", "ADD COLUMN IF NOT EXISTS", body)
    body = _RESERVED.sub(r'"\1"', body)
    return [body.rstrip(";")]


def _number(data):
    """numeric (sum() of bigints, arithmetic with 1.0) as SQLite gives it: int when whole, else float."""
    text = bytes(data)
    return int(text) if text.lstrip(b"-").isdigit() else float(text)


def _sqlite_error(e):
    """psycopg's exception as the sqlite3 class the callers catch, worded in one line."""
    import psycopg
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, psycopg.IntegrityError):
        return sqlite3.IntegrityError(message)
    if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
        error = sqlite3.OperationalError(message)
        error.stall = True        # the server is gone, full or refusing for now: the writer holds counts
        return error
    if isinstance(e, psycopg.ProgrammingError):
        return sqlite3.ProgrammingError(message)
    return sqlite3.DatabaseError(message)


class Cursor:
    """sqlite3.Cursor's face on a psycopg cursor (fetches, rowcount, description, row_factory)."""

    def __init__(self, con):
        self.connection = con
        self._raw = None
        self._rows = None             # a PRAGMA's answer, made here
        self.row_factory = None

    def execute(self, sql, params=()):
        con = self.connection
        try:
            con.ensure_live()
            self._raw = con.raw.cursor()
            self._rows = con.pragma(sql)
            if self._rows is not None:
                return self
            begin = re.match(r"\s*BEGIN\b\s*(\w*)", sql, re.I)
            if begin:
                con.begin(exclusive=begin.group(1).upper() == "EXCLUSIVE")
                return self
            con.begin_implicitly(sql)
            if params:
                self._raw.execute(translate(sql, True), params)
            else:
                self._raw.execute(translate(sql, False))
        except Exception as e:
            raise _sqlite_error(e) from None
        return self

    def executemany(self, sql, seq):
        seq = list(seq)
        if not seq:
            return self
        con = self.connection
        with con.writing(sql):
            self._raw = con.raw.cursor()
            sql = translate(sql, True)
            bulk = pg_bulk.plan(sql, seq)
            if bulk:
                pg_bulk.insert(con.raw, con.column_types, *bulk, seq)
            else:
                self._raw.executemany(sql, seq)
        return self

    def _shape(self, row):
        return row if self.row_factory is None or row is None else self.row_factory(self, row)

    def fetchone(self):
        if self._rows is not None:
            return self._shape(self._rows.pop(0) if self._rows else None)
        return self._shape(self._raw.fetchone() if self._raw.description else None)

    def fetchall(self):
        if self._rows is not None:
            rows, self._rows = self._rows, []
        else:
            rows = self._raw.fetchall() if self._raw.description else []
        return [self._shape(r) for r in rows]

    def fetchmany(self, size=1000):
        if self._rows is not None:
            rows, self._rows = self._rows[:size], self._rows[size:]
        else:
            rows = self._raw.fetchmany(size) if self._raw.description else []
        return [self._shape(r) for r in rows]

    def __iter__(self):
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    @property
    def description(self):
        return self._raw.description

    @property
    def rowcount(self):
        return self._raw.rowcount

    def close(self):
        self._raw.close()


class Connection:
    """sqlite3.Connection's face on a psycopg connection in autocommit mode: transactions are
    begun as sqlite3 begins them (BEGIN, or implicitly before a write) and ended by commit()."""

    def __init__(self, open_raw, url, readonly):
        self._open_raw = open_raw
        self.raw, self.url, self.readonly = open_raw(), url, readonly
        self.row_factory = None
        self.column_types = {}        # storage/pg_bulk.py's cache

    def ensure_live(self):
        """A connection the server dropped (a restart, a network cut) is opened again before the
        next statement outside a transaction; one lost inside a transaction fails that
        transaction (its writes are rolled back by the server) and the caller retries it."""
        if self.raw.closed or self.raw.broken:
            self.raw = self._open_raw()

    @property
    def in_transaction(self):
        from psycopg.pq import TransactionStatus
        if self.raw.closed or self.raw.broken:
            return False
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def begin(self, exclusive=False):
        if self.readonly:             # a reader's BEGIN asks for one snapshot (storage/reads.py consistent)
            self.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            return
        self.raw.execute("BEGIN")
        lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        self.raw.execute(f"SELECT {lock}(%s)", (_WRITE_LOCK,))

    def begin_implicitly(self, sql):
        if not self.in_transaction and sql.lstrip()[:7].upper().startswith(_WRITES):
            self.begin()

    def pragma(self, sql):
        """The answer to a PRAGMA (a list of rows), None for any other statement."""
        m = re.match(r"\s*PRAGMA\s+(\w+)\s*(?:\(\s*(\w+)\s*\))?\s*(=\s*(\S+))?", sql, re.I)
        if not m:
            return None
        name, arg, setting = m.group(1).lower(), m.group(2), m.group(3)
        if name == "user_version" and not setting:
            return [(schema_version(self.raw),)]
        if name == "table_info":
            rows = self.raw.execute("SELECT ordinal_position - 1, column_name FROM information_schema.columns "
                                    "WHERE table_schema = current_schema() AND table_name = %s "
                                    "ORDER BY ordinal_position", (arg,)).fetchall()
            return [tuple(r) for r in rows]
        if name == "busy_timeout" and not setting:
            return [(10000,)]
        if name == "wal_checkpoint":
            return [(0, 0, 0)]        # PostgreSQL checkpoints on its own
        return []                     # journal and cache settings are SQLite's

    def execute(self, sql, params=()):
        return Cursor(self).execute(sql, params)

    def executemany(self, sql, seq):
        return Cursor(self).executemany(sql, seq)

    def upsert_ids(self, sql, rows):
        """upsert_ids by COPY, or None where pg_bulk does not take these rows."""
        bulk = pg_bulk.plan(translate(sql, True), rows)
        if bulk is None:
            return None
        with self.writing(sql):
            return pg_bulk.insert(self.raw, self.column_types, *bulk, rows)

    @contextlib.contextmanager
    def writing(self, sql):
        """Around a write of many rows: a live connection, the implicit transaction, and psycopg's
        errors as sqlite3's."""
        try:
            self.ensure_live()
            self.begin_implicitly(sql)
            yield
        except Exception as e:
            raise _sqlite_error(e) from None

    def cursor(self):
        return Cursor(self)

    def commit(self):
        if self.in_transaction:
            self._end("COMMIT")

    def rollback(self):
        if self.in_transaction:
            self._end("ROLLBACK")

    def _end(self, word):
        try:
            self.raw.execute(word)
        except Exception as e:
            raise _sqlite_error(e) from None

    def close(self):
        self.raw.close()


def schema_version(raw):
    found = raw.execute("SELECT to_regclass('nettally_schema')").fetchone()[0]
    if found is None:
        return 0
    row = raw.execute("SELECT version FROM nettally_schema").fetchone()
    return row[0] if row else 0


def connect(url, readonly, version, schema_files, migrate=True):
    """A connection to the database at `url`, its schema created or brought to `version` from
    `schema_files` (pairs of name and statements) unless `readonly` or not `migrate`: then a
    schema of another version is refused. Faults are ConnectionError, in one line, for
    storage/db.py to word."""
    import psycopg
    from psycopg.types.numeric import NumericLoader

    class Number(NumericLoader):
        def load(self, data):
            return _number(data)

    def open_raw():
        raw = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="nettally")
        raw.adapters.register_loader("numeric", Number)
        if readonly:
            raw.execute("SET default_transaction_read_only = on")
        return raw

    try:
        con = Connection(open_raw, url, readonly)
    except psycopg.Error as e:
        error = ConnectionError(_one_line(e))
        error.stall = isinstance(e, psycopg.OperationalError)
        raise error from None
    except Exception as e:            # a URL psycopg cannot parse
        raise ConnectionError(str(e).splitlines()[0]) from None
    raw = con.raw
    try:
        have = schema_version(raw)
        if have > version:
            raise ConnectionError(f"schema version {have} is newer than this NetTally ({version})")
        if readonly or not migrate:
            if have == 0:
                raise ConnectionError("not a NetTally database (no schema): import a capture or run the capture into it first")
            if have != version and not readonly:
                raise ConnectionError(f"schema version {have}, not {version} (the collector updates it)")
        elif 0 < have < 12:
            raise ConnectionError(f"schema version {have}, from a build before agents: make a new database for this one")
        elif have < version:
            _migrate(raw, version, schema_files)
    except psycopg.Error as e:
        raw.close()
        raise ConnectionError(_one_line(e)) from None
    except ConnectionError:
        raw.close()
        raise
    return con


def _migrate(raw, version, schema_files):
    """Every schema file, in order, in one transaction behind an advisory lock: two agents
    starting together create it one after the other (each statement is IF NOT EXISTS)."""
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        raw.execute("CREATE TABLE IF NOT EXISTS nettally_schema (version BIGINT NOT NULL)")
        if schema_version(raw) >= version:
            return
        for statement in _FUNCTIONS:
            raw.execute(statement)
        for _, statements in schema_files:
            for statement in statements:
                for pg in schema_statement(statement):
                    try:
                        raw.execute(pg)
                    except Exception as e:
                        e.add_note(pg)
                        raise
        raw.execute("DELETE FROM nettally_schema")
        raw.execute("INSERT INTO nettally_schema (version) VALUES (%s)", (version,))


def _one_line(e):
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
