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
from email.message import Message
from functools import partial
from typing import IO, Any

from igata_http.hosts import HostAllowList, NotAllowed

__all__ = ["HostAllowList", "NotAllowed", "backoff_delay", "describe", "is_transient", "opener"]

#: Answers that may succeed when sent again.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

#: Longest wait between two attempts, whatever the backoff or Retry-After says.
MAX_BACKOFF = 30.0


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
