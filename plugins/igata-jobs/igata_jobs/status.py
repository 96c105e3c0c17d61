"""``igata status``: a collection's progress from REQUESTS and the queues.

Counts come from the ``collection_id-state-index`` (one ``Select=COUNT`` Query per state,
in parallel). For ``completed`` and ``error`` the Query filters on ``updated_at_timestamp``
within the last minute: DynamoDB then reports the state's size as ``ScannedCount`` and the
last minute's as ``Count``, so one pass gives both.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from igata_jobs.aws import sqs_failure
from igata_jobs.index import plain, query_pages

QUEUED, COMPLETED, ERROR = "queued", "completed", "error"
_URI = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]*[^\s'\".,:;)]")
WINDOW_SECONDS = 60

#: Exit codes of ``--json`` and ``--watch``.
EXIT_DONE = 0
EXIT_DONE_WITH_ERRORS = 1
EXIT_IN_PROGRESS = 4


@dataclass
class QueueDepth:
    name: str
    visible: int
    in_flight: int
    delayed: int


@dataclass
class JobStatus:
    collection_id: str
    states: dict[str, int] = field(default_factory=dict)
    total: int = 0
    finished_last_minute: int = 0
    throughput_per_second: float = 0.0
    eta_seconds: float | None = None
    queue: QueueDepth | None = None
    dead_letter_queue: QueueDepth | None = None
    errors: list[tuple[str, int]] = field(default_factory=list)
    #: What the throughput was measured over.
    throughput_window: str = "the last minute"

    @property
    def finished(self) -> int:
        return self.states.get(COMPLETED, 0) + self.states.get(ERROR, 0)

    @property
    def done(self) -> bool:
        return self.total > 0 and self.finished == self.total

    @property
    def phase(self) -> str:
        if not self.done:
            return "in_progress"
        return "done_with_errors" if self.states.get(ERROR, 0) else "done"

    @property
    def exit_code(self) -> int:
        return {"done": EXIT_DONE, "done_with_errors": EXIT_DONE_WITH_ERRORS}.get(
            self.phase, EXIT_IN_PROGRESS
        )

    def as_json(self) -> str:
        data = asdict(self)
        data["errors"] = [{"error": text, "count": count} for text, count in self.errors]
        data.update(finished=self.finished, done=self.done, phase=self.phase)
        return json.dumps(data, indent=2, ensure_ascii=False)

    def text(self) -> str:
        share = f" ({100 * self.finished / self.total:.1f}%)" if self.total else ""
        lines = [
            f"collection {self.collection_id}: {self.finished} of {self.total} done{share}"
            + (" - finished" if self.done else "")
        ]
        lines.append("  " + "  ".join(f"{state} {count}" for state, count in self.states.items()))
        rate = (
            f"  throughput {self.throughput_per_second:.1f} requests/s over "
            f"{self.throughput_window}"
        )
        if self.eta_seconds is not None:
            rate += f"; ETA {_duration(self.eta_seconds)}"
        elif not self.done:
            rate += f"; ETA unknown (nothing finished over {self.throughput_window})"
        lines.append(rate)
        if self.queue is not None:
            q = self.queue
            line = (
                f"  queue {q.name}: {q.visible} visible, {q.in_flight} in flight, "
                f"{q.delayed} delayed"
            )
            if self.dead_letter_queue is not None:
                d = self.dead_letter_queue
                line += f"; dead-letter queue {d.name}: {d.visible + d.in_flight}"
            lines.append(line)
        if self.errors:
            lines.append("  most common errors:")
            lines += [f"  {count:>6}  {text}" for text, count in self.errors]
        return "\n".join(lines)


class Rate:
    """Throughput measured between refreshes (``--watch``): finished requests over up to
    the last minute of readings, which is right from the first refresh on, where the
    index's last-minute count divided by 60 s starts low."""

    def __init__(self) -> None:
        self.readings: list[tuple[float, int]] = []

    def update(self, status: JobStatus, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.readings.append((now, status.finished))
        while len(self.readings) > 2 and now - self.readings[0][0] > WINDOW_SECONDS:
            self.readings.pop(0)
        first_time, first_finished = self.readings[0]
        if now - first_time <= 0:
            return
        status.throughput_per_second = (status.finished - first_finished) / (now - first_time)
        status.throughput_window = f"the last {now - first_time:.0f} s"
        remaining = status.total - status.finished
        if remaining <= 0:
            status.eta_seconds = 0.0 if status.total else None
        elif status.throughput_per_second > 0:
            status.eta_seconds = remaining / status.throughput_per_second
        else:
            status.eta_seconds = None


def _duration(value: float) -> str:
    seconds = round(value)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(
    client: Any, layout: Any, collection_id: str, state: str | None, since: int | None
) -> tuple[int, int]:
    """(items, items updated since ``since``) of a collection and state."""
    total = recent = 0
    for page in query_pages(client, layout, collection_id, state, select="COUNT", since=since):
        total += page.get("ScannedCount", page.get("Count", 0))
        recent += page.get("Count", 0)
    return total, recent


def common_errors(
    client: Any, layout: Any, collection_id: str, *, sample: int = 1000, top: int = 5
) -> list[tuple[str, int]]:
    """The most common last errors of the collection's failed requests (up to ``sample``)."""
    found: Counter[str] = Counter()
    seen = 0
    for page in query_pages(
        client, layout, collection_id, ERROR, projection=["errors"], limit=sample
    ):
        for item in page.get("Items", []):
            seen += 1
            found[_last_error(plain(item).get("errors"))] += 1
            if seen >= sample:
                return found.most_common(top)
    return found.most_common(top)


def _last_error(text: Any) -> str:
    try:
        errors = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return str(text)[:200]
    if not errors or not isinstance(errors, list) or not isinstance(errors[-1], dict):
        return "(no error recorded)"
    last = errors[-1]
    # Grouped by kind: the object named in each message would make every error unique.
    message = _URI.sub("<uri>", " ".join(str(last.get("message", "")).split()))
    return f"{last.get('stage', '?')}: {last.get('error_type', '?')}: {message}"[:200]


def queue_depth(client: Any, url: str) -> tuple[QueueDepth, str | None]:
    """The queue's counts, and the URL of its dead-letter queue (None: no redrive policy)."""
    from igata_sqs.clients import queue_name

    try:
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    except Exception as exc:
        raise sqs_failure(exc, url=url, action="GetQueueAttributes") from exc
    depth = QueueDepth(
        queue_name(url),
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )
    dlq_url = None
    if attributes.get("RedrivePolicy"):
        try:
            arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
            _, _, _, _, account, name = arn.split(":", 5)
            dlq_url = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)[
                "QueueUrl"
            ]
        except Exception as exc:
            import logging

            logging.getLogger("igata.jobs").warning("status: no dead-letter queue depth: %s", exc)
    return depth, dlq_url


def read_status(
    ddb: Any,
    layout: Any,
    collection_id: str,
    *,
    sqs: Any = None,
    queue_url: str | None = None,
    now: float | None = None,
    error_sample: int = 1000,
) -> JobStatus:
    since = int((now or time.time()) - WINDOW_SECONDS)
    status = JobStatus(collection_id)
    with ThreadPoolExecutor(5) as pool:
        futures = {
            QUEUED: pool.submit(_count, ddb, layout, collection_id, QUEUED, None),
            COMPLETED: pool.submit(_count, ddb, layout, collection_id, COMPLETED, since),
            ERROR: pool.submit(_count, ddb, layout, collection_id, ERROR, since),
            None: pool.submit(_count, ddb, layout, collection_id, None, None),
        }
        errors = pool.submit(common_errors, ddb, layout, collection_id, sample=error_sample)
        counts = {state: future.result() for state, future in futures.items()}
        status.errors = errors.result() if counts[ERROR][0] else []
    status.total = counts[None][0]
    for state in (QUEUED, COMPLETED, ERROR):
        status.states[state] = counts[state][0]
    other = status.total - sum(status.states.values())
    if other > 0:
        status.states["other"] = other
    status.finished_last_minute = counts[COMPLETED][1] + counts[ERROR][1]
    status.throughput_per_second = status.finished_last_minute / WINDOW_SECONDS
    remaining = status.total - status.finished
    if remaining <= 0:
        status.eta_seconds = 0.0 if status.total else None
    elif status.throughput_per_second > 0:
        status.eta_seconds = remaining / status.throughput_per_second
    if sqs is not None and queue_url:
        status.queue, dlq_url = queue_depth(sqs, queue_url)
        if dlq_url:
            status.dead_letter_queue, _ = queue_depth(sqs, dlq_url)
    return status
