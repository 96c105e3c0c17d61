"""Parsing the values of ``--since``, ``--rate`` and ``--filter-attribute``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (no zone: UTC) or an age (``30m``, ``2h``, ``1d12h``)."""
    value = text.strip()
    now = now or datetime.now(UTC)
    if value and _DURATION_PART.sub("", value.lower()) == "":
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit]
            for number, unit in _DURATION_PART.findall(value.lower())
        )
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2024-05-01T09:30:00Z) nor an age "
            "(90s, 30m, 2h, 1d, 1h30m)",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_rate(text: str) -> float:
    """``--rate``: messages per second as ``N``, ``N/s``, ``N/m`` or ``N/h``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*", text)
    rate = float(match.group(1)) / _UNIT_SECONDS[match.group(2) or "s"] if match else 0.0
    if not match or rate <= 0:
        raise click.BadParameter(
            f"{text!r} is not a positive rate; write it as 5/s, 120/m or 5 (per second)",
            param_hint="--rate",
        )
    return rate


def parse_attribute_filter(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    if not name.strip():
        raise click.BadParameter(
            f"{text!r} names no attribute; write NAME=TEXT (or NAME: the attribute is present)",
            param_hint="--filter-attribute",
        )
    return name.strip(), value if sep else None
