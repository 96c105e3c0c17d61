"""Selecting messages: the filters and why a message matches them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from igata_sqs.replay.exits import ReplayError
from igata_sqs.replay.letters import DeadLetter
from igata_sqs.replay.lookup import ErrorSource, ErrorText

_REASON_CHARS = 160


@dataclass(frozen=True)
class Filters:
    """What selects a message. Values of one filter are alternatives (any may match);
    different filters must all match. Text comparisons ignore case."""

    body: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()
    errors: tuple[str, ...] = ()
    since: datetime | None = None


class Selector:
    """Applies :class:`Filters`; says why a message matches (the dry run prints it)."""

    def __init__(self, filters: Filters, error_sources: Sequence[ErrorSource] = ()):
        if filters.errors and not error_sources:
            raise ReplayError(
                "replay: --filter-error needs the recorded errors: pass --errors-file PATH (the "
                "file of igata run --errors PATH) and/or --requests-table NAME (the dynamodb "
                "sink's REQUESTS table); a dead-lettered message does not carry its error"
            )
        self.filters = filters
        self.error_sources = list(error_sources)

    def reasons(self, letters: Sequence[DeadLetter]) -> dict[str, list[str] | None]:
        """For each message id: why it matches, or None when it does not."""
        filters = self.filters
        errors: dict[str, list[ErrorText]] = {}
        if filters.errors:
            # Only messages that pass the cheap filters cost a look-up.
            candidates = [letter for letter in letters if self._cheap(letter) is not None]
            for source in self.error_sources:
                for message_id, texts in source.errors_of(candidates).items():
                    errors.setdefault(message_id, []).extend(texts)
        return {letter.message_id: self._why(letter, errors) for letter in letters}

    def _cheap(self, letter: DeadLetter) -> list[str] | None:
        filters = self.filters
        why: list[str] = []
        if filters.since is not None and (letter.sent_at is None or letter.sent_at < filters.since):
            return None
        if filters.body:
            body = letter.body.casefold()
            hit = next((t for t in filters.body if t.casefold() in body), None)
            if hit is None:
                return None
            why.append(f"body contains {hit!r}")
        if filters.attributes:
            hit_attr = self._attribute_hit(letter)
            if hit_attr is None:
                return None
            why.append(hit_attr)
        return why

    def _attribute_hit(self, letter: DeadLetter) -> str | None:
        attributes = letter.message_attributes
        for name, wanted in self.filters.attributes:
            if name not in attributes:
                continue
            if wanted is None:
                return f"attribute {name} present"
            value = attributes[name].get("StringValue")
            if value is not None and wanted.casefold() in value.casefold():
                return f"attribute {name}={_clip(value)!r}"
        return None

    def _why(self, letter: DeadLetter, errors: dict[str, list[ErrorText]]) -> list[str] | None:
        why = self._cheap(letter)
        if why is None:
            return None
        if self.filters.errors:
            for where, text in errors.get(letter.message_id, []):
                if any(wanted.casefold() in text.casefold() for wanted in self.filters.errors):
                    return [*why, f"error of {where}: {_clip(text)}"]
            return None
        if self.filters.since is not None:
            why.append(f"sent at or after {self.filters.since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
        return why or ["no filter"]


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
