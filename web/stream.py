"""Live numbers by Server-Sent Events: /api/stream.

One poller thread (LiveFeed) reads, four times a second, the per-second interface points the
collector writes every half second; every client's stream sends what changed, so a hundred open dashboards cost one
query per poll. Each `usage` event carries a run of whole seconds [first, last] and, for each
second and interface with traffic, [second, iface, up_bytes, down_bytes] (absent = 0). The
latest RESEND seconds go out again in every event because the collector adds to a second in
pieces until it is over; the client keeps the newest value per second.

Agents: the poller reads every agent's points at once; a stream with `agent=NAME` gets that
agent's, one without it every agent's added up, as every other endpoint (storage/agents.py).

Alerts ride on the same stream: the poller also reads, once a second, the newest alert id and
the open alerts (storage.alert_log.alert_snapshot); each client gets an `alerts` event when it
connects and whenever that changes (an alert opened, closed or was acknowledged), so the
dashboard's panel follows and it can show a toast for every open alert newer than it knew.

Reconnects: the stream starts with `retry:` and gives each usage event an id (its last second); a
browser that reconnects sends Last-Event-ID and gets the seconds it missed (up to BACKLOG).
Alert events carry no id (the browser keeps the last one it saw), and a reconnected client gets
the alerts as they are now, so one that opened during the gap and is still open is not missed.
Heartbeat comments keep idle proxies from closing the connection, and a stream ends after
`STREAM_LIFETIME` seconds so server threads are recycled; the browser reconnects by itself.
"""
import json
import threading
import time

from flask import Blueprint, Response, current_app, jsonify, request

from storage.alert_log import alert_snapshot
from storage import agents
from storage.interfaces import live_seconds_by_agent
from web.params import Params

BACKLOG = 120         # seconds of points kept and sent to a new client
RESEND = 3
REREAD = 15           # seconds the feed reads again at each poll
POLL_INTERVAL = 0.25
HEARTBEAT = 15.0
RETRY_MS = 2000
ALERTS_EVERY = 1.0    # seconds between reads of the alerts
ALERTS_SHOWN = 20     # open alerts an `alerts` event lists (newest first); `open_count` counts all

bp = Blueprint("stream", __name__)


class LiveFeed:
    """Polls iface_seconds on its own connection; clients wait for a new version."""

    def __init__(self, con, clock, interval=POLL_INTERVAL):
        self.con, self.clock, self.interval = con, clock, interval
        self.points = {}              # second -> [(agent, iface, up, down)]
        self.version = 0              # 0: not polled yet (clients wait for the first poll)
        self.error = None
        self.alerts = None            # the last alert_snapshot (None: not read yet)
        self.alerts_version = 0       # counts changes of `alerts`
        self._alerts_due = 0.0        # time.monotonic() of the next read of the alerts
        self._changed = threading.Condition()
        self._thread = None

    def start(self):
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
                self._thread.start()

    def _run(self):
        while True:
            self.poll()
            time.sleep(self.interval)

    def poll(self):
        """Reads the last REREAD seconds (all BACKLOG seconds the first time): the collector adds
        to a second until a little after it is over, older ones no longer change."""
        now = int(self.clock())
        since = now - (REREAD if self.version else BACKLOG)
        try:
            rows = live_seconds_by_agent(self.con, since)
            self.error = None
        except Exception as e:        # a locked or vanished database: say so in the stream, go on
            self.error = str(e)
            return
        points = {s: p for s, p in self.points.items() if now - BACKLOG <= s < since}
        for second, agent, iface, up, down in rows:
            points.setdefault(second, []).append((agent, iface, up, down))
        alerts = self._read_alerts()
        with self._changed:
            self.points = points
            if alerts is not None and alerts != self.alerts:
                self.alerts = alerts
                self.alerts_version += 1
            self.version += 1
            self._changed.notify_all()

    def _read_alerts(self):
        if time.monotonic() < self._alerts_due:
            return None
        self._alerts_due = time.monotonic() + ALERTS_EVERY
        try:
            return alert_snapshot(self.con, ALERTS_SHOWN)
        except Exception as e:        # as for the points: say so, keep streaming numbers
            self.error = f"alerts: {e}"
            return None

    def alerts_after(self, seen_version):
        """(version, snapshot) of the alerts if they changed since `seen_version`, else None."""
        with self._changed:
            if self.alerts is None or self.alerts_version == seen_version:
                return None
            return self.alerts_version, self.alerts

    def wait(self, seen_version, timeout):
        """The current version, after waiting up to `timeout` for one newer than `seen_version`."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen_version, timeout)
            return self.version, self.points


def alerts_event(snapshot):
    """No `id:` line: the browser's Last-Event-ID stays the last usage second."""
    return f"event: alerts\ndata: {json.dumps(snapshot, separators=(',', ':'))}\n\n"


def of_agent(entries, agent):
    """One second's [(agent, iface, up, down)] as [(iface, up, down)]: `agent`'s, or with None
    every agent's added up per interface."""
    if agent is not None:
        return [(iface, up, down) for a, iface, up, down in entries if a == agent]
    sums = {}
    for _, iface, up, down in entries:
        total = sums.setdefault(iface, [0, 0])
        total[0] += up
        total[1] += down
    return [(iface, up, down) for iface, (up, down) in sums.items()]


def usage_event(points, first, last, agent=None):
    flat = [[s, iface, up, down] for s in range(first, last + 1) for iface, up, down in of_agent(points.get(s, ()), agent)]
    data = json.dumps({"first": first, "last": last, "points": flat}, separators=(",", ":"))
    return f"id: {last}\nevent: usage\ndata: {data}\n\n"


class _Stream:
    """The response body; close() (called by the server whether or not the body was ever
    iterated) gives the client's slot back exactly once."""

    def __init__(self, body, release):
        self.body, self._release = body, release

    def __iter__(self):
        return self.body

    def close(self):
        self.body.close()
        release, self._release = self._release, None
        if release:
            release()


def events(feed, clock, last_event_id, lifetime, heartbeat=HEARTBEAT, agent=None):
    """The text of one client's stream."""
    yield f"retry: {RETRY_MS}\n\n"
    newest = int(clock()) - 1
    sent = max(last_event_id if last_event_id is not None else newest - BACKLOG, newest - BACKLOG)
    version, deadline, next_beat = 0, time.monotonic() + lifetime, time.monotonic() + heartbeat
    previous, alerts_sent = None, 0
    while time.monotonic() < deadline:
        version, points = feed.wait(version, timeout=1.0)
        changed = feed.alerts_after(alerts_sent)
        if changed is not None:
            alerts_sent, snapshot = changed
            yield alerts_event(snapshot)
        newest = int(clock()) - 1          # the last whole second
        first = max(min(sent + 1, newest - RESEND + 1), newest - BACKLOG + 1)
        if newest >= first:
            event = usage_event(points, first, newest, agent)
            if event != previous:             # the feed polls twice a second; unchanged news is no news
                yield event
                previous = event
            sent = max(sent, newest)
        if feed.error:
            yield f"event: problem\ndata: {json.dumps({'error': feed.error})}\n\n"
        if time.monotonic() >= next_beat:
            yield f": heartbeat {int(clock())}\n\n"
            next_beat = time.monotonic() + heartbeat


@bp.get("/api/stream")
def stream():
    app = current_app
    Params(request.args, app.config["CLOCK"]()).finish()
    last_id = request.headers.get("Last-Event-ID", "")
    last_id = int(last_id) if last_id.isascii() and last_id.isdigit() and len(last_id) <= 18 else None
    slots = app.extensions["nettally.stream_slots"]
    if not slots.acquire(blocking=False):
        response = jsonify(error="too many live streams open; retry later")
        response.status_code, response.headers["Retry-After"] = 503, "5"
        return response
    feed = app.extensions["nettally.feed"]
    feed.start()
    body = _Stream(events(feed, app.config["CLOCK"], last_id, app.config["STREAM_LIFETIME"],
                          app.config["STREAM_HEARTBEAT"], agents.current()), slots.release)
    return Response(body, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
