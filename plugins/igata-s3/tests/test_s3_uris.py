from __future__ import annotations

import pytest

from igata_s3.uris import InvalidS3Uri, S3Location, format_uri, parse_uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket/key.jpg", S3Location("bucket", "key.jpg")),
        ("s3://bucket/a/b/c.png", S3Location("bucket", "a/b/c.png")),
        ("s3://bucket/my%20photo.jpg", S3Location("bucket", "my photo.jpg")),
        ("s3://bucket/my photo.jpg", S3Location("bucket", "my photo.jpg")),
        ("s3://bucket/what?.jpg", S3Location("bucket", "what?.jpg")),
        ("s3://bucket/a#b.jpg", S3Location("bucket", "a#b.jpg")),
        ("s3://bucket/k.jpg?versionId=abc123", S3Location("bucket", "k.jpg", "abc123")),
        ("  s3://bucket/k.jpg  ", S3Location("bucket", "k.jpg")),
    ],
)
def test_parse_valid(text: str, expected: S3Location) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://bucket/key", "scheme 'http' is not 's3'"),
        ("bucket/key", "does not start with 's3://'"),
        ("s3:/bucket/key", "does not start with 's3://'"),
        ("s3:///key", "no bucket name"),
        ("s3://Bucket/key", "bucket name 'Bucket' is invalid"),
        ("s3://b/key", "bucket name 'b' is invalid"),
        ("s3://user@bucket/key", "is invalid"),
        ("s3://bucket:9000/key", "is invalid"),
        ("s3://192.168.1.1/key", "not an IP address"),
        ("s3://bucket", "no object key"),
        ("s3://bucket/", "no object key"),
        ("s3://bucket/" + "k" * 1025, "longer than S3's 1024 bytes"),
    ],
)
def test_parse_invalid_says_why(text: str, why: str) -> None:
    with pytest.raises(InvalidS3Uri) as raised:
        parse_uri(text)
    assert why in str(raised.value)
    assert "expected s3://BUCKET/KEY" in str(raised.value) or "1024" in why


def test_prefixes_only_when_allowed() -> None:
    assert parse_uri("s3://bucket", allow_prefix=True) == S3Location("bucket", "")
    assert parse_uri("s3://bucket/photos/", allow_prefix=True).is_prefix
    assert not parse_uri("s3://bucket/photos", allow_prefix=True).is_prefix


@pytest.mark.parametrize(
    "key", ["plain.jpg", "my photo.jpg", "100%.jpg", "a%20b.jpg", "what?.jpg", "a#b.png",
            "日本/写真.jpg", "k.jpg?versionId=x"],
)  # fmt: skip
def test_format_round_trips(key: str) -> None:
    assert parse_uri(format_uri("bucket", key)) == S3Location("bucket", key)
    assert parse_uri(format_uri("bucket", key, "v 1")) == S3Location("bucket", key, "v 1")


def test_format_keeps_spaces_readable() -> None:
    assert format_uri("bucket", "my photo.jpg") == "s3://bucket/my photo.jpg"
