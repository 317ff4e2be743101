"""Times given by users (CLI --since/--until, API parameters): epoch seconds, ISO 8601, or a span
ago such as 90s, 30m, 1h, 7d. `now` is injectable so tests never read the clock."""
import math
import re
import time
from datetime import datetime, timezone

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text, now=None):
    """Epoch seconds for `text`, None for None/empty; ValueError (one line) when unreadable."""
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    if not text.isascii():       # float() and \d would take other scripts' digits
        raise ValueError(f"unreadable time {text!r}: use epoch seconds, ISO 8601 or a span like 1h")
    span = _SPAN.match(text)
    if span:
        return (time.time() if now is None else now) - float(span.group(1)) * _UNIT[span.group(2)]
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"unreadable time {text!r}: not a finite number")
        return value
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"unreadable time {text!r}: use epoch seconds, ISO 8601 or a span like 1h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
