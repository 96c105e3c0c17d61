"""Python values -> DynamoDB attribute values, checked against DynamoDB's limits.

DynamoDB refuses a whole ``BatchWriteItem`` call when one item in it breaks a rule, so every
item is checked here first and a bad one becomes that record's error instead. The rules
(from the DynamoDB developer guide, "Service, account, and table quotas"):

* numbers: at most 38 significant digits, magnitude between 1E-130 and 9.99…E+125, no NaN
  or infinity; floats are not accepted at all by boto3 (they become ``Decimal``), nor digits
  below 1E-165 (boto3's 38-digit context cannot hold them exactly);
* text: valid UTF-8, so no lone surrogates (JSON's "\\ud800" escapes decode to them);
* sets: non-empty and of one type;
* nesting: at most 32 levels of lists and maps;
* item size: at most 400 KB, counted as the UTF-8 length of attribute names plus values.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

MAX_ITEM_BYTES = 400 * 1024
MAX_NUMBER_DIGITS = 38
MAX_NUMBER_EXPONENT = 125
MIN_NUMBER_EXPONENT = -130
#: boto3 sends numbers through a context of 38 digits and Emin -128: no digit below 1E-165.
MIN_DIGIT_EXPONENT = -128 - MAX_NUMBER_DIGITS + 1
MAX_NESTING = 32
SEPARATOR = "__"

# Wide enough that quantizing a float's shortest repr (at most 17 digits) never overflows.
_QUANTIZE_CONTEXT = Context(prec=80, rounding=ROUND_HALF_EVEN)


class InvalidAttribute(ValueError):
    """A value that DynamoDB would refuse; the message names the attribute and the rule."""


def check_number(value: Decimal, where: str) -> Decimal:
    """``value`` as sent to DynamoDB, or :class:`InvalidAttribute` if DynamoDB refuses it.

    Trailing zeros after the decimal point are dropped (``1.50`` -> ``1.5``); a whole number
    is written out without an exponent (``Decimal("3E+1")`` -> ``30``) up to 38 digits.
    """
    if not value.is_finite():
        raise InvalidAttribute(f"{where}: {value} is not a number DynamoDB can store (NaN/inf)")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digit_list = list(digits)
    while len(digit_list) > 1 and digit_list[0] == 0:
        digit_list.pop(0)
    if digit_list == [0]:
        return Decimal(0)
    while digit_list[-1] == 0:
        digit_list.pop()
        exponent += 1
    if len(digit_list) > MAX_NUMBER_DIGITS:
        raise InvalidAttribute(
            f"{where}: {value} has {len(digit_list)} significant digits; DynamoDB stores at "
            f"most {MAX_NUMBER_DIGITS} (send it as a string, or round it)"
        )
    adjusted = exponent + len(digit_list) - 1
    if not MIN_NUMBER_EXPONENT <= adjusted <= MAX_NUMBER_EXPONENT:
        raise InvalidAttribute(
            f"{where}: {value} is outside DynamoDB's number range (1E-130 to 9.99E+125 in "
            "magnitude)"
        )
    if exponent < MIN_DIGIT_EXPONENT:
        raise InvalidAttribute(
            f"{where}: {value} has digits below 1E{MIN_DIGIT_EXPONENT}, which boto3 cannot "
            "send exactly (round it, or send it as a string)"
        )
    if exponent > 0 and len(digit_list) + exponent <= MAX_NUMBER_DIGITS:
        # A whole number is sent as written (30, not 3E+1), as long as boto3's 38-digit
        # context can take its trailing zeros; beyond that only the exponent form can.
        return Decimal((sign, (*digit_list, *([0] * exponent)), 0))
    return Decimal((sign, tuple(digit_list), exponent))


def check_text(text: str, where: str) -> str:
    """``text`` if it is valid UTF-8 (DynamoDB's encoding), else :class:`InvalidAttribute`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidAttribute(
            f"{where}: text {text[:40]!r} holds a lone surrogate at position {exc.start}, "
            "which is not valid UTF-8 and DynamoDB cannot store"
        ) from None
    return text


def float_to_decimal(value: float, precision: int, where: str) -> Decimal:
    """A float as a Decimal rounded to ``precision`` decimal places.

    The float's shortest repr is the starting point (``0.1`` -> ``0.1``, not the binary
    expansion ``0.1000000000000000055…``), so a result never has more than 17 significant
    digits and the same float always gives the same number.
    """
    if math.isnan(value) or math.isinf(value):
        raise InvalidAttribute(f"{where}: {value!r} is not a number DynamoDB can store (NaN/inf)")
    number = Decimal(repr(float(value)))
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -precision:
        try:
            number = number.quantize(Decimal(1).scaleb(-precision), context=_QUANTIZE_CONTEXT)
        except InvalidOperation as exc:  # pragma: no cover - excluded by the context's width
            raise InvalidAttribute(f"{where}: cannot round {value!r}: {exc}") from exc
    return check_number(number, where)


def _numpy() -> Any:
    # numpy values are converted only if numpy is already loaded: never import it here.
    return sys.modules.get("numpy")


def convert(value: Any, precision: int, where: str, depth: int = 0) -> Any:
    """``value`` as what boto3's serializer accepts (floats as Decimal, tuples as lists…)."""
    numpy = _numpy()
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            value = value.tolist()
        elif isinstance(value, numpy.bool_):
            value = bool(value)
        elif isinstance(value, numpy.integer):
            value = int(value)
        elif isinstance(value, numpy.floating):
            value = float(value)
        elif isinstance(value, numpy.str_):
            value = str(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value, where)
    if isinstance(value, int):
        return check_number(Decimal(value), where)
    if isinstance(value, float):
        return float_to_decimal(value, precision, where)
    if isinstance(value, Decimal):
        return check_number(value, where)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if depth >= MAX_NESTING:
        raise InvalidAttribute(f"{where}: nested more than {MAX_NESTING} levels deep")
    if isinstance(value, Mapping):
        return {
            check_text(str(key), f"{where}: a key"): convert(
                inner, precision, f"{where}.{key}", depth + 1
            )
            for key, inner in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            convert(inner, precision, f"{where}[{index}]", depth + 1)
            for index, inner in enumerate(value)
        ]
    if isinstance(value, (set, frozenset)):
        return _convert_set(value, precision, where)
    raise InvalidAttribute(
        f"{where}: a value of type {type(value).__name__} cannot be stored in DynamoDB"
    )


def _convert_set(value: set[Any] | frozenset[Any], precision: int, where: str) -> set[Any]:
    if not value:
        raise InvalidAttribute(f"{where}: DynamoDB cannot store an empty set (use a list)")
    members = [convert(member, precision, f"{where} member", depth=0) for member in value]
    kinds = {type(m) for m in members}
    if len(kinds) != 1 or not kinds <= {str, bytes, Decimal}:
        raise InvalidAttribute(
            f"{where}: a DynamoDB set holds only strings, only numbers or only binary values"
        )
    return set(members)


def flatten(record: Mapping[str, Any], precision: int) -> dict[str, Any]:
    """Nested dicts as one level, keys joined by ``__``; values converted; ``""`` dropped.

    ``{"position": {"x1": 1.5}, "label": ""}`` -> ``{"position__x1": Decimal("1.5")}``.
    Lists stay lists (DynamoDB lists, their dicts as maps) so no element is lost.
    """
    flat: dict[str, Any] = {}
    _flatten_into(flat, record, "", precision)
    return flat


def _flatten_into(
    flat: dict[str, Any], mapping: Mapping[str, Any], prefix: str, precision: int
) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten_into(flat, value, f"{name}{SEPARATOR}", precision)
            continue
        if isinstance(value, str) and value == "":
            continue
        if not name:
            raise InvalidAttribute("an attribute name is empty")
        check_text(name, "an attribute name")
        flat[name] = convert(value, precision, f"attribute {name!r}")


def value_size(value: Any) -> int:
    """Bytes DynamoDB counts for a converted value (rounded up where the guide is vague)."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, Decimal):
        # As DynamoDB Local's reckoning (dynalite): a byte per two significant digits, one
        # more, one for an even exponent with an even digit count, one for a minus sign.
        sign, digits, _ = value.as_tuple()
        if not value:
            return 1
        digits = _significant(digits)
        even = len(digits) % 2 == 0 and value.adjusted() % 2 == 0
        return 1 + (len(digits) + 1) // 2 + (1 if even else 0) + (1 if sign else 0)
    if isinstance(value, dict):
        return 3 + sum(len(k.encode("utf-8")) + value_size(v) + 1 for k, v in value.items())
    if isinstance(value, list):
        return 3 + sum(value_size(v) + 1 for v in value)
    if isinstance(value, (set, frozenset)):
        return sum(value_size(v) for v in value)
    raise TypeError(f"not a converted value: {type(value).__name__}")


def _significant(digits: tuple[int, ...]) -> tuple[int, ...]:
    """The significant digits of a coefficient (``30`` counts as ``3``, as DynamoDB does)."""
    start, end = 0, len(digits)
    while start < end - 1 and digits[start] == 0:
        start += 1
    while end > start + 1 and digits[end - 1] == 0:
        end -= 1
    return digits[start:end]


def item_size(item: Mapping[str, Any]) -> int:
    """The size DynamoDB counts for an item of converted values."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())
