"""The psutil adapter: the only module that imports psutil. Portable (Linux, macOS, BSD, Windows).

Everything leaves as plain values: a table.SocketTable of this host's TCP/UDP sockets, a
records.ProcessKey per process, the host's own addresses as canonical text.
"""
import os
import socket

import psutil

from attribution import cgroup
from attribution.table import TCP, UDP, SocketTable, bound_key, canonical, connected_key
from records import NO_PERMISSION, SOCKET_CLOSED, UNKNOWN, ProcessKey

_PROTO_OF_TYPE = {socket.SOCK_STREAM: TCP, socket.SOCK_DGRAM: UDP}
# TCP states of a socket its owner has already closed (the kernel finishes the goodbye alone)
_AFTER_CLOSE = frozenset((psutil.CONN_TIME_WAIT, psutil.CONN_FIN_WAIT1, psutil.CONN_FIN_WAIT2,
                          psutil.CONN_CLOSING, psutil.CONN_LAST_ACK))
CMDLINE_MAX = 4096


def privileged():
    """Whether this process may read every process's sockets (root on POSIX)."""
    return not hasattr(os, "geteuid") or os.geteuid() == 0


def socket_table():
    """This host's TCP and UDP sockets with their owning pids.

    Where the system-wide call is refused (macOS and BSD without root), falls back to the
    processes we may inspect; sockets of the others are then missing, so misses are reported as
    no_permission rather than closed."""
    try:
        return table_from_connections(psutil.net_connections("inet"), privileged())
    except psutil.AccessDenied:
        conns, denied = [], False
        for proc in psutil.process_iter():
            try:
                conns.extend(c + (proc.pid,) for c in proc.net_connections("inet"))
            except psutil.AccessDenied:
                denied = True
            except psutil.NoSuchProcess:
                continue
        return table_from_connections(conns, not denied)._replace(denied=denied)


def table_from_connections(conns, full_view=True):
    """SocketTable from psutil-shaped tuples (fd, family, type, laddr, raddr, status, pid).
    `full_view`: we could read every process's descriptors, so a socket without a pid is a
    kernel one (unknown) rather than one hidden from us (no_permission)."""
    owners, unowned = {}, {}
    for _fd, _family, kind, laddr, raddr, status, pid in conns:
        proto = _PROTO_OF_TYPE.get(kind)
        if proto is None or not laddr:
            continue
        local = canonical(laddr[0])
        if local is None:
            continue
        if raddr:
            remote = canonical(raddr[0])
            if remote is None:
                continue
            key = connected_key(proto, local, laddr[1], remote, raddr[1])
        elif proto == UDP or status == psutil.CONN_LISTEN:
            key = bound_key(proto, local, laddr[1])
        else:
            continue            # a bound TCP socket that neither listens nor is connected carries nothing
        if pid is not None:
            owners[key] = pid
        elif status in _AFTER_CLOSE:
            unowned[key] = SOCKET_CLOSED
        else:
            unowned[key] = UNKNOWN if full_view else NO_PERMISSION
    return SocketTable(owners, unowned, not full_view)


def process_key(pid):
    """ProcessKey of a live process, None if it is gone. Fields we may not read stay empty."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            start = proc.create_time()
            name = _quiet(proc.name)
            exe = _quiet(proc.exe)
            cmdline = " ".join(_quiet(proc.cmdline, []))[:CMDLINE_MAX]
            user = _quiet(proc.username)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None
    return ProcessKey(pid, start, name or str(pid), exe, cmdline, user, cgroup.read_unit(pid))


def start_time(pid):
    """psutil's create time of a pid (identity with the pid), None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def host_addresses():
    """Canonical text of every IPv4/IPv6 address on this host's interfaces (this namespace)."""
    out = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                text = canonical(a.address)
                if text is not None:
                    out.add(text)
    return out


def _quiet(call, default=""):
    try:
        return call()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return default
