"""The two tables' layout (names of tables and key attributes) and the options that set it.

The names and defaults are the original igata's (``DynamodbOutputCtxManager``), so existing
tables and the services reading them keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from igata_core.options import Option

#: RESULTS table hash key (a digest of the request and the element's position).
RESULTS_HASH_KEY = "hashkey"
#: REQUESTS attributes written besides the state and the results.
ERRORS_ATTRIBUTE = "errors"
UPDATED_AT_ATTRIBUTE = "updated_at_timestamp"
ATTEMPT_ATTRIBUTE = "attempt"
RESULTS_COUNT_ATTRIBUTE = "results_count"
#: Index attributes of the original layout (not configurable there either).
COLLECTION_ATTRIBUTE = "collection_id"
VALID_NUMBER_ATTRIBUTE = "valid_number"

#: The original's RESULTS_ADDITIONAL_PARENT_FIELDS; the first follows the REQUESTS key name.
DEFAULT_PARENT_FIELDS = ("request_id", "s3_uri")

COMPLETED = "completed"
ERROR = "error"

OPTIONS: tuple[Option, ...] = (
    Option(
        "requests_tablename",
        required=True,
        help="REQUESTS table: one item per request, its state and JSON results are updated.",
        env=("OUTPUT_CTXMGR_REQUESTS_TABLENAME",),
    ),
    Option(
        "results_tablename",
        required=True,
        help="RESULTS table: one item per element of a prediction's result list, flattened.",
        env=("OUTPUT_CTXMGR_RESULTS_TABLENAME",),
    ),
    Option(
        "requests_hashkey_keyname",
        default="request_id",
        help="REQUESTS hash key, and the record field naming the request; a record without "
        "it is keyed by its identity (igata_id).",
        env=("REQUESTS_TABLE_HASHKEY_KEYNAME",),
    ),
    Option(
        "results_keyname",
        default="result",
        help="Prediction key holding the result list, and the REQUESTS attribute that "
        "receives it as JSON.",
        env=("REQUESTS_TABLE_RESULTS_KEYNAME", "PREDICTOR_RESULTS_KEYNAME"),
    ),
    Option(
        "results_sortkey_keyname",
        default="s3_uri",
        help="RESULTS range key; every RESULTS item must have it (from the element or a "
        "parent field).",
        env=("RESULTS_SORTKEY_KEYNAME",),
    ),
    Option(
        "results_additional_parent_fields",
        "list",
        # None: not set, so the defaults apply (DEFAULT_PARENT_FIELDS), and a record that
        # lacks one of them is written without it; fields named explicitly are required.
        default=None,
        help="Comma-separated request fields copied into every RESULTS item (they win over "
        "the element's own fields of the same name). Default: the REQUESTS hash key field "
        "(request_id) and s3_uri, each copied when the record has it.",
        env=("RESULTS_ADDITIONAL_PARENT_FIELDS",),
    ),
    Option(
        "state_keyname",
        default="state",
        help="REQUESTS attribute set to 'completed' or 'error'.",
        env=("REQUESTS_TABLE_STATE_KEYNAME",),
    ),
    Option(
        "decimal_precision_digits",
        "int",
        default=6,
        minimum=0,
        help="Decimal places kept when floats are stored as DynamoDB numbers.",
        env=("DYNAMODB_DECIMAL_PRECISION_DIGITS",),
    ),
)


@dataclass(frozen=True)
class Layout:
    """Table and attribute names, and the rounding of floats."""

    requests_table: str
    results_table: str
    request_key: str = "request_id"
    results_key: str = "result"
    sort_key: str = "s3_uri"
    #: None: not configured, so :attr:`copied_fields` are the defaults and optional.
    parent_fields: tuple[str, ...] | None = None
    state_key: str = "state"
    precision: int = 6

    @property
    def copied_fields(self) -> tuple[str, ...]:
        """The record fields copied into RESULTS items: as configured, else the REQUESTS
        key field (following ``request_key``) and ``s3_uri``."""
        if self.parent_fields is not None:
            return self.parent_fields
        return tuple(dict.fromkeys((self.request_key, *DEFAULT_PARENT_FIELDS[1:])))

    @property
    def parents_required(self) -> bool:
        """True when the user named the parent fields: a record lacking one is refused."""
        return self.parent_fields is not None

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> Layout:
        return cls(
            requests_table=opts["requests_tablename"],
            results_table=opts["results_tablename"],
            request_key=opts["requests_hashkey_keyname"],
            results_key=opts["results_keyname"],
            sort_key=opts["results_sortkey_keyname"],
            parent_fields=(
                None
                if opts.get("results_additional_parent_fields") is None
                else tuple(opts["results_additional_parent_fields"])
            ),
            state_key=opts["state_keyname"],
            precision=opts["decimal_precision_digits"],
        )
