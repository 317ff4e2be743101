-- Coarser rollup tiers (storage/tiers.py builds them from the finer tier; storage/retention.py
-- prunes every tier). Same counters as the minute tables in schema.sql; `hour` and `day` are UTC
-- epoch seconds at the start of the bucket (days are UTC days).

CREATE TABLE IF NOT EXISTS host_hours (
    hour INTEGER NOT NULL, ip TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (hour, ip, agent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS host_hours_ip_sums ON host_hours (ip, hour, agent, tx_bytes, rx_bytes, tx_packets, rx_packets);
CREATE TABLE IF NOT EXISTS host_days (
    day INTEGER NOT NULL, ip TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (day, ip, agent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS host_days_ip ON host_days (ip, day);

CREATE TABLE IF NOT EXISTS flow_hours (
    hour INTEGER NOT NULL, flow_id INTEGER NOT NULL REFERENCES flows (id),
    orig_bytes INTEGER NOT NULL, resp_bytes INTEGER NOT NULL, orig_packets INTEGER NOT NULL, resp_packets INTEGER NOT NULL,
    PRIMARY KEY (hour, flow_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_hours_flow ON flow_hours (flow_id);
CREATE TABLE IF NOT EXISTS flow_days (
    day INTEGER NOT NULL, flow_id INTEGER NOT NULL REFERENCES flows (id),
    orig_bytes INTEGER NOT NULL, resp_bytes INTEGER NOT NULL, orig_packets INTEGER NOT NULL, resp_packets INTEGER NOT NULL,
    PRIMARY KEY (day, flow_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_days_flow ON flow_days (flow_id);

CREATE TABLE IF NOT EXISTS iface_hours (
    hour INTEGER NOT NULL, iface TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    frames INTEGER NOT NULL, bytes INTEGER NOT NULL, ip_frames INTEGER NOT NULL, ip_bytes INTEGER NOT NULL,
    non_ip_frames INTEGER NOT NULL, non_ip_bytes INTEGER NOT NULL,
    undecodable_frames INTEGER NOT NULL, undecodable_bytes INTEGER NOT NULL,
    out_frames INTEGER NOT NULL, out_bytes INTEGER NOT NULL,
    PRIMARY KEY (hour, iface, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iface_days (
    day INTEGER NOT NULL, iface TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    frames INTEGER NOT NULL, bytes INTEGER NOT NULL, ip_frames INTEGER NOT NULL, ip_bytes INTEGER NOT NULL,
    non_ip_frames INTEGER NOT NULL, non_ip_bytes INTEGER NOT NULL,
    undecodable_frames INTEGER NOT NULL, undecodable_bytes INTEGER NOT NULL,
    out_frames INTEGER NOT NULL, out_bytes INTEGER NOT NULL,
    PRIMARY KEY (day, iface, agent)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS process_hours (
    hour INTEGER NOT NULL, process_id INTEGER NOT NULL REFERENCES processes (id),
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (hour, process_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS process_hours_sums ON process_hours (process_id, hour, tx_bytes, rx_bytes, tx_packets, rx_packets);
CREATE TABLE IF NOT EXISTS process_days (
    day INTEGER NOT NULL, process_id INTEGER NOT NULL REFERENCES processes (id),
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (day, process_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS process_days_process ON process_days (process_id, day);
CREATE INDEX IF NOT EXISTS process_minutes_sums ON process_minutes (process_id, minute, tx_bytes, rx_bytes, tx_packets,
                                                         rx_packets);

CREATE TABLE IF NOT EXISTS attribution_hours (
    hour INTEGER NOT NULL, reason TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
    PRIMARY KEY (hour, reason, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attribution_days (
    day INTEGER NOT NULL, reason TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
    PRIMARY KEY (day, reason, agent)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS undecodable_hours (
    hour INTEGER NOT NULL, iface TEXT NOT NULL, reason TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', frames INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (hour, iface, reason, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS undecodable_days (
    day INTEGER NOT NULL, iface TEXT NOT NULL, reason TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', frames INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (day, iface, reason, agent)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS capture_drops_hours (
    hour INTEGER NOT NULL, iface TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', frames INTEGER NOT NULL,
    PRIMARY KEY (hour, iface, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS capture_drops_days (
    day INTEGER NOT NULL, iface TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', frames INTEGER NOT NULL,
    PRIMARY KEY (day, iface, agent)
) WITHOUT ROWID;

-- Hour and day buckets whose finer data changed since they were last rebuilt. The writer adds a
-- row in the same transaction as the finer rows, the builder removes it in the same transaction
-- as the rebuild: a crash between the two leaves the bucket pending, never half built.
CREATE TABLE IF NOT EXISTS tier_pending (
    tier   TEXT    NOT NULL,   -- 'hour' or 'day'
    bucket INTEGER NOT NULL,
    PRIMARY KEY (tier, bucket)
) WITHOUT ROWID;

-- How far retention has pruned each finer tier: every bucket before `pruned_before` is gone (or
-- going), so data arriving late for such a bucket is added straight to the next coarser tier.
CREATE TABLE IF NOT EXISTS tier_watermarks (
    family        TEXT    NOT NULL,   -- host, flow, iface, process, attribution, undecodable, drops
    tier          TEXT    NOT NULL,   -- 'minute' or 'hour'
    pruned_before INTEGER NOT NULL,
    PRIMARY KEY (family, tier)
) WITHOUT ROWID;
