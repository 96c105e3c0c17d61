"""SNS completion notices, compatible with the original igata.

When a message is acked, its requests' ids are published to each request's topic (field
``sns_topic_arn``, else the ``REQUESTS_COMPLETE_SNS_TOPIC_ARN`` fallback); on a message's
final attempt (it is about to go to the dead-letter queue) the same is published with
per-request status. The body is the original's: a JSON array of request ids, published with
``MessageStructure=json`` under ``default``. ``notice_format=detailed`` publishes objects
instead: ``{"request_id": …, "collection_id": …, "status": "completed"|"error",
"errors": [...]}``.

Notices are batched per topic and split to stay under SNS's 256 KiB limit. A publish that
fails for an outage (throttling, 5xx, network) is retried and then logged; one refused
for good (no such topic, authorization error, invalid parameter, KMS; see
:mod:`igata_sqs.errors`) is logged at once. The results are already written, a lost
notice never undoes them, and nothing here raises.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from igata_core import Envelope
from igata_sqs import errors
from igata_sqs.batching import MAX_PAYLOAD_BYTES, batches
from igata_sqs.clients import describe

log = logging.getLogger("igata.sqs")

_ATTEMPTS = 3
#: Room left for the JSON wrapping and SNS's own accounting.
_BODY_LIMIT = MAX_PAYLOAD_BYTES - 1024


@dataclass(frozen=True)
class NoticeSettings:
    id_field: str
    topic_field: str
    default_topic: str | None
    detailed: bool


class CompletionNotifier:
    """Publishes completion notices; thread-safe; never raises."""

    def __init__(self, settings: NoticeSettings, client_factory: Callable[[], Any]):
        self.settings = settings
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        #: Notices (request ids) that could not be published, for reports and tests.
        self.unpublished = 0

    def completed(self, envelopes: Iterable[Envelope]) -> None:
        """Every request of these (deleted) messages was written."""
        self._notify(envelopes, final_failure=False)

    def failed(self, envelopes: Iterable[Envelope]) -> None:
        """These messages failed on their final attempt (next stop: the dead-letter queue)."""
        self._notify(envelopes, final_failure=True)

    def _notify(self, envelopes: Iterable[Envelope], *, final_failure: bool) -> None:
        try:
            by_topic: dict[str, list[Any]] = {}
            for envelope in envelopes:
                for topic, entry in self._entries(envelope, final_failure):
                    by_topic.setdefault(topic, []).append(entry)
            for topic, entries in by_topic.items():
                self._publish(topic, entries)
        except Exception:
            log.exception("sns: completion notices could not be prepared")

    def _entries(self, envelope: Envelope, final_failure: bool) -> list[tuple[str, Any]]:
        settings = self.settings
        errors = _errors_by_identity(envelope) if final_failure else {}
        known = getattr(envelope, "outcomes", None) is not None
        entries: list[tuple[str, Any]] = []
        for item in envelope.items:
            topic = item.meta.get(settings.topic_field) or settings.default_topic
            if not topic or not isinstance(topic, str):
                continue
            request_id = item.meta.get(settings.id_field)
            if request_id is None or isinstance(request_id, (dict, list)):
                request_id = item.identity
            if not settings.detailed:
                entries.append((topic, request_id))
                continue
            entry: dict[str, Any] = {
                settings.id_field: request_id,
                "collection_id": item.meta.get("collection_id"),
            }
            item_errors = errors.get(item.identity, [])
            if final_failure and (item_errors or not known):
                entry["status"] = "error"
                entry["errors"] = item_errors or [
                    f"{envelope.ref} failed on its final attempt (attempt {envelope.attempt})"
                ]
            else:
                entry["status"] = "completed"
            entries.append((topic, entry))
        return entries

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def _publish(self, topic: str, entries: list[Any]) -> None:
        for chunk in _chunks(entries):
            message = _message(chunk)
            problem = ""
            for attempt in range(_ATTEMPTS):
                if attempt:
                    time.sleep(0.5 * attempt)
                try:
                    self._get_client().publish(
                        TopicArn=topic, Message=message, MessageStructure="json"
                    )
                    problem = ""
                    break
                except Exception as exc:
                    problem = describe(exc)
                    kind = errors.classify(exc)
                    if kind == errors.CONFIGURATION:
                        problem += f"; {errors.configuration_hint(exc)}"
                    if kind != errors.OUTAGE:
                        break  # refused for good: retrying cannot help
            if problem:
                with self._lock:
                    self.unpublished += len(chunk)
                log.error(
                    "sns: completion notice for %d request(s) (%s) could not be published to "
                    "%s: %s; the results are written, only the notice is lost",
                    len(chunk), _preview(chunk, self.settings.id_field), topic, problem,
                )  # fmt: skip


def _errors_by_identity(envelope: Envelope) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for item in envelope.items:
        if item.error:
            errors.setdefault(item.identity, []).append(item.error)
    # The engine may attach this attempt's error outcomes to the envelope.
    for outcome in getattr(envelope, "outcomes", None) or ():
        message = f"{outcome.stage}: {outcome.error_type}: {outcome.message}"
        errors.setdefault(outcome.identity, []).append(message)
    return errors


def _message(chunk: list[Any]) -> str:
    return json.dumps({"default": json.dumps(chunk)})


def _chunks(entries: list[Any]) -> list[list[Any]]:
    """Chunks whose published message stays under the limit."""
    result: list[list[Any]] = []
    estimated = batches(
        entries,
        max_count=len(entries) or 1,
        max_bytes=_BODY_LIMIT - 32,
        size=lambda entry: len(json.dumps(json.dumps(entry)).encode()) + 2,
    )
    for chunk in estimated:
        result.extend(_split_to_fit(chunk))
    return result


def _split_to_fit(chunk: list[Any]) -> list[list[Any]]:
    if len(chunk) <= 1 or len(_message(chunk).encode()) <= _BODY_LIMIT:
        return [chunk]
    half = len(chunk) // 2
    return _split_to_fit(chunk[:half]) + _split_to_fit(chunk[half:])


def _preview(chunk: list[Any], id_field: str) -> str:
    ids = [entry.get(id_field) if isinstance(entry, dict) else entry for entry in chunk[:3]]
    more = f", … {len(chunk) - 3} more" if len(chunk) > 3 else ""
    return ", ".join(str(i) for i in ids) + more
