"""The ``http`` loader: ``http://`` and ``https://`` URIs, for allowed hosts only.

URIs come from requests that other people write (queue messages), so the loader refuses
every host not listed in ``allowed_hosts`` before it connects, follows redirects only to
allowed hosts, and stops a download at ``max_bytes`` (by Content-Length up front, and
while streaming when the length is not announced or is wrong).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, ClassVar

from igata_core import Loaded, Loader, Option, RecordError, RunContext
from igata_http.hosts import HostAllowList, NotAllowed

if TYPE_CHECKING:
    import urllib.request

# igata_http.transport (urllib.request, http.client, ssl: ~12 ms) is imported by the first
# load, not when the plugin registers (every `igata` command) or the loader is built (every
# run, to check its options).

_CHUNK = 64 * 1024


class HttpLoader(Loader):
    """GETs ``http(s)://`` URIs from allowed hosts; thread-safe (no state per request)."""

    name = "http"
    schemes = ("http", "https")
    description = "http:// and https:// URIs from an allow-list of hosts (stdlib urllib)"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "allowed_hosts",
            "list",
            default=[],
            help="Hosts inputs may be fetched from: HOST, HOST:PORT or *.DOMAIN, "
            "comma-separated. Empty: every URL is refused.",
        ),
        Option(
            "connect_timeout", "float", default=5.0, minimum=0.001,
            help="Seconds to connect (TCP and TLS handshake).",
        ),
        Option(
            "read_timeout", "float", default=30.0, minimum=0.001,
            help="Seconds to wait for each read of the answer.",
        ),
        Option(
            "max_bytes", "int", default=100 * 1024 * 1024, minimum=1,
            help="Refuse answers larger than this many bytes.",
        ),
        Option(
            "retries", "int", default=2, minimum=0,
            help="Extra attempts after a connection error, a timeout or a 5xx/408/429 answer.",
        ),
        Option(
            "backoff", "float", default=0.5, minimum=0,
            help="Seconds before the first retry; doubled for each further one.",
        ),
        Option("user_agent", default="igata-http/0.1", help="User-Agent header."),
    )  # fmt: skip

    def __init__(self, options: Any = None, context: RunContext | None = None):
        super().__init__(options, context)
        # Parsed here so that a malformed entry is reported with the other option problems.
        self.allow = HostAllowList(
            self.opts["allowed_hosts"],
            how="--loader-opt http.allowed_hosts={host} or IGATA_HTTP_ALLOWED_HOSTS={host}",
        )

    @functools.cached_property
    def _opener(self) -> urllib.request.OpenerDirector:
        # Built on first use: its TLS context loads the system's CA certificates (~40 ms),
        # which every `igata run` would pay at start-up even with no http input.
        from igata_http.transport import opener

        return opener(self.opts["read_timeout"], self.allow)

    def load(self, uri: str) -> Loaded:
        from igata_http.transport import backoff_delay, describe, is_transient

        try:
            self.allow.check(uri)
        except NotAllowed as exc:
            raise RecordError(f"http loader: {exc}") from None
        attempts = self.opts["retries"] + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._get(uri)
            except (RecordError, NotAllowed) as exc:
                raise RecordError(f"http loader: {exc}") from None
            except Exception as exc:
                if not is_transient(exc):
                    raise RecordError(f"http loader: {uri}: {describe(exc)}") from None
                if attempt == attempts:
                    raise RecordError(
                        f"http loader: {uri}: {describe(exc)} (gave up after {attempts} attempts)"
                    ) from None
                time.sleep(backoff_delay(self.opts["backoff"], attempt, exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, uri: str) -> Loaded:
        request = self._request(uri)
        limit = self.opts["max_bytes"]
        with self._opener.open(request, timeout=self.opts["connect_timeout"]) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise RecordError(
                    f"{uri}: Content-Length {length} is over max_bytes ({limit}); not downloaded"
                )
            chunks, size = [], 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise RecordError(f"{uri}: more than max_bytes ({limit}); download stopped")
                chunks.append(chunk)
            headers = response.headers
        meta: dict[str, Any] = {"size": size}
        for header, key in (
            ("Content-Type", "content_type"),
            ("ETag", "etag"),
            ("Last-Modified", "last_modified"),
        ):
            if headers.get(header):
                meta[key] = headers[header]
        return Loaded(b"".join(chunks), meta)

    def _request(self, uri: str) -> urllib.request.Request:
        import urllib.request

        # identity: the size limit applies to what is on the wire and what is returned.
        headers = {"User-Agent": self.opts["user_agent"], "Accept-Encoding": "identity"}
        return urllib.request.Request(uri, headers=headers, method="GET")
