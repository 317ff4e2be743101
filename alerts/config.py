"""Alert rules from TOML, with built-in defaults, and the validation every rule goes through
(the TOML file's and the API's alike).

    [[rule]]
    name = "host-bytes-hour"
    kind = "bytes"            # bytes | rate | new_device | drops | coverage | rtt | retransmits
    scope = "host"            # host | process | interface | all
    threshold = "100 MB"      # or a plain number: bytes, bit/s ("50 Mbit/s"), a share ("1%", 0.01)
    window = "1h"             # or seconds
    direction = "both"        # tx | rx | both
    match = ["10.0.0.0/8"]    # optional: only these hosts (CIDR) / processes / interfaces
    hysteresis = 0.1          # closes when back under threshold * (1 - hysteresis)
    enabled = true
    severity = "warning"      # info | warning | critical; default: the kind's (SEVERITY_OF_KIND)

A rule in the file replaces the built-in rule of the same name (`enabled = false` switches one
off); rules saved through the API (storage table alert_rules) replace both. `effective_rules`
says which is in force and where it comes from (the runner and /api/alerts/rules share it);
`RuleError` names the field at fault, so the API's 400 can name it too.
"""
import json
import math
import re
import tomllib

from alerts.rules import DIRECTIONS, KINDS, SCOPES_OF, SEVERITIES, Rule

PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")
# A rule without `severity` takes its kind's: a busy host is worth a look (warning), a new device
# or thin attribution is news (info), counts that cannot be stored are lost counts (critical).
SEVERITY_OF_KIND = {
    "bytes": "warning",
    "rate": "warning",
    "new_device": "info",
    "drops": "warning",
    "coverage": "info",
    "storage": "critical",
    "rtt": "warning",
    "retransmits": "warning",
}
DEFAULT_RULES = (
    Rule("host-bytes-hour", "bytes", "host", threshold=100_000_000, window=3600, severity="warning"),
    Rule("process-bytes-hour", "bytes", "process", threshold=100_000_000, window=3600, severity="warning"),
    Rule("new-device", "new_device", "host", window=3600, match=PRIVATE_NETWORKS, severity="info"),
    Rule("capture-drops", "drops", "all", threshold=0.01, window=300, severity="warning"),
    Rule("attribution-coverage", "coverage", "all", threshold=0.5, window=900, severity="info"),
)
MAX_WINDOW = 48 * 3600            # minute rollups are kept 48 h by default: longer windows cannot be measured
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
RULE_NAME = _NAME                 # the API checks names in addresses with it
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_SPAN_UNIT = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z%/]*)\s*$")
_BYTE_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
               "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
_RATE_UNITS = {"": 1, "bps": 1, "bit/s": 1, "kbps": 10 ** 3, "kbit/s": 10 ** 3, "mbps": 10 ** 6,
               "mbit/s": 10 ** 6, "gbps": 10 ** 9, "gbit/s": 10 ** 9}
_FIELDS = ("name", "kind", "scope", "threshold", "window", "direction", "match", "hysteresis", "enabled",
           "severity")


class RuleError(ValueError):
    """A rule that does not validate: one line, and `field`, the rule field at fault (None: the
    rule as a whole), so the API can name it (400 {"error": ..., "parameter": field})."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


def validate_rule(data) -> Rule:
    """A Rule from a dict (TOML table, API JSON body), or ValueError with one line saying what
    is wrong."""
    if not isinstance(data, dict):
        raise RuleError(None, "a rule is an object with at least 'name' and 'kind'")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise RuleError(unknown[0], f"unknown rule field {unknown[0]!r} (fields: {', '.join(_FIELDS)})")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleError("name", "rule name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    kind = data.get("kind")
    if kind not in KINDS:
        raise RuleError("kind", f"rule {name}: kind must be one of {', '.join(KINDS)}")
    scope = data.get("scope", SCOPES_OF[kind][0])
    if scope not in SCOPES_OF[kind]:
        raise RuleError("scope", f"rule {name}: a {kind} rule's scope is one of {', '.join(SCOPES_OF[kind])}")
    window = _window(name, data.get("window", 3600))
    if window >= 60 and window % 60:
        raise RuleError("window", f"rule {name}: window must be whole minutes (counts are kept per minute)")
    if window < 60 and not (kind == "rate" and scope in ("interface", "all")):
        raise RuleError("window", f"rule {name}: window under 60 s only for rate rules on interfaces or all")
    threshold = 0.0
    if kind != "new_device":
        if "threshold" not in data:
            raise RuleError("threshold", f"rule {name}: threshold is required")
        threshold = _threshold(name, kind, data["threshold"])
    direction = data.get("direction", "both")
    if direction not in DIRECTIONS:
        raise RuleError("direction", f"rule {name}: direction is one of {', '.join(DIRECTIONS)}")
    match = data.get("match", ())
    if isinstance(match, str):
        match = (match,)
    if not isinstance(match, (list, tuple)) or len(match) > 256 or not all(isinstance(m, str) and m for m in match):
        raise RuleError("match", f"rule {name}: match is a list of up to 256 non-empty strings")
    hysteresis = data.get("hysteresis", 0.1)
    if isinstance(hysteresis, bool) or not isinstance(hysteresis, (int, float)) or not 0 <= hysteresis < 1:
        raise RuleError("hysteresis", f"rule {name}: hysteresis is a number from 0 to below 1")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError("enabled", f"rule {name}: enabled is true or false")
    severity = data.get("severity", SEVERITY_OF_KIND.get(kind, "warning"))
    if not isinstance(severity, str) or severity.lower() not in SEVERITIES:
        raise RuleError("severity", f"rule {name}: severity is one of {', '.join(SEVERITIES)}")
    try:
        return Rule(name, kind, scope, float(threshold), window, direction, tuple(match), float(hysteresis), enabled,
                    severity.lower())
    except ValueError as e:      # a host match that is no address or network
        raise RuleError("match", f"rule {name}: match: {e}") from None


def _window(name, value):
    if isinstance(value, bool):
        raise RuleError("window", f"rule {name}: window is seconds or a span like 90s, 5m, 1h")
    if isinstance(value, (int, float)):
        seconds = value
    else:
        m = _SPAN.match(str(value))
        if not m:
            raise RuleError("window", f"rule {name}: window is seconds or a span like 90s, 5m, 1h")
        seconds = float(m.group(1)) * _SPAN_UNIT[m.group(2)]
    if not 1 <= seconds <= MAX_WINDOW or seconds != int(seconds):     # range first: int(inf) raises
        raise RuleError("window", f"rule {name}: window must be whole seconds from 1 to {MAX_WINDOW}")
    return int(seconds)


def _threshold(name, kind, value):
    if isinstance(value, bool):
        raise RuleError("threshold", f"rule {name}: threshold must be a number")
    if isinstance(value, (int, float)):
        try:
            number, unit = float(value), ""
        except OverflowError:            # an integer beyond any float (JSON allows it)
            number, unit = math.inf, ""
    else:
        m = _AMOUNT.match(str(value))
        if not m:
            raise RuleError("threshold", f"rule {name}: unreadable threshold {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(number):        # JSON's 1e999 and NaN, or a string of 400 digits
        raise RuleError("threshold", f"rule {name}: threshold must be a finite number")
    if kind == "rtt":                    # TCP round trip: "200 ms", "0.2 s", or a number of ms
        if unit not in ("", "ms", "s"):
            raise RuleError("threshold", f"rule {name}: an RTT is in ms ('200 ms') or s ('0.2 s')")
        number *= 1000 if unit == "s" else 1
        if number <= 0:
            raise RuleError("threshold", f"rule {name}: threshold must be above 0")
        return number
    if kind in ("drops", "coverage", "retransmits"):
        if unit == "%":
            number /= 100
        elif unit:
            raise RuleError("threshold", f"rule {name}: a share is a fraction (0.05) or a percentage ('5%')")
        if not 0 < number <= 1:
            raise RuleError("threshold", f"rule {name}: share must be above 0 and at most 1 (100%)")
        return number
    units = _BYTE_UNITS if kind == "bytes" else _RATE_UNITS
    if unit not in units:
        raise RuleError("threshold", f"rule {name}: unknown unit {unit!r} (use {', '.join(u for u in units if u)})")
    number *= units[unit]
    if not math.isfinite(number):
        raise RuleError("threshold", f"rule {name}: threshold must be a finite number")
    if number <= 0:
        raise RuleError("threshold", f"rule {name}: threshold must be above 0")
    return number


def rule_to_dict(rule):
    """The rule as the API shows it and alert_rules stores it (validate_rule reads it back)."""
    out = {name: getattr(rule, name) for name in _FIELDS}
    out["match"] = list(rule.match)
    out["threshold"] = float(rule.threshold)      # built-in rules say 100_000_000; shown as the others
    return out


def file_rules(path):
    """The rules of the TOML file at `path` (settings.alerts_config) by name, {} for no path.
    ValueError (one line naming the file and the rule) on a file that cannot be read or a bad rule."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            loaded = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"alert rules {path}: {e}") from None
    extra = sorted(set(loaded) - {"rule"})
    if extra:
        raise ValueError(f"alert rules {path}: unknown key {extra[0]!r} (rules are [[rule]] tables)")
    rules = {}
    for table in loaded.get("rule", []):
        try:
            rule = validate_rule(table)
        except ValueError as e:
            raise ValueError(f"alert rules {path}: {e}") from None
        rules[rule.name] = rule
    return rules


BUILT_IN, FILE, API = "built-in", "file", "api"


def effective_rules(from_file, overrides, skipped=None):
    """[(rule, source, replaces)] in force: the built-in rules, replaced by name by `from_file`
    (file_rules), replaced by `overrides` (rule dicts or JSON saved through the API). `source` is
    where the rule in force comes from, `replaces` the source of the one it hides (None).
    A stored override that no longer validates is left out and its one-line reason passed to
    `skipped` (a callable), so one bad row cannot switch every rule off."""
    rules = {r.name: (r, BUILT_IN, None) for r in DEFAULT_RULES}
    for name, rule in from_file.items():
        rules[name] = (rule, FILE, rules[name][1] if name in rules else None)
    for data in overrides:
        try:
            rule = validate_rule(json.loads(data) if isinstance(data, str) else data)
        except ValueError as e:
            if skipped is None:
                raise
            skipped(f"rule saved through the API left out: {e}")
            continue
        rules[rule.name] = (rule, API, rules[rule.name][1] if rule.name in rules else None)
    return list(rules.values())


def load_rules(settings, overrides=()):
    """Built-in rules, replaced by name by the TOML file (settings.alerts_config), replaced by
    `overrides` (rule dicts saved through the API). ValueError (one line) on a bad file or rule."""
    return [rule for rule, _, _ in effective_rules(file_rules(getattr(settings, "alerts_config", "")), overrides)]
