"""The main job: a capture process feeding a collector that attributes, stores and alerts.

    capture process (capture/live.py)  --pipe-->  collector (this process, collector/live.py)
                                                    pipe reader thread -> inbox
                                                    main thread: attribution (observe/tick/attribute)
                                                    storage.writer.WriterThread: the single SQLite
                                                      writer; alert rules after each commit
                                                  web process (collector/web_process.py spawn), unprivileged

The collector never blocks the capture: a thread drains the pipe as fast as the capture writes
it, and the SQLite commits happen on their own thread. On SIGINT/SIGTERM the capture stops,
sends everything it counted, and the collector writes it all before exiting 0.
"""
import queue
import threading
import time
from functools import partial

from alerts.service import AlertRunner
from attribution.service import Attributor
from collector.dpi import DpiWorker, without_samples
from collector.seconds import SecondApps, SecondOwners
from names.label import Labeller, names_rollup, unnamed_rollup
from names.rdns import ReverseNames
from runtime import children, signals
from capture.ring import privilege_problem
from records import Activity, Done, Drops, Failed, NewFlows, Ready, Rollups, Seconds, Notice
from runtime.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from runtime.version import VERSION
from runtime.text import one_line, say as _say, stamp_lines
from storage.db import shown

READY_TIMEOUT = 60.0


def run_service(settings, web=True):
    problem = privilege_problem()
    if problem:
        _say(problem, err=True)
        return EXIT_USAGE
    if web:
        problem = _port_problem(settings.host, settings.port)
        if problem:                   # before anything starts: another server has the port
            _say(problem, err=True)
            return EXIT_USAGE
    import sqlite3

    from collector.import_ledger import abandoned
    from storage.db import DatabaseError, connect_checked
    try:        # creates / migrates (or moves a damaged file aside) now, so a bad path is one line
        con = connect_checked(settings.db)
        try:
            for line in abandoned(con):       # imports cut off (kill -9, power loss) since the last start
                _say(line, err=True)
        finally:
            con.close()
    except (DatabaseError, sqlite3.Error) as e:
        _say(f"{shown(settings.db)}: {one_line(e)}" if isinstance(e, sqlite3.Error) else str(e), err=True)
        return EXIT_USAGE

    capture, inbox = _start_capture(settings)
    try:
        first = inbox.get(timeout=READY_TIMEOUT)
    except queue.Empty:
        first = Failed(f"the capture process did not start within {READY_TIMEOUT:.0f} s")
        capture.kill()
    if not isinstance(first, Ready):
        capture.join(5)
        signals.let_through()
        _say(first.line if first else "the capture process stopped before it was ready", err=True)
        return EXIT_USAGE if first else EXIT_FAILED
    return Collector(settings, capture, inbox, first.interfaces, web, first.backend).run()


def _port_problem(host, port):
    """One line if the dashboard's address cannot be bound (in use, not this host's), else None.
    Binds as waitress will (SO_REUSEADDR) and lets go at once."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        return f"cannot listen on {host}:{port}: {one_line(e)}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            return (f"cannot listen on {host}:{port}: {e.strerror or e} (another NetTally or another server "
                    "has it? choose one with --port); nothing was captured")
    return None


def _start_capture(settings):
    from capture.live import run_capture
    ctx = children.context()          # called before any thread of ours starts: fork
    receive, send = ctx.Pipe(duplex=False)
    children.widen(send)              # room for bursts while the reader thread waits for the GIL
    # signals stay blocked until each process has its handler (the child unblocks its own)
    signals.hold_back()
    stop_asked = ctx.Event()          # how the collector asks it to stop: a signal on no platform
    try:
        capture = ctx.Process(target=run_capture, args=(settings, send, stop_asked), name="nettally-capture")
        capture.start()
    finally:
        send.close()
    capture.stop_asked = stop_asked
    inbox = queue.Queue()
    threading.Thread(target=_pump, args=(receive, inbox), name="capture-pipe", daemon=True).start()
    return capture, inbox


def _pump(conn, inbox):
    """Moves messages from the capture pipe to the inbox; None when the capture is gone."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            inbox.put(None)
            return
        inbox.put(message)
        if isinstance(message, (Done, Failed)):
            inbox.put(None)
            return


class Collector:
    def __init__(self, settings, capture, inbox, interfaces, web, backend="ring"):
        self.settings = settings
        self.capture = capture
        self.inbox = inbox
        self.interfaces = interfaces
        self.backend = backend
        self.web = web
        self.stopping = False
        self.frames = self.drops = 0
        self.attributor = _optional("attribution", lambda: Attributor(settings))
        self.labeller = _optional("names", lambda: Labeller.from_settings(settings)) if settings.names else None
        self.dpi = _optional("tshark labelling", lambda: DpiWorker(settings.web_user)) \
            if self.labeller is not None else None
        self.rdns = _optional("reverse dns", ReverseNames) \
            if self.labeller is not None and settings.reverse_dns else None
        # flow sides' per-second bytes -> processes, through the owners attribution charged
        self.owners = SecondOwners() if self.attributor is not None else None
        self.apps = SecondApps()    # ... and -> apps, by the labels the written rollups carry
        self.alerts = None          # opened once the writer has its connection: see run()
        from storage.writer import WriterThread
        self.writer = WriterThread(settings.db, settings, source=("live", ",".join(n for n, _ in interfaces)),
                                   after_write=self._after_write, version=VERSION)
        self._failed = set()

    def _stop(self, signum, frame):
        if not self.stopping:
            self.stopping = True
            self.capture.stop_asked.set()     # seen within one poll period (capture/live.py POLL_MS)

    def run(self):
        stamp_lines()                 # from here on the output is the service's log
        signals.on_stop(self._stop)
        self.writer.start()
        # The writer's first open checks the file with a plain open()/close(), and closing any
        # descriptor of a file drops every POSIX lock this process holds on it, including those
        # of other SQLite connections: another process could then delete the live WAL under
        # them. So no other connection may be open in this process before the writer's.
        self.writer.ready.wait(READY_TIMEOUT)
        self.alerts = _optional("alerts", lambda: AlertRunner(self.settings, self.settings.db))
        web_proc, where = self._start_web()
        names = ", ".join(name for name, _ in self.interfaces)
        bpf = f" (filter: {self.settings.bpf})" if self.settings.bpf else ""
        _say(f"capturing on {names} ({self.backend}){bpf} into {shown(self.settings.db)}; {where}")
        clean = self._collect()
        self.capture.join(10)
        if self.capture.is_alive():     # it sent Done: nothing of it is left to lose
            self.capture.kill()
            self.capture.join(5)
        if self.attributor is not None:
            self._guard("attribution", self.attributor.close)
        if self.rdns is not None:
            self._guard("reverse dns", self.rdns.close)
            self._guard("reverse dns", self._reverse_names)
        if self.dpi is not None:
            self._guard("tshark labelling", lambda: self._late_names(wait=2.0))
            self._guard("tshark labelling", self.dpi.close)
            self._guard("tshark labelling", self._late_names)
        status = EXIT_OK if clean else EXIT_FAILED
        written = f"written to {shown(self.settings.db)}"
        try:
            self.writer.close(frames=self.frames)
        except Exception as e:      # the database went away (disk full, deleted...)
            _say(f"writing {shown(self.settings.db)} failed: {one_line(e)}", err=True)
            status, written = EXIT_FAILED, "NOT all written"
        if self.alerts is not None:
            self._guard("alerts", self.alerts.close)
        if web_proc is not None:
            web_proc.terminate()
            web_proc.join(5)
        _say(f"stopped: {self.frames} frames counted, {self.drops} dropped by the kernel; {written}")
        if not clean:
            _say("the capture process ended unexpectedly; counts up to then were written", err=True)
        return status

    def _start_web(self):
        if not self.web:
            return None, "no dashboard (--no-web)"
        from collector.web_process import spawn       # here: --no-web never loads Flask
        try:
            proc = spawn(self.settings)
        except Exception as e:
            return None, f"no dashboard: {one_line(e)}"
        if proc.exitcode is not None:         # it could not start, and said why on stderr
            return None, "no dashboard (it could not start: see above)"
        return proc, f"dashboard at http://{_url_host(self.settings.host)}:{self.settings.port}/"

    def _collect(self):
        """Handles capture messages until it is done; False if it vanished without Done."""
        next_tick = time.monotonic() + 1.0
        while True:
            try:
                message = self.inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                message = ()                # time for the attribution tick
            if message is None:
                return False
            match message:
                case NewFlows(flows):
                    self._guard("attribution", partial(self._observe, flows))
                case Rollups(rollups):
                    attributed = self._attribute(self._sampled(rollups))
                    self._guard("attribution", partial(self._learn_owners, attributed))
                    named = self._name(attributed)
                    self._guard("app seconds", partial(self._learn_apps, named))
                    self.writer.submit(named)
                case Seconds(points):
                    self.writer.submit_seconds(points)
                case Activity(hosts, flows):
                    processes = self._guard("attribution", partial(self.owners.charge, flows)) \
                        if self.owners is not None else None
                    apps = self._guard("app seconds", partial(self.apps.charge, flows))
                    self.writer.submit_activity(hosts, processes or [], apps or [])
                case Drops(minute, by_iface):
                    self.drops += sum(by_iface.values())
                    self.writer.submit_drops(minute, by_iface)
                case Notice(line):
                    _say(line, err=True)
                case Done(frames, _):
                    self.frames = frames
                    return True
            if time.monotonic() >= next_tick:
                self._guard("attribution", lambda: self.attributor and self.attributor.tick())
                self._guard("tshark labelling", self._late_names)
                self._guard("reverse dns", self._reverse_names)
                next_tick = time.monotonic() + 1.0

    def _observe(self, flows):
        if self.attributor is not None:
            self.attributor.observe(flows)

    def _learn_owners(self, rollups):
        if self.owners is not None:
            points = self.owners.learn(rollups)
            if points:
                self.writer.submit_activity([], points)

    def _learn_apps(self, rollups):
        points = self.apps.learn(rollups)
        if points:
            self.writer.submit_activity([], [], points)

    def _after_write(self, rollups):
        """On the writer thread, once `rollups` are committed: alert rules see them."""
        if self.alerts is not None:
            self._guard("alerts", lambda: self.alerts.after_write(rollups))

    def _attribute(self, rollups):
        if self.attributor is None:
            return rollups
        attributed = self._guard("attribution", lambda: self.attributor.attribute(rollups))
        return rollups if attributed is None else attributed

    def _sampled(self, rollups):
        """Rollups without their samples, which go to the tshark worker instead of the writer."""
        if self.dpi is not None:
            offered = self._guard("tshark labelling", lambda: self.dpi.offer_from(rollups))
            if offered is not None:
                return offered
        return without_samples(rollups)

    def _late_names(self, wait=0.0):
        if self.dpi is None:
            return
        labelled = self.dpi.take(wait)
        if labelled:
            self.writer.submit_relabels(self.labeller.late_labels(labelled))
        if self.dpi.dropped:
            self.writer.submit([unnamed_rollup(time.time(), self.dpi.dropped)])
            self.dpi.dropped = {}

    def _name(self, rollups):
        if self.labeller is None:
            return rollups
        named = self._guard("names", lambda: self.labeller.label(rollups))
        if self.rdns is not None:
            self._guard("reverse dns", lambda: self.rdns.offer(self.labeller.unnamed_addresses(rollups, time.time())))
        return rollups if named is None else named

    def _reverse_names(self):
        if self.rdns is None:
            return
        now = time.time()
        names = {address: (name, "rdns", now) for address, name in self.rdns.take()}
        if names:
            for address, (name, source, ts) in names.items():
                self.labeller.name_map.learn(address, name, source, ts)
            self.writer.submit([names_rollup(now, names)])

    def _guard(self, feature, call):
        """A failing feature costs its own output, never the counts: say so once and go on."""
        try:
            return call()
        except Exception as e:
            if feature not in self._failed:
                self._failed.add(feature)
                _say(f"{feature} failed ({one_line(e)}); counting goes on without it", err=True)
            return None


def _optional(feature, start):
    """A feature that cannot start is off, said in one line; counting goes on without it."""
    try:
        return start()
    except Exception as e:
        _say(f"{feature} off: {one_line(e)}", err=True)
        return None


def _url_host(host):
    return f"[{host}]" if ":" in host else host
