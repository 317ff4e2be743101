"""RollupStore.apply in a process of its own, for `run.py import`, and one transaction per file.

An import is CPU-bound in the counting process (frames -> flow table -> SQLite); the SQLite part
goes to this process and the other core. A thread cannot take it over: the sqlite3 module lets go
of the GIL only inside each statement step, so a writer thread waits a switch interval (5 ms) for
every row while the counting thread runs. Rollups are tuples, dicts and lists: cheap to pickle.

Exactly once: everything a file adds is written in ONE transaction, which also writes its
`sources` row and marks its `imports` row stored (storage/imports.py). An import cut off anywhere
(Ctrl-C, kill -9 of either process, a power loss) commits nothing; SQLite's journal undoes the
rest. Readers (the dashboard) are not held up (WAL); another writer (a live capture into the same
file) waits, keeping its counts in memory (storage/writer.py), until the import commits.
"""

from runtime import children, signals
from storage import imports, postgres
from storage.db import DatabaseError, connect, shown
from storage.store import RollupStore

class ImportWriter:
    def __init__(self, path, agent=""):
        ctx = children.context()
        inbox, self._outbox = ctx.Pipe(duplex=False)
        self._reply, reply_end = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_serve, args=(path, agent, inbox, reply_end, self._outbox),
                                    name="import-writer", daemon=True)
        self._process.start()
        inbox.close()
        reply_end.close()
        self.span = None              # like RollupStore.span, known after close()
        self.flows = 0                # flow records the file added, known after close()
        self.refused = None

    def submit(self, rollups):
        self._outbox.send(rollups)

    def close(self, finish=None):
        """finish: (import id, content hash, force, sources row as (kind, name, started, frames,
        clamped, damage)) to commit everything submitted with; None rolls it all back. Returns
        once that is done; raises DatabaseError if the commit failed (then nothing of the file is
        stored). `refused` is then (name, finished, frames) of an import of the same content that
        committed first (nothing of this one is stored), else None."""
        try:
            self._outbox.send(("end", finish))
            outcome = self._reply.recv()
        except (EOFError, OSError):
            outcome = ("error", "the import's writer process ended unexpectedly")
        self._outbox.close()
        self._process.join()
        if outcome[0] == "error":
            raise DatabaseError(outcome[1])
        if outcome[0] == "refused":
            self.refused = outcome[1]
        else:
            self.span, self.flows = outcome[1], outcome[2]


def _serve(path, agent, inbox, reply, importer_end):
    signals.ignore_stop()             # the importing process decides when to stop
    importer_end.close()
    store, error, finish, last_flow = None, None, None, 0
    try:
        store = RollupStore(connect(path), agent)
        store.con.execute("BEGIN IMMEDIATE")
        # flow records are numbered in order: those above this one are the file's own
        last_flow = store.con.execute("SELECT coalesce(max(id), 0) FROM flows").fetchone()[0]
    except Exception as e:
        error = f"{shown(path)}: {e}"
    while True:
        try:
            message = inbox.recv()
        except EOFError:              # the importing process went away: nothing is committed
            return
        if isinstance(message, tuple) and message and message[0] == "end":
            finish = message[1]
            break
        if error is None:             # after an error, keep reading so the importer never blocks
            try:
                store.apply(message)
            except Exception as e:
                error = f"{shown(path)}: {e}"
    outcome = ("ok", None, 0)
    if error is None:
        try:
            outcome = _end(store, finish, last_flow)
        except Exception as e:
            error = f"{shown(path)}: {e}"
    try:
        reply.send(("error", error) if error else outcome)
    except OSError:
        pass                          # nobody is waiting for the answer
    if store is not None:
        store.con.close()


def _end(store, finish, last_flow):
    """Commits the file's transaction with its sources row and its ledger mark, unless the same
    content was stored first (checked here, under the write lock: two racing imports of one file
    store it once) or finish is None: then rolls back."""
    con = store.con
    if finish is None:
        con.rollback()
        return ("ok", None, 0)
    import_id, sha256, force, (kind, name, started, frames, clamped, damage) = finish
    postgres.serialize(con, "ledger")         # two agents finishing one file together: one stores it
    done = None if force or not sha256 else imports.stored(con, sha256)
    if done is not None:
        con.rollback()
        return ("refused", tuple(done))
    source_id = store.begin_source(kind, name, started)
    store.end_source(source_id, frames, clamped, damage)
    imports.end(con, import_id, imports.STORED, frames, source_id, sha256)
    flows = con.execute("SELECT count(*) FROM flows WHERE id > ? AND agent = ?", (last_flow, store.agent)).fetchone()[0]
    con.commit()
    return ("ok", store.span, flows)
