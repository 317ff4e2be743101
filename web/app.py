"""The Flask app factory: configuration enters here once, from a Settings object (or a test's
dict), and every blueprint reads the database through the pool made here."""
import sqlite3
import threading
import time

from flask import Flask, current_app, g, jsonify, request

from settings import Settings
from storage.retention import RetentionPolicy
from web import auth
from web.params import ParamError
from web.pool import ConnectionPool, PoolTimeout
from web.stream import HEARTBEAT, LiveFeed

SERVER_THREADS = 12          # waitress worker threads (web/serve.py)
MAX_STREAMS = 6              # live streams at once: each holds a server thread
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_UNSET = object()


def create_app(settings=None, test_config=None):
    """settings: a settings.Settings (db, host, token_file). test_config: overrides such as
    DB, CLOCK (callable giving epoch seconds), TOKEN (None: open), POOL_SIZE, STREAM_LIFETIME.
    Opens the database read-only now (raises storage.db.DatabaseError if it cannot)."""
    settings = settings or Settings()
    app = Flask(__name__, static_folder=None)
    app.config.update(DB=settings.db, BIND_HOST=settings.host, CLOCK=time.time, POOL_SIZE=SERVER_THREADS + 1,
                      POLICY=RetentionPolicy.from_settings(settings),
                      STREAM_LIFETIME=600.0, STREAM_HEARTBEAT=HEARTBEAT, MAX_STREAMS=MAX_STREAMS, TOKEN=_UNSET)
    app.config.update(test_config or {})
    app.json.sort_keys = False

    token = app.config["TOKEN"]
    if token is _UNSET:
        token = None if auth.is_loopback(settings.host) else auth.load_or_create_token(auth.token_path(settings))
    app.config["TOKEN"] = token
    pool = ConnectionPool(app.config["DB"], app.config["POOL_SIZE"])
    app.extensions["nettally.pool"] = pool
    app.extensions["nettally.feed"] = LiveFeed(pool.acquire(), app.config["CLOCK"])
    app.extensions["nettally.stream_slots"] = threading.BoundedSemaphore(app.config["MAX_STREAMS"])
    auth.install(app, token, app.config["BIND_HOST"])

    from web.api import bp as api_bp
    from web.pages import StaticFiles, bp as pages_bp
    from web.stream import bp as stream_bp
    app.extensions["nettally.static"] = StaticFiles()
    app.register_blueprint(api_bp)
    app.register_blueprint(stream_bp)
    app.register_blueprint(pages_bp)
    _install_errors(app)
    app.after_request(_security_headers)
    app.teardown_appcontext(_release_connection)
    return app


def db():
    """This request's read-only connection (from the pool, given back at teardown)."""
    if "con" not in g:
        g.con = current_app.extensions["nettally.pool"].acquire()
    return g.con


def now():
    return current_app.config["CLOCK"]()


def policy():
    """How long each rollup tier is kept: queries pick the tier that still holds their range."""
    return current_app.config["POLICY"]


def _release_connection(_exc):
    con = g.pop("con", None)
    if con is not None:
        current_app.extensions["nettally.pool"].release(con)


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

    @app.errorhandler(sqlite3.OperationalError)
    def database_busy(e):
        return _json_error(503, f"database not readable now: {e}")

    for status in (404, 405):
        @app.errorhandler(status)
        def not_here(e, status=status):
            if request.path.startswith("/api/"):
                return _json_error(status, e.description)
            return e

    @app.errorhandler(500)
    def failed(e):
        return _json_error(500, "internal error (see the server log)")
