"""JSON for result records: numpy values, Decimal, datetime and bytes included.

Serialisation is strict: NaN and infinity, objects without a JSON form and structures that
refer to themselves raise :class:`NotSerializable` (a ``TypeError``) with a message naming
the field, so a sink can reject that one record and write the others.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import math
import sys
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

#: JSON keys may be these (json converts the non-strings to text itself).
_KEY_TYPES = (str, int, float, bool, type(None))


class NotSerializable(TypeError):
    """A value in a record has no JSON form."""


def to_jsonable(value: Any) -> Any:
    """``json.dumps`` default hook: the JSON form of values json does not know.

    numpy arrays and scalars, Decimal (a number; NaN and infinity refused), datetime, date
    and time (ISO 8601), bytes (base64), sets (as sorted lists when their items sort) and
    paths (text). Anything else raises :class:`NotSerializable`.
    """
    numpy = _numpy()
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return value.tolist()
        if isinstance(value, numpy.generic):
            return value.item()
    # A Decimal exists only once its module was imported (importing it costs every
    # start-up ~3 ms).
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise NotSerializable(f"Decimal {value} has no JSON form (not a finite number)")
        # Integral values stay exact as JSON integers; the exponent bound keeps a value like
        # 1E+999999 from becoming a million-digit integer.
        if value == value.to_integral_value() and value.adjusted() < 1000:
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise NotSerializable(f"Decimal {value} is out of the range of a JSON number")
        return number
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        try:
            # Sorted so that the same record always serialises to the same text.
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, PurePath):
        return str(value)
    raise NotSerializable(f"value of type {type(value).__name__} is not JSON-serialisable")


def _numpy() -> Any:
    # numpy is looked up, not imported: the core must not pay for it at start-up, and no
    # numpy value can exist unless something else imported it.
    return sys.modules.get("numpy")


def dumps(record: Any, **kwargs: Any) -> str:
    """Serialise strictly; raises :class:`NotSerializable` naming the offending field."""
    try:
        return _dumps(record, **kwargs)
    except NotSerializable as exc:
        raise NotSerializable(_where(record) + str(exc)) from exc


@functools.lru_cache(maxsize=32)
def _encoder(options: tuple[tuple[str, Any], ...]) -> json.JSONEncoder:
    # One encoder per set of options: json.dumps builds a new one at every call that passes
    # any option, which costs about as much as encoding a small record.
    return json.JSONEncoder(default=to_jsonable, allow_nan=False, **dict(options))


def _encode(value: Any, kwargs: dict[str, Any]) -> str:
    try:
        encoder = _encoder(tuple(sorted(kwargs.items())))
    except TypeError:  # an option value that is not hashable
        return json.dumps(value, default=to_jsonable, allow_nan=False, **kwargs)
    return encoder.encode(value)


def _dumps(value: Any, **kwargs: Any) -> str:
    try:
        return _encode(value, kwargs)
    except NotSerializable:
        raise
    except TypeError:
        # json takes only str, int, float, bool and None as keys; numpy integers (class
        # ids) and the like are turned into their JSON form and the record tried again.
        try:
            plain = _plain_keys(value)
            return _encode(plain, kwargs)
        except NotSerializable:
            raise
        except (TypeError, ValueError) as exc:
            raise NotSerializable(_reason(exc)) from exc
        except RecursionError as exc:
            raise NotSerializable("value is nested too deeply or refers to itself") from exc
    except ValueError as exc:
        raise NotSerializable(_reason(exc)) from exc
    except RecursionError as exc:
        raise NotSerializable("value is nested too deeply") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NotSerializable):
        return str(exc)
    text = str(exc)
    if "Circular reference" in text:
        return "value refers to itself (circular reference)"
    if "Out of range float" in text:
        return f"{text} (NaN and infinity have no JSON form)"
    return text


def _plain_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_plain_key(k): _plain_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_keys(v) for v in value]
    return value


def _plain_key(key: Any) -> Any:
    if isinstance(key, _KEY_TYPES):
        return key
    try:
        plain = to_jsonable(key)
    except NotSerializable:
        plain = None
    if isinstance(plain, _KEY_TYPES) and plain is not None:
        return plain
    raise NotSerializable(f"a key of type {type(key).__name__} cannot be a JSON object key")


def _where(record: Any) -> str:
    """``"field 'x': "`` for the first top-level field of ``record`` that fails alone."""
    if not isinstance(record, Mapping):
        return ""
    for key, value in record.items():
        try:
            _dumps({key: value})
        except (NotSerializable, RecursionError):
            return f"field {key!r}: "
    return ""


def jsonable(record: Any) -> Any:
    """A copy of ``record`` made only of JSON types (for sinks that need plain values)."""
    return json.loads(dumps(record))


def text_value(value: Any) -> str | int | float | bool | None:
    """The flat form of a value for a text cell (a CSV field).

    Strings, integers, finite floats, booleans and None stay as they are; Decimal and numpy
    scalars become numbers, datetimes ISO 8601 text, paths text, bytes base64; nested
    values (lists, dicts, arrays, sets) become JSON text. Raises :class:`NotSerializable`.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotSerializable(f"{value} has no JSON form (NaN and infinity are refused)")
        return float(value)
    if isinstance(value, (Mapping, list, tuple)):
        return dumps(value, ensure_ascii=False)
    converted = to_jsonable(value)
    if converted is None or isinstance(converted, (str, int, float, bool, bytes)):
        return text_value(converted)
    return dumps(converted, ensure_ascii=False)
