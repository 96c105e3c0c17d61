"""Throttling and UnprocessedItems: nothing lost, nothing reported written too early.

moto never throttles, so the real client (talking to the moto server) is wrapped: the
wrapper writes only part of a batch and hands the rest back as ``UnprocessedItems``, as
DynamoDB does under load, or refuses an update as throttled.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from igata_core.components import RunContext
from igata_dynamodb.batch import MAX_BATCH, Backoff, UnprocessedItemsError, batch_write, chunks
from igata_dynamodb.sink import DynamoDbSink, DynamoDbWriteError


class ThrottledClient:
    """A real client that, by plan, half-processes batches and refuses updates."""

    def __init__(self, client: Any):
        self._client = client
        self.partial_batches: float = 0  # how many batch calls write only half
        self.throttled_requests: set[str] = set()  # update_item refused once for these
        self.batch_sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        [(table, requests)] = RequestItems.items()
        self.batch_sizes.append(len(requests))
        keys = [repr(sorted((r.get("PutRequest") or r["DeleteRequest"]).items())) for r in requests]
        assert len(requests) <= MAX_BATCH, f"{len(requests)} requests in one BatchWriteItem"
        assert len(set(keys)) == len(keys), "a key named twice in one BatchWriteItem"
        if self.partial_batches > 0:
            self.partial_batches -= 1
            done, rest = requests[: len(requests) // 2], requests[len(requests) // 2 :]
            if done:
                self._client.batch_write_item(RequestItems={table: done})
            return {"UnprocessedItems": {table: rest}}
        return self._client.batch_write_item(RequestItems=RequestItems)

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        request_id = next(iter(kwargs["Key"].values()))["S"]
        if request_id in self.throttled_requests:
            self.throttled_requests.discard(request_id)
            raise ClientError(
                {
                    "Error": {
                        "Code": "ProvisionedThroughputExceededException",
                        "Message": "slow down",
                    }
                },
                "UpdateItem",
            )
        return self._client.update_item(**kwargs)


class WrappedSink(DynamoDbSink):
    def make_client(self, max_pool_connections: int) -> Any:
        self.throttled = ThrottledClient(super().make_client(max_pool_connections))
        return self.throttled


@pytest.fixture
def sink(layout: Any) -> Any:
    sink = WrappedSink(
        {"requests_tablename": layout.requests_table, "results_tablename": layout.results_table},
        RunContext(concurrency=4),
    )
    sink.open()
    sink.sleeps = []
    sink.backoff = Backoff(sleep=sink.sleeps.append)
    sink._updater.backoff = sink.backoff
    yield sink
    sink.close()


def consistent(store: Any) -> None:
    """No request reads completed unless all of its RESULTS items are there."""
    for item in store.requests():
        if item.get("state") == "completed":
            assert len(store.results_of(item["request_id"])) == item["results_count"], item


def test_unprocessed_items_are_retried_until_written(
    sink: Any, store: Any, make_record: Any
) -> None:
    records = [make_record(f"r{i:02d}", [{"n": j} for j in range(3)]) for i in range(20)]
    sink.throttled.partial_batches = 4
    for start in range(0, 20, 15):
        assert sink.put_records(records[start : start + 15]) == []
    sink.flush()
    assert sink.pending() == 0
    assert len(store.results()) == 60
    assert {item["state"] for item in store.requests()} == {"completed"}
    assert len(sink.sleeps) >= 4, "every retry of unprocessed items waits first"
    assert all(0 <= delay <= sink.backoff.cap for delay in sink.sleeps)
    assert max(sink.throttled.batch_sizes) <= MAX_BATCH
    consistent(store)


def test_lasting_throttling_fails_the_flush_and_keeps_everything(
    sink: Any, store: Any, make_record: Any
) -> None:
    records = [make_record(f"r{i:02d}", [{"n": j} for j in range(4)]) for i in range(15)]
    sink.put_records(records)
    sink.throttled.partial_batches = math.inf
    with pytest.raises(DynamoDbWriteError, match="stayed unprocessed after 8 attempts") as raised:
        sink.flush()
    assert "stay buffered for the next flush" in str(raised.value)
    assert sink.pending() > 0
    consistent(store)

    sink.throttled.partial_batches = 0  # the table has capacity again
    sink.flush()
    assert sink.pending() == 0
    assert len(store.results()) == 60
    assert {item["state"] for item in store.requests()} == {"completed"}
    consistent(store)


def test_a_throttled_update_fails_the_flush_and_is_retried(
    sink: Any, store: Any, make_record: Any
) -> None:
    sink.put_records([make_record(f"r{i}", [{"n": i}]) for i in range(5)])
    sink.throttled.throttled_requests = {"r3"}
    with pytest.raises(DynamoDbWriteError, match="ProvisionedThroughputExceededException"):
        sink.flush()
    assert sink.pending() == 1
    assert store.request("r3") is None
    assert {item["request_id"] for item in store.requests()} == {"r0", "r1", "r2", "r4"}
    sink.flush()
    assert store.request("r3")["state"] == "completed"
    assert sink.pending() == 0


def test_the_client_retries_throttled_calls_in_standard_mode(sink: Any) -> None:
    retries = sink.throttled.meta.config.retries
    assert retries["mode"] == "standard"
    assert retries["total_max_attempts"] >= 3
    assert sink.throttled.meta.config.read_timeout <= 60


def test_chunks_hold_at_most_25_and_each_key_once() -> None:
    requests = [(f"k{i % 30}", {"i": i}) for i in range(70)]
    batches = chunks(requests)
    assert [len(batch) for batch in batches] == [25, 5]
    flat = [key for batch in batches for key, _ in batch]
    assert len(set(flat)) == 30
    # The last request for a key wins.
    assert dict(request for batch in batches for request in batch)["k0"] == {"i": 60}


def test_batch_write_refuses_oversized_calls_and_gives_up_after_its_attempts() -> None:
    class NeverDone:
        calls = 0

        def batch_write_item(self, RequestItems: Any) -> Any:
            NeverDone.calls += 1
            return {"UnprocessedItems": RequestItems}

    with pytest.raises(ValueError, match="at most 25"):
        batch_write(NeverDone(), "t", [{}] * 26)
    sleeps: list[float] = []
    with pytest.raises(UnprocessedItemsError, match="1 of 1 items to table 't'"):
        batch_write(NeverDone(), "t", [{}], Backoff(attempts=3, sleep=sleeps.append))
    assert NeverDone.calls == 3
    assert len(sleeps) == 2
