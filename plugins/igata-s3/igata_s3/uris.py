"""Parsing and formatting ``s3://bucket/key`` URIs.

Keys are URL-decoded as the original igata did (``%20`` is a space), so a key that itself
contains ``%`` must be written ``%25``; :func:`format_uri` does that for the URIs igata
makes (it also escapes ``?`` and ``#``). A ``?versionId=ID`` suffix names an object version; ``?``
and ``#`` elsewhere are part of the key (S3 allows them), so ``s3://b/what?.jpg`` means the
key ``what?.jpg``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from igata_core.components import RecordError

# S3's rules for bucket names (3-63 characters: lower-case letters, digits, dots and
# hyphens, starting and ending with a letter or digit, not an IP address).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_VERSION_SUFFIX = re.compile(r"\?versionId=([^&#?/]+)$")
#: S3's limit on an object key, in bytes of its UTF-8 encoding.
MAX_KEY_BYTES = 1024
# Characters that must be escaped for a formatted URI to parse back to the same key.
_ESCAPE = str.maketrans({"%": "%25", "?": "%3F", "#": "%23"})


class InvalidS3Uri(RecordError):
    """The text is not a usable ``s3://bucket/key`` URI."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key (empty for a bucket alone), and an optional object version."""

    bucket: str
    key: str = ""
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return format_uri(self.bucket, self.key, self.version_id)

    @property
    def is_prefix(self) -> bool:
        """A bucket alone or a key ending in '/': a listing, not one object."""
        return self.key == "" or self.key.endswith("/")


def bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` is not a valid S3 bucket name, or None if it is."""
    if not bucket:
        return "no bucket name"
    if not _BUCKET.match(bucket):
        return (
            f"bucket name {bucket!r} is invalid (3-63 characters: lower-case letters, "
            "digits, '.' and '-', starting and ending with a letter or digit)"
        )
    if ".." in bucket or _IP_ADDRESS.match(bucket):
        return f"bucket name {bucket!r} is invalid (no '..', not an IP address)"
    return None


def parse_uri(text: str, *, allow_prefix: bool = False) -> S3Location:
    """Parse ``s3://bucket/key`` strictly; raise :class:`InvalidS3Uri` saying why not.

    With ``allow_prefix`` a bucket alone (``s3://b``, ``s3://b/``) and a key ending in '/'
    are accepted as listings; otherwise a key is required.
    """
    raw = text.strip()
    if not raw.startswith("s3://"):
        scheme = raw.split(":", 1)[0].lower() if ":" in raw else ""
        why = (
            f"scheme {scheme!r} is not 's3'"
            if scheme and scheme != "s3"
            else "it does not start with 's3://'"
        )
        raise InvalidS3Uri(f"invalid S3 URI {text!r}: {why} (expected s3://BUCKET/KEY)")
    rest = raw[len("s3://") :]
    bucket, _, key = rest.partition("/")
    problem = bucket_problem(bucket)
    if problem is None and any(c in bucket for c in "@:?#"):
        problem = f"bucket part {bucket!r} contains user, port or query characters"
    if problem:
        raise InvalidS3Uri(f"invalid S3 URI {text!r}: {problem} (expected s3://BUCKET/KEY)")
    version_id = None
    match = _VERSION_SUFFIX.search(key)
    if match:
        version_id = unquote(match.group(1))
        key = key[: match.start()]
    key = unquote(key)
    if not key and not allow_prefix:
        raise InvalidS3Uri(
            f"invalid S3 URI {text!r}: no object key after the bucket (expected s3://BUCKET/KEY)"
        )
    if version_id and (not key or key.endswith("/")):
        raise InvalidS3Uri(f"invalid S3 URI {text!r}: a versionId needs an object key")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidS3Uri(
            f"invalid S3 URI {text[:80]!r}…: key is longer than S3's {MAX_KEY_BYTES} bytes"
        )
    return S3Location(bucket, key, version_id)


def format_uri(bucket: str, key: str, version_id: str | None = None) -> str:
    """The URI of an object, readable (spaces stay spaces) and parsed back by parse_uri."""
    uri = f"s3://{bucket}/{key.translate(_ESCAPE)}"
    if version_id:
        uri += f"?versionId={quote(version_id, safe='')}"
    return uri


def abbreviate(key: str, keep: int = 40) -> str:
    """A long key shortened for messages: its start and its end, which tell keys apart."""
    if len(key) <= 2 * keep + 1:
        return key
    return f"{key[:keep]}…{key[-keep:]}"
