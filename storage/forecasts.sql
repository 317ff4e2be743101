-- Schema version 13 (issue 16): forecasts made off the request path (web/forecasts.py) and
-- served from here by /api/forecast. One row per subject, horizon and view (`agent`: '' for every
-- agent's counts added up, the unfiltered view), replaced at each refresh.
CREATE TABLE IF NOT EXISTS forecasts (
    subject       TEXT    NOT NULL,      -- all, iface:NAME, host:ADDRESS, class:NAME (storage/forecasts.py)
    horizon       TEXT    NOT NULL,      -- 24h (hourly points) or 7d (daily points)
    agent         TEXT    NOT NULL,      -- '': every agent
    made          INTEGER NOT NULL,      -- the whole hour it was made at: history ends there
    history_hours INTEGER NOT NULL,      -- hours of history it was made from
    needed_hours  INTEGER NOT NULL,      -- > 0: too little history, this many more hours wanted; no points
    points        TEXT    NOT NULL,      -- JSON [{start, forecast, lo80, hi80, lo95, hi95}], bytes
    PRIMARY KEY (subject, horizon, agent)
);
