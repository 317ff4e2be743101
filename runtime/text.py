"""Messages for people: every error NetTally prints is one line."""
import time

_stamped = False        # a long-running service's lines start with the time (stamp_lines)


def one_line(e):
    """An exception as one line of text, for one-line error messages."""
    return " ".join(str(e).split()) or e.__class__.__name__


def stamp_lines():
    """From now on, lines said and log records start with the UTC time: the live service runs
    for days and its output is its log. One-shot commands (import, export) stay unstamped."""
    global _stamped
    import logging
    _stamped = True
    handler = logging.StreamHandler()
    formatter = logging.Formatter("%(asctime)s run.py: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logging.getLogger("nettally").addHandler(handler)
    logging.getLogger("nettally").propagate = False


def say(line, err=False, prog="run.py"):
    """One line for the person at the terminal (or the service log), flushed at once."""
    import sys
    text = f"{prog}: {line}" if prog else line
    if _stamped:
        text = time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + text
    print(text, file=sys.stderr if err else sys.stdout, flush=True)
