-- Per-second bytes of hosts and processes (schema version 8, issue 11): what "now" (the last
-- 5 s) and the 1-second peak are read from. Written by a live capture only, kept
-- retention_seconds like iface_seconds (storage/retention.py); an import writes none.

-- Per address and second: bytes it sent (tx) and received (rx), as the host tiers count them.
CREATE TABLE IF NOT EXISTS host_seconds (
    second   INTEGER NOT NULL,   -- epoch second (packet time)
    ip       TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    tx_bytes INTEGER NOT NULL,
    rx_bytes INTEGER NOT NULL,
    PRIMARY KEY (second, ip, agent)
) WITHOUT ROWID;

-- Per process and second: bytes of the flow sides attribution charged to it (a flow between
-- two local processes credits both, as the process tiers do). Flows not attributed yet when
-- their seconds arrive are not charged here (collector/live.py: SecondOwners).
CREATE TABLE IF NOT EXISTS process_seconds (
    second     INTEGER NOT NULL,
    process_id INTEGER NOT NULL REFERENCES processes (id),
    tx_bytes   INTEGER NOT NULL,
    rx_bytes   INTEGER NOT NULL,
    PRIMARY KEY (second, process_id)
) WITHOUT ROWID;
