"""Exactly-once imports, the outside-world half: a file is known by the SHA-256 of its bytes, and an
import's row names its process by pid and start time, so a row left 'running' by a process that is
gone is an import that was cut off (kill -9, power loss). storage/imports.py holds the rows.

The hash is computed beside the import, in a thread (hashlib lets go of the GIL), so a new file
costs no extra wall time; a file already stored is refused as soon as its hash is known, and the
import's own transaction checks again before it commits (collector/import_writer.py), so two
imports of one file racing each other still store it once."""
import hashlib
import os
import stat
import threading
import time

import psutil

from storage import imports

HASH_AT_ONCE = 64 << 20       # bytes: a file this small is hashed before the import (in ~50 ms)


def when(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def refusal(path, done):
    """The one line for a file whose content is stored already: done is (name, finished, frames)."""
    name, finished, frames = done
    same = "" if os.path.abspath(name) == os.path.abspath(path) else f" (as {name})"
    return (f"{path}: already imported{same} on {when(finished)}, {frames} frames; "
            "--force imports it again (its counts are then added twice)")


def _alive(pid, started):
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except (psutil.Error, ValueError, OverflowError):
        return False


def abandoned(con):
    """Marks every import whose process is gone without finishing as abandoned; returns one line
    for each (its counts were never committed: nothing of it is stored)."""
    lines = []
    for import_id, name, started, pid, pid_started in imports.running(con):
        if not _alive(pid, pid_started):
            imports.end(con, import_id, imports.ABANDONED)
            lines.append(f"the import of {name} started {when(started)} was cut off (process {pid} "
                         "ended without finishing); nothing of it was stored: import it again")
    return lines


class Admission:
    """One file's import in the ledger: its 'running' row (committed at once) and its hash. A
    small file is hashed at once; a big one by a thread that starts once the import's own
    processes are started (children.context() forks only while this process has one thread) and
    works while the import reads. A pipe or other stream can be read only once, by the import
    itself: it has no hash and is always imported."""

    def __init__(self, con, path, force=False):
        self.con, self.path, self.force = con, path, force
        st_ = os.stat(path)                                 # OSError: the caller says "cannot open"
        regular = stat.S_ISREG(st_.st_mode)
        self._sha256, self._checked, self._refusal, self._thread = None, not regular, None, None
        if regular and st_.st_size <= HASH_AT_ONCE:
            self._hash()
        me = psutil.Process()
        self.id = imports.begin(con, "", path, st_.st_size if regular else 0, me.pid, me.create_time())

    def _hash(self):
        try:
            with open(self.path, "rb") as f:
                self._sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            self._sha256 = ""        # unreadable now: the import itself says why

    def _hashing(self, start=True):
        if start and self._sha256 is None and self._thread is None and not self._checked:
            self._thread = threading.Thread(target=self._hash, name="import-hash", daemon=True)
            self._thread.start()
        return self._thread is not None and self._thread.is_alive()

    def refused(self, start_hash=True):
        """The refusal line once the hash shows the content stored (checked once, never waits);
        asked before the import (start_hash=False: a small file's hash is known then) and between
        its batches."""
        if not self._checked and not self._hashing(start_hash) and self._sha256 is not None:
            self._checked = True
            done = None if self.force or not self._sha256 else imports.stored(self.con, self._sha256, self.id)
            if done is not None:
                self._refusal = refusal(self.path, done)
        return self._refusal

    def sha256(self):
        """The content hash ('' for a stream), waiting for the thread if it is still at work."""
        if self._hashing():
            self._thread.join()
        return self._sha256 or ""

    def end(self, state, frames=None):
        try:
            imports.end(self.con, self.id, state, frames)
        except Exception:
            pass              # the row stays 'running'; the next start reports it as cut off
