"""A fault-injecting TCP proxy, to test what a worker does when the network to AWS fails.

Put it between a worker and the local AWS endpoint and switch its mode while the worker
runs::

    def test_outage(aws, fault_proxy):
        env = {**os.environ, **aws.env(), "AWS_ENDPOINT_URL": fault_proxy.url}
        worker = subprocess.Popen(["igata", "run", ...], env=env)
        fault_proxy.mode = "refuse"      # the endpoint is gone
        ...
        fault_proxy.mode = "pass"        # and back

moto builds queue URLs from the host a request was sent to: give the worker URLs that name
the proxy (``queue_url.replace(aws.url, fault_proxy.url)``), not moto's own port.

Modes (:data:`MODES`); a mode applies to new connections and to open ones:

``pass``
    Bytes are forwarded both ways unchanged.
``refuse``
    The listening socket is closed, so a new connection gets a true ``ECONNREFUSED``
    (botocore: ``EndpointConnectionError``), and open connections are closed (FIN), so
    pooled keep-alive connections do not bypass the outage. Switching back re-opens the
    listener on the same port (``SO_REUSEADDR``).
``reset``
    Open connections are reset at once (``SO_LINGER`` 0, then close: an RST); new ones are
    accepted and reset as soon as their request arrives, so the client is reading the
    response when the RST comes: ``ECONNRESET`` (botocore: ``ConnectionClosedError``).
``delay``
    Each chunk is forwarded :attr:`FaultProxy.delay` seconds after it arrived, in both
    directions, so a request and its response take at least twice the delay longer.
``blackhole``
    Connections are accepted and whatever arrives is read and dropped; nothing is ever
    answered, so the client hits its read timeout (botocore: ``ReadTimeoutError``).
    Connections that lost bytes this way are closed when the mode changes again, since
    their HTTP exchange is broken. (A dropped SYN, i.e. a connect timeout, is not modelled.)

A mode change returns once it is in effect. One thread serves every connection with a
selector; it listens on 127.0.0.1 only and stops on :meth:`FaultProxy.close`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

log = logging.getLogger("igata.testing.proxy")

PASS, REFUSE, RESET, DELAY, BLACKHOLE = "pass", "refuse", "reset", "delay", "blackhole"
#: The modes a :class:`FaultProxy` can be switched to.
MODES = (PASS, REFUSE, RESET, DELAY, BLACKHOLE)

_CHUNK = 65536
# SO_LINGER on, timeout 0: close() sends an RST instead of a FIN.
_LINGER_RST = struct.pack("ii", 1, 0)
_EOF = b""


class ProxyError(RuntimeError):
    """The proxy could not do what was asked (e.g. its port was taken while it refused)."""


@dataclass(eq=False)
class _Link:
    """One client connection and, unless blackholed from the start, its upstream one."""

    client: socket.socket
    upstream: socket.socket | None = None
    #: Bytes waiting for their socket to become writable; ``_EOF`` closes after them.
    out: dict[socket.socket, deque[bytes]] = field(default_factory=dict)
    #: Chunks held back in delay mode: (due time, destination, data).
    held: deque[tuple[float, socket.socket, bytes]] = field(default_factory=deque)
    #: Sockets still read from (a side that sent EOF is not).
    reading: set[socket.socket] = field(default_factory=set)
    #: Bytes were dropped (blackhole): the HTTP exchange on it cannot be resumed.
    tainted: bool = False
    closed: bool = False

    def peer(self, sock: socket.socket) -> socket.socket | None:
        return self.upstream if sock is self.client else self.client

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class FaultProxy:
    """A TCP proxy on ``127.0.0.1`` (a free port) in front of ``upstream_host:upstream_port``.

    ``mode`` (one of :data:`MODES`, default ``pass``) and ``delay`` (seconds, for the
    ``delay`` mode) may be changed at any time from any thread; the change is in effect
    when the assignment returns. ``url`` is ``http://127.0.0.1:PORT`` for
    ``AWS_ENDPOINT_URL``. Use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        mode: str = PASS,
        delay: float = 1.0,
        upstream_connect_timeout: float = 2.0,
    ):
        _check_mode(mode)
        if delay < 0:
            raise ValueError(f"FaultProxy: delay must be >= 0 seconds, got {delay}")
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self._connect_timeout = upstream_connect_timeout
        self._mode = mode
        self._delay = float(delay)
        self._selector = selectors.DefaultSelector()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._port = 0
        self._applied_mode = PASS
        self._cond = threading.Condition()
        self._requested = 0  # generation of the newest mode change
        self._applied = 0  # generation the serving thread has put in effect
        self._failure: BaseException | None = None
        self._closing = False
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._open_listener()
        self.port: int = self._port
        self._thread = threading.Thread(
            target=self._serve, name=f"igata-fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        if mode != PASS:
            self._request_change()

    # -- public ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self.set_mode(mode)

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"FaultProxy: delay must be >= 0 seconds, got {seconds}")
        self._delay = float(seconds)

    def set_mode(self, mode: str, *, delay: float | None = None) -> None:
        """Switch to ``mode`` (and set ``delay`` first, if given); returns once in effect."""
        _check_mode(mode)
        if delay is not None:
            self.delay = delay
        if self._closed or self._closing:
            raise ProxyError(f"FaultProxy on port {self.port} is closed; mode {mode!r} not set")
        self._mode = mode
        self._request_change()

    def close(self) -> None:
        """Close every connection and the listener and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closing = True
        self._wake()
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # pragma: no cover - the loop never blocks for long
            raise ProxyError(f"FaultProxy on port {self.port}: serving thread did not stop")
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self._closed = True

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.upstream
        return f"<FaultProxy {self.url} -> {host}:{port} mode={self._mode}>"

    # -- control -----------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _request_change(self) -> None:
        if not self._thread.is_alive():
            raise ProxyError(f"FaultProxy on port {self.port}: serving thread has stopped")
        with self._cond:
            self._requested += 1
            generation = self._requested
        self._wake()
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._applied >= generation or self._failure is not None, timeout=10
            )
            failure, self._failure = self._failure, None
        if failure is not None:
            raise ProxyError(f"FaultProxy on port {self.port}: {failure}") from failure
        if not done:  # pragma: no cover - the loop applies a change within milliseconds
            raise ProxyError(f"FaultProxy on port {self.port}: mode change not applied in 10 s")

    def _apply(self) -> None:
        """Serving thread: put the requested mode in effect for the listener and every link."""
        with self._cond:
            generation = self._requested
        mode = self._mode
        failure: BaseException | None = None
        try:
            if mode == REFUSE:
                self._close_listener()
            elif self._listener is None:
                self._open_listener()
        except OSError as exc:
            failure = exc
        self._applied_mode = mode
        for link in list(self._links):
            if mode == REFUSE:
                self._close_link(link)
            elif mode == RESET:
                self._close_link(link, reset=True)
            elif mode != BLACKHOLE:
                if link.tainted:
                    self._close_link(link)
                elif link.upstream is None:
                    self._connect_upstream(link)
        with self._cond:
            self._applied = max(self._applied, generation)
            if failure is not None:
                self._failure = failure
            self._cond.notify_all()

    # -- listener ----------------------------------------------------------------------

    def _open_listener(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Re-binding after ``refuse`` can race with a connection of our own in its last
        # moments on this port; a short retry rides that out.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                listener.bind((self.host, self._port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    listener.close()
                    raise OSError(
                        exc.errno,
                        f"cannot listen on {self.host}:{self._port} again after 'refuse' "
                        f"({exc.strerror}); another process took the port",
                    ) from exc
                time.sleep(0.02)
        listener.listen(64)
        listener.setblocking(False)
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        client.setblocking(False)
        link = _Link(client, reading={client})
        self._links.add(link)
        self._selector.register(client, selectors.EVENT_READ, link)
        # Blackholed and reset connections get no upstream (a reset one is reset when its
        # request arrives); one that survives into pass or delay is connected then.
        if self._applied_mode in (PASS, DELAY):
            self._connect_upstream(link)

    def _connect_upstream(self, link: _Link) -> None:
        try:
            # Blocking, but on loopback a connect is answered at once (or refused).
            upstream = socket.create_connection(self.upstream, timeout=self._connect_timeout)
        except OSError as exc:
            log.debug("fault proxy: upstream %s:%s unreachable: %s", *self.upstream, exc)
            self._close_link(link, reset=True)
            return
        upstream.setblocking(False)
        link.upstream = upstream
        link.reading.add(upstream)
        self._selector.register(upstream, selectors.EVENT_READ, link)

    # -- serving -----------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._closing:
                for key, events in self._selector.select(self._next_timeout()):
                    if key.data is None:
                        self._drain_wake()
                    elif key.data == "accept":
                        if self._listener is not None:
                            self._accept()
                    else:
                        self._on_ready(key.data, key.fileobj, events)  # type: ignore[arg-type]
                self._release_held()
        except Exception:  # pragma: no cover - a bug here must not hang the tests
            log.exception("fault proxy on port %s failed", self.port)
        finally:
            for link in list(self._links):
                self._close_link(link)
            self._close_listener()
            with self._cond:
                self._applied = self._requested
                self._cond.notify_all()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(_CHUNK):
                pass
        with self._cond:
            pending = self._applied < self._requested
        if pending and not self._closing:
            self._apply()

    def _next_timeout(self) -> float | None:
        due = [link.held[0][0] for link in self._links if link.held]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _on_ready(self, link: _Link, sock: socket.socket, events: int) -> None:
        if link.closed:
            return
        if events & selectors.EVENT_WRITE:
            self._write(link, sock)
        if events & selectors.EVENT_READ and not link.closed:
            self._read(link, sock)

    def _read(self, link: _Link, sock: socket.socket) -> None:
        if self._applied_mode == RESET:
            # Reset once the request is sent, so the client is waiting for the answer:
            # a reset mid-request, whatever the client's HTTP library does on send errors.
            self._close_link(link, reset=True)
            return
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_link(link)
            return
        peer = link.peer(sock)
        if self._applied_mode == BLACKHOLE or peer is None:
            if not data:
                self._close_link(link)
            else:
                link.tainted = True
            return
        if self._applied_mode == DELAY or link.held:
            # Behind chunks already held, so the byte order is kept when the delay changes.
            due = time.monotonic() + (self._delay if self._applied_mode == DELAY else 0.0)
            if link.held:
                due = max(due, link.held[-1][0])
            link.held.append((due, peer, data))
        else:
            self._send(link, peer, data)
        if not data and not link.closed:
            # That side is done; stop reading it (its EOF travels to the peer above).
            link.reading.discard(sock)
            self._update_interest(link, sock)

    def _release_held(self) -> None:
        now = time.monotonic()
        for link in list(self._links):
            while link.held and link.held[0][0] <= now and not link.closed:
                _, peer, data = link.held.popleft()
                self._send(link, peer, data)

    def _send(self, link: _Link, sock: socket.socket, data: bytes) -> None:
        link.out.setdefault(sock, deque()).append(data)
        self._write(link, sock)

    def _write(self, link: _Link, sock: socket.socket) -> None:
        queue = link.out.get(sock)
        while queue and not link.closed:
            data = queue[0]
            if data == _EOF:
                # The other side closed and everything before it was delivered.
                self._close_link(link)
                return
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close_link(link)
                return
            if sent < len(data):
                queue[0] = data[sent:]
                break
            queue.popleft()
        if not link.closed:
            self._update_interest(link, sock)

    def _update_interest(self, link: _Link, sock: socket.socket) -> None:
        events = selectors.EVENT_READ if sock in link.reading else 0
        if link.out.get(sock):
            events |= selectors.EVENT_WRITE
        try:
            current = self._selector.get_key(sock).events
        except KeyError:
            current = 0
        if events == current:
            return
        if not current:
            self._selector.register(sock, events, link)
        elif events:
            self._selector.modify(sock, events, link)
        else:
            self._selector.unregister(sock)

    def _close_link(self, link: _Link, *, reset: bool = False) -> None:
        if link.closed:
            return
        link.closed = True
        self._links.discard(link)
        for sock in link.sockets():
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
        if reset:
            _reset(link.client)
        else:
            link.client.close()
        if link.upstream is not None:
            link.upstream.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


def _check_mode(mode: Any) -> None:
    if mode not in MODES:
        raise ValueError(f"FaultProxy: unknown mode {mode!r}; choose one of {', '.join(MODES)}")


@pytest.fixture
def fault_proxy(local_aws: Any) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in ``pass`` mode in front of the session's local AWS endpoint.

    It does not touch ``os.environ``: point a worker at it with
    ``AWS_ENDPOINT_URL=fault_proxy.url`` in the worker's environment, or a client with
    ``endpoint_url=fault_proxy.url``. Closed after the test.
    """
    parts = urlsplit(local_aws.url)
    assert parts.hostname is not None and parts.port is not None, local_aws.url
    with FaultProxy(parts.hostname, parts.port) as proxy:
        yield proxy
