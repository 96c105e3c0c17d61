"""Result records and error outcomes -> the writes they cause in the two tables.

A result record becomes one REQUESTS update (``state = completed``, the results as JSON)
and one RESULTS item per element of its result list. An error outcome becomes one REQUESTS
update (``state = error``). Everything DynamoDB would refuse is found here, before any call,
so that one bad record is rejected alone.

RESULTS items are keyed by a digest of the request id and the element's position, never by
the predicted values: processing a request again (a redelivery, a new model) overwrites
its items instead of adding new ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from igata_core.components import RECORD_ID_KEY, ErrorOutcome
from igata_core.serialize import NotSerializable, dumps
from igata_dynamodb.attributes import MAX_ITEM_BYTES, InvalidAttribute, flatten, item_size
from igata_dynamodb.layout import COMPLETED, ERROR, RESULTS_HASH_KEY, Layout

#: Room left in a REQUESTS item for the attributes others wrote (collection_id, …).
REQUESTS_HEADROOM_BYTES = 10 * 1024


class InvalidRecord(ValueError):
    """A record this sink cannot write; the message says why and what to change."""


@dataclass(eq=False)
class RequestWrite:
    """Everything one request needs written; lives in the sink's buffer until durable.

    ``items`` holds the RESULTS items not yet written, by their primary key, so a flush
    that failed halfway retries only what is missing.
    """

    request_id: str
    state: str
    results_json: str
    identity: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempt: int | None = None
    items: dict[tuple[str, Any], dict[str, Any]] = field(default_factory=dict)
    results_count: int = 0

    def fail(self, message: str, stage: str = "sink") -> None:
        """Turn a success that DynamoDB refused for good into an error write."""
        self.state = ERROR
        self.results_json = "[]"
        self.items.clear()
        self.errors = [
            {
                "identity": self.identity,
                "stage": stage,
                "error_type": "DynamoDBRefused",
                "message": message,
            }
        ]


def results_hashkey(request_id: str, position: int) -> str:
    """The RESULTS hash key of the element at ``position`` of a request's result list."""
    return hashlib.sha256(f"{request_id}\x1f{position}".encode()).hexdigest()[:32]


def request_id_of(fields: Mapping[str, Any], key: str) -> str | None:
    """The request id as the REQUESTS table's string key, or None if there is none."""
    value = fields.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


class RecordMapper:
    """Builds :class:`RequestWrite` objects for one table layout."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def from_record(self, record: Mapping[str, Any]) -> RequestWrite:
        layout = self.layout
        identity = str(record.get(RECORD_ID_KEY, ""))
        request_id = request_id_of(record, layout.request_key)
        if request_id is None:
            got = record.get(layout.request_key)
            found = "it is missing" if got is None else f"it is {type(got).__name__} {got!r}"
            raise InvalidRecord(
                f"dynamodb: the record needs a non-empty string field {layout.request_key!r} "
                f"naming its REQUESTS item, but {found} (set REQUESTS_TABLE_HASHKEY_KEYNAME "
                "to the request's id field)"
            )
        value = record.get(layout.results_key)
        elements = self._elements(value)
        parents = self._parents(record) if elements else {}
        items = [
            self._results_item(request_id, position, element, parents)
            for position, element in enumerate(elements)
        ]
        try:
            results_json = dumps([] if value is None else value, ensure_ascii=False)
        except (NotSerializable, TypeError, ValueError) as exc:
            raise InvalidRecord(
                f"dynamodb: {layout.results_key!r} cannot be stored as JSON in the REQUESTS "
                f"table: {exc}"
            ) from exc
        try:
            update_size = len(request_id.encode()) + len(results_json.encode()) + 200
        except UnicodeEncodeError as exc:
            raise InvalidRecord(
                f"dynamodb: the request id or {layout.results_key!r} holds a lone surrogate "
                f"({exc.object[exc.start : exc.end]!r}), which is not valid UTF-8 and "
                "DynamoDB cannot store"
            ) from None
        if update_size > MAX_ITEM_BYTES - REQUESTS_HEADROOM_BYTES:
            raise InvalidRecord(
                f"dynamodb: the JSON of {layout.results_key!r} is {len(results_json.encode())} "
                f"bytes; a REQUESTS item holds at most {MAX_ITEM_BYTES} bytes (400 KB) and "
                f"{REQUESTS_HEADROOM_BYTES} are kept for its other attributes (store large "
                "results elsewhere, e.g. with the s3 sink)"
            )
        write = RequestWrite(
            request_id=request_id,
            state=COMPLETED,
            results_json=results_json,
            identity=identity,
            results_count=len(items),
        )
        for item in items:
            write.items[(item[RESULTS_HASH_KEY], item[layout.sort_key])] = item
        return write

    def from_error(self, outcome: ErrorOutcome) -> RequestWrite | None:
        """The error write for an outcome, or None when it names no request."""
        request_id = request_id_of(outcome.meta, self.layout.request_key)
        if request_id is None:
            return None
        return RequestWrite(
            request_id=request_id,
            state=ERROR,
            results_json="[]",
            identity=outcome.identity,
            errors=[outcome.to_dict()],
            attempt=outcome.attempt,
        )

    def _elements(self, value: Any) -> list[Mapping[str, Any]]:
        name = self.layout.results_key
        if value is None:
            return []
        if isinstance(value, Mapping):
            return [value]
        if isinstance(value, (list, tuple)):
            for position, element in enumerate(value):
                if not isinstance(element, Mapping):
                    raise InvalidRecord(
                        f"dynamodb: element {position} of {name!r} is a "
                        f"{type(element).__name__}; each element becomes a RESULTS item and "
                        "must be a dict"
                    )
            return list(value)
        raise InvalidRecord(
            f"dynamodb: {name!r} is a {type(value).__name__}; the RESULTS table needs a list "
            "of dicts, a dict, or nothing (set REQUESTS_TABLE_RESULTS_KEYNAME to the key of "
            "the prediction's result list)"
        )

    def _parents(self, record: Mapping[str, Any]) -> dict[str, Any]:
        missing = [name for name in self.layout.parent_fields if name not in record]
        if missing:
            raise InvalidRecord(
                f"dynamodb: the record lacks the parent field(s) {', '.join(map(repr, missing))} "
                "that RESULTS_ADDITIONAL_PARENT_FIELDS copies into every RESULTS item"
            )
        return {name: record[name] for name in self.layout.parent_fields}

    def _results_item(
        self,
        request_id: str,
        position: int,
        element: Mapping[str, Any],
        parents: Mapping[str, Any],
    ) -> dict[str, Any]:
        sort_key = self.layout.sort_key
        where = f"RESULTS item {position} of {self.layout.results_key!r}"
        try:
            item = flatten({**element, **parents}, self.layout.precision)
        except InvalidAttribute as exc:
            raise InvalidRecord(f"dynamodb: {where}: {exc}") from exc
        sort_value = item.get(sort_key)
        if sort_value is None:
            raise InvalidRecord(
                f"dynamodb: {where} lacks the sort key {sort_key!r} (RESULTS_SORTKEY_KEYNAME); "
                "put it in each element or in RESULTS_ADDITIONAL_PARENT_FIELDS"
            )
        if not isinstance(sort_value, (str, Decimal, bytes)):
            raise InvalidRecord(
                f"dynamodb: {where}: the sort key {sort_key!r} must be a string, number or "
                f"bytes, not {type(sort_value).__name__}"
            )
        item[RESULTS_HASH_KEY] = results_hashkey(request_id, position)
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise InvalidRecord(
                f"dynamodb: {where} is about {size} bytes; DynamoDB items hold at most "
                f"{MAX_ITEM_BYTES} bytes (400 KB)"
            )
        return item
