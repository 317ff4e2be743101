"""Signals, the one place that knows what a platform has: the stop signals a process handles, and
holding them back while a child starts (POSIX; Windows has neither pthread_sigmask nor
SIGTERM delivery between processes, so there the calls do nothing and Ctrl-C still stops)."""
import signal

# SIGINT (Ctrl-C) everywhere; SIGTERM where the platform defines it (`systemctl stop`, `kill`)
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s)


def on_stop(handler):
    """`handler(signum, frame)` for every stop signal, which is then let through; returns the
    handlers it replaced, {signum: handler}, for restore()."""
    before = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    let_through()
    return before


def ignore_stop():
    """A helper process whose parent decides when it stops: Ctrl-C at a terminal reaches the
    whole process group, and the parent, not each helper, acts on it."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def restore(before):
    for signum, handler in before.items():
        signal.signal(signum, handler)


def hold_back():
    """Stop signals wait (blocked) until let_through(): a child started now inherits the mask and
    lets them through once its own handler is set, so no signal finds it without one."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))


def let_through():
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
