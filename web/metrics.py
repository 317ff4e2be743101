"""/metrics (Prometheus, through prometheus_client), /health and /api/agents: what monitoring
systems and administrators ask of the collectors themselves, served from the database alone like
every other route, under the same access rules (web/auth.py: the token off loopback).

Labels are bounded: interface, direction, reason, severity, agent. Never an address, a flow or a
process: their number has no bound, and a Prometheus series per host would grow without one
(docs/API.md, "Metrics, health and agents"). Counters count from the web process's start (config
METRICS_SINCE): retention pruning old buckets never makes one go down, and a restart is a
counter reset, which `rate()` in PromQL expects.
"""
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from storage.status import counters, interface_drops, writer_status
from web.context import db, now
from web.params import Params

bp = Blueprint("metrics", __name__)


class _FromDatabase:
    """A prometheus_client collector that reads the database once per scrape."""

    def __init__(self, con, since):
        self.con, self.since = con, since

    def collect(self):
        c = counters(self.con, self.since)
        nbytes = CounterMetricFamily("nettally_interface_bytes", "Bytes of every frame on the interface, by direction "
                                     "(out: sent by this host)", labels=["interface", "direction"])
        frames = CounterMetricFamily("nettally_interface_frames", "Frames on the interface, by direction",
                                     labels=["interface", "direction"])
        for r in c["interfaces"]:
            for metric, total, out in ((nbytes, r["bytes"], r["out_bytes"]), (frames, r["frames"], r["out_frames"])):
                metric.add_metric([r["iface"], "in"], total - out)
                metric.add_metric([r["iface"], "out"], out)
        drops = CounterMetricFamily("nettally_capture_drops", "Frames the kernel dropped before NetTally read them",
                                    labels=["interface"])
        for iface, n in sorted(c["drops"].items()):
            drops.add_metric([iface], n)
        undecodable = CounterMetricFamily("nettally_undecodable_frames", "Frames with broken headers, by reason",
                                          labels=["interface", "reason"])
        for r in c["undecodable"]:
            undecodable.add_metric([r["iface"], r["reason"]], r["frames"])
        attribution = CounterMetricFamily("nettally_attribution_bytes", "Bytes of this host's traffic charged to a "
                                          "process (reason attributed) or not, by reason", labels=["reason"])
        for reason, (n, _) in sorted(c["attribution"].items()):
            attribution.add_metric([reason], n)
        alerts = GaugeMetricFamily("nettally_open_alerts", "Alerts open now, by severity", labels=["severity"])
        for severity in ("info", "warning", "critical"):
            alerts.add_metric([severity], c["open_alerts"].get(severity, 0))
        yield from (nbytes, frames, drops, undecodable, attribution, alerts, *_writer_metrics(c["writers"]))


def _writer_metrics(writers):
    rows = GaugeMetricFamily("nettally_writer_last_write_rows", "Rows the writer's last write took from memory "
                             "(after a stall: the backlog it held)", labels=["agent"])
    took = GaugeMetricFamily("nettally_writer_last_write_seconds", "How long the writer's last write took",
                             labels=["agent"])
    last = GaugeMetricFamily("nettally_writer_last_write_timestamp_seconds", "When the writer last wrote",
                             labels=["agent"])
    dropped = CounterMetricFamily("nettally_writer_dropped_bytes", "Bytes given up at the backlog bound",
                                  labels=["agent"])
    for w in writers:
        rows.add_metric([w["agent"]], w["rows"])
        took.add_metric([w["agent"]], w["write_ms"] / 1000.0)
        last.add_metric([w["agent"]], w["written"])
        dropped.add_metric([w["agent"]], w["dropped_bytes"])
    return rows, took, last, dropped


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FromDatabase(db(), current_app.config["METRICS_SINCE"]))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _writers(t, con, drops=None):
    """Each writer's status; with `drops` ({interface: frames}), the capture drops on its interfaces."""
    out = []
    for w in writer_status(con):
        interfaces = [i for i in w["interfaces"].split(",") if i]
        row = {"agent": w["agent"], "version": w["version"], "interfaces": interfaces,
               "started": w["started"], "last_write": w["written"],
               "last_write_age_s": round(max(0.0, t - w["written"]), 3), "last_write_ms": round(w["write_ms"], 3),
               "last_write_rows": w["rows"], "writes": w["writes"], "dropped_bytes": w["dropped_bytes"]}
        if drops is not None:
            row["capture_drops_24h"] = sum(drops.get(i, 0) for i in interfaces)
        out.append(row)
    return out


@bp.get("/api/agents")
def agents():
    """Every collector writing into this database: its version, what it captures on, when it
    started, its last write (time, age, duration, rows taken from memory: the backlog after a
    stall), counts given up at the backlog bound, and the frames its capture dropped in the last
    24 hours. It takes no parameter: any is refused (400), as on every /api route."""
    t = now()
    Params(request.args, t).finish()
    con = db()
    return jsonify({"agents": _writers(t, con, interface_drops(con, t - 86400))})


@bp.get("/health")
def health():
    """Liveness (this answer), the database's schema version, and each writer's last write and
    its age: a collector that stopped writing (a stall, a crash) shows as a growing age."""
    con = db()
    writers = [{k: w[k] for k in ("agent", "last_write", "last_write_age_s", "last_write_rows", "writes")}
               for w in _writers(now(), con)]
    return jsonify({"status": "ok", "schema": con.execute("PRAGMA user_version").fetchone()[0], "writers": writers})
