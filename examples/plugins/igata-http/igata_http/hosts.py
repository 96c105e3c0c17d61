"""The host allow-list of the ``http`` loader, checked before any connection.

Apart from ``igata_http.transport`` (urllib.request, http.client, ssl) so that a loader can
parse its ``allowed_hosts`` option, as every run does at assembly, without importing them.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit


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
