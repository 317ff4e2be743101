"""Reverse DNS: names for addresses the wire did not name, asked of the host's resolver (the
`reverse_dns` setting; off by default: the lookups leave the machine, and a PTR record is the
address owner's claim, not what this host asked for).

The lookups run on a thread of their own, one at a time, at most RATE a second, for at most
PENDING addresses waiting; the collector offers addresses and takes the answers, never waiting.
An address is asked once per RETRY seconds, answered or not.
"""
import queue
import socket
import threading
import time

from records import wire_text

RATE = 10.0              # lookups a second at most: a resolver is a shared service
PENDING = 1000           # addresses waiting; more are not queued (offered again later)
RETRY = 3600.0           # seconds before an address is asked again
ASKED = 100_000          # addresses remembered as asked (then the memory starts over)


def system_resolver(address):
    """The host's resolver (nsswitch: /etc/hosts, DNS...): the name, or None."""
    try:
        return socket.gethostbyaddr(address)[0]
    except (OSError, UnicodeError):
        return None


class ReverseNames:
    def __init__(self, resolve=system_resolver, rate=RATE, clock=time.monotonic):
        self._resolve = resolve
        self._interval = 1.0 / rate
        self._clock = clock
        self._asked = {}                       # address -> when it was last queued
        self._todo = queue.Queue(PENDING)
        self._done = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="reverse-dns", daemon=True)
        self._thread.start()

    def offer(self, addresses):
        """Addresses without a name: queued for a lookup unless asked lately or the queue is full."""
        now = self._clock()
        for address in addresses:
            last = self._asked.get(address)
            if last is not None and now - last < RETRY:
                continue
            try:
                self._todo.put_nowait(address)
            except queue.Full:
                return
            if len(self._asked) >= ASKED:
                self._asked.clear()
            self._asked[address] = now

    def take(self):
        """[(address, name)] answered since the last call."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self):
        self._todo.put(None)
        self._thread.join(2.0)

    def _run(self):
        while True:
            address = self._todo.get()
            if address is None:
                return
            started = self._clock()
            name = self._resolve(address)
            if name and name != address:
                self._done.put((address, wire_text(name.rstrip(".").lower())))
            rest = self._interval - (self._clock() - started)
            if rest > 0:
                time.sleep(rest)       # the rate bound: pacing the lookups, not waiting for a state
