"""Names for what the counters count, from pure tables and rules: services (which named service
a flow talks to: services.py and its services.toml), traffic classes (classes.py and
classes.toml), OUI vendors of MAC addresses (vendors.py) and the passive map of addresses to
host names learnt from the wire (passive.py).

Nothing here reads packets or the clock: the extractors under capture/ read names off the wire
(already made printable by records.wire_text) and the collector feeds them in. Tables load once,
at start; lookups run per flow, so each is a few dict or bisect steps, and hostile text in never
raises, it only fails to match.
"""
import tomllib

from runtime.text import one_line


def read_toml(path, what):
    """The TOML file at `path` as a dict, or ValueError with one line naming `what` and the file
    (a user's table with a typo must stop the start with a message, not a traceback)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(one_line(f"{what} {path}: {e}")) from None
