"""Fixtures of the igata-s3 tests: every test talks to moto in server mode over HTTP."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

pytest_plugins = ["igata_core.testing"]


@pytest.fixture
def s3(aws: Any) -> Any:
    """A plain boto3 S3 client of the test's own, to set up and inspect buckets."""
    return aws.client("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="igata-in")
    return "igata-in"


@pytest.fixture
def out_bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="igata-out")
    return "igata-out"


def image_bytes(fmt: str = "JPEG", mode: str = "RGB", size: tuple[int, int] = (8, 6),
                color: Any = None) -> bytes:  # fmt: skip
    from PIL import Image

    if color is None:
        color = {"L": 128, "I;16": 40000, "RGBA": (10, 20, 30, 128)}.get(mode, (200, 100, 50))
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def strict_s3(aws: Any) -> None:
    """Skip unless S3 is a strict external S3 (``python -m igata_core.testing.rgw``).

    For tests of what moto accepts and AWS and Ceph's RADOS Gateway refuse (skewed clocks,
    keys over 1024 bytes); narrow tests with injected responses cover the same code on moto.
    """
    from igata_core.testing.rgw import ExternalS3Aws

    if not isinstance(aws, ExternalS3Aws):
        pytest.skip("moto accepts this request; run scripts/s3-conformance.sh (Ceph RGW)")


@pytest.fixture
def wrong_secret(monkeypatch: pytest.MonkeyPatch) -> Any:
    """From the call on, this process signs S3 requests with a wrong secret key."""
    from igata_s3.client import clear_clients

    def use_wrong_secret() -> None:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-key")
        clear_clients()  # the shared clients are keyed by the access key id, not the secret

    yield use_wrong_secret
    clear_clients()


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No credentials anywhere botocore looks (environment, files, instance metadata)."""
    from igata_s3.client import clear_clients

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    clear_clients()
    yield
    clear_clients()


@pytest.fixture
def skewed_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """From the call on, botocore signs requests with a clock 20 minutes slow."""
    import datetime as dt

    import botocore.auth

    def slow_clock() -> None:
        now = botocore.auth.get_current_datetime
        monkeypatch.setattr(botocore.auth, "get_current_datetime",
                            lambda *a, **k: now(*a, **k) - dt.timedelta(minutes=20))  # fmt: skip

    return slow_clock


@pytest.fixture
def make_image() -> Callable[..., bytes]:
    return image_bytes


class _RawBody:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def error_response(status: int, code: str, message: str = "injected",
                   fields: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> Any:  # fmt: skip
    """An S3 error response as botocore would receive it over HTTP.

    ``fields``: more elements of the ``<Error>`` body (AWS's ``ServerTime``…); ``headers``:
    more HTTP headers (RGW's ``Date``).
    """
    from botocore.awsrequest import AWSResponse

    extra = "".join(f"<{name}>{value}</{name}>" for name, value in (fields or {}).items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}</Error>"
    ).encode()
    return AWSResponse("http://injected", status,
                       {"Content-Type": "application/xml", **(headers or {})},
                       _RawBody(body))  # fmt: skip


class Injector:
    """Answers chosen S3 operations of one client with an error instead of sending them.

    ``calls`` counts every request of the operation that reached the wire or was answered
    here (retries included); ``times`` limits how many are answered with the error.
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._registered: list[tuple[Any, str, Any]] = []

    def fail(self, client: Any, operation: str, status: int, code: str,
             times: int | None = None, when: Callable[[str], bool] | None = None,
             **response: Any) -> None:  # fmt: skip
        """``response``: ``message``, ``fields``, ``headers`` of :func:`error_response`;
        ``when``: only requests whose URL it accepts (all by default). Every handler
        registered for an operation sees each request: answer one error at a time."""
        state = {"left": times}

        def handler(request: Any = None, **_: Any) -> Any:
            if when is not None and not when(getattr(request, "url", "")):
                return None
            self.calls[operation] = self.calls.get(operation, 0) + 1
            if state["left"] is not None:
                if state["left"] <= 0:
                    return None
                state["left"] -= 1
            return error_response(status, code, **response)

        event = f"before-send.s3.{operation}"
        client.meta.events.register(event, handler)
        self._registered.append((client, event, handler))

    def count(self, client: Any, operation: str) -> None:
        def handler(**_: Any) -> None:
            self.calls[operation] = self.calls.get(operation, 0) + 1

        event = f"before-send.s3.{operation}"
        client.meta.events.register(event, handler)
        self._registered.append((client, event, handler))

    def remove(self) -> None:
        for client, event, handler in self._registered:
            client.meta.events.unregister(event, handler)
        self._registered.clear()


@pytest.fixture
def inject() -> Any:
    injector = Injector()
    yield injector
    injector.remove()
