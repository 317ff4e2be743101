-- Per-second bytes of apps (schema version 9, issue 11): the "now" and 1-second peak of
-- /api/apps. Written by a live capture only, kept retention_seconds like host_seconds
-- (storage/retention.py); an import writes none.

-- Per (app, service, traffic_class), as the app tier keys them, and second: the bytes of the
-- flows that carried them, both directions (collector/seconds.py SecondApps).
CREATE TABLE IF NOT EXISTS app_seconds (
    second        INTEGER NOT NULL,   -- epoch second (packet time)
    app           TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    traffic_class TEXT    NOT NULL,
    agent TEXT NOT NULL DEFAULT '',
    bytes         INTEGER NOT NULL,
    PRIMARY KEY (second, app, service, traffic_class, agent)
) WITHOUT ROWID;
