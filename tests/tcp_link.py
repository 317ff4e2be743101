"""A lossy, slow link between two network namespaces, made in user space: `tc netem` where the
kernel has no sch_netem (this machine's has none).

    from tests.tcp_link import emulated_link

    with emulated_link("a", ba="delay=0.04,loss=0.02,seed=1") as link:
        link.ns[0], link.ns[1]           # namespace names
        link.ifname[0], link.ifname[1]   # TAP ends (Ethernet), one in each namespace
        link.ipv4[0], link.ipv4[1]       # 10.201.1.1 / 10.201.1.2
        link.cmd(1, argv)                # argv inside namespace 1
        link.set("ba", "")               # impairment off from now on (like `tc qdisc del`)

A forwarder process (this module run as a script) owns one TAP device in each namespace and
copies frames between them; frames going from namespace 1 to 0 (`ba`) and from 0 to 1 (`ab`)
are each impaired as their spec says: `delay` seconds, `jitter` seconds (uniform, +-), `loss`,
`duplicate` and `reorder` shares (a reordered frame skips the delay, as netem's reorder does),
`seed` for repeatable runs. Nothing but the two namespaces' own links carries the traffic.
"""
import ctypes
import fcntl
import heapq
import os
import random
import select
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
CLONE_NEWNET = 0x40000000


def parse(spec):
    out = {"delay": 0.0, "jitter": 0.0, "loss": 0.0, "duplicate": 0.0, "reorder": 0.0, "seed": 0}
    for item in filter(None, spec.split(",")):
        name, value = item.split("=")
        out[name] = float(value) if name != "seed" else int(value)
    return out


@dataclass
class Link:
    ns: tuple
    ifname: tuple
    ipv4: tuple
    control: object        # the forwarder's stdin: "ab SPEC" / "ba SPEC" lines change an impairment

    def cmd(self, side, argv):
        return ["ip", "netns", "exec", self.ns[side], *argv]

    def set(self, direction, spec):
        """Changes one direction's impairment from the next frame on ("" for none)."""
        self.control.write(f"{direction} {spec}\n")
        self.control.flush()


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def emulated_link(tag="l", ab="", ba=""):
    base = f"nl{os.getpid()}{tag}"
    ns = (f"{base}a", f"{base}b")
    ifname = (f"t{os.getpid()}{tag}a", f"t{os.getpid()}{tag}b")
    ipv4 = ("10.201.1.1", "10.201.1.2")
    proc = None
    try:
        for n in ns:
            _ip("netns", "add", n)
            _ip("-n", n, "link", "set", "lo", "up")
        proc = subprocess.Popen([sys.executable, __file__, ns[0], ifname[0], ns[1], ifname[1], ab, ba],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the link forwarder did not start")
        for side in (0, 1):
            _ip("-n", ns[side], "addr", "add", f"{ipv4[side]}/24", "dev", ifname[side])
            _ip("-n", ns[side], "link", "set", ifname[side], "up")
        yield Link(ns, ifname, ipv4, proc.stdin)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        for n in ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)


def _tap(ns, name):
    libc = ctypes.CDLL(None, use_errno=True)
    nsfd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    if libc.setns(nsfd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(nsfd)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def forward(ns_a, tap_a, ns_b, tap_b, ab, ba):
    try:        # a delay is only as exact as this process is scheduled: on a busy machine, ask to come first
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):
        pass
    fa, fb = _tap(ns_a, tap_a), _tap(ns_b, tap_b)
    rules = {fa: parse(ab), fb: parse(ba)}            # keyed by the fd a frame is read from
    rng = {fa: random.Random(rules[fa]["seed"]), fb: random.Random(rules[fb]["seed"] + 1)}
    out = {fa: fb, fb: fa}
    names = {"ab": fa, "ba": fb}
    pending = []                                        # (release time, order, fd, frame)
    order = 0
    stdin = sys.stdin.fileno()
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, fd, frame = heapq.heappop(pending)
            _write(fd, frame)
        timeout = max(0.0, pending[0][0] - now) if pending else 1.0
        readable, _, _ = select.select([fa, fb, stdin], [], [], timeout)
        for fd in readable:
            if fd == stdin:
                line = sys.stdin.readline()
                if not line:
                    return
                direction, _, spec = line.strip().partition(" ")
                rules[names[direction]] = parse(spec)
                continue
            frame = os.read(fd, 65536)
            r, g = rules[fd], rng[fd]
            if r["loss"] and g.random() < r["loss"]:
                continue
            copies = 2 if r["duplicate"] and g.random() < r["duplicate"] else 1
            delay = r["delay"]
            if r["jitter"]:
                delay = max(0.0, delay + g.uniform(-r["jitter"], r["jitter"]))
            if r["reorder"] and g.random() < r["reorder"]:
                delay = 0.0
            for _ in range(copies):
                if delay:
                    order += 1
                    heapq.heappush(pending, (time.monotonic() + delay, order, out[fd], frame))
                else:
                    _write(out[fd], frame)


def _write(fd, frame):
    try:
        os.write(fd, frame)
    except OSError:          # the other end is not up yet (EIO): the frame is lost, as on a wire
        pass


if __name__ == "__main__":
    forward(*sys.argv[1:7])
