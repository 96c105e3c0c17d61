"""The ``webhook`` sink: result records POSTed as JSON batches to a URL.

Each POST carries ``{"batch": KEY, "records": [...]}`` and the header
``Idempotency-Key: KEY``, where KEY is a digest of the body: a batch sent again (after a
timeout whose answer was lost, or by a redelivery that produced the same records) has the
same key, and the receiver can drop it. Every record also carries its ``igata_id``.

``flush`` returns only when every batch was answered with 2xx. Connection errors,
timeouts and 5xx/408/429 answers are retried with exponential backoff (``Retry-After``
honoured); then ``flush`` raises and igata retries it within ``--sink-retry-budget``,
keeping the inputs unacknowledged. A 4xx answer means the receiver refuses the batch:
``flush`` raises at once with the receiver's answer, since sending it again cannot help.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from igata_core import RECORD_ID_KEY, Option, Rejection, RunContext, Sink
from igata_core.serialize import NotSerializable, dumps

if TYPE_CHECKING:
    import urllib.error

# hashlib and igata_http.transport (urllib.request, http.client, ssl: ~15 ms together) are
# imported when a sink is made, not when the plugin registers: every `igata` command
# registers it.


class WebhookRefused(Exception):
    """The receiver answered a batch with 4xx (or a redirect): sending it again cannot help."""


class WebhookUnavailable(Exception):
    """The receiver stayed unreachable or kept failing through every retry of a batch."""


@dataclass
class _Batch:
    key: str
    body: bytes
    count: int


class WebhookSink(Sink):
    """POSTs result batches as JSON, with retries and an idempotency key per batch."""

    name = "webhook"
    description = "POST result batches as JSON to a URL (retries, Idempotency-Key header)"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "url", required=True, env=("WEBHOOK_URL",),
            help="Where result batches are POSTed (http:// or https://).",
        ),
        Option(
            "authorization", env=("WEBHOOK_AUTHORIZATION",),
            help="Authorization header value (e.g. 'Bearer …'); best set in the environment.",
        ),
        Option(
            "batch_size", "int", default=100, minimum=1,
            help="Most records per POST.",
        ),
        Option(
            "connect_timeout", "float", default=5.0, minimum=0.001,
            help="Seconds to connect to the receiver.",
        ),
        Option(
            "read_timeout", "float", default=30.0, minimum=0.001,
            help="Seconds to wait for each read of the receiver's answer.",
        ),
        Option(
            "retries", "int", default=4, minimum=0,
            help="Extra attempts of a batch after a connection error, a timeout or a "
            "5xx/408/429 answer, before flush fails.",
        ),
        Option(
            "backoff", "float", default=0.5, minimum=0,
            help="Seconds before the first retry of a batch; doubled for each further one.",
        ),
    )  # fmt: skip

    def __init__(self, options: Any = None, context: RunContext | None = None):
        super().__init__(options, context)
        self.url: str = self.opts["url"]
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {self.url!r} is not an http:// or https:// URL")
        from igata_http.transport import opener

        # No redirects: a POST redirected by urllib would arrive as a GET without its body.
        self._opener = opener(self.opts["read_timeout"], allow=None)
        # igata_id -> serialised record, in arrival order; a redelivery replaces its entry.
        self._pending: dict[str, str] = {}
        # Batches formed by a flush that failed; sent first, unchanged, by the next flush.
        self._batches: list[_Batch] = []

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        rejections = []
        for index, record in enumerate(records):
            try:
                text = dumps(record, ensure_ascii=False, sort_keys=True)
            except NotSerializable as exc:
                message = f"webhook: record {record.get(RECORD_ID_KEY)} has no JSON form: {exc}"
                rejections.append(Rejection(index, message, "NotSerializable"))
                continue
            identity = str(record.get(RECORD_ID_KEY))
            self._pending.pop(identity, None)
            self._pending[identity] = text
        return rejections

    def flush(self) -> None:
        texts = list(self._pending.values())
        self._pending.clear()
        size = self.opts["batch_size"]
        for start in range(0, len(texts), size):
            self._batches.append(_batch(texts[start : start + size]))
        while self._batches:
            self._post(self._batches[0])
            self._batches.pop(0)

    def _post(self, batch: _Batch) -> None:
        import urllib.error
        import urllib.request

        from igata_http.transport import backoff_delay, describe, is_transient

        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": batch.key,
            "User-Agent": "igata-http/0.1",
        }
        if self.opts["authorization"]:
            headers["Authorization"] = self.opts["authorization"]
        attempts = self.opts["retries"] + 1
        what = f"webhook {self.url}: batch {batch.key} ({batch.count} records)"
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(
                self.url, data=batch.body, headers=headers, method="POST"
            )
            try:
                with self._opener.open(request, timeout=self.opts["connect_timeout"]) as answer:
                    answer.read()
                return
            except urllib.error.HTTPError as exc:
                detail = _answer_text(exc)
                if not is_transient(exc):
                    location = exc.headers.get("Location") if exc.headers else None
                    hint = (
                        f"; it redirects to {location}: set url to that address"
                        if location
                        else "; not retried: fix the receiver or the records, the inputs "
                        "stay unacknowledged"
                    )
                    raise WebhookRefused(f"{what} refused: {describe(exc)}{detail}{hint}") from None
                failure: BaseException = exc
            except Exception as exc:
                if not is_transient(exc):  # an unknown host, a bad certificate
                    raise WebhookUnavailable(f"{what}: {describe(exc)}") from None
                failure = exc
            if attempt == attempts:
                raise WebhookUnavailable(
                    f"{what} failed {attempts} times; last: {describe(failure)}"
                ) from None
            time.sleep(backoff_delay(self.opts["backoff"], attempt, failure))


def _batch(texts: list[str]) -> _Batch:
    import hashlib

    records = ",".join(texts)
    key = hashlib.sha256(records.encode("utf-8")).hexdigest()[:32]
    body = f'{{"batch": {json.dumps(key)}, "records": [{records}]}}'.encode()
    return _Batch(key, body, len(texts))


def _answer_text(exc: urllib.error.HTTPError) -> str:
    """The start of the receiver's error answer, which usually says what is wrong."""
    try:
        text = exc.read(300).decode("utf-8", "replace").strip()
    except Exception:
        text = ""
    finally:
        exc.close()
    return f": {text}" if text else ""
