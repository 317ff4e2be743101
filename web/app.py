"""The Flask app factory: configuration enters here once, from a Settings object (or a test's
dict), and every blueprint reads the database through the pool made here."""
import sqlite3
import threading
import time

from flask import Flask, g, jsonify, request

from alerts.config import file_rules
from names.vendors import Vendors
from settings import Settings
from storage import agents
from storage.tiers import RetentionPolicy
from web import auth
from web.alerts_api import bp as alerts_bp
from web.api import bp as api_bp
from web.context import release_connection
from web.metrics import bp as metrics_bp
from web.pages import StaticFiles, bp as pages_bp, not_found_page
from web.changes import AlertChanges, ChangeRefused
from web.params import ParamError, Params
from web.pool import ConnectionPool, PoolTimeout
from web.stream import HEARTBEAT, LiveFeed, bp as stream_bp

API_THREADS = 8              # server threads beyond the live streams' (web/server.py): streams never take all
MAX_BODY = 64 * 1024         # request bodies (alert rule changes) are small
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_UNSET = object()


def create_app(settings=None, test_config=None):
    """settings: a settings.Settings (db, host, token_file, alerts_config, web_sse_slots,
    read_only). test_config: overrides such as DB, CLOCK (callable giving epoch seconds), TOKEN
    (None: open), POOL_SIZE, STREAM_LIFETIME, MAX_STREAMS, READ_ONLY. Opens the database now:
    read-only for every request, plus (unless read_only) the one read-write connection of alert
    changes (web/changes.py); raises storage.db.DatabaseError if it cannot be read. The alert rules file is read now too (before any privilege drop)."""
    settings = settings or Settings()
    app = Flask(__name__, static_folder=None)
    app.config.update(DB=settings.db, BIND_HOST=settings.host, CLOCK=time.time, POOL_SIZE=server_threads(settings) + 1,
                      POLICY=RetentionPolicy.from_settings(settings), ALERTS_CONFIG=settings.alerts_config,
                      STREAM_LIFETIME=600.0, STREAM_HEARTBEAT=HEARTBEAT, MAX_STREAMS=settings.web_sse_slots,
                      TOKEN=_UNSET, MAX_CONTENT_LENGTH=MAX_BODY, CHANGE_WAIT=5.0, READ_ONLY=settings.read_only)
    app.config.update(test_config or {})
    # /metrics counts from here on (web/metrics.py): the start of the minute this app was made
    app.config.setdefault("METRICS_SINCE", int(app.config["CLOCK"]() // 60 * 60))
    app.json.sort_keys = False

    token = app.config["TOKEN"]
    if token is _UNSET:
        token = None if auth.is_loopback(settings.host) else auth.load_or_create_token(auth.token_path(settings))
    app.config["TOKEN"] = token
    pool = ConnectionPool(app.config["DB"], app.config["POOL_SIZE"])
    app.extensions["nettally.pool"] = pool
    app.extensions["nettally.feed"] = LiveFeed(pool.acquire(), app.config["CLOCK"])
    app.extensions["nettally.changes"] = AlertChanges(app.config["DB"], app.config["CHANGE_WAIT"],
                                                      read_only=app.config["READ_ONLY"])
    app.extensions["nettally.rules_file"] = _rules_file(app.config["ALERTS_CONFIG"])
    app.extensions["nettally.stream_slots"] = threading.BoundedSemaphore(app.config["MAX_STREAMS"])
    app.extensions["nettally.vendors"] = Vendors.load()       # read before any privilege drop
    auth.install(app, token, app.config["BIND_HOST"], read_only=app.config["READ_ONLY"])

    app.extensions["nettally.static"] = StaticFiles()
    app.register_blueprint(api_bp)
    app.register_blueprint(alerts_bp)
    app.register_blueprint(stream_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(metrics_bp)
    _install_errors(app)
    _install_agent_scope(app)
    app.after_request(_security_headers)
    app.teardown_appcontext(release_connection)
    return app


def _install_agent_scope(app):
    """agent=NAME on any request: what it reads is that collector's counts (storage/agents.py)."""
    @app.before_request
    def enter():
        g.agent_scope = agents.enter(Params(request.args, 0).agent())

    @app.teardown_request
    def leave(_exc):
        token = g.pop("agent_scope", None)
        if token is not None:
            agents.leave(token)


def server_threads(settings):
    """Worker threads of the server: one per live stream slot, and API_THREADS for everything else."""
    return settings.web_sse_slots + API_THREADS


SERVER_THREADS = server_threads(Settings())    # with the default settings (bench/api.py)


def _rules_file(path):
    """(rules by name, path, problem): the alert rules file, read once at start as the collector's
    alert runner does. A bad one is not in force; /api/alerts/rules says why."""
    try:
        return file_rules(path), path, None
    except ValueError as e:
        return {}, path, str(e)


def _security_headers(response):
    h = response.headers
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Frame-Options"] = "DENY"
    h.setdefault("Cache-Control", "no-store")
    return response


def _json_error(status, message, **extra):
    response = jsonify(error=message, **extra)
    response.status_code = status
    return response


def _install_errors(app):
    @app.errorhandler(ParamError)
    def bad_parameter(e):
        return _json_error(400, str(e), parameter=e.parameter)

    @app.errorhandler(PoolTimeout)
    def busy(e):
        return _json_error(503, str(e))

    @app.errorhandler(ChangeRefused)
    def refused(e):
        return _json_error(503, str(e))

    @app.errorhandler(sqlite3.OperationalError)
    def database_busy(e):
        return _json_error(503, f"database not readable now: {e}")

    for status in (404, 405, 413):
        @app.errorhandler(status)
        def not_here(e, status=status):
            if request.path.startswith("/api/"):
                return _json_error(status, e.description)
            if status == 404:
                return not_found_page()
            return e

    @app.errorhandler(500)
    def failed(e):
        return _json_error(500, "internal error (see the server log)")
