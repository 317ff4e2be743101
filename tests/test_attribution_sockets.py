"""The socket-table sources: the psutil adapter on canned psutil-shaped tuples, both sources on
this process's own real sockets (no root needed), and the inode map on a fake /proc tree."""
import os
import socket
import struct
import sys
from collections import namedtuple

import psutil
import pytest

from attribution import linux, sockets
from attribution.linux import InodeOwners
from records import NO_PERMISSION, SOCKET_CLOSED, UNKNOWN

Conn = namedtuple("sconn", "fd family type laddr raddr status pid")
Addr = namedtuple("addr", "ip port")
STREAM, DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM
on_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux fast path (netlink, /proc)")


def test_table_from_canned_connections():
    conns = [
        Conn(5, socket.AF_INET, STREAM, Addr("192.0.2.2", 40000), Addr("198.51.100.7", 443), "ESTABLISHED", 100),
        Conn(6, socket.AF_INET6, STREAM, Addr("::", 80), (), "LISTEN", 200),
        Conn(7, socket.AF_INET6, STREAM, Addr("::ffff:127.0.0.1", 80), Addr("::ffff:127.0.0.1", 5555),
             "ESTABLISHED", 201),
        Conn(8, socket.AF_INET, DGRAM, Addr("0.0.0.0", 5353), (), "NONE", 300),
        Conn(9, socket.AF_INET6, DGRAM, Addr("fe80::1%eth0", 546), Addr("fe80::2%eth0", 547), "NONE", 301),
        Conn(-1, socket.AF_INET, STREAM, Addr("192.0.2.2", 40001), Addr("198.51.100.7", 443), "TIME_WAIT", None),
        Conn(-1, socket.AF_INET, STREAM, Addr("192.0.2.2", 22), (), "LISTEN", None),
        Conn(10, socket.AF_INET, STREAM, Addr("192.0.2.2", 7000), (), "CLOSE", 400),     # bound, idle
        Conn(11, socket.AF_INET, socket.SOCK_RAW, Addr("192.0.2.2", 0), (), "NONE", 500),
        Conn(12, socket.AF_INET, DGRAM, (), (), "NONE", 600),
    ]
    table = sockets.table_from_connections(conns, full_view=True)
    assert table.owners == {
        (6, "192.0.2.2", 40000, "198.51.100.7", 443): 100,
        (6, "::", 80, None, 0): 200,
        (6, "127.0.0.1", 80, "127.0.0.1", 5555): 201,
        (17, "0.0.0.0", 5353, None, 0): 300,
        (17, "fe80::1", 546, "fe80::2", 547): 301,
    }
    assert table.unowned == {(6, "192.0.2.2", 40001, "198.51.100.7", 443): SOCKET_CLOSED,
                             (6, "192.0.2.2", 22, None, 0): UNKNOWN}
    assert not table.denied
    hidden = sockets.table_from_connections(conns, full_view=False)
    assert hidden.unowned[(6, "192.0.2.2", 22, None, 0)] == NO_PERMISSION and hidden.denied


@pytest.fixture
def own_sockets():
    """A listener, a connection to it, and UDP sockets on 127.0.0.1 and ::1, owned by this process."""
    made, keys = [], set()
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        server = socket.socket(family)
        server.bind((host, 0))
        server.listen()
        client = socket.create_connection((host, server.getsockname()[1]))
        accepted, _ = server.accept()
        bound = socket.socket(family, socket.SOCK_DGRAM)
        bound.bind((host, 0))
        connected = socket.socket(family, socket.SOCK_DGRAM)
        connected.connect((host, bound.getsockname()[1]))
        made += [server, client, accepted, bound, connected]
        sp, cp = server.getsockname()[1], client.getsockname()[1]
        up, ucp = bound.getsockname()[1], connected.getsockname()[1]
        keys |= {(6, host, sp, None, 0), (6, host, cp, host, sp), (6, host, sp, host, cp),
                 (17, host, up, None, 0), (17, host, ucp, host, up)}
    yield keys
    for s in made:
        s.close()


def test_psutil_table_sees_own_sockets(own_sockets):
    table = sockets.socket_table()
    assert {k: table.owners.get(k) for k in own_sockets} == {k: os.getpid() for k in own_sockets}


@on_linux
def test_linux_table_sees_own_sockets_like_psutil(own_sockets):
    source = linux.LinuxSockets()
    try:
        fast = source.snapshot()
        assert {k: fast.owners.get(k) for k in own_sockets} == {k: os.getpid() for k in own_sockets}
        slow = sockets.socket_table()
        mine = os.getpid()
        assert {k for k, p in fast.owners.items() if p == mine} == {k for k, p in slow.owners.items() if p == mine}
    finally:
        source.close()


@on_linux
def test_linux_table_finds_a_socket_on_a_reused_descriptor():
    source = linux.LinuxSockets()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        first.bind(("127.0.0.1", 0))
        fd, first_port = first.fileno(), first.getsockname()[1]
        assert source.snapshot().owners[(17, "127.0.0.1", first_port, None, 0)] == os.getpid()
        first.close()
        second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        second.bind(("127.0.0.1", 0))
        assert second.fileno() == fd          # the same number, another socket
        owners = source.snapshot().owners
        assert owners[(17, "127.0.0.1", second.getsockname()[1], None, 0)] == os.getpid()
        assert (17, "127.0.0.1", first_port, None, 0) not in owners
        second.close()
    finally:
        server.close()
        source.close()


def _fake_proc(root, layout):
    """layout: {pid: {fd: link target}} as symlinks under root/pid/fd."""
    for pid, fds in layout.items():
        d = root / str(pid) / "fd"
        d.mkdir(parents=True, exist_ok=True)
        for fd, target in fds.items():
            link = d / str(fd)
            if link.is_symlink():
                link.unlink()
            link.symlink_to(target)


def test_inode_owners_incremental(tmp_path, monkeypatch):
    _fake_proc(tmp_path, {10: {0: "/dev/null", 3: "socket:[501]"}, 20: {3: "socket:[601]", 4: "pipe:[9]"}})
    owners = InodeOwners(str(tmp_path))
    assert owners.owners({501, 601}) == {501: 10, 601: 20}
    reads = []
    real = os.readlink
    monkeypatch.setattr(os, "readlink", lambda p: reads.append(p) or real(p))
    assert owners.owners({501, 601}) == {501: 10, 601: 20}
    assert reads == []                          # nothing new: no descriptor is read
    # pid 20 closed 601 and reused fd 3 for 602; pid 30 appeared with 701
    _fake_proc(tmp_path, {20: {3: "socket:[602]"}, 30: {5: "socket:[701]"}})
    assert owners.owners({501, 602, 701}) == {501: 10, 602: 20, 701: 30}
    assert f"{tmp_path}/10/fd/3" not in reads   # a live socket's descriptor is trusted
    assert f"{tmp_path}/20/fd/3" in reads
    owners.forget([30])
    assert owners.owners({501, 602}) == {501: 10, 602: 20}


def test_inode_owners_reports_denied(tmp_path, monkeypatch):
    _fake_proc(tmp_path, {10: {3: "socket:[501]"}, 11: {3: "socket:[502]"}})
    real = os.listdir

    def listdir(path):
        if str(path).endswith("/11/fd/"):
            raise PermissionError(13, "Permission denied")
        return real(path)
    monkeypatch.setattr(os, "listdir", listdir)
    owners = InodeOwners(str(tmp_path))
    assert owners.owners({501, 502}) == {501: 10}
    assert owners.denied


def test_process_key_of_this_process():
    key = sockets.process_key(os.getpid())
    me = psutil.Process()
    assert (key.pid, key.start_time, key.name) == (os.getpid(), me.create_time(), me.name())
    assert key.cmdline.startswith(" ".join(me.cmdline())[:100])
    assert sockets.start_time(os.getpid()) == key.start_time


def test_process_key_of_a_gone_process():
    proc = psutil.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert sockets.process_key(proc.pid) is None
    assert sockets.start_time(proc.pid) is None


def test_host_addresses_include_loopback():
    assert "127.0.0.1" in sockets.host_addresses()


def test_inode_owners_gives_up_on_an_inode_no_process_holds(tmp_path, monkeypatch):
    _fake_proc(tmp_path, {10: {3: "socket:[501]"}})
    owners = InodeOwners(str(tmp_path))
    assert owners.owners({501, 999}) == {501: 10}          # 999: a kernel socket, say
    assert owners.owners({501, 999}) == {501: 10}          # missed twice: given up on
    listed = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or real(p))
    assert owners.owners({501, 999}) == {501: 10}
    assert listed == []                                     # not searched for again at every refresh


def _diag_message(length, state, src, sport, dst, dport, inode):
    head = struct.pack("=IHHII", length, 20, 2, 1, 0)
    body = struct.pack("=BBBB", socket.AF_INET, state, 0, 0) + struct.pack(">HH", sport, dport)
    body += src.ljust(16, b"\0") + dst.ljust(16, b"\0") + struct.pack("=I8sIIIII", 0, b"", 0, 0, 0, 0, inode)
    return (head + body).ljust(length, b"\0")


def test_sock_diag_buffers_uniform_and_mixed():
    a = _diag_message(96, 1, b"\x7f\0\0\1", 40000, b"\x7f\0\0\1", 80, 501)
    b = _diag_message(96, 10, b"\0\0\0\0", 80, b"\0\0\0\0", 0, 502)
    c = _diag_message(104, 7, b"\x7f\0\0\1", 53, b"\0\0\0\0", 0, 503)
    done = struct.pack("=IHHIIi", 20, 3, 2, 1, 0, 0)
    want_ab = [((1, b"\x7f\0\0\1", 40000, b"\x7f\0\0\1", 80), 501), ((10, b"\0\0\0\0", 80, b"\0\0\0\0", 0), 502)]
    for buffer, end, want in ((a + b, False, want_ab), (a + b + done, True, want_ab),
                              (a + c + b + done, True, [want_ab[0], ((7, b"\x7f\0\0\1", 53, b"\0\0\0\0", 0), 503),
                                                        want_ab[1]])):
        out = []
        assert linux.SockDiag._parse(buffer, socket.AF_INET, out) is end
        assert out == want
    error = struct.pack("=IHHIIi", 36, 2, 0, 1, 0, -1) + bytes(16)
    with pytest.raises(OSError, match="sock_diag"):
        linux.SockDiag._parse(error, socket.AF_INET, [])
