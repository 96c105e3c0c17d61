"""Message bodies -> Items: the original igata's request formats, checked field by field.

A body is a JSON array of request objects (the original README's schema) or a single
request object. Each request becomes one :class:`~igata_core.Item`: its ``meta`` holds
every field of the request, its ``uri`` the request's URI field(s), its ``identity`` the
request's id. A request that breaks the schema becomes an Item with ``error`` set, so the
other requests of the message are still processed and the message is retried whole; a
body that is not a request list at all is reported on the envelope.

Bodies that arrive through an SNS subscription without raw message delivery are unwrapped
(the request list is the notification's ``Message``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from igata_core import Item, digest_identity

#: Required fields of each format (besides the URI fields); ``a|b`` means either one.
FORMAT_REQUIRED: dict[str, tuple[str, ...]] = {
    "image": ("collection_id", "image_id"),
    "csv": ("collection_id", "file_id|image_id"),
}
#: Fields that identify a request when the configured id field is absent, by format.
FORMAT_ID_FIELDS: dict[str, tuple[str, ...]] = {
    "image": ("image_id",),
    "csv": ("file_id", "image_id"),
}
FORMAT_DECODER: dict[str, str] = {"image": "image", "csv": "csv"}


class BodyError(ValueError):
    """The body as a whole is not a request list (the message has no usable requests)."""


@dataclass(frozen=True)
class RequestFormat:
    """How requests of one queue are read.

    ``required`` holds groups of alternatives (``("file_id", "image_id")`` = either);
    ``id_fields`` are tried in order for the identity; the URI fields are always required
    and must use one of ``allowed_schemes``.
    """

    name: str
    uri_fields: tuple[str, ...]
    required: tuple[tuple[str, ...], ...]
    id_fields: tuple[str, ...]
    allowed_schemes: frozenset[str]
    decoder: str | None

    @classmethod
    def build(
        cls,
        name: str,
        *,
        uri_fields: list[str],
        id_field: str,
        required_fields: list[str],
        allowed_schemes: list[str],
        decoder: str,
    ) -> RequestFormat:
        if not uri_fields:
            raise ValueError("uri_fields (REQUEST_S3URI_KEYS) names no field")
        required = required_fields or list(FORMAT_REQUIRED[name])
        groups = tuple(
            tuple(part.strip() for part in spec.split("|") if part.strip())
            for spec in required
            if spec.strip()
        )
        id_fields = tuple(dict.fromkeys((id_field, *FORMAT_ID_FIELDS[name])))
        if decoder == "auto":
            chosen: str | None = None
        else:
            chosen = decoder or FORMAT_DECODER[name]
        return cls(
            name=name,
            uri_fields=tuple(uri_fields),
            required=groups,
            id_fields=id_fields,
            allowed_schemes=frozenset(s.lower() for s in allowed_schemes),
            decoder=chosen,
        )


def parse_body(body: str) -> list[Any]:
    """The request list of a body; raises :class:`BodyError` saying what is wrong."""
    value = _loads(body, "body")
    if (
        isinstance(value, dict)
        and value.get("Type") == "Notification"
        and isinstance(value.get("Message"), str)
        and "TopicArn" in value
    ):
        value = _loads(value["Message"], "SNS notification's Message")
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise BodyError(
        f"body is a JSON {_json_type(value)}; expected an array of request objects "
        "(or one request object)"
    )


def _loads(text: str, what: str) -> Any:
    snippet = text[:60] + ("…" if len(text) > 60 else "")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        why = "nested too deeply"
    except ValueError as exc:  # an integer over Python's digit limit for int()
        why = str(exc).split(":")[0]
    raise BodyError(
        f"{what} is not JSON ({why}): {snippet!r}; expected an array of request objects"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _present(request: dict[str, Any], field: str) -> bool:
    value = request.get(field)
    return value is not None and value != ""


def _identity(request: dict[str, Any], fmt: RequestFormat) -> tuple[str, str | None]:
    """The request's identity and the field it came from (None: a digest)."""
    for field in fmt.id_fields:
        value = request.get(field)
        if isinstance(value, str) and value:
            return value, field
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value), field
    return digest_identity(request), None


def _check_uri(field: str, value: Any, fmt: RequestFormat) -> str | None:
    """What is wrong with a URI field's value (None: nothing)."""
    if not isinstance(value, str):
        return f"field {field!r} is a JSON {_json_type(value)}, expected a URI string"
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. an unbalanced '[' in the host ("Invalid IPv6 URL")
        return f"field {field!r} = {value!r} is not a valid URI ({exc})"
    scheme = parts.scheme.lower()
    if len(scheme) <= 1:
        scheme = "file"  # a bare path (or a drive letter) would be read from local disk
    if scheme not in fmt.allowed_schemes:
        allowed = ", ".join(sorted(fmt.allowed_schemes))
        return (
            f"field {field!r} = {value!r} uses scheme {scheme!r}, which this worker does not "
            f"follow (allowed_schemes: {allowed})"
        )
    if scheme == "s3":
        # From the text, not urlsplit's path: '?' and '#' belong to S3 keys (s3://b/?x is
        # the key '?x' for the S3 loader).
        bucket, _, key = value.strip().partition("://")[2].partition("/")
        if not bucket or not key.strip("/"):
            return f"field {field!r} = {value!r} is not an s3://BUCKET/KEY URI"
    return None


def request_items(requests: list[Any], fmt: RequestFormat, *, where: str) -> list[Item]:
    """One Item per request; requests that break the schema carry ``error``.

    ``where`` names the message in errors (``sqs: message 3f2c… (queue q)``).
    """
    items: list[Item] = []
    for index, request in enumerate(requests, start=1):
        if not isinstance(request, dict):
            items.append(
                Item(
                    identity=digest_identity([where, index]),
                    error=f"{where}: request #{index} is a JSON {_json_type(request)}, "
                    "not an object",
                )
            )
            continue
        identity, id_field = _identity(request, fmt)
        label = f"request #{index}" + (f" ({id_field} {identity!r})" if id_field else "")
        problems: list[str] = []
        for group in fmt.required:
            if not any(_present(request, field) for field in group):
                names = " or ".join(repr(field) for field in group)
                problems.append(f"lacks required field {names}")
        uris: dict[str, str] = {}
        for field in fmt.uri_fields:
            if not _present(request, field):
                problems.append(f"lacks required field {field!r}")
                continue
            problem = _check_uri(field, request[field], fmt)
            if problem:
                problems.append(problem)
            else:
                uris[field] = request[field]
        meta = dict(request)
        if problems:
            items.append(
                Item(identity=identity, meta=meta, error=f"{where}: {label} {'; '.join(problems)}")
            )
            continue
        uri: str | dict[str, str] = uris[fmt.uri_fields[0]] if len(fmt.uri_fields) == 1 else uris
        items.append(Item(identity=identity, uri=uri, meta=meta, decoder=fmt.decoder))
    return items
