"""Result records and error outcomes -> the writes they cause in the two tables.

A result record becomes one REQUESTS update (``state = completed``, the results as JSON)
and one RESULTS item per element of its result list. An error outcome becomes one REQUESTS
update (``state = error``). Everything DynamoDB would refuse is found here, before any call,
so that one bad record is rejected alone.

Which request a record belongs to: its value of the REQUESTS hash key field
(``request_id`` by default), or, when it has none, its identity (``igata_id``: for SQS
requests their ``request_id``, else ``image_id`` (CSV: ``file_id``, then ``image_id``), else
a digest of the request). That id keys the REQUESTS item, is the digest input of the RESULTS
``hashkey`` and is the value of the key field copied into RESULTS items.

RESULTS items are keyed by a digest of the request id and the element's position, never by
the predicted values: processing a request again (a redelivery, a new model) overwrites
its items instead of adding new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from igata_core.components import RECORD_ID_KEY, ErrorOutcome
from igata_core.serialize import NotSerializable, dumps
from igata_dynamodb.attributes import (
    MAX_ITEM_BYTES,
    InvalidAttribute,
    convert,
    flatten,
    item_size,
)
from igata_dynamodb.layout import COMPLETED, ERROR, RESULTS_HASH_KEY, Layout

if TYPE_CHECKING:
    from igata_dynamodb.tables import TableShape

log = logging.getLogger("igata.dynamodb")

#: Room left in a REQUESTS item for the attributes others wrote (collection_id, …).
REQUESTS_HEADROOM_BYTES = 10 * 1024
#: DynamoDB's limits on key values (tables and indexes alike), in UTF-8 bytes.
MAX_HASH_KEY_BYTES = 2048
MAX_RANGE_KEY_BYTES = 1024
#: What an error write keeps, so that recording a refusal is never refused itself: the
#: newest errors of a request, each text field cut to a length, the JSON under a size.
MAX_ERRORS_KEPT = 10
MAX_ERROR_TEXT = 1000
MAX_ERRORS_JSON_BYTES = 64 * 1024
_TYPE_NAMES = {"S": "a string", "N": "a number", "B": "binary"}


class InvalidRecord(ValueError):
    """A record this sink cannot write; the message says why and what to change."""


@dataclass(eq=False)
class RequestWrite:
    """Everything one request needs written; lives in the sink's buffer until durable.

    ``items`` holds the RESULTS items not yet written, by their primary key, so a flush
    that failed halfway retries only what is missing. ``fields``: request fields set on
    the REQUESTS item because its table's indexes are keyed on them (``collection_id``).
    ``indexes``: the positions of the records this write stands for among those put
    since the last flush that returned (several records of one request collapse into one
    write). ``refused``: DynamoDB's
    reason when it refused the write's content (then nothing more of it is written).
    """

    request_id: str
    state: str
    results_json: str
    identity: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempt: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    items: dict[tuple[str, Any], dict[str, Any]] = field(default_factory=dict)
    results_count: int = 0
    indexes: list[int] = field(default_factory=list)
    refused: str | None = None
    refused_code: str = ""
    done: bool = False  # written (REQUESTS updated): leaves the buffer

    def refuse(self, message: str, code: str) -> None:
        """DynamoDB refused this write's content for good: write nothing more of it."""
        if self.refused is None:
            self.refused = message
            self.refused_code = code
        self.items.clear()


def results_hashkey(request_id: str, position: int) -> str:
    """The RESULTS hash key of the element at ``position`` of a request's result list."""
    import hashlib  # here: this module is imported whenever the plugin registers (~4 ms)

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


def request_id_problem(request_id: str, key: str) -> str | None:
    """Why DynamoDB would refuse ``request_id`` as the REQUESTS hash key, or None."""
    try:
        size = len(request_id.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return (
            f"the request id in {key!r} holds a lone surrogate "
            f"({exc.object[exc.start : exc.end]!r}), which is not valid UTF-8 and DynamoDB "
            "cannot store"
        )
    if size > MAX_HASH_KEY_BYTES:
        return (
            f"the request id in {key!r} is {size} bytes; DynamoDB's hash keys hold at most "
            f"{MAX_HASH_KEY_BYTES} bytes"
        )
    return None


def key_value_problem(name: str, value: Any, type_: str | None, key_type: str) -> str | None:
    """Why DynamoDB would refuse ``value`` for the key attribute ``name``, or None.

    ``type_``: the attribute's declared type (S, N, B), None if unknown (any of the three);
    ``key_type``: HASH or RANGE (their size limits differ).
    """
    actual = (
        "S" if isinstance(value, str)
        else "N" if isinstance(value, Decimal)
        else "B" if isinstance(value, bytes)
        else None
    )  # fmt: skip
    if actual is None or (type_ is not None and actual != type_):
        want = _TYPE_NAMES.get(type_ or "", "a string, number or binary value")
        got = _TYPE_NAMES.get(actual or "", f"a {type(value).__name__}")
        return f"must be {want} ({type_ or 'S, N or B'}), not {got}"
    if actual == "N":
        return None
    size = len(value.encode("utf-8")) if isinstance(value, str) else len(value)
    if size == 0:
        return "must not be empty"
    limit = MAX_HASH_KEY_BYTES if key_type == "HASH" else MAX_RANGE_KEY_BYTES
    if size > limit:
        return (
            f"is {size} bytes; DynamoDB allows at most {limit} bytes for a "
            f"{'partition' if key_type == 'HASH' else 'sort'} key value"
        )
    return None


def _clean_text(value: str, limit: int) -> str:
    """``value`` as valid UTF-8 (lone surrogates become '?'), cut to ``limit`` characters."""
    text = value.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(value)} characters)"
    return text


def clean_error(error: Mapping[str, Any], limit: int = MAX_ERROR_TEXT) -> dict[str, Any]:
    """An error outcome's dict that DynamoDB will store (see :func:`errors_json`)."""
    return {
        key: _clean_text(value, limit) if isinstance(value, str) else value
        for key, value in error.items()
    }


def errors_json(errors: Sequence[Mapping[str, Any]]) -> str:
    """The REQUESTS ``errors`` attribute: the newest errors, cleaned, under a size bound."""
    kept = [clean_error(error) for error in errors[-MAX_ERRORS_KEPT:]]
    text = dumps(kept, ensure_ascii=False)
    while len(kept) > 1 and len(text.encode("utf-8")) > MAX_ERRORS_JSON_BYTES:
        kept = kept[1:]
        text = dumps(kept, ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_ERRORS_JSON_BYTES:  # pragma: no cover - bounded above
        text = dumps([clean_error(error, 100) for error in kept], ensure_ascii=True)
    return text


def has_value(fields: Mapping[str, Any], name: str) -> bool:
    """True when ``fields`` has a value for ``name`` (not missing, None or empty)."""
    value = fields.get(name)
    return value is not None and not (isinstance(value, str) and value == "")


class RecordMapper:
    """Builds :class:`RequestWrite` objects for one table layout."""

    def __init__(
        self,
        layout: Layout,
        results_shape: TableShape | None = None,
        request_fields: Mapping[str, tuple[str, str, str]] | None = None,
    ):
        from igata_dynamodb.tables import request_index_fields

        self.layout = layout
        #: The RESULTS table as DescribeTable gave it (None if it could not be described):
        #: the types of its keys and of its indexes' keys, checked for every item.
        self.results_shape = results_shape
        #: Request fields written to REQUESTS items: the key attributes of the REQUESTS
        #: table's indexes (attribute -> (type, index, HASH|RANGE)).
        self.request_fields = (
            dict(request_fields)
            if request_fields is not None
            else request_index_fields(None, layout)
        )

    def request_id(self, fields: Mapping[str, Any], identity: Any) -> str:
        """The REQUESTS key of a record: its key field, else its identity (``igata_id``)."""
        key = self.layout.request_key
        if has_value(fields, key):
            request_id = request_id_of(fields, key)
            if request_id is None:
                got = fields.get(key)
                raise InvalidRecord(
                    f"dynamodb: the record's {key!r} is {type(got).__name__} {got!r}; the "
                    "REQUESTS key needs a non-empty string or an integer (or leave it out: "
                    f"the record's identity {RECORD_ID_KEY!r} is used then)"
                )
        elif isinstance(identity, str) and identity:
            request_id = identity
        else:
            raise InvalidRecord(
                f"dynamodb: the record needs a non-empty string field {key!r} naming its "
                f"REQUESTS item, or an identity ({RECORD_ID_KEY!r}), but has neither (set "
                "REQUESTS_TABLE_HASHKEY_KEYNAME to the request's id field)"
            )
        problem = request_id_problem(request_id, key)
        if problem:
            raise InvalidRecord(f"dynamodb: {problem}")
        return request_id

    def index_fields(self, fields: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        """The request's values of the REQUESTS index keys (``collection_id``…), converted.

        A field the record lacks, or whose value is empty, is left out (DynamoDB refuses an
        empty string in an index key; an item without the attribute is simply not in the
        index). A value of another type than the index declares, or one DynamoDB would
        refuse as a key, is left out with a warning: the request's state is still written.
        """
        found: dict[str, Any] = {}
        for name, (type_, index, key_type) in self.request_fields.items():
            if not has_value(fields, name):
                continue
            try:
                value = convert(fields[name], self.layout.precision, f"attribute {name!r}")
                problem = key_value_problem(name, value, type_, key_type)
            except InvalidAttribute as exc:
                problem = str(exc)
            if problem:
                log.warning(
                    "dynamodb: request %r: %r is a key of the index %r of the REQUESTS table "
                    "and %s; it is not written (the request is not found through that index)",
                    request_id, name, index, problem,
                )  # fmt: skip
                continue
            found[name] = value
        return found

    def from_record(self, record: Mapping[str, Any]) -> RequestWrite:
        layout = self.layout
        identity = str(record.get(RECORD_ID_KEY, ""))
        request_id = self.request_id(record, record.get(RECORD_ID_KEY))
        value = record.get(layout.results_key)
        elements = self._elements(value)
        parents = self._parents(record, request_id) if elements else {}
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
            fields=self.index_fields(record, request_id),
        )
        for item in items:
            write.items[(item[RESULTS_HASH_KEY], item[layout.sort_key])] = item
        return write

    def from_error(self, outcome: ErrorOutcome) -> RequestWrite | None:
        """The error write for an outcome, or None when it names no request.

        An outcome without request fields (a message body that is not JSON, a request
        that is not an object) names none; one with fields but no key field is keyed by
        its identity, as its results would have been.
        """
        if not outcome.meta:
            return None
        try:
            request_id = self.request_id(outcome.meta, outcome.identity)
        except InvalidRecord:
            return None
        return RequestWrite(
            request_id=request_id,
            state=ERROR,
            results_json="[]",
            identity=outcome.identity,
            errors=[clean_error(outcome.to_dict())],
            attempt=outcome.attempt,
            fields=self.index_fields(outcome.meta, request_id),
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

    def _parents(self, record: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        """The fields copied into every RESULTS item. The REQUESTS key field is copied with
        the request's id (its identity when the record lacks the field); another field the
        record lacks is left out, unless RESULTS_ADDITIONAL_PARENT_FIELDS names it."""
        layout = self.layout
        parents: dict[str, Any] = {}
        missing: list[str] = []
        for name in layout.copied_fields:
            if name == layout.request_key and not has_value(record, name):
                parents[name] = request_id
            elif name in record:
                parents[name] = record[name]
            elif layout.parents_required:
                missing.append(name)
        if missing:
            raise InvalidRecord(
                f"dynamodb: the record lacks the parent field(s) {', '.join(map(repr, missing))} "
                "that RESULTS_ADDITIONAL_PARENT_FIELDS copies into every RESULTS item"
            )
        return parents

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
        shape = self.results_shape
        sort_type = shape.key_types.get(sort_key) if shape is not None else None
        problem = key_value_problem(sort_key, sort_value, sort_type, "RANGE")
        if problem:
            raise InvalidRecord(
                f"dynamodb: {where}: the sort key {sort_key!r} (RESULTS_SORTKEY_KEYNAME) {problem}"
            )
        if shape is not None:
            for name, (type_, index, key_type) in shape.index_keys.items():
                if name in item and name != sort_key:
                    problem = key_value_problem(name, item[name], type_, key_type)
                    if problem:
                        raise InvalidRecord(
                            f"dynamodb: {where}: {name!r} is a key of the index {index!r} of "
                            f"the RESULTS table {shape.name!r} and {problem}"
                        )
        item[RESULTS_HASH_KEY] = results_hashkey(request_id, position)
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise InvalidRecord(
                f"dynamodb: {where} is about {size} bytes; DynamoDB items hold at most "
                f"{MAX_ITEM_BYTES} bytes (400 KB)"
            )
        return item
