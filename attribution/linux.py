"""Linux fast path for the socket table, behind the same interface as the psutil adapter.

psutil.net_connections costs ~200 ms at 10,000 sockets here (it formats and parses the text of
/proc/net/* and reads the link of every descriptor of every process on each call). This path:
  - asks the kernel for the sockets in binary over netlink sock_diag (no text formatting);
  - keeps the inode -> pid map between refreshes and reads descriptors only when a socket
    inode is new, starting with the processes that own sockets, and skipping descriptors whose
    socket is still alive (a descriptor number can only be reused after its socket closed).
Also here: which network namespace we are in, and the addresses of the host's other ones.
"""
import os
import socket
import struct
import time

from attribution.table import TCP, UDP, SocketTable, bound_key, canonical, connected_key
from records import NO_PERMISSION, SOCKET_CLOSED, UNKNOWN

UNFINDABLE_RETRY = 60.0     # seconds before an inode no descriptor held is looked for again
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_HDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBxI4x16s16sI8s")           # inet_diag_req_v2 with an empty socket id
# nlmsghdr + inet_diag_msg: len, type, family, state, sport, dport (big endian), src, dst, uid, inode
_MSG = struct.Struct("=IH10xBB2xHH16s16s24xII")
_UNIFORM = {}
_SWAP = [((p & 0xFF) << 8) | (p >> 8) for p in range(65536)] if struct.pack("=H", 1) == b"\x01\x00" \
    else list(range(65536))

# TCP states (include/net/tcp_states.h)
_ESTABLISHED, _SYN_SENT, _FIN_WAIT1, _FIN_WAIT2, _CLOSE, _CLOSE_WAIT, _LAST_ACK, _LISTEN, _CLOSING = \
    1, 2, 4, 5, 7, 8, 9, 10, 11
# Orphans after close() keep inode 0 in these states. TIME_WAIT, pending requests (SYN_RECV) and
# bound-only sockets (CLOSE) are not asked for at all: they can be many and never own traffic.
_AFTER_CLOSE = frozenset((_FIN_WAIT1, _FIN_WAIT2, _LAST_ACK, _CLOSING))
_TCP_STATES = sum(1 << s for s in (_ESTABLISHED, _SYN_SENT, _FIN_WAIT1, _FIN_WAIT2, _CLOSE_WAIT, _LAST_ACK,
                                   _LISTEN, _CLOSING))
_UDP_STATES = (1 << _ESTABLISHED) | (1 << _CLOSE)


class SockDiag:
    """One netlink sock_diag socket; `dump(family, proto)` lists that kind of socket of this
    network namespace as ((state, src, sport, dst, dport), inode) with raw addresses."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self._seq = 0

    def close(self):
        self.sock.close()

    def dump(self, family, proto):
        self._seq += 1
        states = _TCP_STATES if proto == TCP else _UDP_STATES
        req = _REQ.pack(family, proto, 0, states, b"", b"", 0, b"")
        self.sock.send(_HDR.pack(_HDR.size + len(req), _SOCK_DIAG_BY_FAMILY,
                                 _NLM_F_REQUEST | _NLM_F_DUMP, self._seq, 0) + req)
        out = []
        while True:
            data = self.sock.recv(1 << 20)
            if not data or self._parse(data, family, out):
                return out

    @staticmethod
    def _parse(data, family, out):
        """Appends the sockets of one receive buffer to `out`; True at the end of the dump."""
        width = 4 if family == socket.AF_INET else 16
        swap, size = _SWAP, len(data)
        length, kind = _HDR.unpack_from(data, 0)[:2]
        # The common case: a buffer of same-sized messages (plus the end marker), unpacked in one go.
        body = size - 20 if size >= 20 and _HDR.unpack_from(data, size - 20)[1] == _NLMSG_DONE else size
        if kind not in (_NLMSG_DONE, _NLMSG_ERROR) and length >= _MSG.size and length % 4 == 0 \
                and body % length == 0:
            fmt = _UNIFORM.get(length)
            if fmt is None:
                fmt = _UNIFORM[length] = struct.Struct(_MSG.format + f"{length - _MSG.size}x")
            rows = list(fmt.iter_unpack(memoryview(data)[:body]))
            if all(r[0] == length and r[1] == kind for r in rows):
                out.extend(((state, src[:width], swap[sport], dst[:width], swap[dport]), inode)
                           for _, _, _, state, sport, dport, src, dst, _, inode in rows)
                return body != size
        off = 0
        while off + 16 <= size:
            length, kind = _HDR.unpack_from(data, off)[:2]
            if kind == _NLMSG_DONE:
                return True
            if kind == _NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + 16)[0]
                raise OSError(code, f"sock_diag: {os.strerror(code)}")
            _, _, _, state, sport, dport, src, dst, _, inode = _MSG.unpack_from(data, off)
            out.append(((state, src[:width], swap[sport], dst[:width], swap[dport]), inode))
            off += (length + 3) & ~3
        return False


class InodeOwners:
    """Socket inode -> pid, kept between refreshes; descriptors are read only to find new inodes."""

    def __init__(self, proc="/proc"):
        self.proc = proc
        self._owner = {}        # inode -> pid
        self._fds = {}          # pid -> {descriptor name: socket inode, 0 when not a socket}
        self._unfindable = {}   # inode -> time: in no descriptor we can read (kernel socket, other pid namespace)
        self._missed = set()    # inodes the last full read did not find
        self.denied = False     # some process's descriptors could not be read in the last scan

    def forget(self, pids):
        """Drops what we know of processes that have gone (their sockets may have moved on)."""
        for pid in pids:
            self._fds.pop(pid, None)
        gone = set(pids)
        self._owner = {i: p for i, p in self._owner.items() if p not in gone}

    def owners(self, alive):
        """inode -> pid for the inodes in `alive` (a set) that an open descriptor holds."""
        self._owner = {i: p for i, p in self._owner.items() if i in alive}
        now = time.monotonic()
        self._unfindable = {i: t for i, t in self._unfindable.items() if i in alive and now - t < UNFINDABLE_RETRY}
        missing = alive.difference(self._owner).difference(self._unfindable)
        if not missing:
            return self._owner
        self.denied = False
        try:
            pids = [int(n) for n in os.listdir(self.proc) if n.isdigit()]
        except OSError:
            return self._owner
        listed = set(pids)
        for pid in [p for p in self._fds if p not in listed]:
            del self._fds[pid]
        holders = set(self._owner.values())
        # socket owners first, then processes we have never read, then the rest
        order = sorted(pids, key=lambda p: 0 if p in holders else 1 if p not in self._fds else 2)
        for pid in order:
            missing.difference_update(self._scan(pid, alive))
            if not missing:
                break
        # Every process read and still missing, twice in a row (once could be an accept() between
        # naming the socket and installing its descriptor): not ours to find for a while.
        for inode in missing:
            if inode in self._missed:
                self._unfindable[inode] = now
        self._missed = missing
        return self._owner

    def _scan(self, pid, alive):
        base = f"{self.proc}/{pid}/fd/"
        try:
            names = os.listdir(base)
        except PermissionError:
            self.denied = True
            return ()
        except OSError:          # gone, or a kernel thread
            return ()
        known = self._fds.get(pid, {})
        fds, found, owner = {}, [], self._owner
        for name in names:
            inode = known.get(name)
            if not (inode and inode in alive):   # new, not a socket, or its socket closed: read again
                try:
                    link = os.readlink(base + name)
                except OSError:
                    continue
                inode = int(link[8:-1]) if link.startswith("socket:[") else 0
            fds[name] = inode
            if inode and inode in alive and inode not in owner:
                owner[inode] = pid
                found.append(inode)
        self._fds[pid] = fds
        return found


class LinuxSockets:
    """SocketTable source over sock_diag + InodeOwners (same interface as sockets.socket_table)."""

    def __init__(self, proc="/proc"):
        self.diag = SockDiag()
        self.inodes = InodeOwners(proc)
        self._keys = {}         # (proto, family) -> {raw socket: table key}: each key's text is made once

    def close(self):
        self.diag.close()

    def forget(self, pids):
        self.inodes.forget(pids)

    def snapshot(self):
        dumps = [(proto, family, self.diag.dump(family, proto))
                 for family in (socket.AF_INET, socket.AF_INET6) for proto in (TCP, UDP)]
        alive = {inode for _, _, rows in dumps for _, inode in rows if inode}
        by_inode = self.inodes.owners(alive)
        denied = self.inodes.denied
        owners, unowned = {}, {}
        for proto, family, rows in dumps:
            keys = self._keys.get((proto, family))
            if keys is None or len(keys) > 4 * len(rows) + 100_000:
                keys = self._keys[(proto, family)] = {}
            for raw, inode in rows:
                key = keys.get(raw)
                if key is None:
                    key = keys[raw] = _key(proto, family, *raw)
                if key is False:
                    continue
                pid = by_inode.get(inode) if inode else None
                if pid is not None:
                    owners[key] = pid
                elif not inode:
                    unowned[key] = SOCKET_CLOSED if proto == TCP and raw[0] in _AFTER_CLOSE else UNKNOWN
                else:
                    unowned[key] = NO_PERMISSION if denied else UNKNOWN
        return SocketTable(owners, unowned, denied)


def _key(proto, family, state, src, sport, dst, dport):
    """Table key of a raw socket; False for one that carries no traffic (bound, not listening)."""
    local = canonical(socket.inet_ntop(family, src))
    if proto == TCP:
        if state == _LISTEN:
            return bound_key(proto, local, sport)
        if state == _CLOSE:
            return False
    elif state == _CLOSE or not dport:
        return bound_key(proto, local, sport)
    return connected_key(proto, local, sport, canonical(socket.inet_ntop(family, dst)), dport)


# ---- network namespaces ---------------------------------------------------------------------------

def namespace(pid="self", proc="/proc"):
    """Identity of a process's network namespace ('net:[4026531840]'), None if unreadable."""
    try:
        return os.readlink(f"{proc}/{pid}/ns/net")
    except OSError:
        return None


def other_namespace_addresses(proc="/proc"):
    """Addresses of this host's other network namespaces (containers, `ip netns` namespaces with
    a process in them): local addresses whose sockets our own table can never show."""
    mine = namespace("self", proc)
    first_pid = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return set()
    for name in names:
        if name.isdigit():
            ns = namespace(name, proc)
            if ns is not None and ns != mine and ns not in first_pid:
                first_pid[ns] = name
    out = set()
    for pid in first_pid.values():
        out |= namespace_addresses(pid, proc)
    return out


def namespace_addresses(pid, proc="/proc"):
    """IPv4 and IPv6 addresses of the network namespace process `pid` is in."""
    return _read(f"{proc}/{pid}/net/fib_trie", local_ipv4_of_fib_trie) | \
        _read(f"{proc}/{pid}/net/if_inet6", ipv6_of_if_inet6)


def _read(path, parse):
    try:
        with open(path) as f:
            return parse(f.read())
    except (OSError, UnicodeDecodeError):
        return set()


def local_ipv4_of_fib_trie(text):
    """IPv4 addresses of a namespace: the `/32 host LOCAL` leaves of /proc/net/fib_trie."""
    out, leaf = set(), None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|-- "):
            leaf = s[4:]
        elif leaf and s.startswith("/32 host LOCAL"):
            text_addr = canonical(leaf)
            if text_addr is not None:
                out.add(text_addr)
    return out


def ipv6_of_if_inet6(text):
    """IPv6 addresses of a namespace from /proc/net/if_inet6 (32 hex digits per line)."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if parts and len(parts[0]) == 32:
            try:
                out.add(canonical(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(parts[0]))))
            except ValueError:
                continue
    return out
