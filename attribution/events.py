"""Kernel socket events (Linux tracefs): the process acting on a socket, the moment it acts.

Polling a socket table cannot see a connection that opens and closes between two polls (200 short
TCP connections on loopback take ~40 ms in all). The kernel's tracepoints can: we read, in a
tracing instance of our own, the events a process causes *in its own context* (not in the
softirq that handles packets for whoever happens to be running):

  sock/inet_sock_set_state   TCP: connect() completing in the caller (SYN_SENT -> ESTABLISHED),
                             close()/shutdown() (-> FIN_WAIT1, CLOSE_WAIT -> LAST_ACK), listen()
  fib/fib_table_lookup,      UDP: the route lookup of sendto()/connect(), which names the local
  fib6/fib6_table_lookup     port and the peer

Each event gives the thread group id; the owner (ProcessKey and network namespace) is resolved
at once, while the process still exists. Filters run in the kernel, so only these events cost a
line of text. Everything here is optional: without tracefs or root, `start()` says why and
attribution polls only.
"""
import ctypes
import os
import re
import select
import threading
import time
from collections import deque

from attribution.table import TCP, UDP, WILDCARD_V4, WILDCARD_V6, bound_key, canonical, connected_key
from runtime.privileges import is_admin

TRACEFS_PLACES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
INSTANCE_PREFIX = "nettally-"
# trace flags: hardirq 0x08, softirq 0x10, NMI 0x40 (kernel/trace/trace.h TRACE_FLAG_*)
_IN_TASK = "!(common_flags & 0x58)"
_FILTERS = {
    "sock/inet_sock_set_state":
        "((oldstate == 2 && newstate == 1) || newstate == 4 || newstate == 9 || newstate == 10) "
        f"&& sport != 0 && protocol == 6 && {_IN_TASK}",
    "fib/fib_table_lookup": f"proto == 17 && sport != 0 && dport != 0 && {_IN_TASK}",
    "fib6/fib6_table_lookup": f"proto == 17 && sport != 0 && dport != 0 && {_IN_TASK}",
}
_LINE = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\(\s*(?P<tgid>[\d-]+)\)\s+\[\d+\]\s+(?P<flags>\S+)\s+"
                   r"[\d.]+:\s+(?P<event>\w+):\s+(?P<body>.*)$")
_ROUTE = re.compile(r"proto 17 (?P<src>[0-9a-fA-F:.]+)/(?P<sport>\d+) -> (?P<dst>[0-9a-fA-F:.]+)/(?P<dport>\d+)")
MAX_PENDING = 500_000
_COUNTER = iter(range(1, 1 << 62))
IDENTITY_TTL = 2.0          # seconds a resolved tgid is trusted before it is read again


def available():
    """None if kernel socket events can work here, else why not (for tests and messages)."""
    if not os.path.isdir("/sys/kernel/tracing") and not os.path.isdir("/sys/kernel/debug/tracing"):
        return "this kernel has no tracefs"
    if not is_admin():
        return "kernel socket events need root (tracefs)"
    try:
        with open("/proc/filesystems") as f:
            if "tracefs" not in f.read():
                return "this kernel has no tracefs"
    except OSError:
        return "no /proc/filesystems"
    return _tracefs()[1]          # mounts it if nothing has: a mount that fails is a reason too


def parse_line(line):
    """(socket key, tgid) named by one trace line, or None for anything else (including events
    raised in interrupt context, which belong to whoever was running)."""
    m = _LINE.match(line)
    if m is None or len(m["flags"]) < 3 or m["flags"][2] != ".":
        return None
    tgid = m["tgid"]
    tgid = int(tgid) if tgid.isdigit() else int(m["pid"])
    event, body = m["event"], m["body"]
    if event == "inet_sock_set_state":
        f = dict(kv.split("=", 1) for kv in body.split() if "=" in kv)
        if f.get("protocol") != "IPPROTO_TCP":
            return None
        v6 = f.get("family") == "AF_INET6"
        local = canonical(f.get("saddrv6" if v6 else "saddr"))
        remote = canonical(f.get("daddrv6" if v6 else "daddr"))
        try:
            sport, dport = int(f["sport"]), int(f["dport"])
        except (KeyError, ValueError):
            return None
        if local is None or remote is None or not sport:
            return None
        if f.get("newstate") == "TCP_LISTEN":
            return bound_key(TCP, local, sport), tgid
        return connected_key(TCP, local, sport, remote, dport), tgid
    if event in ("fib_table_lookup", "fib6_table_lookup"):
        r = _ROUTE.search(body)
        if r is None:
            return None
        local, remote = canonical(r["src"]), canonical(r["dst"])
        sport, dport = int(r["sport"]), int(r["dport"])
        if local is None or remote is None or not sport or not dport:
            return None
        if local in (WILDCARD_V4, WILDCARD_V6):     # an unbound socket: the wildcard key (table.py)
            local = WILDCARD_V6 if ":" in local else WILDCARD_V4
        return connected_key(UDP, local, sport, remote, dport), tgid
    return None


class KernelSocketEvents:
    """Reads our tracing instance on a thread. `resolve(tgid)` -> (ProcessKey, netns) or None is
    called on that thread; `drain()` hands over [(key, ProcessKey, netns, wall time)]."""

    def __init__(self, resolve, clock=time.time):
        self.resolve = resolve
        self.clock = clock
        self.pending = deque(maxlen=MAX_PENDING)
        self.lines = 0
        self.errors = 0
        self._identities = {}
        self._instance = None
        self._fd = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Creates the instance and starts reading. Returns None, or why events are unavailable."""
        root, why = _tracefs()
        if root is None:
            return why
        _remove_stale_instances(root)
        instance = f"{root}/instances/{INSTANCE_PREFIX}{os.getpid()}-{next(_COUNTER)}"
        try:
            os.mkdir(instance)
        except FileExistsError:
            pass
        except OSError as e:
            return f"cannot create a tracing instance: {e.strerror}"
        self._instance = instance
        try:
            _write(f"{instance}/options/record-tgid", "1")
            for event, flt in _FILTERS.items():
                _write(f"{instance}/events/{event}/filter", flt)
                _write(f"{instance}/events/{event}/enable", "1")
            self._fd = os.open(f"{instance}/trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            self.close()
            return f"kernel socket events unavailable: {e.strerror or e}"
        self._thread = threading.Thread(target=self._read, name="attribution-events", daemon=True)
        self._thread.start()
        return None

    def drain(self):
        out = []
        pop = self.pending.popleft
        while self.pending:
            out.append(pop())
        return out

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._instance is not None:
            _remove_instance(self._instance)
            self._instance = None

    def _read(self):
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        rest = b""
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                return
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            now = self.clock()
            for raw in lines:
                self.lines += 1
                try:
                    got = parse_line(raw.decode("utf-8", "replace"))
                    owner = None if got is None else self._owner(got[1], now)
                except Exception:       # one odd line or process must not end the reader
                    self.errors += 1
                    continue
                if owner is not None:
                    self.pending.append((got[0], owner[0], owner[1], now))

    def _owner(self, tgid, now):
        known = self._identities.get(tgid)
        if known is not None and now - known[1] < IDENTITY_TTL:
            return known[0]
        owner = self.resolve(tgid)
        if owner is None:
            return None
        if len(self._identities) > 65536:
            self._identities.clear()
        self._identities[tgid] = (owner, now)
        return owner


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _tracefs():
    """A mounted tracefs directory, mounting the standard one if nothing is mounted (as systemd
    does at boot). (path, None) or (None, why not)."""
    for place in TRACEFS_PLACES:
        if os.path.isdir(f"{place}/instances"):
            return place, None
    if not is_admin():
        return None, "kernel socket events need root (tracefs)"
    place = TRACEFS_PLACES[0]
    if not os.path.isdir(place):
        return None, "this kernel has no tracefs"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"nodev", place.encode(), b"tracefs", 0, None) != 0:
            code = ctypes.get_errno()
            return None, f"cannot mount tracefs: {os.strerror(code)}"
    except (OSError, AttributeError) as e:
        return None, f"cannot mount tracefs: {e}"
    if os.path.isdir(f"{place}/instances"):
        return place, None
    return None, "tracefs has no instances directory"


def _remove_instance(path):
    for event in _FILTERS:
        try:
            _write(f"{path}/events/{event}/enable", "0")
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _remove_stale_instances(root):
    """Instances left by NetTally processes that died without cleaning up."""
    try:
        names = os.listdir(f"{root}/instances")
    except OSError:
        return
    for name in names:
        pid = name[len(INSTANCE_PREFIX):].split("-")[0]
        if name.startswith(INSTANCE_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_instance(f"{root}/instances/{name}")
