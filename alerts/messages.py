"""How alerts read: one line per alert for the log, the alerts table, an import's report, and
the webhook's JSON body."""
from datetime import datetime, timezone


def amount(value, unit):
    if value is None:
        return "no data"
    if unit == "bytes":
        return _scaled(value, ("B", "kB", "MB", "GB", "TB"))
    if unit == "bit/s":
        return _scaled(value, ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"))
    if unit == "share":
        return f"{value * 100:.3g} %"
    return f"{value:g}"


def _scaled(value, names):
    for i, name in enumerate(names):
        if abs(value) < 1000 or i == len(names) - 1:
            return f"{value:.0f} {name}" if i == 0 else f"{value:.4g} {name}"
        value /= 1000


def span(seconds):
    for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {name}"
    return f"{seconds} s"


def when(ts):
    if ts is None:
        return ""
    # a capture's clamped timestamps reach 9999-12-31; datetime stops there
    ts = min(max(ts, 0), 253_402_300_799)
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


_DIRECTION = {"tx": " sent", "rx": " received", "both": ""}


def describe(rule, subject, value):
    """The one line an alert is opened with."""
    who = subject if rule.scope == "all" else f"{rule.scope} {subject}"
    unit, limit = rule.unit, amount(rule.threshold, rule.unit)
    if rule.kind == "bytes":
        return (f"{who}: {amount(value, unit)}{_DIRECTION[rule.direction]} in {span(rule.window)} "
                f"(limit {limit}, rule {rule.name})")
    if rule.kind == "rate":
        return (f"{who}: {amount(value, unit)}{_DIRECTION[rule.direction]} on average over {span(rule.window)} "
                f"(limit {limit}, rule {rule.name})")
    if rule.kind == "drops":
        return f"capture on {who}: {amount(value, unit)} of frames dropped over {span(rule.window)} (limit {limit})"
    if rule.kind == "coverage":
        return (f"only {amount(value, unit)} of this host's traffic attributed to processes over "
                f"{span(rule.window)} (limit {limit})")
    if rule.kind == "new_device":
        return f"new device {subject} seen (rule {rule.name})"
    if rule.kind == "storage":
        return f"database {subject} cannot be written: {value}; counts held in memory"
    return f"{who}: {value}"



def payload(action, rule, subject, time, value, alert_id, message, opened=None):
    """The webhook body of one event."""
    return {
        "event": action, "time": when(time), "id": alert_id, "rule": rule.name, "kind": rule.kind,
        "scope": rule.scope, "subject": subject, "value": value if not isinstance(value, str) else None,
        "threshold": rule.threshold, "unit": rule.unit, "window_seconds": rule.window, "message": message,
        "opened": when(opened if opened is not None else time), "closed": when(time) if action == "closed" else None,
        "severity": rule.severity,
    }


_CONTROLS = {c: " " for c in [*range(32), *range(127, 160), 0x2028, 0x2029]}
_SUBJECT_MAX = 200


def flat(text):
    """Text from the wire or a process table as one line: no control characters, no line breaks
    (in a mail header or a `key: value` body line they could forge another)."""
    return str(text).translate(_CONTROLS)


def mail_text(p):
    """(subject, body) of the e-mail for one event, from its webhook payload `p`."""
    severity, rule, subject = p.get("severity", "warning"), flat(p["rule"]), flat(p["subject"])
    if p["event"] == "opened":
        headline = flat(p["message"])
    else:
        headline = f"over: {rule} {subject}"
    title = f"[NetTally {severity}] {headline}"
    if len(title) > _SUBJECT_MAX:
        title = title[:_SUBJECT_MAX - 3] + "..."
    lines = [f"severity: {severity}", f"event: {p['event']}", f"rule: {rule} ({p['kind']}, scope {p['scope']})",
             f"subject: {subject}"]
    if p["unit"]:
        value = "value now" if p["event"] == "closed" else "value"
        lines += [f"{value}: {amount(p['value'], p['unit'])}", f"limit: {amount(p['threshold'], p['unit'])}",
                  f"window: {span(p['window_seconds'])}"]
    lines.append(f"opened: {p['opened']}")
    if p["closed"]:
        lines.append(f"closed: {p['closed']}")
    if p["id"] is not None:
        lines.append(f"alert: {p['id']}")
    lines += [f"message: {flat(p['message'])}", "", "-- ", "NetTally (docs/ALERTS.md)"]
    return title, "\n".join(lines) + "\n"
