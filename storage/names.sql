-- Names and applications (schema version 4): what each flow carried, what hosts are called, and
-- bytes per application, service and traffic class at every tier. Only adds tables.

CREATE TABLE IF NOT EXISTS flow_names (
    flow_id       INTEGER NOT NULL PRIMARY KEY REFERENCES flows (id),
    app           TEXT    NOT NULL DEFAULT '',  -- application protocol (Wireshark dissector name), '' unknown
    app_source    TEXT    NOT NULL DEFAULT '',  -- 'dpi' (read from the payload) or 'port' (a guess)
    server_name   TEXT    NOT NULL DEFAULT '',  -- TLS/QUIC SNI, HTTP Host or DNS query name
    service       TEXT    NOT NULL DEFAULT '',  -- names/services.toml
    traffic_class TEXT    NOT NULL DEFAULT ''   -- names/classes.toml
);
CREATE INDEX IF NOT EXISTS flow_names_app ON flow_names (app);
-- a flow's labels go with it (retention deletes flows; a reused id must not inherit them)
CREATE TRIGGER IF NOT EXISTS flow_names_follow_flows AFTER DELETE ON flows
BEGIN DELETE FROM flow_names WHERE flow_id = old.id; END;

CREATE TABLE IF NOT EXISTS host_names (
    ip     TEXT NOT NULL PRIMARY KEY,
    name   TEXT NOT NULL,          -- as seen on the wire (records.wire_text: printable, bounded)
    source TEXT NOT NULL,          -- dns, mdns, llmnr, nbns, dhcp, rdns
    seen   REAL NOT NULL           -- packet time of the sighting that set it
);

CREATE TABLE IF NOT EXISTS app_minutes (
    minute INTEGER NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
    PRIMARY KEY (minute, app, service, traffic_class, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_hours (
    hour INTEGER NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
    PRIMARY KEY (hour, app, service, traffic_class, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_days (
    day INTEGER NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
    PRIMARY KEY (day, app, service, traffic_class, agent)
) WITHOUT ROWID;

-- Per host: bytes it sent (tx) and received (rx) by application, service and class
CREATE TABLE IF NOT EXISTS host_app_minutes (
    minute INTEGER NOT NULL, ip TEXT NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (minute, ip, app, service, traffic_class, agent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS host_app_minutes_ip ON host_app_minutes (ip, minute);
CREATE TABLE IF NOT EXISTS host_app_hours (
    hour INTEGER NOT NULL, ip TEXT NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (hour, ip, app, service, traffic_class, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_app_days (
    day INTEGER NOT NULL, ip TEXT NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (day, ip, app, service, traffic_class, agent)
) WITHOUT ROWID;

-- Per process (processes.id): bytes it sent (tx) and received (rx) by application, service and class
CREATE TABLE IF NOT EXISTS process_app_minutes (
    minute INTEGER NOT NULL, process_id INTEGER NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (minute, process_id, app, service, traffic_class)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS process_app_minutes_ip ON process_app_minutes (process_id, minute);
CREATE TABLE IF NOT EXISTS process_app_hours (
    hour INTEGER NOT NULL, process_id INTEGER NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (hour, process_id, app, service, traffic_class)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS process_app_days (
    day INTEGER NOT NULL, process_id INTEGER NOT NULL, app TEXT NOT NULL, service TEXT NOT NULL, traffic_class TEXT NOT NULL,
    tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, tx_packets INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    PRIMARY KEY (day, process_id, app, service, traffic_class)
) WITHOUT ROWID;

-- Flows whose payload could not be read, by reason (dns_compression_loop, tls_truncated_handshake...)
CREATE TABLE IF NOT EXISTS unnamed_minutes (
    minute INTEGER NOT NULL, reason TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', flows INTEGER NOT NULL, PRIMARY KEY (minute, reason, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unnamed_hours (
    hour INTEGER NOT NULL, reason TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', flows INTEGER NOT NULL, PRIMARY KEY (hour, reason, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unnamed_days (
    day INTEGER NOT NULL, reason TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '', flows INTEGER NOT NULL, PRIMARY KEY (day, reason, agent)
) WITHOUT ROWID;
