"""The JSON API and CSV exports (docs/API.md). Each endpoint checks its parameters, makes one
storage call and renders it; the CSV variants take the same parameters as their JSON ones.
Alerts have their own blueprint (web/alerts_api.py)."""
import json
import time

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context

from foresight.horizons import HORIZONS, TooLittleHistory
from names.label import add_vendors
from storage import agents
from storage.apps import APP_SORTS, app_usage
from storage.export import render_csv_chunks
from storage.forecasts import parse_subject, stored as stored_forecast
from storage.flows import FLOW_SORTS, FlowFilter, flow_search, iter_flows
from storage.health import HEALTH_BY, SORTS as HEALTH_SORTS, health as tcp_health
from storage.history import HISTORY_BY, traffic_history
from storage.hosts import HOST_SORTS, host_detail, host_usage
from storage.interfaces import current_usage as current_usage_of, interface_usage
from storage.processes import PROCESS_GROUPS, PROCESS_SORTS, process_usage
from storage.span import anchored_policy, data_span
from storage.traffic_types import traffic_by_class
from storage.volumes import PERIODS, VOLUME_BY, interface_percentiles, volumes as volumes_of
from web.context import db, now, policy as live_policy
from web.params import ParamError, Params

bp = Blueprint("api", __name__, url_prefix="/api")

RANGES = {"1h": (3600, 60), "24h": (86400, 300), "7d": (7 * 86400, 3600), "30d": (30 * 86400, 14400)}
PAGE_MAX = 1000
CSV_MAX = 1_000_000
SERIES_MAX = 50
HOST_STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)


def _params(anchored=False):
    """The request's parameters; `anchored`: spans ago (24h) and the default end of a range count
    from the end of the data instead of now when no live capture feeds the database."""
    t = now()
    g.pop("nettally.policy", None)
    g.pop("nettally.live", None)
    if not anchored:
        return Params(request.args, t)
    span = data_span(db(), t, live_policy().seconds)
    g.setdefault("nettally.live", span["live"])
    if span["live"] or span["last"] is None:
        return Params(request.args, t)
    # the tiers are chosen as they were at the data's end: an hour of a capture imported from
    # years ago is read from the minutes still kept, not from its day
    g.setdefault("nettally.policy", anchored_policy(db(), live_policy(), t, span["last"]))
    return Params(request.args, t, span["last"])


def policy():
    """The retention policy the tiers are chosen by for this request (see _params)."""
    return g.get("nettally.policy") or live_policy()


def _default_sort():
    """Lists sort by the rate now while a live capture feeds the database, by bytes otherwise
    (an import has no now). Known after _params(anchored=True)."""
    return "now" if g.get("nettally.live") else "bytes"


def _page(p, csv):
    if csv:
        return p.integer("limit", None, 1, CSV_MAX), p.integer("offset", 0, 0, CSV_MAX)
    return p.integer("limit", 100, 1, PAGE_MAX), p.integer("offset", 0, 0, 10 ** 9)


def csv_response(table, rows, fields=None):
    """A CSV download. `rows` may be an iterator: the text is then streamed as the rows come,
    with this request's connection held until the last one."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now()))
    return Response(stream_with_context(render_csv_chunks(table, rows, fields)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="nettally-{table}-{stamp}.csv"'})


@bp.get("/span")
def span():
    """What the data covers and whether a live capture feeds it (docs/API.md)."""
    p = _params()
    p.finish()
    return jsonify(data_span(db(), p.now, live_policy().seconds))


@bp.get("/current_usage")
def current_usage():
    p = _params()
    p.finish()
    return jsonify(current_usage_of(db(), p.now, policy()))


@bp.get("/historical")
def historical():
    """A preset range ending now (or at the data's end), or any since/until: buckets of the
    preset's step, or of the smallest step giving at most 300 of them."""
    p = _params(anchored=True)
    span_name = p.choice("range", tuple(RANGES), None)
    by = p.choice("by", HISTORY_BY, "interface")
    limit = p.integer("limit", 10, 1, SERIES_MAX)
    custom = "since" in request.args or "until" in request.args
    if span_name is not None and custom:
        raise ParamError("range", "give either range or since/until, not both")
    if custom:
        since, until = p.time_range()
    else:
        span_name = span_name or "1h"
        since = until = None
    p.finish()
    if span_name is not None:
        span, step = RANGES[span_name]
        # the end of the current bucket, or of the bucket holding the data's last second
        until = (-(-int(p.anchor) // step) if p.anchored else int(p.now) // step + 1) * step
        since = until - span
    else:
        if not since:           # since=0, everything kept: from the data's first bucket
            first = data_span(db(), p.now, live_policy().seconds)["first"]
            since = min(first if first is not None else until - 3600, until - 60)
        since, until = int(since), int(-(-until // 1))
        most = 300              # buckets; each preset has fewer
        step = next((s for s in HOST_STEPS if (until - since) / s <= most), -(-(until - since) // (most * 86400)) * 86400)
        since, until = since // step * step, -(-until // step) * step        # whole buckets
    history = traffic_history(db(), by, since, until, step, p.now, limit, policy=policy())
    return jsonify({"range": span_name, "by": by, "since": since, "until": until, **history})


def _hosts(p, csv):
    since, until = p.time_range()
    sort, descending = p.sort(HOST_SORTS, _default_sort())
    limit, offset = _page(p, csv)
    q = p.search()
    p.finish()
    usage = host_usage(db(), since, until, p.now, sort, descending, limit, offset, policy=policy(), q=q)
    add_vendors(usage["rows"], current_app.extensions["nettally.vendors"])
    return {"since": since, "until": until, "q": q, "sort": sort, "order": "desc" if descending else "asc",
            "limit": limit, "offset": offset, **usage}


@bp.get("/hosts")
def hosts():
    return jsonify(_hosts(_params(True), csv=False))


@bp.get("/hosts.csv")
def hosts_csv():
    return csv_response("hosts", _hosts(_params(True), csv=True)["rows"])


@bp.get("/hosts/<ip>")
def host(ip):
    p = _params(anchored=True)
    ip = p.ip("ip", value=ip)
    since, until = p.time_range()
    p.finish()
    step = next((s for s in HOST_STEPS if s * 120 >= until - since), HOST_STEPS[-1])   # at most 120 buckets
    detail = host_detail(db(), ip, since, until, p.now, step, policy())
    if detail is None:
        response = jsonify(error=f"no traffic for {ip} in this time range")
        response.status_code = 404
        return response
    add_vendors([detail], current_app.extensions["nettally.vendors"])
    return jsonify(since=since, until=until, **detail)


def _processes(p, csv):
    since, until = p.time_range()
    sort, descending = p.sort(PROCESS_SORTS, _default_sort())
    group = p.choice("group", PROCESS_GROUPS, "instance")
    limit, offset = _page(p, csv)
    q = p.search()
    p.finish()
    usage = process_usage(db(), since, until, p.now, sort, descending, limit, offset, group, policy=policy(), q=q)
    return {"since": since, "until": until, "group": group, "q": q, "sort": sort,
            "order": "desc" if descending else "asc", "limit": limit, "offset": offset, **usage}


@bp.get("/processes")
def processes():
    return jsonify(_processes(_params(True), csv=False))


@bp.get("/processes.csv")
def processes_csv():
    return csv_response("processes", _processes(_params(True), csv=True)["rows"])


def _flow_query(p, csv):
    since, until = p.time_range()
    flt = FlowFilter(since=since, until=until, host=p.ip("host"), port=p.integer("port", None, 0, 65535),
                     proto=p.proto("proto"), process=p.text("process"), iface=p.text("iface"),
                     app=p.text("app"), traffic_class=p.text("class"), name=p.text("name"), q=p.search())
    sort, descending = p.sort(FLOW_SORTS, "last_seen")
    limit, offset = _page(p, csv)
    p.finish()
    return flt, sort, descending, limit, offset


@bp.get("/flows")
def flows():
    flt, sort, descending, limit, offset = _flow_query(_params(True), csv=False)
    total, rows = flow_search(db(), flt, sort, descending, limit, offset)
    return jsonify({"since": flt.since, "until": flt.until, "q": flt.q, "limit": limit, "offset": offset,
                    "total": total, "rows": rows})


@bp.get("/flows.csv")
def flows_csv():
    flt, sort, descending, limit, offset = _flow_query(_params(True), csv=True)
    return csv_response("flows", iter_flows(db(), flt, sort, descending, limit, offset))


@bp.get("/interfaces")
def interfaces():
    p = _params(anchored=True)
    since, until = p.time_range()
    p.finish()
    return jsonify(since=since, until=until, **interface_usage(db(), since, until, p.now, policy()))


@bp.get("/traffic_types")
def traffic_types():
    p = _params(anchored=True)
    since, until = p.time_range(default_since="1h")
    top = p.integer("limit", 8, 1, 50)
    p.finish()
    return jsonify(since=since, until=until, **traffic_by_class(db(), since, until, p.now, top, policy=policy()))



@bp.get("/apps")
def apps():
    p = _params(anchored=True)
    since, until = p.time_range(default_since="1h")
    by = p.choice("by", ("all", "app", "service", "class"), "all")
    host, process = p.ip("host"), p.text("process")
    sort, descending = p.sort(APP_SORTS, "bytes")
    limit = p.integer("limit", 100, 1, PAGE_MAX)
    p.finish()
    usage = app_usage(db(), since, until, p.now, by, host, process, limit, sort, descending, policy=policy())
    return jsonify(since=since, until=until, by=by, host=host, process=process, sort=sort,
                   order="desc" if descending else "asc", **usage)


@bp.get("/forecast")
def forecast():
    """A subject's stored forecast (web/forecasts.py makes them): 404 when none is stored."""
    p = _params()
    subject = p.text("subject") or "all"
    try:
        parse_subject(subject)
    except ValueError as e:
        raise ParamError("subject", str(e)) from None
    horizon = p.choice("horizon", tuple(HORIZONS), "24h")
    p.finish()
    changes = current_app.extensions["nettally.changes"]
    if not changes.writable:        # forecasts are stored through it (web/forecasts.py): none here
        return jsonify(error=f"no forecasts: they are stored by the dashboard, and {changes.problem}"), 404
    found = stored_forecast(db(), subject, horizon, agents.current() or "")
    if found is None:
        why = ("forecasts are made for every agent's counts together, not one agent's" if agents.current()
               else "no forecast of this subject is stored: the busiest hosts, every interface and class "
                    "are forecast once an hour")
        return jsonify(error=why), 404
    answer = {"subject": subject, "horizon": horizon, "made": found["made"], "history_hours": found["history_hours"],
              "needed_hours": found["needed_hours"], "forecast": json.loads(found["points"])}
    if found["needed_hours"]:
        answer["message"] = str(TooLittleHistory(found["history_hours"], found["needed_hours"]))
    return jsonify(answer)


@bp.get("/health")
def health():
    """TCP health (docs/HEALTH.md) per host, process or app: RTT p50/p95, retransmission rate..."""
    p = _params(anchored=True)
    since, until = p.time_range(default_since="1h")
    by = p.choice("by", tuple(HEALTH_BY), "host")
    sort = p.choice("sort", tuple(HEALTH_SORTS), "retransmit_rate")
    min_segments = p.integer("min_segments", 0, 0, 10 ** 12)
    limit = p.integer("limit", 100, 1, PAGE_MAX)
    p.finish()
    answer = tcp_health(db(), since, until, p.now, by, sort, limit, min_segments, policy=policy())
    return jsonify(since=since, until=until, sort=sort, min_segments=min_segments, **answer)


@bp.get("/volumes")
def volumes():
    p = _params(anchored=True)
    by = p.choice("by", VOLUME_BY, "iface")
    period = p.choice("period", PERIODS, "day")
    since, until = p.time_range(default_since="30d" if period == "day" else "365d")
    limit = p.integer("limit", 10, 1, PAGE_MAX)
    p.finish()
    since = 0 if since is None else since
    answer = {"by": by, "period": period, "since": since, "until": until, "limit": limit,
              **volumes_of(db(), by, period, since, until, limit)}
    if by == "iface":
        answer["p95"] = interface_percentiles(db(), period, since, until, policy(), p.now, answer["rows"])
    return jsonify(answer)
