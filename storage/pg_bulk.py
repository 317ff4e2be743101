"""Many rows of one INSERT on PostgreSQL by COPY: what an agent's flush is made of.

The writer adds a flush's rows with executemany (one upsert per flow, host, app: 40,000 for a
flush of 5,000 flows). psycopg sends them in one pipeline, but still dumps and parses one
statement per row, which cost an agent a second of CPU per such flush (bench/fleet.py). Here the
rows go by COPY into a scratch table of the connection and reach the table in one
`INSERT ... SELECT ... ON CONFLICT`, the statement's own conflict clause, so the counts add
exactly as row by row.

Taken only where that is the same thing: an INSERT whose VALUES are all placeholders and whose
conflict clause has none, and, for DO UPDATE, rows that never repeat the conflict key (one
statement may not update a row twice; row by row, the second would add to the first). Other
statements, and small batches, go row by row as before.
"""
import re
import zlib

BULK_MIN = 100        # rows from which COPY pays for its two extra statements
_INSERT = re.compile(r"\s*INSERT INTO (\w+) \(([\w,\s]+)\)\s+VALUES \((?:%s,\s*)*%s\)(\s+ON CONFLICT\b.*)?\Z", re.S)
_TARGET = re.compile(r"\s*ON CONFLICT \(([\w,\s]+)\) DO UPDATE\b")


def plan(sql, rows):
    """(table, columns, tail, conflict target columns) when `rows` of `sql` (translated, %s
    placeholders) can go by COPY."""
    m = len(rows) >= BULK_MIN and _INSERT.match(sql)
    if not m or "%" in (tail := m.group(3) or ""):
        return None
    cols = [c.strip() for c in m.group(2).split(",")]
    target = _TARGET.match(tail)
    # the conflict key as the rows give it (a key column the INSERT leaves out is its default in all)
    keys = [c for c in (c.strip() for c in target.group(1).split(",")) if c in cols] if target else []
    if target:
        key = _key(cols, keys)
        if len({key(r) for r in rows}) != len(rows):
            return None
    elif tail and "DO NOTHING" not in tail:
        return None
    return m.group(1), cols, tail, keys


def _key(cols, keys):
    """A row's values of the `keys` columns, as a tuple."""
    at = [cols.index(c) for c in keys]
    return lambda row: tuple(row[i] for i in at)


def insert(raw, types, table, cols, tail, keys, rows):
    """The rows into `table` through the connection's scratch table for these columns. Scratch
    columns take integers as numeric: a float where the table has BIGINT is then rounded on the
    way in, as a parameter would be, instead of failing the COPY. `types`: the connection's cache
    of {table: {column: type}}. A statement ending `RETURNING id` returns the ids in the order of
    `rows` (matched by the conflict target's columns: INSERT ... SELECT does not promise an order)."""
    listed = ", ".join(cols)
    scratch = f"bulk_{table}_{zlib.crc32(listed.encode()):08x}"
    if table not in types:
        types[table] = dict(raw.execute("SELECT column_name, data_type FROM information_schema.columns "
                                        "WHERE table_name = %s AND table_schema = current_schema()", (table,)))
    declared = ", ".join(f"{c} {'numeric' if types[table][c] == 'bigint' else types[table][c]}" for c in cols)
    raw.execute(f"CREATE TEMP TABLE IF NOT EXISTS {scratch} ({declared}) ON COMMIT DELETE ROWS")
    with raw.cursor().copy(f"COPY {scratch} ({listed}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    ids = None
    if tail.rstrip().endswith("RETURNING id") and keys:
        found = raw.execute(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {scratch}{tail}, "
                            f"{', '.join(keys)}").fetchall()
        by_key, key = {tuple(r[1:]): r[0] for r in found}, _key(cols, keys)
        ids = [by_key[key(row)] for row in rows]
    else:
        raw.execute(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {scratch}{tail}")
    raw.execute(f"TRUNCATE {scratch}")
    return ids
