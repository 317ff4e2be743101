"""Alert events to a webhook: one JSON POST per event, from a thread of its own, with retries.

`send` only puts the event in a bounded queue, so a slow or dead receiver never holds up
evaluation or capture; when the queue is full the oldest event waiting is given up (and counted).
Retries (connection errors, 5xx, 429) back off 1, 2, 4 s...; every attempt of one event carries
the same X-NetTally-Event header, so a receiver can drop a duplicate if a reply got lost.
"""
import collections
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger("nettally.alerts")


class WebhookSender:
    def __init__(self, url, retries=4, backoff=1.0, timeout=5.0, max_waiting=1000):
        self.url = url
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.waiting = collections.deque()
        self.max_waiting = max_waiting
        self.delivered = self.failed = self.given_up = self.retried = 0
        self.last_error, self.last_error_at = None, None
        self._wake = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def send(self, event_id, payload):
        """Queues one event (a JSON-able dict) for delivery; never blocks."""
        with self._wake:
            if len(self.waiting) >= self.max_waiting:
                self.waiting.popleft()
                self.given_up += 1
            self.waiting.append((event_id, payload))
            self._wake.notify()

    def idle(self):
        with self._wake:
            return not self.waiting and not self._busy

    def status(self):
        """Counts for storage.alert_log.save_delivery_status; the URL without its user, password,
        query and fragment (a token may hide there)."""
        with self._wake:
            return {"target": _shown(self.url), "delivered": self.delivered, "failed": self.failed,
                    "retries": self.retried, "dropped": self.given_up, "filtered": 0,
                    "waiting": len(self.waiting) + self._busy, "last_error": self.last_error,
                    "last_error_at": self.last_error_at}

    def close(self, timeout=10.0):
        """Delivers what is waiting for up to `timeout` seconds, then stops."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self):
        while True:
            with self._wake:
                while not self.waiting and not self._stopping:
                    self._wake.wait()
                if not self.waiting:
                    return
                event_id, payload = self.waiting.popleft()
                self._busy = True
            try:
                self._deliver(event_id, payload)
            finally:
                with self._wake:
                    self._busy = False

    def _deliver(self, event_id, payload):
        body = json.dumps(payload).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                with self._wake:       # a close() cuts the wait short but not the remaining tries
                    self._wake.wait_for(lambda: self._stopping, self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "User-Agent": "NetTally", "X-NetTally-Event": event_id})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    reply.read()
                self.delivered += 1
                return
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code != 429:
                    log.warning("alerts: webhook %s refused event %s: HTTP %d", self.url, event_id, e.code)
                    with self._wake:
                        self.last_error, self.last_error_at = f"HTTP {e.code}, not retried", time.time()
                    break
                problem = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError, ValueError) as e:
                problem = str(getattr(e, "reason", e))
            log.warning("alerts: webhook %s, event %s, attempt %d: %s", self.url, event_id, attempt + 1, problem)
            with self._wake:
                self.last_error, self.last_error_at = problem, time.time()
                self.retried += attempt < self.retries
        self.failed += 1


def _shown(url):
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))
