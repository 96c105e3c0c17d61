"""A real HTTP server on 127.0.0.1 (a free port, in a thread) for the igata-http tests.

It serves scripted answers by path and, on ``/hook``, plays a webhook receiver that stores
posted records by ``igata_id`` (as a well-behaved receiver de-duplicates). Tests reach it
through the ``server`` fixture only (``server.answer(...)`` makes answers), so that they
import nothing from this file at run time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering at all.
    delay: float = 0.0
    #: Send a Content-Length header (else the body ends when the connection closes).
    content_length: bool = True


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


class LocalServer:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.routes: dict[str, Answer] = {}
        self.scripts: dict[str, list[Answer]] = {}
        #: The webhook receiver on /hook: records by igata_id, and its answer when unscripted.
        self.hook_records: dict[str, dict[str, Any]] = {}
        self.hook_status = 200
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self.port = self._httpd.server_address[1]
        # A short poll keeps shutdown() (each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @staticmethod
    def answer(status: int = 200, body: bytes = b"", **options: Any) -> Answer:
        """An answer (``headers=``, ``delay=``, ``content_length=`` as in :class:`Answer`)."""
        return Answer(status, body, **options)

    def serve(self, path: str, answer: Answer) -> None:
        """Answer every request for ``path`` with ``answer``."""
        self.routes[path] = answer

    def script(self, path: str, *answers: Answer) -> None:
        """Answer the next requests for ``path`` with these, in order, then as usual."""
        self.scripts.setdefault(path, []).extend(answers)

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            script = self.scripts.get(seen.path)
            if script:
                return script.pop(0)
        if seen.path in self.routes:
            return self.routes[seen.path]
        if seen.path == "/hook" and seen.method == "POST":
            return self._receive(seen)
        return Answer(404, b"no such path")

    def _receive(self, seen: Seen) -> Answer:
        if self.hook_status != 200:
            return Answer(self.hook_status, b"receiver is down")
        batch = json.loads(seen.body or b"{}")
        with self._lock:
            for record in batch["records"]:
                self.hook_records[record["igata_id"]] = record
        return Answer(200, b'{"ok": true}', {"Content-Type": "application/json"})


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection; a body without length ends at close.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._respond(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._respond(self.rfile.read(length))

        def _respond(self, body: bytes | None) -> None:
            seen = Seen(self.command, self.path, dict(self.headers.items()), body)
            answer = server._answer(seen)
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.content_length and "Content-Length" not in answer.headers:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout or a size limit under test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    yield local
    local.stop()


@pytest.fixture
def other_server() -> Iterator[LocalServer]:
    local = LocalServer()
    yield local
    local.stop()
