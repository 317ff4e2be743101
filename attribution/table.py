"""The plain socket table every source produces and the join reads. Pure: no OS calls.

A socket is keyed by its *local* view, the way it appears to the process owning it:

    (proto, local address, local port, remote address, remote port)    connected socket
    (proto, local address, local port, None, 0)                         listener / unconnected UDP

Addresses are canonical text (IPv6 compressed, lower case, no %scope) and IPv4-mapped IPv6
addresses (::ffff:a.b.c.d, what a dual-stack socket shows for IPv4 peers) become plain IPv4, so
a key made from a flow seen on the wire and a key made from a socket table are the same string.
"""
import ipaddress
from typing import NamedTuple

TCP, UDP = 6, 17
ATTRIBUTABLE = frozenset((TCP, UDP))
WILDCARD_V4, WILDCARD_V6 = "0.0.0.0", "::"


class SocketTable(NamedTuple):
    """One snapshot of this network namespace's TCP/UDP sockets.

    owners: key -> pid owning the socket.
    unowned: key -> reason the owner is not known (a socket in TIME_WAIT or orphaned after
             close: SOCKET_CLOSED; a process whose fds we may not read: NO_PERMISSION; a kernel
             socket or one that vanished between the two reads: UNKNOWN).
    denied: some processes' descriptors could not be read, so a socket missing from the table
            may be hidden rather than closed.
    """
    owners: dict
    unowned: dict
    denied: bool = False


_CANON: dict = {}


def canonical(text) -> str | None:
    """Canonical text of an address as sources spell it; None for an unreadable one."""
    if text is None:
        return None
    out = _CANON.get(text)
    if out is None:
        try:
            ip = ipaddress.ip_address(str(text).split("%", 1)[0])
        except ValueError:
            return None
        mapped = getattr(ip, "ipv4_mapped", None)
        out = str(mapped if mapped is not None else ip)
        if len(_CANON) > 200_000:       # bounded: addresses seen on a busy host are many
            _CANON.clear()
        _CANON[text] = out
    return out


def is_wildcard(addr) -> bool:
    return addr in (WILDCARD_V4, WILDCARD_V6)


def connected_key(proto, laddr, lport, raddr, rport):
    return (proto, laddr, lport, raddr, rport)


def bound_key(proto, laddr, lport):
    return (proto, laddr, lport, None, 0)


def candidate_keys(proto, laddr, lport, raddr, rport):
    """Keys that may own the local endpoint (laddr, lport) talking to (raddr, rport), best first:
    the connected socket; one bound to the wildcard address that sent to this peer (an unconnected
    UDP socket seen by a kernel event); a listener or unconnected UDP socket on the address; the
    same on the wildcard address, IPv4 before a dual-stack IPv6 one."""
    wild = WILDCARD_V6 if ":" in laddr else WILDCARD_V4
    keys = [(proto, laddr, lport, raddr, rport), (proto, wild, lport, raddr, rport),
            (proto, laddr, lport, None, 0), (proto, wild, lport, None, 0)]
    if wild == WILDCARD_V4:
        keys.append((proto, WILDCARD_V6, lport, None, 0))
    return keys
