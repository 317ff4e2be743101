"""RollupStore.apply in a process of its own, for `run.py import`.

An import is CPU-bound in the counting process (frames -> flow table -> SQLite); the SQLite part
goes to this process and the other core. A thread cannot take it over: the sqlite3 module lets go
of the GIL only inside each statement step, so a writer thread waits a switch interval (5 ms) for
every row while the counting thread runs. Rollups are tuples, dicts and lists: cheap to pickle.
"""
import signal

from runtime import children
from storage.db import DatabaseError, connect
from storage.store import RollupStore


class ImportWriter:
    def __init__(self, path):
        ctx = children.context()
        inbox, self._outbox = ctx.Pipe(duplex=False)
        self._reply, reply_end = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_serve, args=(path, inbox, reply_end, self._outbox),
                                    name="import-writer", daemon=True)
        self._process.start()
        inbox.close()
        reply_end.close()
        self.span = None              # like RollupStore.span, known after close()

    def submit(self, rollups):
        self._outbox.send(rollups)

    def close(self):
        """Returns once everything submitted is committed; raises DatabaseError if it was not."""
        try:
            self._outbox.send(None)
            outcome = self._reply.recv()
        except (EOFError, OSError):
            outcome = ("error", "the import's writer process ended unexpectedly")
        self._outbox.close()
        self._process.join()
        if outcome[0] == "error":
            raise DatabaseError(outcome[1])
        self.span = outcome[1]


def _serve(path, inbox, reply, importer_end):
    for signum in (signal.SIGINT, signal.SIGTERM):     # the importing process decides when to stop
        signal.signal(signum, signal.SIG_IGN)
    importer_end.close()
    store, error = None, None
    try:
        store = RollupStore(connect(path))
    except DatabaseError as e:
        error = str(e)
    while True:
        try:
            rollups = inbox.recv()
        except EOFError:              # the importing process went away without saying so
            break
        if rollups is None:
            break
        if error is None:             # after an error, keep reading so the importer never blocks
            try:
                store.apply(rollups)
            except Exception as e:
                error = f"{path}: {e}"
    try:
        reply.send(("error", error) if error else ("ok", store.span))
    except OSError:
        pass                          # nobody is waiting for the answer
    if store is not None:
        store.con.close()
