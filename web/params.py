"""Query parameters of the API, checked in one place.

Every endpoint reads its parameters through a `Params`; anything malformed, out of range, given
twice or not known to the endpoint raises ParamError, which the app turns into
400 {"error": "...", "parameter": name}.
"""
import ipaddress
import re

from records import proto_number
from storage.timerange import parse_time

MAX_TEXT = 200
EVERY_ENDPOINT = ("agent",)    # taken by every request: the app applies it (web/app.py)
LATEST_TIME = 2 ** 40          # epoch seconds: beyond any real capture, inside SQLite's INTEGER
_INTEGER = re.compile(r"-?[0-9]{1,18}")     # ASCII digits only: int() would take '١' or '1_0'


class ParamError(ValueError):
    def __init__(self, parameter, message):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class Params:
    def __init__(self, args, now, anchor=None):
        self.args = args           # werkzeug MultiDict
        self.now = now
        # what spans ago (24h) count back from and where a range ends by default: now, or the end
        # of the data when no live capture feeds the database (an import from years ago)
        self.anchor = now if anchor is None else anchor
        self.anchored = anchor is not None
        self.used = set(EVERY_ENDPOINT)

    def _raw(self, name):
        self.used.add(name)
        values = self.args.getlist(name)
        if len(values) > 1:
            raise ParamError(name, "given more than once")
        if not values or values[0] == "":
            return None
        if len(values[0]) > MAX_TEXT:
            raise ParamError(name, f"longer than {MAX_TEXT} characters")
        return values[0]

    def finish(self):
        """Raises for a parameter the endpoint does not take (a typo must not silently widen a filter)."""
        for name in self.args:
            if name not in self.used:
                raise ParamError(name, "unknown parameter")

    def choice(self, name, options, default):
        value = self._raw(name)
        if value is None:
            return default
        if value not in options:
            raise ParamError(name, f"must be one of {', '.join(options)}")
        return value

    def integer(self, name, default, lo, hi):
        value = self._raw(name)
        if value is None:
            return default
        if not _INTEGER.fullmatch(value):
            raise ParamError(name, "must be an integer")
        number = int(value, 10)
        if not lo <= number <= hi:
            raise ParamError(name, f"must be between {lo} and {hi}")
        return number

    def time(self, name, default):
        """Epoch seconds, ISO 8601, or a span before the anchor (90s, 30m, 24h, 7d); `default` likewise."""
        value = self._raw(name)
        try:
            moment = parse_time(default if value is None else value, now=self.anchor)
        except ValueError as e:
            raise ParamError(name, str(e)) from None
        if moment is not None and not 0 <= moment <= LATEST_TIME:
            raise ParamError(name, "must lie between 1970 and 36812 (epoch seconds 0 to 2^40)")
        return moment

    def time_range(self, default_since="24h"):
        since = self.time("since", default_since)
        until = self.time("until", None)
        if until is None:      # the current minute included; or the data's end, when anchored on it
            anchored = self.anchored and (since is None or since < self.anchor)
            until = self.anchor if anchored else self.now + 60
        if since is not None and since >= until:
            raise ParamError("since", "must be before until")
        return since, until

    def ip(self, name, value=None):
        value = self._raw(name) if value is None else value
        if value is None:
            return None
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ParamError(name, "not an IP address") from None
        if getattr(address, "scope_id", None):      # fe80::1%eth0: never stored, never shown
            raise ParamError(name, "not an IP address (no scope ids)")
        return str(address)

    def proto(self, name):
        value = self._raw(name)
        if value is None:
            return None
        try:
            return proto_number(value)
        except ValueError:
            raise ParamError(name, "must be tcp, udp, sctp, icmp, icmpv6 or a number 0-255") from None

    def agent(self):
        """agent=NAME: that collector's counts only (storage/agents.py); None: every agent's."""
        value = self._raw("agent")
        if value is not None and (len(value) > 64 or not value.isprintable()):
            raise ParamError("agent", "must be at most 64 printable characters")
        return value

    def text(self, name):
        value = self._raw(name)
        if value is not None and any(ord(c) < 32 for c in value):
            raise ParamError(name, "contains control characters")
        return value

    def search(self, name="q"):
        """The search box: text (at most MAX_TEXT characters, no control characters), its ends
        trimmed; None when empty. Matched literally (storage/search.py), never as a pattern."""
        value = self.text(name)
        value = None if value is None else value.strip()
        return value or None

    def sort(self, options, default):
        """(key, descending) from sort=KEY and order=asc|desc (default: desc)."""
        key = self.choice("sort", tuple(options), default)
        return key, self.choice("order", ("asc", "desc"), "desc") == "desc"
