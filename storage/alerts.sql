-- Alerts: one row per alert, from the moment a rule's limit is crossed until the value falls back
-- (see docs/ALERTS.md). Times are epoch seconds: `opened`/`closed` on the data's own timeline
-- (packet time; a capture's time for imports), `acked` on the wall clock.

CREATE TABLE IF NOT EXISTS alerts (
    id        INTEGER PRIMARY KEY,
    rule      TEXT    NOT NULL,           -- rule name (alerts/config.py)
    kind      TEXT    NOT NULL,           -- bytes, rate, new_device, drops, coverage, storage
    scope     TEXT    NOT NULL,           -- host, process, interface, all
    subject   TEXT    NOT NULL,           -- address, process name, interface name, or 'all'
    origin    TEXT    NOT NULL,           -- 'live', or 'import' for rules run over an imported capture
    state     TEXT    NOT NULL,           -- 'open' or 'closed'
    opened    REAL    NOT NULL,
    closed    REAL,
    value     REAL    NOT NULL,           -- measured value when the limit was crossed
    peak      REAL    NOT NULL,           -- worst value while open (highest; lowest for coverage)
    threshold REAL    NOT NULL,
    unit      TEXT    NOT NULL,           -- bytes, bit/s, share, ''
    window    INTEGER NOT NULL,           -- seconds the value is measured over
    message   TEXT    NOT NULL,
    acked     REAL,
    acked_by  TEXT
);
-- De-duplication: at most one open alert per rule, subject and origin.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (rule, subject, origin) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS alerts_opened ON alerts (opened);

-- Rules added or changed through the API (validated by alerts/config.py); they override the TOML
-- file's rule of the same name. `body` is the rule as JSON; enabled = 0 switches a rule off.
CREATE TABLE IF NOT EXISTS alert_rules (
    name    TEXT PRIMARY KEY,
    body    TEXT NOT NULL,
    changed REAL NOT NULL
);
