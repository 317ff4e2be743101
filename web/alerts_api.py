"""Alerts in the API (docs/API.md "Alerts"): the list and its CSV, acknowledging, and the rules
in force with changes to them. Reads go through the read-only pool like every endpoint; the
changes through web/changes.py, the web side's only write path. Changing requests pass the
cross-site checks of web/auth.py first."""
import json

from flask import Blueprint, current_app, jsonify, request

from alerts.config import RULE_NAME, RuleError, effective_rules, rule_to_dict, validate_rule
from alerts.rules import SEVERITIES
from storage import alert_log
from web.api import PAGE_MAX, csv_response
from web.context import db, now
from web.params import ParamError, Params

bp = Blueprint("alerts_api", __name__, url_prefix="/api")

STATES = ("open", "closed", "all")
MAX_BY = 64
CSV_MAX = 1_000_000


def changes():
    return current_app.extensions["nettally.changes"]


def _list_params(p, csv):
    state = p.choice("state", STATES, "all")
    since, until = p.time_range(default_since="7d")
    limit = p.integer("limit", None if csv else 100, 1, CSV_MAX if csv else PAGE_MAX)
    severity = _severities(p)
    p.finish()
    return (None if state == "all" else state), since, until, limit, severity


def _severities(p):
    """severity=critical or a comma-separated list (warning,critical); None: every severity."""
    value = p.text("severity")
    if value is None:
        return None
    chosen = [s.strip() for s in value.split(",")]
    if not all(s in SEVERITIES for s in chosen):
        raise ParamError("severity", f"one or more of {', '.join(SEVERITIES)}, separated by commas")
    return tuple(dict.fromkeys(chosen))


@bp.get("/alerts")
def alert_list():
    state, since, until, limit, severity = _list_params(Params(request.args, now()), csv=False)
    rows = alert_log.alert_list(db(), state=state, since=since, until=until, limit=limit, severity=severity)
    return jsonify(available=True, writable=changes().writable, since=since, until=until, rows=rows)


@bp.get("/alerts.csv")
def alert_csv():
    state, since, until, limit, severity = _list_params(Params(request.args, now()), csv=True)
    rows = alert_log.alert_rows_for_export(db(), since, until, state, -1 if limit is None else limit, severity)
    return csv_response("alerts", rows, alert_log.ALERT_FIELDS)


@bp.get("/alerts/delivery")
def delivery():
    """How the collector's e-mail and webhook deliveries fare (counts since it started)."""
    Params(request.args, now()).finish()
    return jsonify(channels=alert_log.delivery_status(db()))


# ---- acknowledging ------------------------------------------------------------------------------

@bp.post("/alerts/<alert_id>/acknowledge")
def acknowledge(alert_id):
    Params(request.args, now()).finish()
    if not (alert_id.isascii() and alert_id.isdigit() and len(alert_id) <= 18):
        raise ParamError("id", "must be an alert number (a positive integer)")
    body = _json_body(allow_empty=True) or {}
    for key in body:
        if key != "by":
            raise ParamError(key, "unknown field (an acknowledgement takes only 'by')")
    by = body.get("by", f"web {request.remote_addr or ''}".strip())
    if not isinstance(by, str) or not 1 <= len(by) <= MAX_BY or any(ord(c) < 32 or ord(c) == 127 for c in by):
        raise ParamError("by", f"1-{MAX_BY} characters of text, no control characters")
    alert = changes().acknowledge(int(alert_id), now(), by)
    if alert is None:
        return _error(404, f"no alert {int(alert_id)}")
    return jsonify(alert=alert)


# ---- rules --------------------------------------------------------------------------------------

def _rules():
    """{name: entry} of the rules in force (ordered: built-in, file, API), and the problems met."""
    from_file, path, file_problem = current_app.extensions["nettally.rules_file"]
    problems = [file_problem] if file_problem else []
    entries = effective_rules(from_file, alert_log.rule_overrides(db()), skipped=problems.append)
    return {rule.name: {"rule": rule_to_dict(rule), "unit": rule.unit, "source": source, "replaces": replaces}
            for rule, source, replaces in entries}, path, problems


def _name(name):
    if not RULE_NAME.match(name):
        raise ParamError("name", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


@bp.get("/alerts/rules")
def rules():
    Params(request.args, now()).finish()
    entries, path, problems = _rules()
    return jsonify(writable=changes().writable, rules_file=path or None, problems=problems,
                   rules=list(entries.values()))


@bp.get("/alerts/rules/<name>")
def rule(name):
    Params(request.args, now()).finish()
    name = _name(name)
    entry = _rules()[0].get(name)
    return jsonify(entry) if entry else _error(404, f"no rule {name}")


@bp.put("/alerts/rules/<name>")
def put_rule(name):
    """The whole rule (fields left out take their defaults, as in the rules file)."""
    Params(request.args, now()).finish()
    return _save(_name(name), _json_body())


@bp.patch("/alerts/rules/<name>")
def patch_rule(name):
    """Some fields over the rule in force, e.g. {"enabled": false} or {"threshold": "1 GB"}."""
    Params(request.args, now()).finish()
    name = _name(name)
    body = _json_body()
    entry = _rules()[0].get(name)
    if entry is None:
        return _error(404, f"no rule {name} (PUT makes a new one)")
    return _save(name, {**entry["rule"], **body})


@bp.delete("/alerts/rules/<name>")
def delete_rule(name):
    """Drops the rule saved through the API: the file's or built-in one of that name applies again."""
    Params(request.args, now()).finish()
    name = _name(name)
    if not changes().forget_rule(name):
        return _error(404, f"no rule {name} was saved through the API")
    return jsonify(deleted=name, rule=_rules()[0].get(name))


def _save(name, data):
    if data.get("name", name) != name:
        raise ParamError("name", "differs from the rule name in the address")
    try:
        rule = validate_rule({**data, "name": name})
    except RuleError as e:
        raise ParamError(e.field or "body", str(e)) from None
    changes().save_rule(rule_to_dict(rule), now())
    return jsonify(_rules()[0][name])


# ---- helpers ------------------------------------------------------------------------------------

def _json_body(allow_empty=False):
    """The request's JSON object; web/auth.py has already refused bodies of any other type."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return None
        raise ParamError("body", "a JSON object is required")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ParamError("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise ParamError("body", "must be a JSON object")
    return data


def _error(status, message):
    response = jsonify(error=message)
    response.status_code = status
    return response
