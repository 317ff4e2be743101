-- Imports (schema version 5): one row per `run.py import` of a file, so that an import is stored
-- exactly once. The counts of an import are written in one transaction that also marks its row
-- 'stored'; the row itself is committed first ('running'), so an import cut off by kill -9 or a
-- power loss leaves a 'running' row whose process is gone, and nothing else. Only adds tables.

CREATE TABLE IF NOT EXISTS imports (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT    NOT NULL,          -- of the file's bytes ('' while running, and for a stream)
    name        TEXT    NOT NULL,          -- the path it was imported from
    size        INTEGER NOT NULL,          -- bytes
    started     REAL    NOT NULL,          -- wall clock
    pid         INTEGER NOT NULL,          -- the importing process, with its start time
    pid_started REAL    NOT NULL,          --   (a pid is reused: the pair names one process)
    state       TEXT    NOT NULL,          -- running, stored, interrupted, failed, abandoned, refused
    finished    REAL,
    frames      INTEGER,
    source_id   INTEGER REFERENCES sources (id)
);
CREATE INDEX IF NOT EXISTS imports_sha256 ON imports (sha256);
