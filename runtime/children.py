"""How NetTally starts its helper processes (the capture process, an import's reader and writer)
and widens the pipes they talk through: the process-start seam of the platforms (Windows has no
fork; macOS's fork is unsafe once system frameworks are loaded)."""
import os
import sys
import threading

PIPE_BYTES = 1 << 20


def context():
    """A multiprocessing context: fork where it is quick and safe (Linux, and this process has no
    other thread yet, so none can hold a lock the child would inherit), spawn otherwise."""
    import multiprocessing        # here: importing this module never pays for it
    single = threading.active_count() == 1 and can_fork()
    return multiprocessing.get_context("fork" if single else "spawn")


def can_fork():
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def widen(conn, size=PIPE_BYTES):
    """Gives a pipe room for bursts (Linux: 1 MiB instead of 64 KiB), so a writer runs ahead
    instead of waiting for its reader at every message. Elsewhere the pipe is merely smaller."""
    try:
        import fcntl
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):
        pass


def lower_priority():
    """This process yields the CPU to the others (POSIX nice 19; Windows: below normal, through
    psutil, which NetTally requires anyway)."""
    if hasattr(os, "nice"):
        os.nice(19)
        return
    try:
        import psutil
        psutil.Process().nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
    except (ImportError, AttributeError, OSError):
        pass
