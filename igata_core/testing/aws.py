"""A local AWS endpoint for tests: moto in server mode on a free loopback port.

Every boto3 client of every plugin reaches it over HTTP through ``AWS_ENDPOINT_URL``,
exactly as production code reaches AWS.
"""

from __future__ import annotations

import logging
import os
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


class LocalAws:
    """A running moto server; ``url`` is its endpoint (``http://127.0.0.1:PORT``)."""

    def __init__(self, url: str, server: object | None = None):
        self.url = url
        self._server = server

    @property
    def s3_url(self) -> str:
        """The S3 endpoint (the same server, unless S3 goes elsewhere: ExternalS3Aws)."""
        return self.url

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (a worker) that should use this endpoint."""
        return {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.url}

    def reset(self) -> None:
        """Forget every bucket, queue, topic and table (moto's reset API)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def client(self, service: str, **kwargs: object) -> object:
        """A boto3 client for this endpoint (S3 with path-style addressing)."""
        import boto3
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}) if service == "s3" else None
        return boto3.client(  # type: ignore[call-overload,unused-ignore]
            service,
            endpoint_url=self.url,
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


def start_local_aws() -> LocalAws:
    """Start moto's threaded server on 127.0.0.1 and a free port."""
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
    return LocalAws(f"http://{host}:{port}", server)


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
