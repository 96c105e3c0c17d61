"""JSON for result records: numpy values, Decimal, datetime and bytes included."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from pathlib import PurePath
from typing import Any


class NotSerializable(TypeError):
    """A value in a record has no JSON form."""


def to_jsonable(value: Any) -> Any:
    """``json.dumps`` default hook: the JSON form of values json does not know."""
    # numpy is imported lazily: the core must not pay for it at start-up.
    numpy = _numpy()
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return value.tolist()
        if isinstance(value, numpy.generic):
            return value.item()
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, PurePath):
        return str(value)
    raise NotSerializable(f"value of type {type(value).__name__} is not JSON-serialisable")


def _numpy() -> Any:
    import sys

    return sys.modules.get("numpy")


def dumps(record: Any, **kwargs: Any) -> str:
    """Serialise strictly: NaN and infinity are refused (they are not JSON)."""
    try:
        return json.dumps(record, default=to_jsonable, allow_nan=False, **kwargs)
    except ValueError as exc:
        raise NotSerializable(f"{exc} (NaN and infinity have no JSON form)") from exc
    except RecursionError as exc:
        raise NotSerializable("value is nested too deeply or refers to itself") from exc


def jsonable(record: Any) -> Any:
    """A copy of ``record`` made only of JSON types (for sinks that need plain values)."""
    return json.loads(dumps(record))
