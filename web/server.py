"""The HTTP server (waitress) with limits that hold under connection floods; every waitress
specific of the project is in this module. docs/DEPLOY.md says what an administrator sees.

Waitress alone stops accepting at its connection limit and keeps idle sockets for minutes, so a
hundred idle sockets from anywhere lock every client out, and the access token is only checked
once a request reaches the app. Here:

- Every connection is accepted. At the ceiling (web_max_connections), or at the cap of its
  client (web_max_per_client; a client is a source IPv4 address, or an IPv6 /64), the new one
  takes the place of the oldest connection that has not shown the token (on a loopback bind:
  that has not completed a request) and is not being served; failing that, of the oldest
  live-stream request still waiting for a thread; failing that, of the longest idle connection
  that showed the token. A request being served, or waiting with the token, is never dropped for
  room; when nothing can be closed, the new connection is.
- A connection that has not shown the token and is not being served is closed
  web_request_timeout seconds after it opened or was last answered (slow, never-finished and
  long-queued requests alike); one that has, after KEEPALIVE seconds idle.
- Complete requests wait for a worker thread in lanes: those that show the token (on a loopback
  bind: all) first, then their live streams (/api/stream), then those without the token, which
  the app answers 401. The token is checked here from the raw headers (web/auth.py
  `carries_token`) only to choose a lane; the app checks every request itself.
- Live streams hold at most web_sse_slots threads (the app refuses more with 503, Retry-After);
  the server has API_THREADS more, so streams never take every thread.
- Request headers and bodies are small (HEADER_MAX, web.app.MAX_BODY): memory is bounded by
  connections x (HEADER_MAX + MAX_BODY) at worst, and by a few KiB each when idle.
"""
import collections
import ipaddress
import logging
import socket
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from web.app import MAX_BODY, server_threads
from web.auth import carries_token

KEEPALIVE = 60.0            # seconds an idle connection that showed the token is kept
HEADER_MAX = 16 * 1024      # request header bytes (a browser with the token cookie sends ~1 KiB)
WINDOWS_SELECT_LIMIT = 512   # sockets waitress's select() loop handles on Windows (FD_SETSIZE)
FD_RESERVE = 64             # open files kept for the database, the listener, logs
ACCEPT_BATCH = 64           # connections taken from the kernel per loop turn
GRACE = 0.5                 # seconds a new connection has to send its request before it may be closed for room
STREAM_PATH = "/api/stream"
PEEK = int(socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0))     # Windows: the sockets are non-blocking anyway
LANE_TOKEN, LANE_STREAM, LANE_OTHER = 0, 1, 2


def raise_open_files_limit():
    """Raises this process's soft limit of open files to its hard limit; returns the soft limit.
    Windows has no such limit (the resource module is POSIX): waitress's select() takes 512."""
    try:
        import resource
    except ImportError:
        return WINDOWS_SELECT_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def client_key(host):
    """What the per-client cap counts by: the IPv4 address (also when mapped into IPv6), or the /64 of
    an IPv6 address (one host commonly holds a whole /64)."""
    if ":" not in host:
        return host
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return host


class Limits:
    """The numbers in force (from settings, the ceiling held under the open files limit) and the
    open connections, shared by the listeners of one server (`localhost` may be two)."""

    def __init__(self, max_connections, max_per_client, request_timeout, open_files):
        self.wanted = max_connections
        self.max_connections = max(1, min(max_connections, open_files - FD_RESERVE))
        self.max_per_client = max_per_client or self.max_connections      # 0: no cap of its own
        self.request_timeout = request_timeout
        self.channels = {}            # channel -> None, oldest first (the main loop's thread only)
        self.by_client = {}           # client key -> {channel: None}, oldest first
        self.refused = self.evicted = self.timed_out = 0
        self.retired = []             # out of service, sockets still open (see retire)

    def summary(self):
        return (f"{self.evicted} connections closed to make room, {self.timed_out} for taking too long, "
                f"{self.refused} refused")

    def opened(self, channel):
        self.channels[channel] = None
        self.by_client.setdefault(channel.client, {})[channel] = None

    def closed(self, channel):
        if channel not in self.channels:
            return
        del self.channels[channel]
        mine = self.by_client[channel.client]
        del mine[channel]
        if not mine:
            del self.by_client[channel.client]

    def admit(self, new):
        """Keeps the new connection `new` (already counted) within the limits: closes another one
        for it if need be, or closes `new` (refused)."""
        for channels, limit in ((self.by_client[new.client], self.max_per_client),
                                (self.channels, self.max_connections)):
            if new not in self.channels:
                return
            if len(channels) > limit and not self._evict(channels, new):
                self.refused += 1
                self.retire(new)
                return

    def _evict(self, channels, new):
        """Makes room for `new` by closing the first of: the oldest connection without the token
        that is not being served; the oldest waiting live-stream request; the longest idle
        connection with the token. Connections younger than GRACE are spared unless `new` has
        already shown the token. False if there is none. What has arrived unread, on `new` or on
        the one to close, is read first: a request with the token that the main loop has not
        reached yet is never lost for room."""
        if not new.requests:
            new.read_arrived()
            if new not in self.channels:      # its client had gone: room enough
                return True
        young = time.time() - GRACE
        stream_waiting = idle_trusted = None
        for channel in list(channels):
            if channel.creation_time > young and not new.trusted:
                break                         # oldest first: the rest are young too
            if channel is new or channel.running:
                continue
            if not channel.trusted and not channel.requests:
                channel.read_arrived()
                if channel not in self.channels:        # its client had gone
                    return True
            if not channel.trusted or channel.will_close:       # the latter closes anyway
                return self._close(channel)
            if channel.queued and channel.lane == LANE_STREAM:
                stream_waiting = stream_waiting or channel
            elif not channel.busy and (idle_trusted is None or channel.last_activity < idle_trusted.last_activity):
                idle_trusted = channel
        victim = stream_waiting or idle_trusted
        return victim is not None and self._close(victim)

    def _close(self, channel):
        self.evicted += 1
        self.retire(channel)
        return True

    def retire(self, channel):
        """Takes a connection out of service now and closes its socket at the start of the next
        loop turn: this turn's poll results may still name its file descriptor, which must not
        be reused by a connection accepted meanwhile."""
        channel.connected = False
        channel.del_channel()
        self.retired.append(channel)

    def close_retired(self):
        retired, self.retired = self.retired, []
        for channel in retired:
            channel.handle_close()

    def close_overdue(self, now):
        for channel in list(self.channels):
            if channel.overdue(now, self):
                self.timed_out += 1
                channel.will_close = True


class _Lanes:
    """The task queue of waitress's dispatcher (it calls append, popleft, len and bool), served
    lane by lane; within a lane first come, first served."""

    def __init__(self):
        self.lanes = (collections.deque(), collections.deque(), collections.deque())

    def append(self, channel):
        channel.queued = True
        self.lanes[channel.lane].append(channel)

    def popleft(self):
        for lane in self.lanes:
            if lane:
                channel = lane.popleft()
                channel.queued, channel.running = False, True
                return channel
        raise IndexError("no task waits")

    def __len__(self):
        return sum(len(lane) for lane in self.lanes)


class _Dispatcher(ThreadedTaskDispatcher):
    def __init__(self):
        super().__init__()
        self.queue = _Lanes()


class _Channel(HTTPChannel):
    trusted = False       # its latest complete request showed the token (loopback bind: any request)
    lane = LANE_OTHER     # of its latest complete request
    queued = False        # a request of it waits for a thread
    running = False       # a thread serves it

    def __init__(self, server, sock, addr, adj, map=None):
        self.client = client_key(addr[0]) if isinstance(addr, tuple) else str(addr)
        super().__init__(server, sock, addr, adj, map)
        self.waiting_since = self.creation_time      # opened, or last answered

    def add_channel(self, map=None):
        super().add_channel(map)
        self.server.opened(self)

    def del_channel(self, map=None):
        self.server.closed(self)
        super().del_channel(map)

    def service(self):
        try:
            super().service()
        finally:
            self.waiting_since, self.running = time.time(), False

    def read_arrived(self):
        """Reads (as the main loop would) whatever has arrived; nothing if nothing has."""
        try:
            peeked = self.socket.recv(1, PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            peeked = b""
        if peeked:
            self.handle_read()
        else:                               # its client has gone
            self.server.limits.retire(self)

    def handle_read(self):
        # as waitress's, but a poll that said "readable" before read_arrived() read it is no error
        try:
            data = self.recv(self.adj.recv_bytes)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.handle_close()
            return
        if data:
            self.last_activity = time.time()
            self.received(data)
        else:
            self.connected = False

    @property
    def busy(self):
        return bool(self.requests) or bool(self.total_outbufs_len)

    def overdue(self, now, limits):
        """Without the token and not being served: request_timeout (its request may wait in the
        queue that long too); with it and idle: KEEPALIVE, or request_timeout for a begun request."""
        if self.running or self.will_close:
            return False
        if not self.trusted:
            return now - self.waiting_since > limits.request_timeout
        if self.busy:
            return False
        keep = KEEPALIVE if self.request is None else limits.request_timeout
        return now - self.waiting_since > keep


class LimitedServer(TcpWSGIServer):
    """waitress's TCP server with the limits of the module doc. `trusts(headers)`: whether a
    request's raw headers (upper-case names) show the token."""

    channel_class = _Channel

    def __init__(self, app, limits, trusts, **kw):
        self.limits, self.trusts = limits, trusts
        super().__init__(app, **kw)

    def opened(self, channel):
        self.limits.opened(channel)

    def closed(self, channel):
        self.limits.closed(channel)

    def readable(self):        # always accepting: room is made per connection (handle_accept)
        self.limits.close_retired()
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.limits.close_overdue(now)
        return self.accepting

    def handle_accept(self):
        for _ in range(ACCEPT_BATCH):
            try:
                accepted = self.accept()
                if accepted is None:
                    return
                conn, addr = accepted
                self.set_socket_options(conn)
            except OSError:        # gone before it was taken, or out of files: the next turn tries again
                return
            addr = self.fix_addr(addr)
            self.limits.admit(self.channel_class(self, conn, addr, self.adj, map=self._map))

    def add_task(self, channel):
        """Called with a channel whose next request is complete: its lane."""
        request = channel.requests[0]
        channel.trusted = self.trusts(request.headers)
        if not channel.trusted:
            channel.lane = LANE_OTHER
        else:
            channel.lane = LANE_STREAM if getattr(request, "path", "") == STREAM_PATH else LANE_TOKEN
        super().add_task(channel)


def make_server(app, settings):
    """The server for `app` on settings.host:settings.port, listening (raises OSError if it
    cannot bind). Raises the open files limit first; `server.limits` says what is in force."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)    # a full queue is expected under a flood
    limits = Limits(settings.web_max_connections, settings.web_max_per_client, settings.web_request_timeout,
                    raise_open_files_limit())
    token = app.config["TOKEN"]
    if token is None:
        def trusts(headers):
            return True
    else:
        def trusts(headers):
            return carries_token(headers.get("AUTHORIZATION"), headers.get("COOKIE"), token)
    threads = server_threads(settings)
    adj = Adjustments(host=settings.host, port=settings.port, threads=threads, ident="NetTally",
                      clear_untrusted_proxy_headers=True, connection_limit=limits.max_connections + 1,
                      channel_timeout=int(KEEPALIVE), cleanup_interval=1, asyncore_use_poll=True,
                      max_request_header_size=HEADER_MAX, max_request_body_size=MAX_BODY,
                      inbuf_overflow=MAX_BODY)
    dispatcher, socket_map, listeners = _Dispatcher(), {}, []
    dispatcher.set_thread_count(threads)
    try:
        for sockinfo in adj.listen:
            listeners.append(LimitedServer(app, limits, trusts, map=socket_map, dispatcher=dispatcher, adj=adj,
                                           sockinfo=sockinfo))
    except BaseException:
        dispatcher.shutdown(timeout=1)
        for listener in listeners:
            listener.close()
        raise
    server = listeners[0] if len(listeners) == 1 else MultiSocketServer(
        socket_map, adj, [(s.effective_host, s.effective_port) for s in listeners], dispatcher, listeners[0].log_info)
    server.limits = limits
    return server
