"""The live stream (/api/stream, Server-Sent Events) through Flask's test client: what a new
client gets, what a reconnecting one gets, updates as the collector writes seconds, heartbeats,
the stream's end and the cap on open streams."""
import json
import time

import pytest

from storage.db import connect
from storage.store import RollupStore
from web_helpers import NOW, make_db
from web.app import create_app

S = int(NOW)


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def setup(tmp_path):
    path = make_db(tmp_path / "stream.db")
    clock = Clock(NOW)
    app = create_app(test_config={"DB": path, "CLOCK": clock, "TOKEN": None, "POOL_SIZE": 2,
                                  "STREAM_LIFETIME": 20.0, "STREAM_HEARTBEAT": 0.3, "MAX_STREAMS": 1})
    yield app, clock, path
    app.extensions["nettally.pool"].close()


class Reader:
    """Events of a streamed response, parsed: ('usage', data, id), ('comment', text), ('retry', ms)."""

    def __init__(self, response):
        self.response = response
        self.chunks = iter(response.response)
        self.buffer = ""

    def next(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while "\n\n" not in self.buffer:
            assert time.monotonic() < deadline, "no event in time"
            self.buffer += next(self.chunks).decode()
        block, self.buffer = self.buffer.split("\n\n", 1)
        fields = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                return ("comment", line[1:].strip())
            name, _, value = line.partition(": ")
            fields[name] = value
        if "retry" in fields:
            return ("retry", int(fields["retry"]))
        return (fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))

    def next_usage(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.1, deadline - time.monotonic()))
            if event[0] == "usage":
                return event

    def close(self):
        self.response.close()


def test_new_client_gets_retry_then_the_backlog(setup):
    app, clock, _ = setup
    stream = Reader(app.test_client().get("/api/stream", buffered=False))
    assert stream.response.mimetype == "text/event-stream"
    assert stream.response.headers["Cache-Control"] == "no-store"
    assert stream.next() == ("retry", 2000)
    kind, data, event_id = stream.next_usage()
    assert (data["first"], data["last"], event_id) == (S - 120, S - 1, str(S - 1))
    assert data["points"] == [[S - 3, "eth0", 500, 1500], [S - 2, "eth0", 0, 100], [S - 1, "eth0", 3000, 0],
                              [S - 1, "lo", 0, 80]]
    stream.close()


def test_updates_as_seconds_are_written_and_heartbeats(setup):
    app, clock, path = setup
    stream = Reader(app.test_client().get("/api/stream", buffered=False))
    stream.next_usage()
    writer = RollupStore(connect(path))
    writer.add_seconds([(S, "eth0", 1, 1500, 1, 1500)])
    clock.t = NOW + 1                                     # second S is over
    data = stream.next_usage()[1]
    assert (data["first"], data["last"]) == (S - 2, S)  # the last RESEND seconds again, then the new one
    assert [S, "eth0", 1500, 0] in data["points"]
    writer.add_seconds([(S, "eth0", 1, 500, 0, 0)])       # the collector adds the rest of second S late
    data = stream.next_usage()[1]
    assert [S, "eth0", 1500, 500] in data["points"]
    seen = [stream.next()[0] for _ in range(3)]
    assert "comment" in seen                              # heartbeat within ~0.3 s of quiet
    writer.con.close()
    stream.close()


def test_a_stream_with_agent_shows_that_agents_seconds_and_without_it_their_sum(setup):
    app, clock, path = setup
    other = RollupStore(connect(path), "web-2")         # beside make_db's agent ("")
    other.add_seconds([(S - 1, "eth0", 1, 700, 1, 200), (S - 1, "wlan0", 1, 50, 0, 0)])
    def points(url):                  # one stream at a time: the fixture's app allows one
        stream = Reader(app.test_client().get(url, buffered=False))
        try:
            return stream.next_usage()[1]["points"]
        finally:
            stream.close()
    fleet = points("/api/stream")
    assert [p for p in fleet if p[0] == S - 1] == [[S - 1, "eth0", 3200, 500], [S - 1, "lo", 0, 80],
                                                   [S - 1, "wlan0", 0, 50]]
    assert points("/api/stream?agent=web-2") == [[S - 1, "eth0", 200, 500], [S - 1, "wlan0", 0, 50]]
    assert points("/api/stream?agent=nobody") == []
    other.con.close()


def test_reconnect_resumes_after_last_event_id(setup):
    app, clock, _ = setup
    response = app.test_client().get("/api/stream", headers={"Last-Event-ID": str(S - 2)}, buffered=False)
    stream = Reader(response)
    data = stream.next_usage()[1]
    assert (data["first"], data["last"]) == (S - 3, S - 1)
    stream.close()


def test_stream_ends_by_itself_and_streams_are_capped(setup):
    app, clock, _ = setup
    app.config["STREAM_LIFETIME"] = 0.5
    client = app.test_client()
    first = client.get("/api/stream", buffered=False)
    second = client.get("/api/stream")
    assert second.status_code == 503 and second.headers["Retry-After"] == "5"
    body = b"".join(first.response)                      # ends after its lifetime
    assert body.startswith(b"retry: 2000\n\n") and b"event: usage" in body
    first.close()
    third = client.get("/api/stream", buffered=False)    # the slot came back
    assert third.status_code == 200
    third.close()
