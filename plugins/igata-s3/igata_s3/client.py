"""One shared, thread-safe boto3 S3 client per process and settings.

boto3 clients are thread-safe once built, but building one through the default session is
not, and every client has its own connection pool: the loader, the source and the sinks of
a run share one client whose pool is as large as the largest concurrency asked for.
Endpoint, region and retry settings come from :mod:`igata_core.awsconfig`, so
``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3`` and the original's ``S3_ENDPOINT`` all work,
and credentials from boto3's standard chain.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from igata_core import awsconfig

# The variables that change where a client goes or who it is (a client is reused only
# while they are unchanged).
_IDENTITY_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "S3_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
)

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], tuple[int, Any]] = {}


@dataclass(frozen=True)
class ClientSettings:
    """Timeouts and retries of a client (botocore's ``standard`` retry mode)."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5


def s3_client(pool_size: int = 10, settings: ClientSettings | None = None) -> Any:
    """The process's S3 client for ``settings``, with at least ``pool_size`` connections.

    A later call asking for a larger pool replaces the shared client by a larger one (the
    old one keeps working for whoever holds it). A forked child builds its own.
    """
    settings = settings or ClientSettings()
    key = (
        os.getpid(),
        settings,
        tuple(os.environ.get(name) for name in _IDENTITY_ENV),
    )
    with _lock:
        found = _clients.get(key)
        if found is not None and found[0] >= pool_size:
            return found[1]
        size = max(pool_size, found[0] if found else 0)
        client = _build(size, settings)
        _clients[key] = (size, client)
        return client


def _build(pool_size: int, settings: ClientSettings) -> Any:
    import boto3
    from botocore.config import Config

    kwargs = awsconfig.config_kwargs(
        "s3",
        max_pool_connections=pool_size,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    # botocore's retries["max_attempts"] counts retries only; ours counts the first try too.
    kwargs["retries"] = {"mode": "standard", "total_max_attempts": settings.max_attempts}
    config = Config(**kwargs)
    # A private session: boto3's default session is not safe to use from several threads.
    return boto3.session.Session().client("s3", **awsconfig.client_kwargs("s3"), config=config)


def clear_clients() -> None:
    """Forget the shared clients (tests that change settings in-process)."""
    with _lock:
        _clients.clear()
