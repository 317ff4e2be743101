"""Wireshark's dissectors beside the count: a process of its own runs names/tshark.py on the
first frames of flows NetTally's parsers left unnamed (Rollup.samples) and sends back app names.

The counting never waits for it. One batch is in flight at a time; samples that come while it
is busy wait in a bounded queue, and past that bound they are dropped and counted
(`tshark_busy`), as are all of them when tshark is missing (`tshark_missing`).
"""
import os

from records import Sample
from runtime import children, signals
from runtime.paths import home_of_current_user
from runtime.privileges import PrivilegeError, current_user, drop_root, is_admin

QUEUED = 1000             # samples waiting for the worker; beyond, dropped and counted
BATCH = 200               # samples per tshark run: ~0.2-0.4 s here (names/tshark.py measures it)
BATCH_TIMEOUT = 20.0      # a tshark run that takes longer is killed and its samples counted (a batch
                          # takes 0.2-0.4 s; at nice 19 on a busy machine it may take many times that)
# Ethernet / IPv4 127.0.0.1 -> 127.0.0.1 / UDP 5353 -> 53 / a DNS query for "a": the warm-up run's frame
_WARM_UP_FRAME = bytes.fromhex("000000000000000000000000080045000027000000004011"
                               "7cc37f0000017f00000114e900350013000000010100000100000000000001610000010001")


class DpiWorker:
    def __init__(self, user=""):
        """`user`: who the worker runs as when started as root (tshark dissects hostile packets:
        Wireshark warns against doing that as root); empty: nobody. The worker starts with the
        first samples (a capture our parsers name whole never pays for it) and says whether
        tshark is there in its first message, read by take()."""
        self._user = user
        self._process = None
        self.available, self.why_not = True, ""      # until the worker says otherwise
        self._waiting = []                 # samples not yet sent
        self._labelled = []                # [(Sample, app)] answered, not yet taken
        self._in_flight = 0                # samples of the batch the worker has
        self.dropped = {}                  # reason -> samples not labelled

    def offer_from(self, rollups):
        """`rollups` without their samples, which are queued for labelling; returns at once. An
        answer already waiting is read, so the next batch goes out as soon as the last is done."""
        if not any(r.samples for r in rollups):
            return rollups
        self.offer([s for r in rollups for s in r.samples])
        self._read(0.0)
        return without_samples(rollups)

    def offer(self, samples):
        """Queues samples for labelling; returns at once."""
        if not samples:
            return
        if not self.available:
            self._drop("tshark_missing", len(samples))
            return
        if self._process is None:
            self._start()
        room = max(QUEUED - len(self._waiting), 0)
        self._waiting.extend(samples[:room])
        self._drop("tshark_busy", len(samples) - room)
        self._send()

    def take(self, wait=0.0):
        """[(Sample, app)] labelled since the last call; waits up to `wait` seconds for a batch."""
        self._read(wait)
        out, self._labelled = self._labelled, []
        return out

    def _read(self, wait):
        """Reads the worker's answers (waiting up to `wait` for the batch in flight) and sends the
        next batch after each."""
        while self._process is not None and self._answers.poll(wait if self._in_flight else 0):
            try:
                message = self._answers.recv()
            except (EOFError, OSError):       # the worker died: what it had is lost, counting goes on
                self._gone("the tshark worker ended")
                break
            if message[0] == "hello":
                self.available, self.why_not = message[1], message[2]
                if not self.available:
                    self._gone(self.why_not)
                    break
                continue
            _, labelled, dropped = message
            # the frames went to Wireshark and are done with: keep the flow's key, not its bytes
            self._labelled.extend((sample._replace(frames=[]), app) for sample, app in labelled)
            for reason, n in dropped.items():
                self._drop(reason, n)
            self._in_flight = 0
            wait = 0.0
            self._send()

    def close(self):
        if self._process is not None:
            try:
                self._requests.send(None)
            except OSError:
                pass
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
            self._requests.close()
            self._answers.close()
            self._process = None
        self._drop("tshark_unfinished", len(self._waiting) + self._in_flight)
        self._waiting, self._in_flight = [], 0

    def _start(self):
        ctx = children.context()
        requests, self._requests = ctx.Pipe(duplex=False)
        self._answers, answers = ctx.Pipe(duplex=False)
        children.widen(self._requests)     # a whole batch fits (BATCH x 4 KiB): sending never waits
        self._process = ctx.Process(target=_serve, args=(requests, answers, self._user), name="nettally-dpi",
                                    daemon=True)
        self._process.start()
        requests.close()
        answers.close()

    def _send(self):
        if self._in_flight or not self._waiting or self._process is None:
            return
        batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
        try:
            self._requests.send(batch)
        except OSError:
            self._waiting = batch + self._waiting
            self._gone("the tshark worker ended")
            return
        self._in_flight = len(batch)

    def _gone(self, why):
        """No worker any more: what it held and what waits is counted, later samples too."""
        self.available, self.why_not = False, why
        self._drop("tshark_missing", len(self._waiting) + self._in_flight)
        self._waiting, self._in_flight = [], 0

    def _drop(self, reason, n):
        if n > 0:
            self.dropped[reason] = self.dropped.get(reason, 0) + n


def without_samples(rollups):
    """The rollups as the writer takes them: samples are for the worker only."""
    return [r._replace(samples=[]) if r.samples else r for r in rollups]


def _serve(requests, answers, user):
    signals.ignore_stop()             # the collector decides when to stop
    children.lower_priority()         # the counting (capture, import, writer) keeps the cores; tshark gets the rest
    from names.tshark import TsharkLabeller
    labeller = TsharkLabeller(timeout=BATCH_TIMEOUT)
    if labeller.available and is_admin():
        # one run on a frame of our own while the interpreter's files are still readable: every
        # module a run needs is loaded before root goes (a pyenv under /root is not nobody's)
        labeller.label([Sample((17, "127.0.0.1", 5353, "127.0.0.1", 53), 0.0, 1, [(0.0, _WARM_UP_FRAME)])])
    was = current_user()
    try:
        if drop_root(user) != was:
            # tshark reads its configuration from $HOME: root's is not readable any more, and a
            # profile there would change what it names. The new user's home, or none.
            os.environ["HOME"] = home_of_current_user()
    except (PrivilegeError, OSError) as e:
        answers.send(("hello", False, f"the tshark worker cannot give up root: {e}"))
        return
    answers.send(("hello", labeller.available, labeller.why_not))
    while True:
        try:
            batch = requests.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        before = dict(labeller.dropped)
        labels = labeller.label(batch) if labeller.available else {}
        dropped = {reason: n - before.get(reason, 0) for reason, n in labeller.dropped.items()
                   if n != before.get(reason, 0)}
        answers.send(("labels", [(s, labels[s.key]) for s in batch if s.key in labels], dropped))
