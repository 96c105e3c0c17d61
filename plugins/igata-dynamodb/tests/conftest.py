"""Fixtures: the moto server (``aws``, from igata_core.testing), the two tables, sinks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from igata_core.components import RunContext
from igata_dynamodb.layout import Layout
from igata_dynamodb.records import results_hashkey
from igata_dynamodb.sink import DynamoDbSink
from igata_dynamodb.tables import Capacity, create_tables

pytest_plugins = ["igata_core.testing"]

REQUESTS = "igata-requests"
RESULTS = "igata-results"


def make_record(request_id: str, result: Any = None, **fields: Any) -> dict[str, Any]:
    """A result record as the engine makes it for an SQS image request."""
    record: dict[str, Any] = {} if result is None else {"result": result}
    record.update(
        {
            "collection_id": "events:1",
            "request_id": request_id,
            "s3_uri": f"s3://bucket/{request_id}.jpg",
            "igata_id": request_id,
            "igata_input": f"sqs:msg-{request_id}",
        }
    )
    record.update(fields)
    return record


class Store:
    """Reads the two tables back (consistent reads, numbers as Decimal)."""

    def __init__(self, client: Any, layout: Layout):
        self.client = client
        self.layout = layout

    def _plain(self, item: dict[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        return {k: deserializer.deserialize(v) for k, v in item.items()}

    def request(self, request_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.layout.requests_table,
            Key={self.layout.request_key: {"S": request_id}},
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else self._plain(item)

    def requests(self) -> list[dict[str, Any]]:
        return self._scan(self.layout.requests_table)

    def results(self) -> list[dict[str, Any]]:
        return self._scan(self.layout.results_table)

    def results_of(self, request_id: str) -> list[dict[str, Any]]:
        """The request's RESULTS items in position order (found by their hash keys)."""
        found = []
        by_key = {item["hashkey"]: item for item in self.results()}
        position = 0
        while results_hashkey(request_id, position) in by_key:
            found.append(by_key[results_hashkey(request_id, position)])
            position += 1
        return found

    def results_json(self, request_id: str) -> Any:
        item = self.request(request_id)
        assert item is not None, f"no REQUESTS item {request_id!r}"
        return json.loads(item[self.layout.results_key])

    def _scan(self, table: str) -> list[dict[str, Any]]:
        items = []
        for page in self.client.get_paginator("scan").paginate(
            TableName=table, ConsistentRead=True
        ):
            items.extend(self._plain(item) for item in page["Items"])
        return items


@pytest.fixture(name="make_record")
def make_record_fixture() -> Callable[..., dict[str, Any]]:
    return make_record


@pytest.fixture
def ddb(aws: Any) -> Any:
    return aws.client("dynamodb")


@pytest.fixture
def layout(ddb: Any) -> Layout:
    layout = Layout(REQUESTS, RESULTS)
    create_tables(ddb, layout, Capacity())
    return layout


@pytest.fixture
def store(ddb: Any, layout: Layout) -> Store:
    return Store(ddb, layout)


@pytest.fixture
def open_sink(layout: Layout) -> Iterator[Callable[..., DynamoDbSink]]:
    """Makes opened sinks on the two tables (options as keyword arguments)."""
    created: list[DynamoDbSink] = []

    def factory(concurrency: int = 4, **options: Any) -> DynamoDbSink:
        sink = DynamoDbSink(
            {"requests_tablename": REQUESTS, "results_tablename": RESULTS, **options},
            RunContext(concurrency=concurrency),
        )
        sink.open()
        created.append(sink)
        return sink

    yield factory
    for sink in created:
        sink.close()
