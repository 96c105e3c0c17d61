"""The core's sink contract (igata_core.testing.contracts) run against the dynamodb sink."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from igata_core.components import RECORD_ID_KEY, RECORD_INPUT_KEY, RunContext, Sink
from igata_core.testing.contracts import SinkContract
from igata_dynamodb.layout import Layout
from igata_dynamodb.sink import DynamoDbSink
from igata_dynamodb.tables import Capacity, create_tables

#: The contract's top-level fields are copied into the RESULTS items so they can be read back.
PARENT_FIELDS = ["request_id", "s3_uri", RECORD_INPUT_KEY, "label", "score", "index"]
LAYOUT = Layout("contract-requests", "contract-results", parent_fields=tuple(PARENT_FIELDS))


def _plain(value: Any) -> Any:
    """JSON-comparable form: DynamoDB gives numbers back as Decimal."""
    return json.loads(
        json.dumps(value, default=lambda v: float(v) if isinstance(v, Decimal) else str(v))
    )


class TestDynamoDbSinkContract(SinkContract):
    @pytest.fixture(autouse=True)
    def _endpoint(self, aws: Any) -> None:
        self.client = aws.client("dynamodb")
        create_tables(self.client, LAYOUT, Capacity())

    def make_sink(self, tmp_path: Path) -> Sink:
        sink = DynamoDbSink(
            {
                "requests_tablename": LAYOUT.requests_table,
                "results_tablename": LAYOUT.results_table,
                "results_additional_parent_fields": PARENT_FIELDS,
            },
            RunContext(concurrency=4),
        )
        sink.open()
        return sink

    def make_records(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        records = super().make_records(n, start)
        for record in records:
            # The request id names the REQUESTS item; the contract's identity doubles as it.
            record["request_id"] = record[RECORD_ID_KEY]
            record["s3_uri"] = f"s3://contract/{record['index']}.png"
            record["result"] = [{"name": f"box-{record['index']}", "box": {"x": record["score"]}}]
        return records

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        plain = TypeDeserializer().deserialize

        def scan(table: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            for page in self.client.get_paginator("scan").paginate(TableName=table):
                items += [{k: plain(v) for k, v in item.items()} for item in page["Items"]]
            return items

        parents = {item["request_id"]: item for item in scan(LAYOUT.results_table)}
        stored = []
        for request in scan(LAYOUT.requests_table):
            if request.get("state") != "completed":
                continue
            request_id = request["request_id"]
            record = {
                RECORD_ID_KEY: request_id,
                "request_id": request_id,
                "result": json.loads(request["result"]),
            }
            item = parents.get(request_id, {})
            record.update({name: item[name] for name in PARENT_FIELDS if name in item})
            record["result_items"] = [
                i for i in scan(LAYOUT.results_table) if i["request_id"] == request_id
            ]
            stored.append(record)
        return stored

    def same_record(self, written: dict[str, Any], stored: dict[str, Any]) -> bool:
        fields_match = all(
            key in stored and _plain(stored[key]) == _plain(value) for key, value in written.items()
        )
        # Each element of the result list is one RESULTS item, flattened, with the parent
        # fields copied in.
        items = [
            {"name": element["name"], "box__x": element["box"]["x"], "label": written["label"]}
            for element in written["result"]
        ]
        stored_items = [
            {key: i.get(key) for key in ("name", "box__x", "label")}
            for i in stored.get("result_items", [])
        ]
        return fields_match and _plain(stored_items) == _plain(items)

    def break_store(self, sink: Sink) -> None:
        for table in (LAYOUT.requests_table, LAYOUT.results_table):
            self.client.delete_table(TableName=table)

    def repair_store(self, sink: Sink) -> None:
        create_tables(self.client, LAYOUT, Capacity())
