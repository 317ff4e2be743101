"""Which collector's counts a read sees. From schema 12 every count row carries the agent that
counted it (storage/schema.sql); a read sees every agent's counts added up unless it runs inside
`only(NAME)`: the web app's requests with `agent=`, `run.py export --agent`, each collector's
own alert rules. Readers in storage/ add `condition(...)` to their WHERE; reads.source and
reads.finest do it for every tier they read."""
import contextlib
from contextvars import ContextVar

_AGENT = ContextVar("nettally_agent", default=None)


@contextlib.contextmanager
def only(agent):
    """Reads inside see `agent`'s counts only (None: every agent's)."""
    token = enter(agent)
    try:
        yield
    finally:
        leave(token)


def enter(agent):
    """`only` in two calls, for a scope that begins and ends in different hooks (a request's)."""
    return _AGENT.set(agent)


def leave(token):
    _AGENT.reset(token)


def current():
    return _AGENT.get()


def clause(held_by="column", alias=""):
    """(SQL condition, its arguments) keeping the current agent's rows; (None, []) when every
    agent's are read. held_by: where a row's agent is, as tiers.Family.agent: its own `agent`
    column, or its "flow"'s or "process"'s."""
    agent = _AGENT.get()
    if agent is None:
        return None, []
    prefix = f"{alias}." if alias else ""
    if held_by == "column":
        return f"{prefix}agent = ?", [agent]
    table = {"flow": "flows", "process": "processes"}[held_by]
    return f"{prefix}{held_by}_id IN (SELECT id FROM {table} WHERE agent = ?)", [agent]


def condition(held_by="column", alias=""):
    """clause() as " AND ..." to add to a WHERE ("" when every agent's rows are read)."""
    sql, args = clause(held_by, alias)
    return ("", []) if sql is None else (f" AND {sql}", args)
