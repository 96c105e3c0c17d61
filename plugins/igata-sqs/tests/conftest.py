"""Fixtures of the igata-sqs tests: queues, images on S3 and predictors, on a moto server."""

from __future__ import annotations

import importlib.util
import io
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from igata_core.testing.queues import Queues

pytest_plugins = ["igata_core.testing"]

TESTS = Path(__file__).parent

# Worker subprocesses import the predictors by module name; in-process runs do the same.
if "sqs_predictors" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("sqs_predictors", TESTS / "sqs_predictors.py")
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["sqs_predictors"] = _module
    _spec.loader.exec_module(_module)


def make_jpeg(width: int = 8, height: int = 6) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def sqs(aws: Any) -> Any:
    return aws.client("sqs")


@pytest.fixture
def queues(sqs: Any) -> Queues:
    return Queues(sqs)


@pytest.fixture
def images(aws: Any) -> Any:
    """``images(n)``: n small JPEGs in bucket ``images``; returns their s3:// URIs."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="images")
    data = make_jpeg()

    def put(n: int, prefix: str = "img") -> list[str]:
        uris = []
        for i in range(n):
            key = f"{prefix}/{i}.jpg"
            s3.put_object(Bucket="images", Key=key, Body=data)
            uris.append(f"s3://images/{key}")
        return uris

    return put


def image_requests(uris: list[str], **extra: Any) -> list[dict[str, Any]]:
    """Requests in the original image format, one per URI."""
    return [
        {"collection_id": "events:1", "image_id": f"images:{i}", "s3_uri": uri, **extra}
        for i, uri in enumerate(uris)
    ]


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def requests_for() -> Any:
    """``requests_for(uris, **extra)``: image-format requests, one per URI."""
    return image_requests


@pytest.fixture
def make_source(aws: Any) -> Any:
    """``make_source(queue_url, cls=SqsSource, **options)``: an opened source, closed after."""
    from igata_sqs.source import SqsSource

    made: list[Any] = []

    def make(queue_url: str, cls: Any = SqsSource, **options: Any) -> Any:
        options.setdefault("wait_time_seconds", 1)
        source = cls({"queue_url": queue_url, **options})
        made.append(source)
        source.open()
        return source

    yield make
    for source in made:
        source.close()


class Recorder:
    """Wraps a boto3 client and records the calls the tests care about."""

    def __init__(self, client: Any):
        self._client = client
        self.events: list[tuple[str, dict[str, Any], Any]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            result = method(**kwargs)
            self.events.append((name, kwargs, result))
            return result

        return call


@pytest.fixture
def recorder() -> Any:
    return Recorder


def client_error(code: str, operation: str = "Call", status: int = 400, **error: Any) -> Any:
    """A botocore ClientError as a service would raise it."""
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": "injected", **error},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@pytest.fixture(name="client_error")
def client_error_fixture() -> Any:
    """``client_error(code, operation="Call", status=400, **error)``: a ClientError."""
    return client_error


class Faulty:
    """Wraps a boto3 client: ``faults[method]`` is a list of what the next calls of that
    method do instead (an exception to raise, or ``function(client, **kwargs)`` giving the
    response); other calls go through. ``calls`` records every call's method and kwargs."""

    def __init__(self, client: Any, **faults: Any):
        self._client = client
        self.faults: dict[str, list[Any]] = {name: list(items) for name, items in faults.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            pending = self.faults.get(name)
            if pending:
                fault = pending.pop(0)
                if isinstance(fault, BaseException):
                    raise fault
                return fault(self._client, **kwargs)
            return method(**kwargs)

        return call


@pytest.fixture
def faulty() -> Any:
    return Faulty


@pytest.fixture
def moto_queues(aws: Any) -> Queues:
    """Queues on moto itself, even when SQS goes to a strict emulator: what moto's SNS
    delivers into must be moto's own queue."""
    return Queues(aws.client("sqs", on_moto=True))


@pytest.fixture
def jpeg() -> Any:
    """``jpeg(width, height)``: the bytes of a small JPEG."""
    return make_jpeg
