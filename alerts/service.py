"""Alert rules at work: live beside the collector (AlertRunner) and over an imported capture on
the capture's own timeline (evaluate_import).

Live, the collector calls `after_write(rollups)` after each flush; the runner's own thread
measures every rule over the stored rollups (one SQL sum per rule, at most every `interval`
seconds, and at least that often without traffic so windows slide and alerts close), checks the
writer's health (disk full, read-only) and delivers events: the alerts table, the log, the
webhook. Nothing here can block the caller: after_write only queues.
"""
import logging
import queue
import sqlite3
import threading
import time

from alerts import messages
from alerts.config import effective_rules, file_rules, load_rules
from alerts.rules import SEVERITIES, Event, Rule, SlidingWindow, Tracker, measure
from storage import agents, alert_log
from storage.db import DatabaseError, connect
from storage.tiers import MINUTE, floor

log = logging.getLogger("nettally.alerts")
STORAGE_RULE = Rule("database-writable", "storage", "all", window=0, severity="critical")


class Delivery:
    """Events to the alerts table, the log, the webhook and e-mail. A table write that fails
    because the database cannot be written now waits in memory, in order, and is retried with the
    next event. The webhook and e-mail senders only queue (alerts/webhook.py, alerts/mail.py)."""

    def __init__(self, con, origin, webhook=None, logged=True, mail=None):
        self.con, self.origin, self.webhook, self.logged, self.mail = con, origin, webhook, logged, mail
        self.pending = []             # (storage function, args) not yet written
        self.open = {}                # (rule, subject) -> [opened Event, message, peak]
        self.done = []                # [opened Event, message, peak, closed Event], for reports

    def deliver(self, events):
        for e in events:
            key = (e.rule.name, e.subject)
            if e.action == "opened":
                message = messages.describe(e.rule, e.subject, e.value)
                self.open[key] = [e, message, e.value]
                if self.logged:
                    log.warning("%s alert: %s", e.rule.severity, message)
                value = e.value if isinstance(e.value, (int, float)) else 0.0
                written = self._write(alert_log.open_alert, e.rule.name, e.rule.kind, e.rule.scope, e.subject,
                                      self.origin, e.time, value, e.rule.threshold, e.rule.unit, e.rule.window,
                                      message, e.rule.severity)
            elif e.action == "peak":
                if key in self.open:
                    self.open[key][2] = e.value
                self._write(alert_log.update_peak, e.rule.name, e.subject, self.origin, e.value)
                continue
            else:
                entry = self.open.pop(key, None) or [e, "", e.value]
                self.done.append(entry + [e])
                message = entry[1]
                if self.logged:
                    log.warning("%s alert over: %s %s at %s (now %s)", e.rule.severity, e.rule.name, e.subject,
                                messages.when(e.time), messages.amount(e.value, e.rule.unit))
                written = self._write(alert_log.close_alert, e.rule.name, e.subject, self.origin, e.time)
            senders = [s for s in (self.webhook, self.mail) if s]
            if senders:
                opened = self.open.get(key, self.done[-1] if self.done else [e])[0].time
                alert_id = written if isinstance(written, int) else None
                event_id = f"{self.origin}-{e.rule.name}-{e.subject}-{opened:.0f}-{e.action}"
                body = messages.payload(e.action, e.rule, e.subject, e.time, e.value, alert_id, message, opened)
                for sender in senders:
                    sender.send(event_id, body)

    def _write(self, fn, *args):
        """Runs the pending writes and this one; returns this one's result, None if it waits."""
        self.pending.append((fn, args))
        return self.flush()

    def flush(self):
        """Writes what waits, in order; returns the result of the last write, None if any waits."""
        result = None
        while self.pending and self.con is not None:
            fn, args = self.pending[0]
            try:
                result = fn(self.con, *args)
            except sqlite3.OperationalError as e:
                log.warning("alerts: cannot write the alerts table now (%s); %d changes held", e, len(self.pending))
                return None
            self.pending.pop(0)
        return result


class AlertRunner:
    """Live alerting beside the collector: AlertRunner(settings, db_path); after_write(rollups)
    after each flush; close() at the end. `clock` (epoch seconds) is injectable; with
    start=False no thread runs and `step(now)` evaluates synchronously (tests)."""

    def __init__(self, settings, db_path, clock=time.time, interval=5.0, start=True):
        self.settings, self.db_path, self.clock, self.interval = settings, db_path, clock, interval
        self.con = None
        webhook = None
        if getattr(settings, "webhook_url", ""):
            from alerts.webhook import WebhookSender
            webhook = WebhookSender(settings.webhook_url)
        self.webhook = webhook
        self.mail, self._mail_problem = None, None
        from alerts.mail import MailConfig, MailSender    # here: smtplib and email cost an import 20 ms
        try:
            mail_config = MailConfig.from_settings(settings)
        except ValueError as e:       # alerts go on without e-mail; the log and /api/alerts/delivery say why
            log.error("alerts: e-mail off: %s", e)
            mail_config, self._mail_problem = None, str(e)
        if mail_config is not None:
            self.mail = MailSender(mail_config)
        self.delivery = Delivery(None, "live", webhook, mail=self.mail)
        self._started = time.time()
        self._status_saved = None     # channel -> the counts last written to alert_delivery
        from storage.writer import health
        self.health = health(db_path)
        self.trackers = {}
        self._file_rules = None       # the rules file, read once (changes to it apply at restart)
        self._overrides = None
        self._candidates = {}         # address -> first bucket it had traffic in, since the last evaluation
        self._known = set()
        self._storage_open = False
        if self._connected():
            self._load_rules(clock())
        self._queue = queue.Queue(maxsize=10000)
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._run, name="alert-runner", daemon=True)
            self._thread.start()

    # ---- the collector's side -----------------------------------------------------------------

    def after_write(self, rollups):
        try:
            self._queue.put_nowait(rollups)
        except queue.Full:          # evaluation reads the database; only new-device hints are lost
            pass

    def sync(self, timeout=30.0):
        """Waits until everything handed over so far has been evaluated (one evaluation now)."""
        if self._thread is None:
            self.step(self.clock())
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
        else:
            self.step(self.clock())
        if self.webhook:
            self.webhook.close()
        if self.mail:
            self.mail.close()
        self._save_delivery_status()
        if self.con is not None:
            self.con.close()

    # ---- the runner's side --------------------------------------------------------------------

    def _run(self):
        last = 0.0
        while True:
            try:
                item = self._queue.get(timeout=self.interval)
            except queue.Empty:
                item = ()
            waiters, stop = [], False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    self._take_hosts(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if waiters or stop or time.monotonic() - last >= self.interval:
                last = time.monotonic()
                try:
                    self.evaluate(self.clock())
                except Exception as e:        # keep running: the next round may work
                    log.error("alerts: evaluation failed: %s", e)
            for w in waiters:
                w.set()
            if stop:
                return

    def step(self, now):
        with agents.only(getattr(self.settings, "agent", None)):   # this collector's counts, not the fleet's
            self._step(now)

    def _step(self, now):
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item and not isinstance(item, threading.Event):
                self._take_hosts(item)
        self.evaluate(now)

    def _take_hosts(self, rollups):
        if any(t.rule.kind == "new_device" for t in self.trackers.values()):
            for r in rollups:
                for ip in r.hosts:
                    if ip not in self._known and r.bucket < self._candidates.get(ip, float("inf")):
                        self._candidates[ip] = r.bucket

    def _load_rules(self, now):
        """Rules saved through the API (web/alerts_api.py) apply at the next evaluation: one
        small read of alert_rules per evaluation; trackers are rebuilt only when it changed."""
        overrides = alert_log.rule_overrides(self.con)
        if overrides == self._overrides:
            return []
        self._overrides = overrides
        if self._file_rules is None:
            try:
                self._file_rules = file_rules(getattr(self.settings, "alerts_config", ""))
            except ValueError as e:
                log.error("alerts: %s; using the built-in rules and those saved through the API", e)
                self._file_rules = {}
        rules = [r for r, _, _ in effective_rules(self._file_rules, overrides,
                                                  skipped=lambda why: log.error("alerts: %s", why)) if r.enabled]
        events, open_peaks, severity_of = [], {}, {}
        for a in alert_log.open_alerts(self.con, "live"):
            open_peaks.setdefault(a["rule"], {})[a["subject"]] = a["peak"]
            severity_of[a["rule"]] = a["severity"] or "warning"
        self._storage_open = STORAGE_RULE.name in open_peaks
        open_peaks.pop(STORAGE_RULE.name, None)
        old, self.trackers = self.trackers, {}
        for rule in rules:
            previous = old.pop(rule.name, None)
            stored = open_peaks.pop(rule.name, {})
            self.trackers[rule.name] = Tracker(rule, previous.open if previous else stored)
        for name, tracker in old.items():       # rules removed or switched off
            open_peaks.pop(name, None)
            events += tracker.close_all(now)
        for name, peaks in open_peaks.items():  # open in the table, rule gone since
            events += Tracker(Rule(name, "bytes", severity=severity_of[name]), peaks).close_all(now)
        return events

    def _connected(self):
        """Opens the database if it is not open yet (it may be unreadable at start: a read-only
        file system); the storage alert works without it."""
        if self.con is None:
            try:
                self.con = connect(self.db_path)
            except DatabaseError as e:
                log.warning("alerts: cannot open %s now (%s); trying again at the next evaluation", self.db_path, e)
                return False
            self.delivery.con = self.con
            self._known = {a["subject"] for a in alert_log.alert_list(self.con, limit=-1) if a["kind"] == "new_device"}
        return True

    def evaluate(self, now):
        events = self._load_rules(now) if self._connected() else []
        self._forget_acknowledged()
        for tracker in self.trackers.values() if self.con is not None else ():
            rule = tracker.rule
            if rule.kind == "new_device":
                events += tracker.check(now, self._new_devices(rule, now))
                continue
            if rule.window < MINUTE:       # sub-minute rate rules: the 1-second interface points
                start, end, seconds = -(-(now - rule.window) // 1), int(now) + 1, True
            else:
                start, end, seconds = -(-(now - rule.window) // MINUTE) * MINUTE, floor(now, "minute") + MINUTE, False
            totals = alert_log.window_totals(self.con, rule.kind, rule.scope, start, end, seconds)
            events += tracker.check(now, {s: measure(rule, v, now - start) for s, v in totals.items()})
        events += self._storage_events(now)
        self.delivery.flush()
        self.delivery.deliver(events)
        self._save_delivery_status()
        return events

    def _save_delivery_status(self):
        """The e-mail and webhook counts to alert_delivery (read by /api/alerts/delivery), when
        they changed since last written. A database that cannot be written now gets them later."""
        if self.con is None:
            return
        channels = {}
        if self.mail:
            channels["email"] = self.mail.status()
        elif self._mail_problem:
            channels["email"] = {"target": f"{self.settings.smtp_host}:{self.settings.smtp_port}",
                                 **dict.fromkeys(alert_log.DELIVERY_COUNTS, 0),
                                 "last_error": f"e-mail off: {self._mail_problem}", "last_error_at": self._started}
        if self.webhook:
            channels["webhook"] = self.webhook.status()
        try:
            if self._status_saved is None:    # this run's channels only: none left from a run before
                alert_log.clear_delivery_status(self.con)
                self._status_saved = {}
            for channel, status in channels.items():
                if self._status_saved.get(channel) != status:
                    alert_log.save_delivery_status(self.con, channel, status["target"], status, status["last_error"],
                                                   status["last_error_at"], self._started, time.time())
                    self._status_saved[channel] = status
        except sqlite3.OperationalError as e:
            log.warning("alerts: cannot write the delivery counts now (%s)", e)

    def _forget_acknowledged(self):
        """A new-device alert closes when acknowledged (through the API, in the web process):
        its subject leaves the tracker, so it is not closed a second time (log, webhook) when
        the rule changes. Reads the open alerts only while such a tracker holds any."""
        instant = [t for t in self.trackers.values() if t.rule.instant and t.open]
        if not instant or self.con is None or self.delivery.pending:     # pending: not in the table yet
            return
        still = {(a["rule"], a["subject"]) for a in alert_log.open_alerts(self.con, "live")}
        for tracker in instant:
            for subject in [s for s in tracker.open if (tracker.rule.name, s) not in still]:
                del tracker.open[subject]

    def _new_devices(self, rule, now):
        candidates = {ip: bucket for ip, bucket in self._candidates.items() if rule.matches(ip)}
        self._candidates.clear()
        if not candidates:
            return {}
        earliest = alert_log.earliest_traffic(self.con)
        # new = no traffic before the bucket it first showed up in (not before now: the
        # evaluation may come after that minute ended, when its own row would count as "before")
        seen = {ip for ip, bucket in candidates.items() if alert_log.seen_before(self.con, [ip], bucket)}
        self._known.update(candidates)
        if earliest is None or now - earliest < rule.window:
            return {}                 # still learning what is normal here
        first_live = alert_log.first_live_start(self.con)
        if first_live is not None and now - first_live < getattr(self.settings, "new_device_learning", 0):
            return {}                 # the first day of live capture learns, whatever was imported before
        return {ip: 1.0 for ip in candidates if ip not in seen}

    def _storage_events(self, now):
        h, events = self.health, []
        for since, until, reason in h.take_finished():
            if not self._storage_open:
                events.append(Event("opened", STORAGE_RULE, h.path, since, reason))
            events.append(Event("closed", STORAGE_RULE, h.path, until, None))
            self._storage_open = False
        if h.stalled_since is not None and not self._storage_open:
            events.append(Event("opened", STORAGE_RULE, h.path, h.stalled_since, h.reason))
            self._storage_open = True
        elif h.stalled_since is None and self._storage_open:     # open before a restart, writing now
            events.append(Event("closed", STORAGE_RULE, h.path, now, None))
            self._storage_open = False
        return events


def evaluate_import(settings, con, since, until, rules=None, subjects=None):
    """Runs the rules over stored minute data in [since, until) (an imported capture's span), on
    the capture's own timeline: each rule is measured at the end of every minute. Alerts are
    stored with origin 'import'; one still open when the capture ends is closed at `until`.
    Returns report lines, oldest first: which subject crossed which limit, when, and when it fell
    back. `con` may be a path. Rules with windows under a minute are skipped (no 1-second data).
    subjects: {scope: the subjects that may be judged} (alerts/scope.py: what the import
    touched); a scope not in it is not limited."""
    if since is None or until is None:
        return []
    if isinstance(con, str):
        con = connect(con)
    if rules is None:
        rules = load_rules(settings, alert_log.rule_overrides(con))
    delivery = Delivery(con, "import", logged=False)
    subjects = subjects or {}
    for rule in rules:
        if not rule.enabled or rule.window < MINUTE:
            continue
        allowed = subjects.get(rule.scope)
        if allowed is not None and not allowed:
            continue                  # nothing of this scope was imported
        if rule.kind == "new_device":
            delivery.deliver(_import_new_devices(con, rule, since, until, allowed))
        else:
            delivery.deliver(_import_slide(con, rule, since, until, allowed))
    lines = []
    for opened, message, peak, closed in sorted(delivery.done + [v + [None] for v in delivery.open.values()],
                                                key=lambda d: (d[0].time, d[0].rule.name, d[0].subject)):
        line = f"{messages.when(opened.time)}  {opened.rule.severity}  {message}"
        if closed is not None and closed.value is None and closed.time >= until:
            line += f"; still over when the capture ended (peak {messages.amount(peak, opened.rule.unit)})"
        elif closed is not None:
            line += f"; back under at {messages.when(closed.time)} (peak {messages.amount(peak, opened.rule.unit)})"
        lines.append(AlertLine(line, opened.rule.name, opened.rule.severity))
    return lines


class AlertLine(str):
    """One import alert's report line, which knows its rule and severity (for the import's summary)."""

    def __new__(cls, text, rule, severity="warning"):
        line = super().__new__(cls, text)
        line.rule, line.severity = rule, severity
        return line


def import_summary(lines, first=5):
    """What an import prints about its alerts: counts by rule and by severity (most urgent
    first), then the first few lines; the full list is in `run.py export alerts` and on the
    dashboard."""
    if not lines:
        return []
    counts, severities = {}, {}
    for line in lines:
        counts[line.rule] = counts.get(line.rule, 0) + 1
        severities[line.severity] = severities.get(line.severity, 0) + 1
    by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    by_severity = ", ".join(f"{severities[s]} {s}" for s in reversed(SEVERITIES) if s in severities)
    out = [f"alerts: {len(lines)} ({by_rule}); {by_severity}"] + [f"  {line}" for line in lines[:first]]
    if len(lines) > first:
        out.append(f"  ... {len(lines) - first} more: run.py export alerts, or the dashboard's alerts page")
    return out


def _import_slide(con, rule, since, until, allowed=None):
    window, tracker, events = SlidingWindow(rule.window, MINUTE, 2), Tracker(rule), []
    rows = alert_log.samples(con, rule.kind, rule.scope, floor(since, "minute") - rule.window, until)
    if allowed is not None:
        rows = (row for row in rows if row[1] in allowed)
    row = next(rows, None)
    minute, end, last_span = floor(since, "minute"), int(until), None
    while minute < end:
        if not window.totals and not tracker.open and row is not None and row[0] > minute:
            minute = row[0]           # nothing in the window, nothing open: skip to the next traffic
        while row is not None and row[0] <= minute:
            window.add(row[0], row[1], row[2:])
            row = next(rows, None)
        now = min(minute + MINUTE, until)
        window.advance(now)
        span = window.span(now)
        # A subject's measure moves only with its totals, or with the span (rates divide by it):
        # an unchanged subject that is not open was judged before on the same number. Measuring
        # only the moved and the open ones keeps a day of 10,000 hosts from costing 1,440 x 10,000.
        if span == last_span:
            subjects = sorted(s for s in window.changed | tracker.open.keys() if s in window.totals)
        else:
            subjects = window.totals
        totals = window.totals
        events += tracker.check(now, {s: measure(rule, totals[s], span) for s in subjects})
        window.changed.clear()
        last_span = span
        minute += MINUTE
        if row is None and not window.totals and not tracker.open:
            break
    return events + tracker.close_all(until)


def _import_new_devices(con, rule, since, until, allowed=None):
    earliest = alert_log.earliest_traffic(con)
    tracker, events = Tracker(rule), []
    for ip, first in alert_log.first_minutes(con, since, until):
        if (allowed is None or ip in allowed) and rule.matches(ip) and first - earliest >= rule.window and not alert_log.seen_before(con, [ip], first):
            events += tracker.check(first, {ip: 1.0})
    return events

