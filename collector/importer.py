"""`run.py import`: capture files -> flow table -> a writer process -> SQLite, then the alert rules
on the capture's own timeline and the hour and day tiers of what was imported.

    this process: file frames (capture/offline.py, maybe with a reader process) -> FlowTable
      -> _ImportTally (the summary line) -> Labeller (names/label.py: services, classes, host names)
      -> ImportWriter (collector/import_writer.py, the other core)
"""
import shlex
import sqlite3
import sys
import time
from functools import partial

from alerts.config import load_rules
from alerts import messages
from alerts.scope import MAX_SUBJECTS, ImportScope
from alerts.service import evaluate_import, import_summary
from capture.capfile import CaptureError
from capture.flows import FlowTable
from capture.offline import import_file
from collector.import_ledger import Admission, abandoned, refusal
from collector.import_writer import ImportWriter
from collector.dpi import DpiWorker
from names.label import Labeller, unnamed_rollup
from records import IFACE_FIELDS
from runtime.exits import EXIT_DAMAGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from runtime import signals
from runtime.text import one_line
from storage import agents, imports
from storage.db import DatabaseError, connect, shown
from storage.tiers import build_pending
from storage.store import RollupStore

LATE_NAMES_WAIT = 30.0      # seconds the end of an import waits at most for the tshark batch in flight
SMALL_IMPORT = 1.0          # an import quicker than this waits for it (up to LATE_NAMES_WAIT)

_IP_FRAMES, _NON_IP_FRAMES, _UNDECODABLE_FRAMES, _BYTES = (
    IFACE_FIELDS.index(name) for name in ("ip_frames", "non_ip_frames", "undecodable_frames", "bytes"))


def run_import(settings, files, force=False):
    """`run.py import FILE...`: every file through its own flow table into the database, each in one
    transaction (stored exactly once: collector/import_ledger.py), then the alert rules and the
    coarser tiers over what was imported. Returns the exit status."""
    try:
        load_rules(settings)                 # a bad rules or names file: one line, before any work
        labeller = Labeller.from_settings(settings) if settings.names else None
        store = RollupStore(connect(settings.db), settings.agent)
        for line in abandoned(store.con):    # imports an earlier run could not finish
            print(f"run.py import: {line}", file=sys.stderr)
    except (DatabaseError, ValueError) as e:
        raise UsageError(str(e)) from None
    stop_asked = []                 # Ctrl-C or SIGTERM: the import ends after the batch at hand
    before = signals.on_stop(lambda signum, frame: stop_asked.append(signum))
    dpi = DpiWorker(settings.web_user) if labeller is not None else None
    started = time.monotonic()
    try:
        status = _import_files(settings, files, store, labeller, dpi, stop_asked, force)
        if dpi is not None:
            _late_names(store, labeller, dpi, wait=0.0 if stop_asked else _late_wait(time.monotonic() - started))
    finally:
        signals.restore(before)
        if dpi is not None:
            dpi.close()
    return status


def _import_files(settings, files, store, labeller, dpi, stop_asked, force):
    status, scope, stored = EXIT_OK, ImportScope(), _Stored()
    for path in files:
        try:
            admission = Admission(store.con, path, force)
        except OSError as e:
            print(f"run.py import: {path}: cannot open: {e.strerror or e}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
            continue
        except DatabaseError as e:
            raise UsageError(str(e)) from None
        if admission.refused(start_hash=False):       # a small file stored before: said at once
            admission.end(imports.REFUSED)
            print(f"run.py import: {admission.refused()}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
            continue
        outcome = _import_one(settings, path, admission, store, labeller, dpi, stop_asked, scope, stored)
        if outcome is None:
            status = EXIT_INTERRUPTED
            break
        status = max(status, outcome)
    _judge(settings, store.con, scope)
    build_pending(store.con)                 # hour and day tiers of what was imported
    if stored.span is not None:
        print(stored.line(settings, scope))
    return status


class _Stored:
    """What the files of one import stored, for its last line: where to look at it."""

    def __init__(self):
        self.span = None             # (first bucket, end of the last)
        self.bytes = self.flows = 0

    def add(self, span, nbytes, flows):
        self.span = span if self.span is None else (min(self.span[0], span[0]), max(self.span[1], span[1]))
        self.bytes += nbytes
        self.flows += flows

    def line(self, settings, scope):
        since, until = (_utc(t) for t in self.span)
        hosts = f"more than {MAX_SUBJECTS:,} hosts" if scope.too_many_hosts else _count(len(scope.hosts), "host")
        return (f"stored: {since} .. {until}, {messages.amount(self.bytes, 'bytes')}, {hosts}, "
                f"{_count(self.flows, 'flow')}; to see them: run.py serve --db {shlex.quote(shown(settings.db))}, then "
                f"http://127.0.0.1:{settings.port}/?since={since}&until={until}")


def _count(n, noun):
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _utc(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(t, _LAST_ISO_SECOND)))


_LAST_ISO_SECOND = 253402300799         # 9999-12-31T23:59:59Z: a clamped timestamp's bucket ends past it


def _judge(settings, con, scope):
    """The alert rules over what the import stored, on the capture's own timeline: its hosts and
    interfaces, in its own span (timestamps far from the rest left out, and said)."""
    span = scope.span()
    if span is None:
        return
    since, until, outliers = span
    if outliers:
        print(f"alert rules: {outliers} frames left out, their timestamps more than a day away from the "
              f"capture's {messages.when(since)} .. {messages.when(until)}")
    with agents.only(settings.agent):        # this agent's counts: others writing the database alert on theirs
        events = evaluate_import(settings, con, since, until, subjects=scope.subjects())
    for line in import_summary(events):
        print(line)


def _import_one(settings, path, admission, store, labeller, dpi, stop_asked, scope, stored):
    """One file in one transaction; returns its exit status, None when the import was stopped."""
    table = FlowTable(idle_timeout=settings.idle_timeout, active_timeout=settings.active_timeout,
                      max_flows=settings.max_flows, read_payload=settings.names, tcp_health=settings.tcp_health)
    begun = time.time()
    writer = ImportWriter(settings.db, settings.agent)       # SQLite on the other core, the file in one transaction
    tally = _ImportTally(partial(_labelled, labeller, dpi, writer.submit), ImportScope(), settings.max_names)
    result, finish = None, None
    try:
        try:
            result = import_file(path, tally, table, stop=lambda: bool(stop_asked or admission.refused()))
            if not result.interrupted:
                finish = (admission.id, admission.sha256(), admission.force,
                          ("file", path, begun, result.frames, result.clamped, result.damage))
        finally:
            writer.close(finish)             # commits the whole file, or nothing of it
    except (DatabaseError, sqlite3.Error) as e:
        admission.end(imports.FAILED)
        raise UsageError(one_line(e)) from None
    except CaptureError as e:
        store.end_source(store.begin_source("file", path, begun), 0, damage=str(e))
        admission.end(imports.FAILED)
        print(f"run.py import: {e}", file=sys.stderr)
        return EXIT_USAGE
    refused = admission.refused() or (refusal(path, writer.refused) if writer.refused else None)
    if refused:
        admission.end(imports.REFUSED)
        print(f"run.py import: {refused}", file=sys.stderr)
        return EXIT_USAGE
    if result.interrupted:
        admission.end(imports.INTERRUPTED, result.frames)
        print(f"{path}: interrupted after {result.frames} frames; nothing of it was stored "
              "(an import is stored whole or not at all): import it again")
        return None
    if writer.span:
        spans = [writer.span] + ([store.span] if store.span else [])
        store.span = (min(s[0] for s in spans), max(s[1] for s in spans))
        stored.add(writer.span, tally.bytes, writer.flows)
    scope.merge(tally.scope)                 # stored: its hosts and hours are the rules' to judge
    line = f"{path}: {result.frames} frames ({tally.summary()})"
    if result.clamped:
        line += f", {result.clamped} wire lengths clamped to 262144"
    if result.bad_times:
        line += f", {result.bad_times} timestamps outside 1970-9999 clamped"
    if result.damage:
        line += f"; stopped early: {result.damage}"
    print(line)
    return EXIT_DAMAGED if result.damage else EXIT_OK


def _labelled(labeller, dpi, submit, rollups):
    if labeller is not None:
        rollups = labeller.label(dpi.offer_from(rollups))
    submit(rollups)


def _late_wait(elapsed):
    """How long the end of an import waits for Wireshark's batch in flight: a tenth of what the
    import took (its labels must not cost more: docs/NAMES.md), but a small capture, imported in
    under a second, gets its flows named: its batch is waited for (tshark's own timeout bounds it)."""
    return LATE_NAMES_WAIT if elapsed < SMALL_IMPORT else min(LATE_NAMES_WAIT, elapsed / 10)


def _late_names(store, labeller, dpi, wait):
    """What Wireshark named during the import, the batch in flight included (bounded by the
    labeller's own timeout), goes into the flow records; what it could not reach is counted."""
    labelled = dpi.take(wait=wait)
    dpi.close()
    if labelled:
        store.relabel(labeller.late_labels(labelled))
    if dpi.dropped and store.span:
        store.apply([unnamed_rollup(store.span[1] - 60, dpi.dropped)])


class _ImportTally:
    """A rollup sink that passes rollups on and keeps the figures for the import's summary line."""

    def __init__(self, sink, scope, max_names=100_000):
        self.sink, self.scope, self.max_names = sink, scope, max_names
        self.ip = self.non_ip = self.undecodable = self.bytes = 0
        self.reasons = {}
        self.names = set()            # addresses named on the wire (bounded by the flow table per bucket)
        self.unreadable = {}          # reason -> flows whose payload could not be read

    def __call__(self, rollups):
        for rollup in rollups:
            for c in rollup.interfaces.values():
                self.ip += c[_IP_FRAMES]
                self.non_ip += c[_NON_IP_FRAMES]
                self.undecodable += c[_UNDECODABLE_FRAMES]
                self.bytes += c[_BYTES]
            for (_, reason), c in rollup.undecodable.items():
                self.reasons[reason] = self.reasons.get(reason, 0) + c[0]
            if len(self.names) < self.max_names:
                self.names.update(rollup.names)
            for reason, n in rollup.unnamed.items():
                self.unreadable[reason] = self.unreadable.get(reason, 0) + n
        self.scope.add(rollups)
        self.sink(rollups)

    def summary(self):
        text = f"{self.ip} IP, {self.non_ip} non-IP, {self.undecodable} undecodable"
        if self.reasons:
            text += ": " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.reasons.items()))
        if self.names:
            text += f"; {'at least ' if len(self.names) >= self.max_names else ''}{len(self.names)} hosts named"
        if self.unreadable:
            text += "; payload unreadable: " + ", ".join(f"{r} {n}" for r, n in sorted(self.unreadable.items()))
        return text
