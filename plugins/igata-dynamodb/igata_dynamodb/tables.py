"""The original README's table structure: creating the tables and checking existing ones.

REQUESTS: hash key ``request_id`` (S); a global secondary index on ``collection_id`` (hash)
and ``state`` (range). RESULTS: hash key ``hashkey`` (S), range key ``s3_uri`` (S); a
global secondary index on ``collection_id`` (hash) and ``valid_number`` (range). All key
attributes are strings and the indexes project ALL attributes. Key names follow the
configured options.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from igata_dynamodb.errors import (
    DENIED_CODES,
    TABLE_ENV,
    DynamoDbConfigurationError,
    Kind,
    classify,
    configuration_error,
    key_fix,
    where,
)
from igata_dynamodb.layout import (
    ATTEMPT_ATTRIBUTE,
    COLLECTION_ATTRIBUTE,
    ERRORS_ATTRIBUTE,
    RESULTS_COUNT_ATTRIBUTE,
    RESULTS_HASH_KEY,
    UPDATED_AT_ATTRIBUTE,
    VALID_NUMBER_ATTRIBUTE,
    Layout,
)

log = logging.getLogger("igata.dynamodb")

BILLING_MODES = ("PAY_PER_REQUEST", "PROVISIONED")


class TableProblem(DynamoDbConfigurationError):
    """A table is missing or its keys differ from the configured layout (exit code 2)."""


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


def role_keys(role: str, layout: Layout) -> list[tuple[str, str]]:
    """The key schema ``[(attribute, HASH|RANGE)]`` of the ``REQUESTS`` or ``RESULTS`` table."""
    if role == "REQUESTS":
        return [(layout.request_key, "HASH")]
    return [(RESULTS_HASH_KEY, "HASH"), (layout.sort_key, "RANGE")]


def roles(layout: Layout) -> list[tuple[str, str]]:
    """``(role, table)``: ``("REQUESTS", name)`` and ``("RESULTS", name)``."""
    return [("REQUESTS", layout.requests_table), ("RESULTS", layout.results_table)]


#: Every key attribute of the layout is a string.
KEY_TYPE = "S"


@dataclass(frozen=True)
class TableShape:
    """A table's keys as DescribeTable gives them.

    ``keys``: ``[(attribute, HASH|RANGE, S|N|B)]``; ``index_keys``: attribute -> ``(type,
    index name, HASH|RANGE)`` for the key attributes of its secondary indexes.
    """

    name: str
    keys: tuple[tuple[str, str, str], ...]
    index_keys: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def key_types(self) -> dict[str, str]:
        return {name: kind for name, _, kind in self.keys}


def describe(client: Any, table: str) -> TableShape:
    """DescribeTable, reduced to the keys (raises botocore's errors as they come)."""
    description = client.describe_table(TableName=table)["Table"]
    types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
    keys = tuple(
        (k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?"))
        for k in description["KeySchema"]
    )
    index_keys: dict[str, tuple[str, str, str]] = {}
    for index in [
        *description.get("GlobalSecondaryIndexes", []),
        *description.get("LocalSecondaryIndexes", []),
    ]:
        for key in index["KeySchema"]:
            name = key["AttributeName"]
            index_keys.setdefault(name, (types.get(name, "?"), index["IndexName"], key["KeyType"]))
    return TableShape(table, keys, index_keys)


def _schema(keys: Any) -> str:
    return "[" + ", ".join(f"{name} ({kind}, {type_})" for name, kind, type_ in keys) + "]"


def key_problem(shape: TableShape, role: str, layout: Layout, client: Any = None) -> str | None:
    """Why ``shape`` cannot hold what the sink writes as the ``role`` table, or None."""
    expected = [(name, kind, KEY_TYPE) for name, kind in role_keys(role, layout)]
    if list(shape.keys) == expected:
        return None
    at = f" ({where(client)})" if client is not None else ""
    return (
        f"dynamodb: the {role} table {shape.name!r}{at} is keyed {_schema(shape.keys)}, but "
        f"the sink is configured for {_schema(expected)}; " + key_fix(role, layout)
    )


def _check_keys(client: Any, table: str, expected: list[tuple[str, str]]) -> None:
    """Raise :class:`TableProblem` if ``table`` is not keyed as ``expected`` (all S)."""
    shape = describe(client, table)
    want = [(name, kind, KEY_TYPE) for name, kind in expected]
    if list(shape.keys) != want:
        raise TableProblem(
            f"dynamodb: table {table!r} is keyed {_schema(shape.keys)}, but the configured "
            f"layout needs {_schema(want)} (check REQUESTS_TABLE_HASHKEY_KEYNAME and "
            "RESULTS_SORTKEY_KEYNAME, or use other tables)"
        )


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


#: DynamoDB's rule for table names.
TABLE_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,255}")


def layout_problem(layout: Layout) -> str | None:
    """A layout DynamoDB would refuse whatever the tables: a table name it does not allow,
    REQUESTS updates that would set the table's own key (found before any I/O)."""
    for role, table in roles(layout):
        if not TABLE_NAME.fullmatch(table):
            option, env = TABLE_ENV[role]
            return (
                f"dynamodb: {table!r} is not a valid name for the {role} table: DynamoDB "
                "table names are 3 to 255 characters among a-z, A-Z, 0-9, '_', '-' and '.'; "
                f"set {env} (option {option})"
            )
    written = {
        "state_keyname": layout.state_key,
        "results_keyname": layout.results_key,
    }
    for option, name in written.items():
        if name == layout.request_key:
            return (
                f"dynamodb: option {option} is {name!r}, the REQUESTS hash key "
                "(requests_hashkey_keyname): an update cannot set the key; name another "
                "attribute"
            )
    fixed = (ERRORS_ATTRIBUTE, UPDATED_AT_ATTRIBUTE, RESULTS_COUNT_ATTRIBUTE, ATTEMPT_ATTRIBUTE)
    if layout.request_key in fixed:
        return (
            f"dynamodb: the REQUESTS hash key {layout.request_key!r} is an attribute igata "
            "writes itself; set REQUESTS_TABLE_HASHKEY_KEYNAME to another name"
        )
    return None


def requests_attribute_types(layout: Layout) -> dict[str, str]:
    """The attributes every REQUESTS update sets, with their DynamoDB types."""
    return {
        layout.state_key: "S",
        layout.results_key: "S",
        ERRORS_ATTRIBUTE: "S",
        UPDATED_AT_ATTRIBUTE: "N",
        RESULTS_COUNT_ATTRIBUTE: "N",
        ATTEMPT_ATTRIBUTE: "N",
    }


def request_index_fields(
    shape: TableShape | None, layout: Layout
) -> dict[str, tuple[str, str, str]]:
    """The request fields a REQUESTS item gets so that its indexes find it: attribute ->
    ``(type, index name, HASH|RANGE)`` for every key attribute of the table's indexes but
    the table's own key and the attributes igata writes itself (``state``…). For a table
    that could not be described, the original layout's ``collection_id`` (S)."""
    if shape is None:
        return {COLLECTION_ATTRIBUTE: ("S", index_name(COLLECTION_ATTRIBUTE, layout.state_key),
                                       "HASH")}  # fmt: skip
    own = {layout.request_key, *requests_attribute_types(layout)}
    return {name: key for name, key in shape.index_keys.items() if name not in own}


def check_tables(client: Any, layout: Layout) -> dict[str, TableShape | None]:
    """Fail early, with the fix in the message, if a table is missing or keyed otherwise.

    Returns role -> the table's shape (None for a table the worker may not describe: an
    IAM policy without ``DescribeTable`` skips the check; writes then find what is wrong).
    Raises :class:`TableProblem` (a ``ConfigurationError``: exit code 2) for a missing
    table, keys other than configured, an index keyed on an attribute the sink writes with
    another type, refused credentials; lets an outage (network, throttling) through.
    """
    problem = layout_problem(layout)
    if problem:
        raise TableProblem(problem)
    shapes: dict[str, TableShape | None] = {}
    for role, table in roles(layout):
        try:
            shape = describe(client, table)
        except Exception as exc:
            error = classify(exc)
            if error.code in DENIED_CODES:
                log.warning(
                    "dynamodb: may not describe the %s table %r (%s); not checking its keys "
                    "(allow dynamodb:DescribeTable to have them checked at start)",
                    role, table, error.code,
                )  # fmt: skip
                shapes[role] = None
                continue
            if error.kind in (Kind.CONFIGURATION, Kind.CONTENT):
                # DescribeTable's only input is the name: whatever it refuses is the option.
                refused = configuration_error(
                    error, role=role, table=table, action="DescribeTable", client=client,
                    layout=layout,
                )  # fmt: skip
                raise TableProblem(str(refused)) from exc
            raise
        problem = key_problem(shape, role, layout, client)
        if problem is None and role == "REQUESTS":
            problem = _index_problem(shape, layout)
        if problem:
            raise TableProblem(problem)
        shapes[role] = shape
    return shapes


def _index_problem(shape: TableShape, layout: Layout) -> str | None:
    for name, type_ in requests_attribute_types(layout).items():
        if name in shape.index_keys and shape.index_keys[name][0] != type_:
            index_type, index, _ = shape.index_keys[name]
            return (
                f"dynamodb: the REQUESTS table {shape.name!r} has the index {index!r} keyed on "
                f"{name!r} of type {index_type}, but igata writes {name!r} as {type_}; "
                "recreate the index with that type, or rename the attribute igata writes "
                "(REQUESTS_TABLE_STATE_KEYNAME, REQUESTS_TABLE_RESULTS_KEYNAME)"
            )
    return None
