"""What a dead-lettered message says: its requests, their ids and identities."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from igata_core import digest_identity
from igata_sqs.messages import BodyError, parse_body

#: Request fields shown as a message's request ids (after ``--id-field``).
DISPLAY_ID_FIELDS = ("image_id", "file_id")
_SHOWN_IDS = 3


@dataclass
class DeadLetter:
    """One message received from the dead-letter queue in this scan."""

    message: dict[str, Any]
    id_field: str
    requests: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        try:
            parsed = parse_body(self.body)
        except BodyError:
            parsed = []
        self.requests = [request for request in parsed if isinstance(request, dict)]

    @property
    def message_id(self) -> str:
        return str(self.message["MessageId"])

    @property
    def receipt_handle(self) -> str:
        return str(self.message["ReceiptHandle"])

    @property
    def body(self) -> str:
        return str(self.message.get("Body", ""))

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.message.get("Attributes", {}))

    @property
    def message_attributes(self) -> dict[str, Any]:
        return dict(self.message.get("MessageAttributes", {}))

    @property
    def sent_at(self) -> datetime | None:
        stamp = self.attributes.get("SentTimestamp")
        return datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None

    @property
    def group_id(self) -> str | None:
        return self.attributes.get("MessageGroupId")

    def request_ids(self) -> list[str]:
        """Each request's id as the worker shows it: ``--id-field``, else image_id/file_id."""
        ids = []
        for request in self.requests:
            for name in (self.id_field, *DISPLAY_ID_FIELDS):
                value = id_value(request.get(name))
                if value is not None:
                    ids.append(value)
                    break
            else:
                ids.append(digest_identity(request))
        return ids

    def identities(self) -> set[str]:
        """Every identity under which the worker may have recorded an error of this message.

        The worker's identity of a request is ``--id-field``, then ``image_id`` (CSV:
        ``file_id`` first), else a digest of the request; an error of the body as a whole
        is recorded under ``sqs:<message id>``. All candidates are taken: ids of different
        fields do not collide in practice, and this needs no ``--format``.
        """
        keys = {f"sqs:{self.message_id}"}
        for request in self.requests:
            keys.add(digest_identity(request))
            for name in (self.id_field, *DISPLAY_ID_FIELDS):
                value = id_value(request.get(name))
                if value is not None:
                    keys.add(value)
        return keys

    def describe(self) -> str:
        sent = self.sent_at.strftime("%Y-%m-%dT%H:%M:%SZ") if self.sent_at else "?"
        ids = self.request_ids()
        shown = ", ".join(ids[:_SHOWN_IDS]) if ids else "none (body is not a request list)"
        more = f" (+{len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
        return f"{self.message_id}  sent {sent}  requests {shown}{more}"


def id_value(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def outcome_text(entry: Any) -> str:
    """One recorded error as ``stage: ErrorType: message`` (what ``--filter-error`` searches)."""
    if isinstance(entry, dict):
        parts = [entry.get("stage"), entry.get("error_type"), entry.get("message")]
        return ": ".join(str(part) for part in parts if part not in (None, ""))
    return str(entry)
