"""Messages for people: every error NetTally prints is one line."""


def one_line(e):
    """An exception as one line of text, for one-line error messages."""
    return " ".join(str(e).split()) or e.__class__.__name__


def say(line, err=False, prog="run.py"):
    """One line for the person at the terminal (or the service log), flushed at once."""
    import sys
    print(f"{prog}: {line}" if prog else line, file=sys.stderr if err else sys.stdout, flush=True)
