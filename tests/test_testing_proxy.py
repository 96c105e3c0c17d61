"""The fault-injecting TCP proxy, observed through real boto3 clients against the moto server."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from igata_core.testing.proxy import MODES, FaultProxy, ProxyError


def _client(proxy: FaultProxy, service: str, *, read_timeout: float = 1.0) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=1,
        read_timeout=read_timeout,
        # total_max_attempts counts the first try: one attempt, so each fault shows as is.
        retries={"mode": "standard", "total_max_attempts": 1},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        service,
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


@pytest.fixture
def queue(aws: Any) -> str:
    aws.client("sqs").create_queue(QueueName="proxied")
    return "proxied"


def _queue_names(sqs: Any) -> list[str]:
    return [url.rsplit("/", 1)[1] for url in sqs.list_queues().get("QueueUrls", [])]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def raw(fault_proxy: FaultProxy) -> Iterator[socket.socket]:
    """A plain TCP connection through the proxy, opened in pass mode."""
    sock = socket.create_connection((fault_proxy.host, fault_proxy.port), timeout=2)
    try:
        yield sock
    finally:
        sock.close()


def _http_get(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /moto-api/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    return sock.recv(65536)


def test_fixture_sits_in_front_of_local_aws_and_leaves_environ_alone(
    local_aws: Any, fault_proxy: FaultProxy
) -> None:
    assert fault_proxy.url.startswith("http://127.0.0.1:")
    assert fault_proxy.url != local_aws.url
    assert f"http://{fault_proxy.upstream[0]}:{fault_proxy.upstream[1]}" == local_aws.url
    assert os.environ["AWS_ENDPOINT_URL"] == local_aws.url
    assert fault_proxy.mode == "pass"


def test_pass_forwards_requests_and_large_bodies(aws: Any, fault_proxy: FaultProxy) -> None:
    aws.client("s3").create_bucket(Bucket="through")
    s3 = _client(fault_proxy, "s3", read_timeout=10)
    body = os.urandom(3 * 1024 * 1024)  # many chunks each way
    s3.put_object(Bucket="through", Key="big.bin", Body=body)
    assert s3.get_object(Bucket="through", Key="big.bin")["Body"].read() == body
    direct = aws.client("s3").get_object(Bucket="through", Key="big.bin")["Body"].read()
    assert direct == body


def test_refuse_gives_connection_refused_and_pass_reopens_the_same_port(
    queue: str, fault_proxy: FaultProxy
) -> None:
    from botocore.exceptions import EndpointConnectionError

    sqs = _client(fault_proxy, "sqs")
    assert queue in _queue_names(sqs)
    port = fault_proxy.port

    fault_proxy.mode = "refuse"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((fault_proxy.host, port), timeout=1).close()
    started = time.monotonic()
    with pytest.raises(EndpointConnectionError):
        sqs.list_queues()
    assert time.monotonic() - started < 0.9  # refused at once, not a 1 s connect timeout

    fault_proxy.mode = "pass"
    assert fault_proxy.port == port
    assert queue in _queue_names(sqs)


def test_refuse_closes_open_connections(raw: socket.socket, fault_proxy: FaultProxy) -> None:
    fault_proxy.mode = "refuse"
    assert raw.recv(1) == b""  # an orderly close, at once (the socket's timeout is 2 s)


def test_reset_resets_new_requests_and_pass_recovers(queue: str, fault_proxy: FaultProxy) -> None:
    from botocore.exceptions import ConnectionClosedError

    sqs = _client(fault_proxy, "sqs")
    fault_proxy.mode = "reset"
    for _ in range(3):  # every time, not only on the first connection
        # urllib3 swallows ECONNRESET while sending and reports the closed connection then.
        with pytest.raises(ConnectionClosedError):
            sqs.list_queues()

    fault_proxy.mode = "pass"
    assert queue in _queue_names(sqs)


def test_reset_resets_open_connections(raw: socket.socket, fault_proxy: FaultProxy) -> None:
    fault_proxy.mode = "reset"
    with pytest.raises(ConnectionResetError):
        raw.recv(1)


def test_reset_aborts_a_request_in_flight(queue: str, fault_proxy: FaultProxy) -> None:
    from botocore.exceptions import ConnectionClosedError

    sqs = _client(fault_proxy, "sqs", read_timeout=10)
    fault_proxy.mode = "blackhole"  # holds the request, so it is in flight when reset comes
    errors: list[BaseException] = []

    def call() -> None:
        try:
            sqs.list_queues()
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    started = time.monotonic()
    caller.start()
    time.sleep(0.3)
    fault_proxy.mode = "reset"
    caller.join(timeout=5)
    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConnectionClosedError), errors
    assert time.monotonic() - started < 2  # not the 10 s read timeout


def test_delay_adds_latency_each_way(queue: str, fault_proxy: FaultProxy) -> None:
    sqs = _client(fault_proxy, "sqs", read_timeout=5)
    started = time.monotonic()
    assert queue in _queue_names(sqs)
    baseline = time.monotonic() - started

    fault_proxy.set_mode("delay", delay=0.4)
    assert fault_proxy.delay == 0.4
    started = time.monotonic()
    assert queue in _queue_names(sqs)
    delayed = time.monotonic() - started
    assert delayed >= 0.8  # the request and the response were each held 0.4 s
    assert delayed > baseline + 0.7

    fault_proxy.mode = "pass"
    started = time.monotonic()
    assert queue in _queue_names(sqs)
    assert time.monotonic() - started < 0.8  # the delay is gone


def test_delay_keeps_large_bodies_intact(aws: Any, fault_proxy: FaultProxy) -> None:
    aws.client("s3").create_bucket(Bucket="slow")
    s3 = _client(fault_proxy, "s3", read_timeout=10)
    body = os.urandom(1024 * 1024)
    fault_proxy.set_mode("delay", delay=0.02)
    s3.put_object(Bucket="slow", Key="big.bin", Body=body)
    assert s3.get_object(Bucket="slow", Key="big.bin")["Body"].read() == body


def test_blackhole_ends_in_read_timeout_and_pass_recovers(
    queue: str, fault_proxy: FaultProxy
) -> None:
    from botocore.exceptions import ReadTimeoutError

    sqs = _client(fault_proxy, "sqs", read_timeout=1)
    fault_proxy.mode = "blackhole"
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        sqs.list_queues()
    assert 0.9 <= time.monotonic() - started < 3

    fault_proxy.mode = "pass"
    assert queue in _queue_names(sqs)


def test_leaving_blackhole_closes_connections_that_lost_bytes(
    raw: socket.socket, fault_proxy: FaultProxy
) -> None:
    fault_proxy.mode = "blackhole"
    raw.sendall(b"GET / HTTP/1.1\r\n")  # dropped: this exchange cannot be resumed
    time.sleep(0.1)
    fault_proxy.mode = "pass"
    assert raw.recv(1) == b""


def test_connection_opened_during_blackhole_is_served_after_it(
    fault_proxy: FaultProxy,
) -> None:
    fault_proxy.mode = "blackhole"
    with socket.create_connection((fault_proxy.host, fault_proxy.port), timeout=2) as sock:
        fault_proxy.mode = "pass"
        assert _http_get(sock).startswith(b"HTTP/1.1 ")


def test_unreachable_upstream_looks_like_a_connection_failure() -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    with (
        FaultProxy("127.0.0.1", _free_port()) as proxy,
        pytest.raises((ConnectionClosedError, EndpointConnectionError)),
    ):
        _client(proxy, "sqs").list_queues()


def test_close_stops_the_thread_and_frees_the_port(local_aws: Any) -> None:
    host, port = local_aws.url.rsplit("/", 1)[1].split(":")
    proxy = FaultProxy(host, int(port), mode="delay", delay=0.5)
    assert proxy.mode == "delay"
    with socket.create_connection((proxy.host, proxy.port), timeout=2):
        pass
    threads = [t for t in threading.enumerate() if t.name == f"igata-fault-proxy-{proxy.port}"]
    assert len(threads) == 1

    proxy.close()
    proxy.close()  # idempotent
    assert not threads[0].is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
    with pytest.raises(ProxyError, match="closed"):
        proxy.mode = "pass"


def test_bad_mode_and_delay_are_refused(fault_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode 'down'; choose one of pass, refuse"):
        fault_proxy.mode = "down"
    with pytest.raises(ValueError, match="delay must be >= 0"):
        fault_proxy.delay = -1
    assert fault_proxy.mode == "pass"
    assert set(MODES) == {"pass", "refuse", "reset", "delay", "blackhole"}
