"""Network namespaces joined by a veth pair, for live tests (root, iproute2).

    from tests.netns import missing, veth_namespaces

    reason = missing()                 # None, or why namespaces cannot be made here (skip with it)
    with veth_namespaces("a") as pair: # torn down on exit, whatever happened
        pair.ns[0], pair.ns[1]         # namespace names  (unique: test pid + tag)
        pair.ifname[0], pair.ifname[1] # veth ends, one in each namespace
        pair.ipv4[0], pair.ipv6[1]     # addresses: 10.200.1.1/.2 and fd00:200::1/::2 (no DAD)
        pair.cmd(0, ["ping", "-c1", pair.ipv4[1]])   # argv to run inside namespace 0

Names are made from the test process's pid and a tag, so parallel runs do not collide. Only the
namespaces' own links carry the traffic; nothing touches the host's interfaces.
"""
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass


def missing():
    """None if veth namespaces can be made here, else a reason to skip."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def _ip(*args, ns=None, check=True):
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class VethPair:
    ns: tuple             # (namespace 0, namespace 1)
    ifname: tuple         # (end in ns 0, end in ns 1)
    ipv4: tuple           # (address of end 0, address of end 1), no prefix
    ipv6: tuple

    def cmd(self, side, argv):
        """argv to run `argv` inside namespace `side` (0 or 1)."""
        return ["ip", "netns", "exec", self.ns[side], *argv]


def _address(ns, ifname, v4, v6):
    _ip("addr", "add", f"{v4}/24", "dev", ifname, ns=ns)
    _ip("addr", "add", f"{v6}/64", "dev", ifname, "nodad", ns=ns)
    _ip("link", "set", ifname, "up", ns=ns)


def create(tag):
    """Makes two namespaces (lo up in each) and a veth pair between them; see the module doc."""
    if not (tag.isalnum() and len(tag) <= 4):
        raise ValueError("tag: up to 4 letters or digits (interface names have 15 characters)")
    base = f"nt{os.getpid()}{tag}"
    pair = VethPair((f"{base}a", f"{base}b"), (f"v{os.getpid()}{tag}a", f"v{os.getpid()}{tag}b"),
                    ("10.200.1.1", "10.200.1.2"), ("fd00:200::1", "fd00:200::2"))
    try:
        for ns in pair.ns:
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "add", pair.ifname[0], "netns", pair.ns[0], "type", "veth",
            "peer", "name", pair.ifname[1], "netns", pair.ns[1])
        for side in (0, 1):
            _address(pair.ns[side], pair.ifname[side], pair.ipv4[side], pair.ipv6[side])
    except Exception:
        destroy(pair)
        raise
    return pair


def destroy(pair):
    """Deletes the namespaces (their veth and VLAN links go with them). Never raises."""
    for ns in pair.ns:
        _ip("netns", "del", ns, check=False)


@contextmanager
def veth_namespaces(tag="x"):
    pair = create(tag)
    try:
        yield pair
    finally:
        destroy(pair)
