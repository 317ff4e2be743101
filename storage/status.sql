-- Schema version 11 (issue 14): what the collector's writer says about itself, for /health and
-- /metrics, which the web process serves from the database alone. One row per agent, rewritten
-- after every write (storage/status.py).
CREATE TABLE IF NOT EXISTS writer_status (
    agent         TEXT    PRIMARY KEY,   -- this host's name (the agents of issue 14 will name themselves)
    started       REAL    NOT NULL,      -- clock time the collector's writer started
    written       REAL    NOT NULL,      -- clock time of its last write
    write_ms      REAL    NOT NULL,      -- how long that write took, commits included
    writes        INTEGER NOT NULL,      -- writes since it started
    rows          INTEGER NOT NULL,      -- rows that write took from memory (after a stall: the backlog)
    dropped_bytes INTEGER NOT NULL,      -- counts given up at the backlog bound since it started
    version       TEXT    NOT NULL,      -- NetTally's version (runtime/version.py)
    interfaces    TEXT    NOT NULL       -- what it captures on, comma-separated ('' for an import)
);
