"""The web process: the dashboard under waitress, in this process (`run.py serve`) or in a child
process of the live collector (`spawn`).

Order matters, and is the same for both:
1. as the starting user (root under sudo): raise the open files limit to its hard limit (the
   server's connection ceiling stays under it: web/server.py), read or make the access token, open the database
   connections (the read-only pool, and the one read-write connection of alert changes:
   web/pool.py and web/changes.py say why), read the alert rules file, templates and static
   files into memory, answer one request of each kind in-process (`warm_up`: every module a
   request needs is then loaded; it never writes) and bind the port;
2. drop root (to settings.web_user: the invoking SUDO_USER, else nobody), for good;
3. serve until SIGTERM / SIGINT.
"""
import multiprocessing
import sys
import time

from web.app import create_app
from web.forecasts import ForecastRefresher
from web.auth import TokenError
from web.server import make_server
from runtime.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from runtime.privileges import PrivilegeError, die_with_parent, drop_root
from runtime import signals
from runtime.text import say

READY_WAIT = 15.0        # seconds spawn() waits for the server to listen


def _say(line, err=False):
    say(line, err, prog="run.py serve" if err else "")


def _url(settings):
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/"


# Requests made once before the drop: every module, codec and template a request can need is
# loaded while the files are still readable (the interpreter itself may live where the web user
# cannot read, e.g. a pyenv under /root; templates and static files are then in memory).
WARM_UP = ("/", "/hosts", "/hosts/127.0.0.1", "/processes", "/flows", "/history", "/alerts", "/hosts/x",
           "/api/current_usage", "/api/historical", "/api/historical?by=host", "/api/historical?by=process",
           "/api/hosts", "/api/hosts.csv?limit=1", "/api/hosts/127.0.0.1", "/api/processes",
           "/api/processes.csv?limit=1",
           "/api/flows?host=127.0.0.1&port=1&proto=tcp&process=x", "/api/flows.csv?limit=1", "/api/interfaces",
           "/api/traffic_types", "/api/alerts", "/api/alerts.csv?limit=1", "/api/alerts/rules",
           "/api/alerts/rules/host-bytes-hour", "/api/alerts/rules/%20", "/api/hosts?limit=0", "/api/none", "/none",
           "/static/none")
# Changes that fail their checks before they reach the database: the warm-up never writes.
WARM_UP_CHANGES = (("POST", "/api/alerts/x/acknowledge", None), ("POST", "/api/alerts/1/acknowledge", '{"by": 0}'),
                   ("PUT", "/api/alerts/rules/warm-up", '{"kind": "bytes", "threshold": "none"}'),
                   ("PATCH", "/api/alerts/rules/%20", "{}"), ("DELETE", "/api/alerts/rules/%20", None))
CODECS = ("idna", "unicode_escape", "raw_unicode_escape", "latin_1", "ascii", "utf_8", "punycode")


def warm_up(app):
    import importlib
    for codec in CODECS:
        importlib.import_module(f"encodings.{codec}")
    token = app.config["TOKEN"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = app.test_client()
    for url in WARM_UP + tuple(f"/static/{name}" for name in app.extensions["nettally.static"].files):
        client.get(url, headers=headers).close()
    from web.auth import WRITE_HEADER
    for method, url, body in WARM_UP_CHANGES:
        client.open(url, method=method, data=body, headers={**headers, WRITE_HEADER: "1"},
                    content_type="application/json" if body else None).close()
    client.post("/api/alerts/1/acknowledge", headers=headers).close()      # the cross-site refusal
    client.get("/api/current_usage").close()               # the refusal path, in token mode


def serve(settings, in_child=False, ready=None):
    """Serves until SIGTERM or SIGINT; returns the exit status (2: cannot start, one line said).
    `ready` (an Event) is set once the server listens as the unprivileged user."""
    from storage.db import DatabaseError

    try:
        app = create_app(settings)
    except (DatabaseError, TokenError) as e:
        _say(str(e), err=True)
        return EXIT_USAGE
    try:
        server = make_server(app, settings)
    except OSError as e:
        _say(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}", err=True)
        return EXIT_USAGE
    warm_up(app)
    changes = app.extensions["nettally.changes"]
    # forecasts are stored through the one write path: a read-only dashboard makes none
    refresher = ForecastRefresher(app.extensions["nettally.pool"], changes, app.config["POLICY"].seconds) \
        if changes.writable else None
    try:
        user = drop_root(settings.web_user)
    except (PrivilegeError, OSError) as e:
        _say(f"not serving: {e}", err=True)
        server.close()
        return EXIT_FAILED
    if in_child:
        die_with_parent()
    token = app.config["TOKEN"]
    access = "access token required (see above / the token file)" if token else "loopback only, no token"
    _say(f"dashboard: {_url(settings)} (as user {user}; {access})")
    limits = server.limits
    if limits.max_connections < limits.wanted:
        _say(f"dashboard: at most {limits.max_connections} connections, not {limits.wanted} "
             "(web_max_connections): the open files limit is lower")
    if ready is not None:
        ready.set()
    if refresher is not None:
        refresher.start()

    def stop(signum, frame):
        raise SystemExit(EXIT_OK)
    signals.on_stop(stop)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.close()
        if refresher is not None:
            refresher.close()
    if limits.evicted or limits.timed_out or limits.refused:
        _say(f"dashboard: {limits.summary()}")
    return EXIT_OK


def _child(settings, ready):
    sys.exit(serve(settings, in_child=True, ready=ready))


def spawn(settings, wait=READY_WAIT):
    """Starts the web server in a new process and returns it (multiprocessing.Process, started).
    A fresh interpreter ('spawn'), not a fork: the collector has threads (the SQLite writer) whose
    locks a fork could copy mid-use. Returns once the server listens, or the process has ended
    (it said why on stderr; `exitcode` is set), or after `wait` seconds. Stop it with
    terminate() then join()."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    process = ctx.Process(target=_child, args=(settings, ready), name="nettally-web", daemon=True)
    process.start()
    deadline = time.monotonic() + wait
    while not ready.wait(0.05) and process.is_alive() and time.monotonic() < deadline:
        pass
    process.join(0.2 if not process.is_alive() else 0)
    return process
