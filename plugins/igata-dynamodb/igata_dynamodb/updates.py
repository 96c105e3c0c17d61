"""The REQUESTS table update of one request, and the removal of its stale RESULTS items.

* A success sets ``state = completed``, the results (JSON), ``errors = "[]"``, the time and
  ``results_count``. It is written even over an earlier ``completed`` so that the REQUESTS
  item always describes the RESULTS items written just before it (a re-processing with a
  new model updates both).
* An error sets ``state = error``, the errors (JSON), the time and the attempt, on the
  condition ``attribute_not_exists(state) OR state <> completed``: ``completed`` is
  terminal, and a write refused for that reason is done, not failed.
* Both also set the request fields the table's indexes are keyed on (``collection_id``
  for ``collection_id-state-index``), so the request is found through them.
* Other attributes of the item (a ``queued`` state, fields written by whoever queued the
  request…) are kept: these are ``UpdateItem`` calls, never ``PutItem``.

Stale RESULTS items: a re-processing that yields fewer elements than before leaves the old
elements at the higher positions. The success update is therefore conditional on
``results_count`` not shrinking; when it would shrink, the surplus items are deleted first
and the update is made afterwards, so a crash in between repeats the clean-up on redelivery.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from igata_dynamodb.batch import Backoff, batch_write, chunks
from igata_dynamodb.errors import CONDITION_FAILED, error_code
from igata_dynamodb.layout import (
    ATTEMPT_ATTRIBUTE,
    COMPLETED,
    ERRORS_ATTRIBUTE,
    RESULTS_COUNT_ATTRIBUTE,
    RESULTS_HASH_KEY,
    UPDATED_AT_ATTRIBUTE,
    Layout,
)
from igata_dynamodb.records import RequestWrite, errors_json, results_hashkey

log = logging.getLogger("igata.dynamodb")

__all__ = ["CONDITION_FAILED", "RequestUpdater", "error_code"]


class RequestUpdater:
    """Writes :class:`RequestWrite` objects to the REQUESTS table of ``layout``."""

    def __init__(self, client: Any, layout: Layout, backoff: Backoff | None = None):
        self.client = client
        self.layout = layout
        self.backoff = backoff

    def write(self, write: RequestWrite) -> bool:
        """Update the request; False when a ``completed`` state kept an error out."""
        if write.state == COMPLETED:
            self._write_success(write)
            return True
        return self._write_error(write)

    def _key(self, write: RequestWrite) -> dict[str, Any]:
        return {self.layout.request_key: {"S": write.request_id}}

    @staticmethod
    def _set_fields(write: RequestWrite, names: dict[str, str], values: dict[str, Any]) -> str:
        """``, #f0 = :f0, …`` for the write's index fields (names and values filled in)."""
        from boto3.dynamodb.types import TypeSerializer

        serializer = TypeSerializer()
        expression = ""
        for number, (name, value) in enumerate(sorted(write.fields.items())):
            names[f"#f{number}"] = name
            values[f":f{number}"] = serializer.serialize(value)
            expression += f", #f{number} = :f{number}"
        return expression

    def _write_success(self, write: RequestWrite) -> None:
        from igata_core.serialize import dumps

        names = {
            "#state": self.layout.state_key,
            "#result": self.layout.results_key,
            "#errors": ERRORS_ATTRIBUTE,
            "#updated": UPDATED_AT_ATTRIBUTE,
            "#count": RESULTS_COUNT_ATTRIBUTE,
        }
        values = {
            ":state": {"S": COMPLETED},
            ":result": {"S": write.results_json},
            ":errors": {"S": dumps(write.errors)},
            ":updated": {"N": str(int(time.time()))},
            ":count": {"N": str(write.results_count)},
        }
        update = dict(
            TableName=self.layout.requests_table,
            Key=self._key(write),
            UpdateExpression=(
                "SET #state = :state, #result = :result, #errors = :errors, "
                "#updated = :updated, #count = :count" + self._set_fields(write, names, values)
            ),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        try:
            self.client.update_item(
                **update,
                ConditionExpression="attribute_not_exists(#count) OR #count <= :count",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            old = getattr(exc, "response", {}).get("Item")
        previous = self._previous_count(write, old)
        self._delete_stale(write, previous)
        self.client.update_item(**update)

    def _previous_count(self, write: RequestWrite, old: dict[str, Any] | None) -> int:
        if old is None:  # an endpoint that does not return the old item
            old = self.client.get_item(
                TableName=self.layout.requests_table,
                Key=self._key(write),
                ConsistentRead=True,
            ).get("Item", {})
        return int(old.get(RESULTS_COUNT_ATTRIBUTE, {}).get("N", "0"))

    def _delete_stale(self, write: RequestWrite, previous: int) -> None:
        """Delete the request's RESULTS items at positions ``results_count..previous-1``."""
        table = self.layout.results_table
        keys: list[dict[str, Any]] = []
        for position in range(write.results_count, previous):
            hashkey = results_hashkey(write.request_id, position)
            # Any sort key: the old element's own value is not known here.
            paginator = self.client.get_paginator("query")
            for page in paginator.paginate(
                TableName=table,
                KeyConditionExpression="#h = :h",
                ExpressionAttributeNames={"#h": RESULTS_HASH_KEY, "#s": self.layout.sort_key},
                ExpressionAttributeValues={":h": {"S": hashkey}},
                ProjectionExpression="#h, #s",
                ConsistentRead=True,
            ):
                keys.extend(page.get("Items", []))
        log.info(
            "dynamodb: request %r now has %d RESULTS items instead of %d; deleting %d stale",
            write.request_id, write.results_count, previous, len(keys),
        )  # fmt: skip
        requests = (
            (
                (key[RESULTS_HASH_KEY]["S"], repr(key[self.layout.sort_key])),
                {"DeleteRequest": {"Key": key}},
            )
            for key in keys
        )
        for chunk in chunks(requests):
            batch_write(self.client, table, [request for _, request in chunk], self.backoff)

    def _write_error(self, write: RequestWrite) -> bool:
        names = {
            "#state": self.layout.state_key,
            "#result": self.layout.results_key,
            "#errors": ERRORS_ATTRIBUTE,
            "#updated": UPDATED_AT_ATTRIBUTE,
        }
        values: dict[str, Any] = {
            ":state": {"S": write.state},
            ":completed": {"S": COMPLETED},
            ":result": {"S": "[]"},
            ":errors": {"S": errors_json(write.errors)},
            ":updated": {"N": str(int(time.time()))},
        }
        expression = (
            "SET #state = :state, #result = :result, #errors = :errors, #updated = :updated"
        )
        if write.attempt is not None:
            names["#attempt"] = ATTEMPT_ATTRIBUTE
            values[":attempt"] = {"N": str(write.attempt)}
            expression += ", #attempt = :attempt"
        expression += self._set_fields(write, names, values)
        try:
            self.client.update_item(
                TableName=self.layout.requests_table,
                Key=self._key(write),
                UpdateExpression=expression,
                ConditionExpression="attribute_not_exists(#state) OR #state <> :completed",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if error_code(exc) == CONDITION_FAILED:
                log.info(
                    "dynamodb: request %r is already completed; its later error (%s) is not "
                    "recorded",
                    write.request_id,
                    write.errors[0].get("message") if write.errors else "",
                )
                return False
            raise
        return True
