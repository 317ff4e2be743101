"""The capture process: rings -> flow table -> messages to the collector.

This process does nothing else, so no database commit, process-table scan or web request can
keep it from emptying the kernel's rings. Everything it counted reaches the collector as
messages on one pipe (the message records at the end of records/__init__.py): Ready or Failed
first, then NewFlows, Seconds, Activity, Rollups, Drops and Notice as they come, and Done last.

Flow expiry runs on packet time; the wall clock is read only here, at the loop's edge, to move
time on while the links are idle.
"""
import os
import select
import sys
import time

from capture.flows import FlowTable
from runtime import signals
from records import Activity, Done, Drops, Failed, NewFlows, Ready, Rollups, Seconds, Notice
from capture.ring import BLOCK_TIMEOUT_MS, CaptureSetupError, interfaces_up
from capture.sources import open_source

NEW_FLOWS_EVERY = 0.05
SECONDS_EVERY = 0.5
POLL_MS = 50
# After a stop, blocks the kernel is still filling are handed over by its block timer: wait that
# long (three timer periods) so frames that arrived before the stop are counted too.
FINAL_SWEEP = 3 * BLOCK_TIMEOUT_MS / 1000
# A second's host and flow points go out once the clock is this far past its end: its last
# frames have been handed over by the block timer (a frame later still counts, in a later point).
SECOND_LAG = 2 * BLOCK_TIMEOUT_MS / 1000


def open_sources(settings):
    """Rings for settings.interfaces (default: every interface that is up)."""
    names = list(dict.fromkeys(settings.interfaces)) or interfaces_up()
    if not names:
        raise CaptureSetupError("no interface is up to capture on")
    sources = []
    try:
        for name in names:
            sources.append(open_source(name, settings.bpf, settings.ring_mb, settings.capture_backend))
    except CaptureSetupError:
        for s in sources:
            s.close()
        raise
    return sources


class LiveCapture:
    """The capture loop over already opened sources. `send` takes one message tuple;
    `clock`/`wall` are the monotonic and real clocks (injectable for tests)."""

    def __init__(self, settings, sources, send, clock=time.monotonic, wall=time.time):
        self.settings = settings
        self.sources = sources
        self.send = send
        self.clock, self.wall = clock, wall
        self.table = FlowTable(idle_timeout=settings.idle_timeout, active_timeout=settings.active_timeout,
                               max_flows=settings.max_flows, read_payload=settings.names,
                               tcp_health=settings.tcp_health, per_second=True)
        self.frames = 0
        self.drops_total = 0
        self.last_ts = 0.0
        self._remaining = settings.count or None      # frames still to count under -c
        self._unswept = {}                             # name -> frames a stop left unread (drops)

    # ---- the loop --------------------------------------------------------------------------------

    def run(self, should_stop):
        """Counts until -c frames, --duration seconds or should_stop(); then sends everything."""
        if all(getattr(s, "selectable", True) for s in self.sources):
            by_fd = {s.fileno(): s for s in self.sources}
            poller = select.poll() if self._pollable() else _SelectPoller()
        else:                         # libpcap on Windows: no descriptor to wait on
            by_fd = dict(enumerate(self.sources))
            poller = _EveryTurn()
        for fd in by_fd:
            poller.register(fd, getattr(select, "POLLIN", 1))
        start = self.clock()
        end = start + self.settings.duration if self.settings.duration > 0 else None
        next_flows = start + NEW_FLOWS_EVERY
        next_seconds = start + SECONDS_EVERY
        next_flush = start + self.settings.flush_interval
        while True:
            timeout = POLL_MS if end is None else max(0, min(POLL_MS, int((end - self.clock()) * 1000) + 1))
            for fd, events in poller.poll(timeout):
                if events & _POLL_ERRORS:
                    self._error(by_fd[fd])
                self._read(by_fd[fd])
            now = self.clock()
            if self._remaining == 0 or (end is not None and now >= end) or should_stop():
                break
            if now >= next_flows:
                self._send_flows()
                next_flows = now + NEW_FLOWS_EVERY
            if now >= next_seconds:
                self._send_seconds()
                next_seconds = now + SECONDS_EVERY
            if now >= next_flush:
                self._flush()
                next_flush = now + self.settings.flush_interval
        if self._remaining != 0:
            self._final_sweep(poller, by_fd)
        self._flush(close_all=True)
        self.send(Done(self.frames, self.drops_total))

    def _pollable(self):
        # poll() does not work on BPF devices on macOS; rings (Linux) are sockets
        return hasattr(select, "poll") and sys.platform.startswith("linux")

    def _error(self, source):
        error = source.take_error()
        if error:
            self.send(Notice(f"{source.name}: {error}"))

    def _read(self, source):
        if getattr(source, "failed", False):        # libpcap said a read failed: no poll event says so
            self._error(source)
        for batch in source.read():
            if self._remaining is not None:
                if self._remaining <= 0:
                    return
                if len(batch) > self._remaining:
                    batch = batch[:self._remaining]
                self._remaining -= len(batch)
            self.table.ingest(source.name, source.linktype, batch)
            self.frames += len(batch)
            if batch[-1][0] > self.last_ts:
                self.last_ts = batch[-1][0]

    def _final_sweep(self, poller, by_fd):
        """At stop: frames already in the rings are counted, not lost. Waits a few block timeouts
        for the kernel to hand over its partly filled blocks, then reads, without waiting, what
        is handed over, up to one ring's worth (traffic that goes on arriving cannot keep the stop
        waiting); whatever is still left unread is counted as dropped, never lost silently."""
        deadline = self.clock() + FINAL_SWEEP
        while self._remaining != 0:
            left = deadline - self.clock()
            if left <= 0:
                break
            for fd, _ in poller.poll(int(left * 1000) + 1):
                self._read(by_fd[fd])
        for source in self.sources:
            for _ in range(getattr(source, "sweep_reads", 1)):
                before = self.frames
                if self._remaining == 0:
                    return                    # -c reached: what follows is not ours to count
                self._read(source)
                if self.frames == before:
                    break
            unread = getattr(source, "unread", lambda: 0)()
            if unread:
                self._unswept[source.name] = self._unswept.get(source.name, 0) + unread

    # ---- messages --------------------------------------------------------------------------------

    def _send_flows(self):
        new = self.table.take_new_flows()
        if new:
            self.send(NewFlows(new))
        ready = self.table.take()        # buckets closed by a later packet: no reason to wait
        if ready:
            self.send(Rollups(ready))

    def _send_seconds(self, final=False):
        points = [p for s in self.sources for p in s.take_seconds()]
        if points:
            self.send(Seconds(points))
        closed = self.table.take_seconds(float("inf") if final else self.wall() - SECOND_LAG)
        if closed:
            self.send(Activity([h for _, hosts, _ in closed for h in hosts], [f for *_, flows in closed for f in flows]))

    def _flush(self, close_all=False):
        """Everything counted so far goes out: new flows first (attribution needs them before
        their rollups), then closed buckets and the open bucket's deltas, points and drops."""
        self._send_flows()
        now = max(self.wall(), self.last_ts)
        rollup = self.table.drain(now, close_all=close_all)
        if rollup.flows or rollup.interfaces or rollup.undecodable:
            self.send(Rollups([rollup]))
        self._send_seconds(final=close_all)
        drops = {s.name: s.drops() for s in self.sources}
        if close_all:                 # frames a stop left in the rings unread
            drops = {name: n + self._unswept.get(name, 0) for name, n in drops.items()}
        drops = {name: n for name, n in drops.items() if n}
        if drops:
            self.drops_total += sum(drops.values())
            self.send(Drops(int(now // 60 * 60), drops))


_POLL_ERRORS = getattr(select, "POLLERR", 8) | getattr(select, "POLLHUP", 16)


class _SelectPoller:
    """select.poll's interface over select.select, for platforms without a usable poll."""

    def __init__(self):
        self.fds = []

    def register(self, fd, events):
        self.fds.append(fd)

    def poll(self, timeout_ms):
        readable = select.select(self.fds, [], [], timeout_ms / 1000)[0]
        return [(fd, 1) for fd in readable]


class _EveryTurn:
    """For sources without a descriptor to wait on (libpcap on Windows): every source is read
    every TURN_MS, or sooner when the loop's deadline is nearer."""

    TURN_MS = 10

    def __init__(self):
        self.keys = []

    def register(self, key, events):
        self.keys.append(key)

    def poll(self, timeout_ms):
        time.sleep(min(timeout_ms, self.TURN_MS) / 1000)
        return [(key, 1) for key in self.keys]


def run_capture(settings, conn, stop_asked=None):
    """Main of the capture process. `conn` is the sending end of a pipe to the collector;
    `stop_asked` (a multiprocessing Event) is how the collector asks for the stop, on every
    platform (Windows delivers no SIGTERM between processes); SIGINT and SIGTERM also stop it."""
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signals.on_stop(stop)
    parent = os.getppid()
    try:
        try:
            sources = open_sources(settings)
        except CaptureSetupError as e:
            conn.send(Failed(str(e)))
            return
        try:
            conn.send(Ready([(s.name, s.linktype) for s in sources], sources[0].backend))
            capture = LiveCapture(settings, sources, conn.send)
            # a collector that died without telling us: stop rather than count for nobody
            capture.run(lambda: bool(stopping) or os.getppid() != parent
                        or (stop_asked is not None and stop_asked.is_set()))
        finally:
            for s in sources:
                s.close()
    except (BrokenPipeError, EOFError):
        pass
    finally:
        conn.close()
