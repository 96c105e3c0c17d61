"""A local AWS endpoint for tests: moto in server mode on a free loopback port.

Every boto3 client of every plugin reaches it over HTTP through ``AWS_ENDPOINT_URL``,
exactly as production code reaches AWS. A service may be sent to a strict emulator instead
(``IGATA_TEST_SQS_ENDPOINT``: LocalStack's SQS; ``IGATA_TEST_DYNAMODB_ENDPOINT``: dynalite;
see :mod:`igata_core.testing.emulators`) through ``AWS_ENDPOINT_URL_<SERVICE>``; the other
services stay on moto.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

#: The environment a local endpoint needs (besides AWS_ENDPOINT_URL).
FAKE_AWS_ENV: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

# Variables that would route clients elsewhere than the local server.
_CLEARED = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_SNS",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "S3_ENDPOINT",
    "SQS_ENDPOINT",
    "SNS_ENDPOINT",
    "DYNAMODB_ENDPOINT",
)


#: The variables that send one service to a strict emulator, by service.
STRICT_ENDPOINT_ENV: Mapping[str, str] = {
    "sqs": "IGATA_TEST_SQS_ENDPOINT",
    "dynamodb": "IGATA_TEST_DYNAMODB_ENDPOINT",
}


class LocalAws:
    """A running moto server; ``url`` is its endpoint (``http://127.0.0.1:PORT``).

    ``endpoints`` sends some services elsewhere (service -> URL of a strict emulator);
    ``strict`` names the services that are not on moto, so that a test that needs moto
    itself (SNS delivering into a queue, moto's API) can skip with the reason.
    """

    def __init__(
        self, url: str, server: object | None = None, endpoints: Mapping[str, str] | None = None
    ):
        self.url = url
        self._server = server
        self.endpoints = dict(endpoints or {})

    @property
    def strict(self) -> frozenset[str]:
        return frozenset(self.endpoints)

    @property
    def s3_url(self) -> str:
        """The S3 endpoint (the same server, unless S3 goes elsewhere: ExternalS3Aws)."""
        return self.url

    def url_for(self, service: str) -> str:
        """The endpoint of ``service`` (``s3``, ``sqs``, ``sns``, ``dynamodb``)."""
        if service == "s3":
            return self.s3_url
        return self.endpoints.get(service, self.url)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (a worker) that should use this endpoint."""
        env = {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.url}
        for service, url in self.endpoints.items():
            env[f"AWS_ENDPOINT_URL_{service.upper()}"] = url
        return env

    def reset(self) -> None:
        """Forget every bucket, queue, topic and table (moto's reset API, and on a strict
        emulator every queue or table deleted)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        for service in self.endpoints:
            _empty_emulator(self.client(service), service)

    def client(self, service: str, *, on_moto: bool = False, **kwargs: object) -> object:
        """A boto3 client for this endpoint (S3 with path-style addressing).

        ``on_moto``: moto's own service even when it is sent to a strict emulator (a queue
        that moto's SNS should deliver into must be moto's).
        """
        import boto3
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}) if service == "s3" else None
        return boto3.client(  # type: ignore[call-overload,unused-ignore]
            service,
            endpoint_url=self.url if on_moto else self.url_for(service),
            region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
            **kwargs,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None


def _empty_emulator(client: object, service: str) -> None:
    """Delete every queue (SQS) or table (DynamoDB) of a strict emulator."""
    if service == "sqs":
        for page in client.get_paginator("list_queues").paginate():  # type: ignore[attr-defined]
            for url in page.get("QueueUrls", []):
                client.delete_queue(QueueUrl=url)  # type: ignore[attr-defined]
    elif service == "dynamodb":
        names = [
            name
            for page in client.get_paginator("list_tables").paginate()  # type: ignore[attr-defined]
            for name in page.get("TableNames", [])
        ]
        for name in names:
            client.delete_table(TableName=name)  # type: ignore[attr-defined]
        # DeleteTable returns while the table is still DELETING (on dynalite too, even with
        # a delay of 0: it goes on the next tick): the next test must find none.
        waiter = client.get_waiter("table_not_exists")  # type: ignore[attr-defined]
        for name in names:
            waiter.wait(TableName=name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})


def strict_endpoints_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Services the tests should send to a strict emulator: service -> URL.

    Read from ``IGATA_TEST_SQS_ENDPOINT`` and ``IGATA_TEST_DYNAMODB_ENDPOINT``. Only loopback
    endpoints are accepted (the fixtures delete every queue and table there), and only one
    test process (pytest-xdist workers would empty each other's queues).
    """
    environ = os.environ if environ is None else environ
    endpoints: dict[str, str] = {}
    for service, variable in STRICT_ENDPOINT_ENV.items():
        url = environ.get(variable, "").strip().rstrip("/")
        if not url:
            continue
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if parts.scheme not in ("http", "https") or not loopback:
            raise RuntimeError(
                f"{variable}={url!r}: not an http:// endpoint on loopback; the test fixtures "
                "delete every queue and table there, so they only use a local emulator"
            )
        endpoints[service] = url
    if endpoints and int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1") > 1:
        raise RuntimeError(
            f"{', '.join(STRICT_ENDPOINT_ENV[s] for s in endpoints)} set and pytest runs several "
            "workers (-n): they would empty each other's queues and tables; run without -n"
        )
    return endpoints


def start_local_aws(endpoints: Mapping[str, str] | None = None) -> LocalAws:
    """Start moto's threaded server on 127.0.0.1 and a free port.

    ``endpoints``: services to send to a strict emulator instead (service -> URL).
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the local AWS endpoint needs moto's server: pip install 'igata-core[testing]'"
        ) from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return LocalAws(f"http://{host}:{port}", server, endpoints)


@contextmanager
def local_aws_environment(aws: LocalAws) -> Iterator[LocalAws]:
    """Point this process's boto3 clients at ``aws`` for the duration of the block."""
    saved = {key: os.environ.get(key) for key in (*aws.env(), *_CLEARED)}
    try:
        for key in _CLEARED:
            os.environ.pop(key, None)
        os.environ.update(aws.env())
        yield aws
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
