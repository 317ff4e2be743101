"""Processes a test starts and reads: output collected by a thread, waited for with a deadline."""
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Running:
    """A started process whose merged stdout/stderr lines are collected by a thread, so a test can
    wait for a line with a deadline instead of sleeping."""

    def __init__(self, argv, env=None, **kw):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=ROOT, env=env, **kw)
        self.lines, self.eof = [], False
        self._cond = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    @property
    def output(self):
        with self._cond:
            return "".join(self.lines)

    def wait_for(self, text, timeout=60.0):
        """The first output line containing `text`; AssertionError at the deadline or at EOF."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError(f"{self.argv[:4]} did not print {text!r}:\n{''.join(self.lines)}")
                self._cond.wait(left)

    def finish(self, sig=None, timeout=120.0):
        """Sends `sig` (if any, and still running), waits for exit and the end of output; the exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        status = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.eof and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
        return status

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running(argv, **kw):
    """A Running that is killed when the block ends, whatever happened in it."""
    process = Running(argv, **kw)
    try:
        yield process
    finally:
        process.kill()
