"""How NetTally starts its helper processes (the capture process, an import's reader and writer)
and widens the pipes they talk through."""
import threading

PIPE_BYTES = 1 << 20


def context():
    """A multiprocessing context: fork where it is quick and safe (this process has no other
    thread yet, so none can hold a lock the child would inherit), spawn otherwise."""
    import multiprocessing        # here: importing this module never pays for it
    single = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if single else "spawn")


def widen(conn, size=PIPE_BYTES):
    """Gives a pipe room for bursts (Linux: 1 MiB instead of 64 KiB), so a writer runs ahead
    instead of waiting for its reader at every message. Elsewhere the pipe is merely smaller."""
    try:
        import fcntl
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):
        pass
