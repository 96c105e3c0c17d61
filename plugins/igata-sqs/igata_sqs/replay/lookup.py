"""Where recorded errors come from: errors files of ``igata run`` and the REQUESTS table.

Error text is not part of a dead-lettered message: the worker records it in the
``--errors`` file of ``igata run`` and, with the ``dynamodb`` sink, in the REQUESTS table's
``errors`` attribute. ``--filter-error`` reads those.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from igata_sqs.clients import describe, error_code
from igata_sqs.replay.exits import ReplayError, ReplayUnavailable, Unavailable
from igata_sqs.replay.letters import DeadLetter, id_value, outcome_text

#: Attribute of the REQUESTS table holding a request's last errors (the dynamodb sink's).
ERRORS_ATTRIBUTE = "errors"

#: (where the error was found, its text)
ErrorText = tuple[str, str]


class ErrorsFile:
    """Errors recorded by ``igata run --errors PATH`` (JSON lines of error outcomes).

    Outcomes are indexed by identity (and ``sqs:<message id>`` for whole-body errors);
    for each, only the last recorded attempt counts: a new attempt number replaces what
    earlier lines recorded, so a message that failed first for one reason and finally for
    another matches the final reason only.
    """

    def __init__(self, paths: Sequence[Path]):
        self._latest: dict[str, tuple[int, list[str]]] = {}
        for path in paths:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ReplayError(
                f"replay: cannot read the errors file {path}: {exc.strerror}"
            ) from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                outcome = json.loads(line)
                keys = {str(outcome["identity"])}
                attempt = int(outcome.get("attempt", 1))
            except (ValueError, KeyError, TypeError):
                raise ReplayError(
                    f"replay: line {number} of the errors file {path} is not an error outcome "
                    "(a JSON object with 'identity', 'stage', 'error_type', 'message'); pass "
                    "the file written by igata run --errors PATH"
                ) from None
            if str(outcome.get("input", "")).startswith("sqs:"):
                keys.add(str(outcome["input"]))
            text = outcome_text(outcome)
            for key in keys:
                recorded = self._latest.get(key)
                if recorded is None or recorded[0] != attempt:
                    self._latest[key] = (attempt, [text])
                else:
                    recorded[1].append(text)

    def errors_of(self, letters: Sequence[DeadLetter]) -> dict[str, list[ErrorText]]:
        found: dict[str, list[ErrorText]] = {}
        for letter in letters:
            texts: list[ErrorText] = []
            for key in sorted(letter.identities()):
                for text in self._latest.get(key, (0, []))[1]:
                    texts.append((f"{key} (errors file)", text))
            found[letter.message_id] = texts
        return found


class RequestsTable:
    """The REQUESTS table of the ``dynamodb`` sink: each request's last ``errors``.

    The sink keys the table by the request field ``hashkey`` (``request_id``) and sets
    ``errors`` (a JSON list of error outcomes) on every failed attempt, ``[]`` on success:
    a request completed meanwhile (by a duplicate message) matches no error.
    """

    def __init__(self, client: Any, table: str, hashkey: str):
        self.client = client
        self.table = table
        self.hashkey = hashkey

    def check(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise ReplayError(
                    f"replay: REQUESTS table {self.table!r} does not exist (check "
                    "--requests-table and the DynamoDB endpoint/region)"
                ) from None
            raise Unavailable(
                f"dynamodb: cannot describe table {self.table!r}: {describe(exc)}"
            ) from exc

    def errors_of(self, letters: Sequence[DeadLetter]) -> dict[str, list[ErrorText]]:
        ids_of = {
            letter.message_id: [
                rid for r in letter.requests if (rid := id_value(r.get(self.hashkey)))
            ]
            for letter in letters
        }
        wanted = sorted({rid for ids in ids_of.values() for rid in ids})
        items: dict[str, list[str]] = {}
        for start in range(0, len(wanted), 100):  # BatchGetItem's limit
            items.update(self._get(wanted[start : start + 100]))
        return {
            message_id: [(f"request {rid}", text) for rid in ids for text in items.get(rid, [])]
            for message_id, ids in ids_of.items()
        }

    def _get(self, ids: list[str]) -> dict[str, list[str]]:
        request: dict[str, Any] = {
            self.table: {
                "Keys": [{self.hashkey: {"S": rid}} for rid in ids],
                "ProjectionExpression": "#k, #e",
                "ExpressionAttributeNames": {"#k": self.hashkey, "#e": ERRORS_ATTRIBUTE},
            }
        }
        found: dict[str, list[str]] = {}
        for attempt in range(6):
            if attempt:
                time.sleep(min(0.1 * 2**attempt, 2.0))
            try:
                response = self.client.batch_get_item(RequestItems=request)
            except Exception as exc:
                raise Unavailable(
                    f"dynamodb: cannot read REQUESTS table {self.table!r}: {describe(exc)}"
                ) from exc
            for item in response.get("Responses", {}).get(self.table, []):
                rid = item.get(self.hashkey, {}).get("S")
                if rid is not None:
                    found[rid] = _errors_attribute(item.get(ERRORS_ATTRIBUTE, {}))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise Unavailable(
            f"dynamodb: REQUESTS table {self.table!r} left keys unprocessed (throttled) after "
            "6 attempts; retry later or lower --rate"
        )


def _errors_attribute(value: dict[str, Any]) -> list[str]:
    text = value.get("S")
    if not text:
        return []
    try:
        entries = json.loads(text)
    except ValueError:
        return [text]
    if not isinstance(entries, list):
        entries = [entries]
    return [outcome_text(entry) for entry in entries]


ErrorSource = ErrorsFile | RequestsTable


def open_requests_table(table: str, hashkey: str) -> RequestsTable:
    """The REQUESTS table, checked to exist (its client built here: boto3 is imported late)."""
    import boto3
    from botocore.config import Config

    from igata_core.awsconfig import client_kwargs, config_kwargs

    client = boto3.session.Session().client(
        "dynamodb", **client_kwargs("dynamodb"), config=Config(**config_kwargs("dynamodb"))
    )
    requests = RequestsTable(client, table, hashkey)
    try:
        requests.check()
    except Unavailable as exc:
        raise ReplayUnavailable(f"replay: {exc}") from exc
    return requests
