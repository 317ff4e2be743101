"""What a request works with: its read-only connection, the clock and the retention policy.
The app (web/app.py) puts them in place once; the blueprints read them through these functions,
so they import this module and never the app."""
from flask import current_app, g


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


def release_connection(_exc):
    """Teardown: the request's connection goes back to the pool."""
    con = g.pop("con", None)
    if con is not None:
        current_app.extensions["nettally.pool"].release(con)
