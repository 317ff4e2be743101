"""Read-only database connections, all opened when the app is built.

Why up front: the web process opens the database while it may still be root, then drops
privileges. SQLite keeps a connection's files (the database, its -wal and the shared -shm index)
open for the connection's lifetime, so connections opened before the drop go on reading a
database whose -shm / -wal the unprivileged user could not open or create itself (root made
them, or the directory is not writable to that user). A fixed pool sized to the server's threads
is all the web side ever needs for reading. Each connection reads once here so its WAL handles
are open too. (The web side's only writes, alert changes, have their own connection opened the
same way: web/changes.py.)
"""
import queue
from contextlib import contextmanager

from storage.db import connect


class PoolTimeout(RuntimeError):
    pass


class ConnectionPool:
    def __init__(self, path, size):
        self.path = path
        self._idle = queue.LifoQueue()
        for _ in range(size):
            con = connect(path, readonly=True)
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()   # opens -wal / -shm now
            self._idle.put(con)

    def acquire(self, timeout=10.0):
        try:
            return self._idle.get(timeout=timeout)
        except queue.Empty:
            raise PoolTimeout("all database connections are busy") from None

    def release(self, con):
        con.row_factory = None
        self._idle.put(con)

    @contextmanager
    def connection(self):
        con = self.acquire()
        try:
            yield con
        finally:
            self.release(con)

    def close(self):
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
