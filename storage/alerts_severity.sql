-- Alert severities and delivery (schema version 6, issue 13). Only adds: a column and a table.

-- Each alert keeps its rule's severity: info, warning or critical (alerts/config.py). Alerts
-- stored before take their kind's default. The UPDATE only fills what is NULL, so applying this
-- file again (storage/db.py applies every file at each version step) changes nothing.
ALTER TABLE alerts ADD COLUMN severity TEXT;
UPDATE alerts SET severity = CASE kind WHEN 'storage' THEN 'critical' WHEN 'new_device' THEN 'info'
                                       WHEN 'coverage' THEN 'info' ELSE 'warning' END
 WHERE severity IS NULL;
CREATE INDEX IF NOT EXISTS alerts_severity ON alerts (severity, opened);

-- How the live collector's deliveries fare, one row per channel ('email', 'webhook'), written by
-- the alert runner when its counts change, read by /api/alerts/delivery. Counts since the
-- collector started; `last_error` is one line with no credentials in it.
CREATE TABLE IF NOT EXISTS alert_delivery (
    channel      TEXT PRIMARY KEY,
    target       TEXT    NOT NULL,        -- the mail server host:port, or the webhook URL
    delivered    INTEGER NOT NULL,        -- events (e-mails, POSTs) delivered
    failed       INTEGER NOT NULL,        -- events given up after their last retry
    retries      INTEGER NOT NULL,        -- attempts that failed and were tried again
    dropped      INTEGER NOT NULL,        -- events the full queue gave up unsent
    filtered     INTEGER NOT NULL,        -- events below the channel's minimum severity
    waiting      INTEGER NOT NULL,        -- events in the queue when written
    last_error   TEXT,
    last_error_at REAL,                   -- wall clock
    started      REAL    NOT NULL,        -- wall clock: the collector's start (counts since)
    updated      REAL    NOT NULL
);
