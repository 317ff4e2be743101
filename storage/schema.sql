-- NetTally database schema. Version in PRAGMA user_version (storage/db.py SCHEMA_VERSION).
-- Counters are bytes on the wire (pcap orig_len) and frames; see README "Counting rules".
-- Time buckets ("minute") are UTC epoch seconds at the start of the bucket.
-- `agent` (schema 12): the collector that counted the row, its setting `agent`; every key of
-- counts holds it, so collectors writing one database add up and never overwrite ('' for rows
-- from before 12). Rows keyed by a flow or a process take the agent of that flow or process.
-- In a WITHOUT ROWID table every key column comes before the others (SQLite 3.40's
-- integrity_check misreads the table otherwise).

CREATE TABLE IF NOT EXISTS flows (
    id           INTEGER PRIMARY KEY,
    proto        INTEGER NOT NULL,          -- IP protocol number
    orig_h       TEXT    NOT NULL,          -- side that sent the first packet seen (TCP: the SYN)
    orig_p       INTEGER NOT NULL,          -- 0 where the protocol has no ports
    resp_h       TEXT    NOT NULL,
    resp_p       INTEGER NOT NULL,
    first_seen   REAL    NOT NULL,          -- packet time, epoch seconds
    last_seen    REAL    NOT NULL,
    orig_bytes   INTEGER NOT NULL DEFAULT 0,
    resp_bytes   INTEGER NOT NULL DEFAULT 0,
    orig_packets INTEGER NOT NULL DEFAULT 0,
    resp_packets INTEGER NOT NULL DEFAULT 0,
    tcp_flags    INTEGER NOT NULL DEFAULT 0, -- union of the TCP flags both sides sent
    iface        TEXT    NOT NULL DEFAULT '',
    closed       INTEGER NOT NULL DEFAULT 0, -- 1 once the flow left the flow table
    orig_pid     INTEGER,                   -- process on this host owning orig's socket (attribution/)
    orig_process TEXT,
    resp_pid     INTEGER,
    resp_process TEXT,
    agent        TEXT    NOT NULL DEFAULT '',   -- the collector that counted it (setting agent, schema 12)
    UNIQUE (proto, orig_h, orig_p, resp_h, resp_p, first_seen, agent)
);
CREATE INDEX IF NOT EXISTS flows_last_seen ON flows (last_seen);
CREATE INDEX IF NOT EXISTS flows_orig_h ON flows (orig_h);
CREATE INDEX IF NOT EXISTS flows_resp_h ON flows (resp_h);

CREATE TABLE IF NOT EXISTS flow_minutes (
    minute       INTEGER NOT NULL,
    flow_id      INTEGER NOT NULL REFERENCES flows (id),
    orig_bytes   INTEGER NOT NULL,
    resp_bytes   INTEGER NOT NULL,
    orig_packets INTEGER NOT NULL,
    resp_packets INTEGER NOT NULL,
    PRIMARY KEY (minute, flow_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_minutes_flow ON flow_minutes (flow_id);

CREATE TABLE IF NOT EXISTS host_minutes (
    minute     INTEGER NOT NULL,
    ip         TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    tx_bytes   INTEGER NOT NULL,
    rx_bytes   INTEGER NOT NULL,
    tx_packets INTEGER NOT NULL,
    rx_packets INTEGER NOT NULL,
    PRIMARY KEY (minute, ip, agent)
) WITHOUT ROWID;
-- One host's minutes, counters included: a page of the hosts list reads only its hosts' rows
-- (storage/usage.py), from the index alone (schema 10; host_minutes_ip before, without counters);
-- its agent too (schema 12), for one agent's page (SQLite holds the key in it anyway, PostgreSQL does not).
CREATE INDEX IF NOT EXISTS host_minutes_ip_sums ON host_minutes (ip, minute, agent, tx_bytes, rx_bytes, tx_packets, rx_packets);

CREATE TABLE IF NOT EXISTS iface_minutes (
    minute             INTEGER NOT NULL,
    iface              TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    frames             INTEGER NOT NULL,  -- every frame, IP or not, decodable or not
    bytes              INTEGER NOT NULL,
    ip_frames          INTEGER NOT NULL,
    ip_bytes           INTEGER NOT NULL,
    non_ip_frames      INTEGER NOT NULL,  -- ARP, LLDP, 802.11 management...
    non_ip_bytes       INTEGER NOT NULL,
    undecodable_frames INTEGER NOT NULL,  -- broken headers; reasons in `undecodable`
    undecodable_bytes  INTEGER NOT NULL,
    out_frames         INTEGER NOT NULL,  -- sent by this host on the interface (live capture, pcapng flags)
    out_bytes          INTEGER NOT NULL,
    PRIMARY KEY (minute, iface, agent)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS undecodable (
    minute INTEGER NOT NULL,
    iface  TEXT    NOT NULL,
    reason TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    frames INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (minute, iface, reason, agent)
) WITHOUT ROWID;

-- Kernel-side losses of a live capture, per interface and minute.
CREATE TABLE IF NOT EXISTS capture_drops (
    minute INTEGER NOT NULL,
    iface  TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    frames INTEGER NOT NULL,
    PRIMARY KEY (minute, iface, agent)
) WITHOUT ROWID;

-- One row per import or live run: what was read, what was clamped, where a file was damaged.
CREATE TABLE IF NOT EXISTS sources (
    id       INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,          -- 'file' or 'live'
    name     TEXT NOT NULL,
    started  REAL NOT NULL,          -- wall clock
    finished REAL,
    frames   INTEGER NOT NULL DEFAULT 0,
    clamped  INTEGER NOT NULL DEFAULT 0,
    damage   TEXT
);

-- Processes seen owning sockets. A pid is identified together with its start time, so a recycled
-- pid is a different row.
CREATE TABLE IF NOT EXISTS processes (
    id         INTEGER PRIMARY KEY,
    pid        INTEGER NOT NULL,
    start_time REAL    NOT NULL,          -- psutil create_time, epoch seconds
    name       TEXT    NOT NULL,
    exe        TEXT    NOT NULL DEFAULT '',
    cmdline    TEXT    NOT NULL DEFAULT '',
    username   TEXT    NOT NULL DEFAULT '',
    unit       TEXT    NOT NULL DEFAULT '', -- systemd unit or container, from /proc/PID/cgroup
    agent        TEXT    NOT NULL DEFAULT '',   -- the collector that counted it (setting agent, schema 12)
    UNIQUE (pid, start_time, agent)
);

CREATE TABLE IF NOT EXISTS process_minutes (
    minute     INTEGER NOT NULL,
    process_id INTEGER NOT NULL REFERENCES processes (id),
    tx_bytes   INTEGER NOT NULL,
    rx_bytes   INTEGER NOT NULL,
    tx_packets INTEGER NOT NULL,
    rx_packets INTEGER NOT NULL,
    PRIMARY KEY (minute, process_id)
) WITHOUT ROWID;

-- Attribution coverage: bytes of this host's own traffic charged to a process ('attributed') or
-- not, by reason (no_local_endpoint, socket_closed_before_lookup, other_network_namespace,
-- no_permission, unknown).
CREATE TABLE IF NOT EXISTS attribution_minutes (
    minute  INTEGER NOT NULL,
    reason  TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    bytes   INTEGER NOT NULL,
    packets INTEGER NOT NULL,
    PRIMARY KEY (minute, reason, agent)
) WITHOUT ROWID;

-- Per-second interface points for the live view (kept for minutes; see retention).
CREATE TABLE IF NOT EXISTS iface_seconds (
    second     INTEGER NOT NULL,   -- epoch second (packet time)
    iface      TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    frames     INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    out_frames INTEGER NOT NULL,   -- sent by this host
    out_bytes  INTEGER NOT NULL,
    PRIMARY KEY (second, iface, agent)
) WITHOUT ROWID;
