"""The webhook sink against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

import pytest

from igata_core import Sink
from igata_core.testing.contracts import SinkContract
from igata_http.webhook import WebhookRefused, WebhookSink, WebhookUnavailable

if TYPE_CHECKING:
    from conftest import LocalServer


def _sink(server: LocalServer, **options: Any) -> WebhookSink:
    options.setdefault("backoff", 0.01)
    sink = WebhookSink({"url": server.url("/hook"), **options})
    sink.open()
    return sink


def _records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"igata_id": f"req-{i}", "igata_input": f"https://in/{i}.png", "label": f"l{i}"}
        for i in range(start, start + n)
    ]


class TestWebhookSinkContract(SinkContract):
    @pytest.fixture(autouse=True)
    def _receiver(self, server: LocalServer) -> None:
        self.server = server

    def make_sink(self, tmp_path: Any) -> Sink:
        return _sink(self.server, retries=1)

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        return list(self.server.hook_records.values())

    def break_store(self, sink: Sink) -> None:
        self.server.hook_status = 503

    def repair_store(self, sink: Sink) -> None:
        self.server.hook_status = 200


def test_batches_carry_records_and_an_idempotency_key(server: LocalServer) -> None:
    sink = _sink(server, batch_size=4, authorization="Bearer s3cret")
    sink.put_records(_records(6))
    sink.flush()
    posts = server.seen("/hook")
    bodies = [json.loads(p.body or b"") for p in posts]
    assert [len(b["records"]) for b in bodies] == [4, 2]
    for post, body in zip(posts, bodies, strict=True):
        assert post.headers["Content-Type"] == "application/json"
        assert post.headers["Authorization"] == "Bearer s3cret"
        assert post.headers["Idempotency-Key"] == body["batch"]
    assert len({b["batch"] for b in bodies}) == 2
    assert sorted(server.hook_records) == [f"req-{i}" for i in range(6)]


def test_the_same_records_make_the_same_key(server: LocalServer) -> None:
    for _ in range(2):
        sink = _sink(server)
        sink.put_records(_records(3))
        sink.flush()
    first, second = (p.headers["Idempotency-Key"] for p in server.seen("/hook"))
    assert first == second, "a redelivered batch must be recognisable by its key"


def test_a_redelivered_record_is_sent_once_per_flush(server: LocalServer) -> None:
    sink = _sink(server)
    sink.put_records(_records(2))
    sink.put_records([dict(_records(1)[0], label="again")])
    sink.flush()
    [post] = server.seen("/hook")
    records = json.loads(post.body or b"")["records"]
    assert [(r["igata_id"], r["label"]) for r in records] == [("req-1", "l1"), ("req-0", "again")]


def test_server_errors_are_retried_with_the_same_key(server: LocalServer) -> None:
    server.script("/hook", server.answer(503), server.answer(500))
    sink = _sink(server, retries=2)
    sink.put_records(_records(2))
    sink.flush()
    keys = [p.headers["Idempotency-Key"] for p in server.seen("/hook")]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert sorted(server.hook_records) == ["req-0", "req-1"]


def test_retry_after_is_honoured(server: LocalServer) -> None:
    server.script("/hook", server.answer(429, headers={"Retry-After": "0"}))
    sink = _sink(server, retries=1, backoff=60)  # the server's 0 s wins over 60 s
    sink.put_records(_records(1))
    sink.flush()
    assert len(server.seen("/hook")) == 2


def test_a_failing_receiver_fails_the_flush_and_keeps_the_batch(server: LocalServer) -> None:
    server.hook_status = 503
    sink = _sink(server, retries=2)
    sink.put_records(_records(3))
    with pytest.raises(WebhookUnavailable, match=r"\(3 records\) failed 3 times; last: HTTP 503"):
        sink.flush()
    assert len(server.seen("/hook")) == 3
    server.hook_status = 200
    sink.put_records(_records(1, start=3))
    sink.flush()
    keys = [p.headers["Idempotency-Key"] for p in server.seen("/hook")]
    assert keys[3] == keys[0], "the failed batch is sent again unchanged, before new ones"
    assert sorted(server.hook_records) == [f"req-{i}" for i in range(4)]


def test_a_refused_batch_is_a_clear_error_without_retries(server: LocalServer) -> None:
    server.script("/hook", server.answer(422, b'{"error": "label must be a number"}'))
    sink = _sink(server, retries=3)
    sink.put_records(_records(2))
    with pytest.raises(WebhookRefused) as refused:
        sink.flush()
    message = str(refused.value)
    assert "(2 records) refused: HTTP 422" in message
    assert "label must be a number" in message and "not retried" in message
    assert len(server.seen("/hook")) == 1
    sink.flush()  # once the receiver accepts it, the kept batch goes through
    assert sorted(server.hook_records) == ["req-0", "req-1"]


def test_a_redirect_is_not_followed(server: LocalServer) -> None:
    server.script("/hook", server.answer(307, headers={"Location": server.url("/v2/hook")}))
    sink = _sink(server)
    sink.put_records(_records(1))
    with pytest.raises(WebhookRefused, match=r"HTTP 307.*set url to that address"):
        sink.flush()
    assert server.seen("/v2/hook") == []


def test_an_unreachable_receiver_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = WebhookSink({"url": f"http://127.0.0.1:{port}/hook", "retries": 1, "backoff": 0})
    sink.put_records(_records(1))
    with pytest.raises(WebhookUnavailable, match="failed 2 times; last: ConnectionRefusedError"):
        sink.flush()


def test_unserialisable_records_are_rejected_alone(server: LocalServer) -> None:
    sink = _sink(server)
    records = _records(3)
    records[1]["label"] = float("nan")
    [rejection] = sink.put_records(records)
    assert rejection.index == 1 and "req-1" in rejection.message
    sink.flush()
    assert sorted(server.hook_records) == ["req-0", "req-2"]


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "hook", "http:///hook"])
def test_the_url_is_checked_before_any_request(url: str) -> None:
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        WebhookSink({"url": url})
