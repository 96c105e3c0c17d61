"""A TCP relay in front of an HTTP endpoint that can cut response bodies short.

:class:`~igata_core.testing.proxy.FaultProxy` breaks whole connections; whether a fault then
hits a response before or in the middle of its body is a matter of timing. This relay makes
the second case certain: while :attr:`BodyCutProxy.cutting` is true, every response goes out
with its status line, its headers and half of its body, and then the connection is closed.
The client has a successful response in hand and its read of the body breaks (urllib3
``IncompleteRead``; botocore ``ResponseStreamingError``), as when a connection drops during a
download. Switching cutting on closes the open connections, so pooled keep-alive connections
cannot bypass it. Otherwise bytes pass unchanged.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from typing import Any

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes until either side closes."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for sock in (source, target):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class BodyCutProxy:
    """A relay on 127.0.0.1 (a free port) to ``upstream_host:upstream_port``; ``url`` is
    ``http://127.0.0.1:PORT``. One thread per direction of each connection."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._cutting = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        #: Responses cut short so far.
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept, name="body-cut-proxy", daemon=True)
        self._thread.start()

    @property
    def cutting(self) -> bool:
        return self._cutting

    @cutting.setter
    def cutting(self, value: bool) -> None:
        with self._lock:
            self._cutting = value
            if value:
                for sock in self._open:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cutting = True  # closes the open connections
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BodyCutProxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            cut = self._cutting
            self._open.update((client, upstream))
        try:
            requests = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
            requests.start()
            if cut:
                self._cut_response(upstream, client)
            else:
                _pump(upstream, client)
            requests.join(timeout=5)
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            client.close()
            upstream.close()

    def _cut_response(self, upstream: socket.socket, client: socket.socket) -> None:
        """Forward the first response's head and half its body, then close both sides."""
        received = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in received:
                data = upstream.recv(65536)
                if not data:
                    break
                received += data
            head, _, body = received.partition(b"\r\n\r\n")
            found = _CONTENT_LENGTH.search(head)
            length = int(found.group(1)) if found else 0
            keep = length // 2
            while len(body) < keep:
                data = upstream.recv(65536)
                if not data:
                    break
                body += data
            client.sendall(head + b"\r\n\r\n" + body[:keep])
            with self._lock:
                self.cuts += 1
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
