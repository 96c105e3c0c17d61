"""The original README's table structure: creating the tables and checking existing ones.

REQUESTS: hash key ``request_id`` (S); a global secondary index on ``collection_id`` (hash)
and ``state`` (range). RESULTS: hash key ``hashkey`` (S), range key ``s3_uri`` (S); a
global secondary index on ``collection_id`` (hash) and ``valid_number`` (range). All key
attributes are strings and the indexes project ALL attributes. Key names follow the
configured options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from igata_dynamodb.layout import (
    COLLECTION_ATTRIBUTE,
    RESULTS_HASH_KEY,
    VALID_NUMBER_ATTRIBUTE,
    Layout,
)

log = logging.getLogger("igata.dynamodb")

BILLING_MODES = ("PAY_PER_REQUEST", "PROVISIONED")


class TableProblem(Exception):
    """A table is missing or its keys differ from the configured layout."""


@dataclass(frozen=True)
class Capacity:
    """Billing of created tables (capacity units apply to PROVISIONED only)."""

    mode: str = "PAY_PER_REQUEST"
    read: int = 5
    write: int = 5

    def table_kwargs(self) -> dict[str, Any]:
        if self.mode == "PROVISIONED":
            return {"BillingMode": self.mode, "ProvisionedThroughput": self._throughput()}
        return {"BillingMode": self.mode}

    def index_kwargs(self) -> dict[str, Any]:
        if self.mode == "PROVISIONED":
            return {"ProvisionedThroughput": self._throughput()}
        return {}

    def _throughput(self) -> dict[str, int]:
        return {"ReadCapacityUnits": self.read, "WriteCapacityUnits": self.write}


def index_name(hash_key: str, range_key: str) -> str:
    return f"{hash_key}-{range_key}-index"


def _table(
    name: str, keys: list[tuple[str, str]], index: tuple[str, str], capacity: Capacity
) -> dict[str, Any]:
    attributes = list(dict.fromkeys([name for name, _ in keys] + list(index)))
    return {
        "TableName": name,
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        "KeySchema": [{"AttributeName": a, "KeyType": kind} for a, kind in keys],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": index_name(*index),
                "KeySchema": [
                    {"AttributeName": index[0], "KeyType": "HASH"},
                    {"AttributeName": index[1], "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
                **capacity.index_kwargs(),
            }
        ],
        **capacity.table_kwargs(),
    }


def requests_table_spec(layout: Layout, capacity: Capacity) -> dict[str, Any]:
    """``create_table`` arguments of the REQUESTS table."""
    return _table(
        layout.requests_table,
        [(layout.request_key, "HASH")],
        (COLLECTION_ATTRIBUTE, layout.state_key),
        capacity,
    )


def results_table_spec(layout: Layout, capacity: Capacity) -> dict[str, Any]:
    """``create_table`` arguments of the RESULTS table."""
    return _table(
        layout.results_table,
        [(RESULTS_HASH_KEY, "HASH"), (layout.sort_key, "RANGE")],
        (COLLECTION_ATTRIBUTE, VALID_NUMBER_ATTRIBUTE),
        capacity,
    )


def expected_keys(layout: Layout) -> dict[str, list[tuple[str, str]]]:
    """Table name -> its key schema as ``[(attribute, HASH|RANGE)]``."""
    return {
        layout.requests_table: [(layout.request_key, "HASH")],
        layout.results_table: [(RESULTS_HASH_KEY, "HASH"), (layout.sort_key, "RANGE")],
    }


def create_tables(
    client: Any, layout: Layout, capacity: Capacity, *, wait: bool = True
) -> list[tuple[str, str]]:
    """Create both tables if missing; returns ``(table, "created"|"exists")`` pairs.

    An existing table is left alone, but if its keys differ from the layout
    :class:`TableProblem` is raised. With ``wait``, returns once the tables are ACTIVE.
    """
    report: list[tuple[str, str]] = []
    for spec in (requests_table_spec(layout, capacity), results_table_spec(layout, capacity)):
        name = spec["TableName"]
        try:
            client.create_table(**spec)
            report.append((name, "created"))
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code not in ("ResourceInUseException", "TableAlreadyExistsException"):
                raise
            _check_keys(client, name, expected_keys(layout)[name])
            report.append((name, "exists"))
    if wait:
        waiter = client.get_waiter("table_exists")
        for name, _ in report:
            waiter.wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
    return report


def _check_keys(client: Any, table: str, expected: list[tuple[str, str]]) -> None:
    description = client.describe_table(TableName=table)["Table"]
    actual = [(k["AttributeName"], k["KeyType"]) for k in description["KeySchema"]]
    if actual != expected:
        raise TableProblem(
            f"dynamodb: table {table!r} has the key schema {actual}, but the configured "
            f"layout needs {expected} (check REQUESTS_TABLE_HASHKEY_KEYNAME and "
            "RESULTS_SORTKEY_KEYNAME, or use other tables)"
        )


def check_tables(client: Any, layout: Layout) -> None:
    """Fail early, with the fix in the message, if a table is missing or keyed otherwise.

    A worker whose IAM policy does not allow ``DescribeTable`` skips the check.
    """
    for table, expected in expected_keys(layout).items():
        try:
            _check_keys(client, table, expected)
        except TableProblem:
            raise
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code == "ResourceNotFoundException":
                raise TableProblem(
                    f"dynamodb: table {table!r} does not exist (region "
                    f"{client.meta.region_name}); create it, for development with "
                    "`igata dynamodb create-tables`"
                ) from exc
            if code == "AccessDeniedException":
                log.info("dynamodb: cannot describe table %r (%s); not checking it", table, code)
                continue
            raise
