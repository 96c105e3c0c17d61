"""HTTP plumbing shared by the loader and the webhook sink, on ``urllib.request``.

* Separate connect and read timeouts (urllib has one ``timeout`` for both): the socket is
  created under the connect timeout and switched to the read timeout once connected.
* A host allow-list checked before any connection, including for every redirect.
* Which failures are worth retrying: connection errors, timeouts, 5xx, 408 and 429.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from email.message import Message
from functools import partial
from typing import IO, Any
from urllib.parse import urlsplit

#: Answers that may succeed when sent again.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

#: Longest wait between two attempts, whatever the backoff or Retry-After says.
MAX_BACKOFF = 30.0


class NotAllowed(Exception):
    """A URL that must not be fetched (scheme, host, credentials); never retried."""


class HostAllowList:
    """Hosts that may be contacted: ``example.com`` (any port), ``example.com:8443``,
    ``*.example.com`` (its subdomains, any port), ``127.0.0.1:8080``, ``[::1]:8080``.

    An empty list allows nothing: a worker whose inputs come from other people must not be
    able to reach internal addresses unless told to.
    """

    def __init__(self, entries: Iterable[str], how: str = "allowed_hosts={host}"):
        #: How a user allows a host, for messages (``{host}`` is filled in).
        self.how = how
        self.entries = [e.strip() for e in entries if e.strip()]
        self._exact: set[tuple[str, int | None]] = set()
        self._suffixes: list[str] = []
        for entry in self.entries:
            if entry.startswith("*."):
                self._suffixes.append(_normal_host(entry[1:]))
                continue
            parts = urlsplit(f"//{entry}")
            try:
                port = parts.port
            except ValueError:
                raise ValueError(f"allowed_hosts entry {entry!r}: bad port") from None
            if not parts.hostname or parts.username or parts.path:
                raise ValueError(
                    f"allowed_hosts entry {entry!r}: expected HOST, HOST:PORT or *.DOMAIN"
                )
            self._exact.add((_normal_host(parts.hostname), port))

    def check(self, url: str) -> None:
        """Raise :class:`NotAllowed` unless ``url`` is http(s) to an allowed host."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise NotAllowed(f"{url}: only http:// and https:// URLs are fetched")
        if "@" in parts.netloc:
            raise NotAllowed(f"{url}: URLs with credentials (user@host) are refused")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise NotAllowed(f"{url}: bad port") from None
        host = _normal_host(parts.hostname or "")
        if not host:
            raise NotAllowed(f"{url}: names no host")
        if (host, port) in self._exact or (host, None) in self._exact:
            return
        if any(host.endswith(suffix) for suffix in self._suffixes):
            return
        if not self.entries:
            raise NotAllowed(
                f"{url}: no host is allowed yet; list the hosts that may be contacted: "
                + self.how.format(host=f"{host}:{port}")
            )
        raise NotAllowed(
            f"{url}: host {host}:{port} is not in allowed_hosts ({', '.join(self.entries)}); "
            "refused before connecting"
        )


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


class _TimedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()  # under self.timeout: the connect timeout
        self.sock.settimeout(self.read_timeout)


class _TimedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()  # TCP and TLS handshake under the connect timeout
        self.sock.settimeout(self.read_timeout)


class _TimedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float):
        super().__init__()
        self.read_timeout = read_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_TimedHTTPConnection, read_timeout=self.read_timeout), req)


class _TimedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float):
        self.tls = ssl.create_default_context()
        super().__init__(context=self.tls)
        self.read_timeout = read_timeout

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = partial(_TimedHTTPSConnection, read_timeout=self.read_timeout)
        return self.do_open(connection, req, context=self.tls)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an allowed host, checked before connecting to it."""

    max_redirections = 5

    def __init__(self, allow: HostAllowList):
        self.allow = allow

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            self.allow.check(newurl)
        except NotAllowed as exc:
            fp.close()
            raise NotAllowed(f"{req.full_url} redirects ({code}) to {exc}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect answer is returned as an HTTPError instead of being followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def opener(read_timeout: float, allow: HostAllowList | None) -> urllib.request.OpenerDirector:
    """An opener with the read timeout; redirects only to ``allow``ed hosts (none if None).

    Pass the connect timeout as ``timeout=`` to ``open``. Proxies from the environment
    (``https_proxy``, ``no_proxy``) are honoured as by any urllib client.
    """
    redirects = _CheckedRedirects(allow) if allow is not None else _NoRedirects()
    return urllib.request.build_opener(
        _TimedHTTPHandler(read_timeout), _TimedHTTPSHandler(read_timeout), redirects
    )


def is_transient(exc: BaseException) -> bool:
    """Whether sending the same request again may succeed."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in RETRYABLE_STATUS
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (socket.gaierror, ssl.SSLCertVerificationError)):
            return False  # an unknown host or a bad certificate stays so
        return isinstance(reason, OSError)
    return isinstance(exc, (TimeoutError, ConnectionError, http.client.HTTPException))


def describe(exc: BaseException) -> str:
    """A short text for an HTTP failure (status and reason, or the network error)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header in seconds (the HTTP-date form is ignored)."""
    if isinstance(exc, urllib.error.HTTPError) and exc.headers is not None:
        value = exc.headers.get("Retry-After", "")
        if value.strip().isdigit():
            return float(value)
    return None


def backoff_delay(base: float, attempt: int, exc: BaseException | None = None) -> float:
    """The wait before retry number ``attempt`` (1, 2, …): doubling, or Retry-After."""
    hinted = retry_after(exc) if exc is not None else None
    delay = hinted if hinted is not None else base * 2 ** (attempt - 1)
    return min(delay, MAX_BACKOFF)
