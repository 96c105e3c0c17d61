"""The http loader against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

from igata_core import RecordError
from igata_http.loader import HttpLoader
from igata_http.transport import HostAllowList, NotAllowed, _TimedHTTPConnection

if TYPE_CHECKING:
    from conftest import LocalServer


def _loader(server: LocalServer, **options: Any) -> HttpLoader:
    options.setdefault("allowed_hosts", [f"127.0.0.1:{server.port}"])
    options.setdefault("backoff", 0.01)
    return HttpLoader(options)


def test_loads_the_body_with_its_metadata(server: LocalServer) -> None:
    headers = {"Content-Type": "image/png", "ETag": '"abc"'}
    server.serve("/cat.png", server.answer(200, b"\x89PNG data", headers=headers))
    loaded = _loader(server).load(server.url("/cat.png"))
    assert loaded.data == b"\x89PNG data"
    assert loaded.meta == {"size": 9, "content_type": "image/png", "etag": '"abc"'}
    [request] = server.seen("/cat.png")
    assert request.headers["User-Agent"].startswith("igata-http/")


def test_with_no_allowed_hosts_everything_is_refused_with_the_way_out(
    server: LocalServer,
) -> None:
    server.serve("/x", server.answer(200, b"data"))
    with pytest.raises(
        RecordError, match=r"no host is allowed yet.*http\.allowed_hosts=127\.0\.0\.1:"
    ):
        HttpLoader({}).load(server.url("/x"))
    assert server.seen("/x") == [], "nothing may be sent to a host that is not allowed"


def test_other_hosts_and_ports_are_refused_before_connecting(
    server: LocalServer, other_server: LocalServer
) -> None:
    loader = _loader(server)
    for url in (other_server.url("/x"), server.url("/x", host="localhost")):
        with pytest.raises(RecordError, match="not in allowed_hosts"):
            loader.load(url)
    assert other_server.requests == [] and server.requests == []


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://127.0.0.1/x", "only http:// and https://"),
        ("http://user@127.0.0.1/x", "credentials"),
        ("http://127.0.0.1:99999/x", "bad port"),
        ("http:///x", "names no host"),
    ],
)
def test_malformed_or_unsafe_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(NotAllowed, match=message):
        HostAllowList(["127.0.0.1"]).check(url)


def test_allow_list_entries() -> None:
    allow = HostAllowList(["images.example.com", "api.example.com:8443", "*.cdn.example.net"])
    allow.check("https://images.example.com/a.png")
    allow.check("http://IMAGES.example.com.:8080/a.png")  # any port; case and root dot
    allow.check("https://api.example.com:8443/a")
    allow.check("https://eu.cdn.example.net/a")
    for refused in (
        "https://api.example.com/a",  # port 443, not 8443
        "https://example.com/a",
        "https://images.example.com.evil.org/a",
        "https://cdn.example.net.evil.org/a",
        "https://evilcdn.example.net/a",
    ):
        with pytest.raises(NotAllowed):
            allow.check(refused)


def test_a_malformed_allow_list_entry_is_an_option_error() -> None:
    with pytest.raises(ValueError, match="expected HOST"):
        HttpLoader({"allowed_hosts": ["http://example.com/path"]})


def test_redirect_to_an_allowed_host_is_followed(server: LocalServer) -> None:
    server.serve("/old", server.answer(302, headers={"Location": server.url("/new")}))
    server.serve("/new", server.answer(200, b"moved here"))
    assert _loader(server).load(server.url("/old")).data == b"moved here"


def test_redirect_to_another_host_is_refused_before_connecting(
    server: LocalServer, other_server: LocalServer
) -> None:
    server.serve("/old", server.answer(302, headers={"Location": other_server.url("/secret")}))
    with pytest.raises(RecordError, match=r"redirects \(302\) to .*not in allowed_hosts"):
        _loader(server).load(server.url("/old"))
    assert other_server.requests == []


def test_content_length_over_max_bytes_is_refused(server: LocalServer) -> None:
    server.serve("/big", server.answer(200, b"x" * 2000))
    with pytest.raises(RecordError, match="Content-Length 2000 is over max_bytes"):
        _loader(server, max_bytes=1000).load(server.url("/big"))


def test_stream_over_max_bytes_is_stopped(server: LocalServer) -> None:
    server.serve("/stream", server.answer(200, b"x" * 300_000, content_length=False))
    with pytest.raises(RecordError, match="download stopped"):
        _loader(server, max_bytes=100_000).load(server.url("/stream"))
    # Within the limit the same stream loads completely.
    assert len(_loader(server, max_bytes=300_000).load(server.url("/stream")).data) == 300_000


def test_client_errors_are_not_retried(server: LocalServer) -> None:
    with pytest.raises(RecordError, match="HTTP 404"):
        _loader(server).load(server.url("/missing"))
    assert len(server.seen("/missing")) == 1


def test_server_errors_are_retried(server: LocalServer) -> None:
    server.script("/flaky", server.answer(503), server.answer(502))
    server.serve("/flaky", server.answer(200, b"finally"))
    assert _loader(server, retries=2).load(server.url("/flaky")).data == b"finally"
    assert len(server.seen("/flaky")) == 3


def test_gives_up_after_the_retries(server: LocalServer) -> None:
    server.serve("/down", server.answer(503))
    with pytest.raises(RecordError, match=r"HTTP 503.*gave up after 3 attempts"):
        _loader(server, retries=2).load(server.url("/down"))
    assert len(server.seen("/down")) == 3


def test_read_timeout(server: LocalServer) -> None:
    server.serve("/slow", server.answer(200, b"late", delay=1.0))
    started = time.monotonic()
    with pytest.raises(RecordError, match="Timeout"):
        _loader(server, read_timeout=0.2, retries=0).load(server.url("/slow"))
    assert time.monotonic() - started < 0.9


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loader = HttpLoader({"allowed_hosts": [f"127.0.0.1:{port}"], "retries": 1, "backoff": 0})
    with pytest.raises(RecordError, match=r"ConnectionRefusedError.*after 2 attempts"):
        loader.load(f"http://127.0.0.1:{port}/x")


def test_connect_and_read_timeouts_are_separate(server: LocalServer) -> None:
    connection = _TimedHTTPConnection("127.0.0.1", server.port, timeout=0.7, read_timeout=4.0)
    connection.connect()
    try:
        assert connection.timeout == 0.7
        assert connection.sock.gettimeout() == 4.0
    finally:
        connection.close()
