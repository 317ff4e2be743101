-- Link-layer addresses of IPv4 hosts, as their ARP announcements name them (schema version 3).
CREATE TABLE IF NOT EXISTS host_macs (
    ip         TEXT    NOT NULL PRIMARY KEY,
    mac        TEXT    NOT NULL,          -- lower-case, colon-separated
    first_seen INTEGER NOT NULL,          -- bucket (minute) of the first announcement with this MAC
    last_seen  INTEGER NOT NULL
);
