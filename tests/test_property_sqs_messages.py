"""Property-based tests of the SQS message parser: any body gives items or a clear error.

A message body comes from whoever can write to the queue. Whatever it holds, turning it
into an envelope must give requests (each an Item, valid or carrying its own error) or an
envelope error naming the message, never an exception: an exception here stops the worker,
the message comes back, and it stops the next worker too.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("igata_sqs", reason="the igata-sqs plugin is not installed")

from igata_sqs.messages import BodyError, RequestFormat, parse_body, request_items
from igata_sqs.queue import QueueInfo
from igata_sqs.source import SqsSource

# A hang fails the test (the thread method also stops C code that never returns).
pytestmark = pytest.mark.timeout(60, method="thread")
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WHERE = "sqs: message 3f2c-m1 (queue test-queue)"
IMAGE_FORMAT = RequestFormat.build(
    "image", uri_fields=["s3_uri"], id_field="request_id", required_fields=[],
    allowed_schemes=["s3"], decoder="",
)  # fmt: skip
CSV_FORMAT = RequestFormat.build(
    "csv", uri_fields=["s3_uri", "mask_uri"], id_field="job", required_fields=[],
    allowed_schemes=["s3", "https"], decoder="auto",
)  # fmt: skip

# Text as a producer may send it: lone surrogates (from "\ud800" escapes) included.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=25,
)
FIELDS = ["collection_id", "image_id", "file_id", "request_id", "job", "s3_uri", "mask_uri"]
uri_texts = (
    st.builds(lambda bucket, key: f"s3://{bucket}/{key}", any_text, any_text)
    | st.builds(lambda scheme, rest: f"{scheme}:{rest}", any_text, any_text)
    | st.sampled_from(
        [
            "s3://[bucket/key.jpg", "s3://bucket]/k", "http://[::1", "s3://\u2100/k.jpg",
            "file:///etc/passwd", "/etc/passwd", "C:\\x.jpg", "s3://b", "s3:///k", "s3://b/",
            "S3://Bucket/K.JPG", "https://example.com/a.jpg", "s3://b/?x", "s3://b/#x",
        ]
    )
)  # fmt: skip
# Requests built from the fields the formats look at, with any JSON values.
requestish = st.dictionaries(
    st.sampled_from(FIELDS) | any_text,
    json_values | uri_texts | st.sampled_from(["", None]),
    max_size=8,
)


def same_json(a, b):
    """Equal as JSON values (NaN, which is not equal to itself, included)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _check_items(items, requests, where=WHERE, fmt=IMAGE_FORMAT):
    """What every parse must give: one Item per request, each valid or with its error."""
    assert len(items) == len(requests)
    for index, (item, request) in enumerate(zip(items, requests, strict=True), start=1):
        assert isinstance(item.identity, str) and item.identity
        if item.error is not None:
            assert isinstance(item.error, str)
            assert item.error.startswith(f"{where}: request #{index}")
            assert item.uri is None
            continue
        assert isinstance(request, dict)
        assert same_json(item.meta, request)
        uris = item.uri if isinstance(item.uri, dict) else {fmt.uri_fields[0]: item.uri}
        assert set(uris) == set(fmt.uri_fields)
        for field, uri in uris.items():
            assert uri == request[field]
            # The engine picks the loader by this scheme.
            assert urlsplit(uri).scheme.lower() in fmt.allowed_schemes
        assert item.decoder == fmt.decoder


def _items_or_body_error(body, fmt=IMAGE_FORMAT):
    try:
        requests = parse_body(body)
    except BodyError as exc:
        assert str(exc), "a BodyError must say what is wrong"
        return None
    assert isinstance(requests, list)
    items = request_items(requests, fmt, where=WHERE)
    _check_items(items, requests, fmt=fmt)
    return items


# -- any body --------------------------------------------------------------------------------


@PROPERTY
@given(any_text)
@example("[" * 100_000)  # nested past the interpreter's recursion limit
@example('{"a":' * 5_000)
@example("1" * 5_000)  # an integer over Python's 4,300-digit conversion limit
@example("[" + "9" * 4_301 + "]")
@example('[{"s3_uri": "s3://[bucket/key.jpg"}]')
@example('[{"collection_id": "c", "image_id": "i", "s3_uri": "s3://\u2100/k.jpg"}]')
def test_any_text_body_gives_items_or_a_body_error(body):
    _items_or_body_error(body)


@PROPERTY
@given(json_values)
def test_any_json_body_gives_items_or_a_body_error(value):
    for fmt in (IMAGE_FORMAT, CSV_FORMAT):
        items = _items_or_body_error(json.dumps(value), fmt)
        if isinstance(value, (list, dict)):
            expected = value if isinstance(value, list) else [value]
            if not _is_sns_notice(value):
                assert items is not None and len(items) == len(expected)
        elif items is not None:
            raise AssertionError(f"a JSON {type(value).__name__} body must be refused")


def _is_sns_notice(value):
    return isinstance(value, dict) and value.get("Type") == "Notification"


@PROPERTY
@given(st.integers(min_value=0, max_value=3 * sys.getrecursionlimit()), st.sampled_from("[{"))
def test_deeply_nested_bodies_are_a_body_error_or_parse(depth, bracket):
    opening, closing = ('[{"x":', "}]") if bracket == "{" else ("[", "]")
    _items_or_body_error(opening * depth + closing * depth)


@PROPERTY
@given(st.lists(requestish, max_size=5), st.data())
def test_mutated_valid_bodies_give_items_or_a_body_error(requests, data):
    body = json.dumps(requests)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        char = data.draw(st.sampled_from('[]{}",:\\0123456789eE.-+ntfu\x00\ud800'))
        if action == "insert":
            body = body[:position] + char + body[position:]
        elif action == "delete":
            body = body[:position] + body[position + 1 :]
        elif action == "replace":
            body = body[:position] + char + body[position + 1 :]
        else:
            body = body[:position]
    _items_or_body_error(body)


@PROPERTY
@given(json_values, any_text)
def test_sns_notifications_wrapping_anything(message, topic):
    inner = message if isinstance(message, str) else json.dumps(message)
    notice = {"Type": "Notification", "TopicArn": topic, "Message": inner}
    _items_or_body_error(json.dumps(notice))


# -- any request ------------------------------------------------------------------------------


@PROPERTY
@given(st.lists(requestish | json_values, max_size=6))
def test_any_request_list_gives_one_item_each(requests):
    for fmt in (IMAGE_FORMAT, CSV_FORMAT):
        items = request_items(requests, fmt, where=WHERE)
        _check_items(items, requests, fmt=fmt)
        for item, request in zip(items, requests, strict=True):
            if not isinstance(request, dict):
                assert item.error is not None
                continue
            missing = [f for f in fmt.uri_fields if request.get(f) in (None, "")]
            for field in missing:
                assert item.error is not None and f"lacks required field {field!r}" in item.error


# Valid requests: S3 bucket names as S3 allows them, keys of any text but "/" alone.
buckets = st.from_regex(r"\A[a-z0-9][a-z0-9-]{1,20}[a-z0-9]\Z")
# "?" and "#" are part of an S3 key (igata_s3.uris: s3://b/what?.jpg is the key what?.jpg).
keys = st.text(
    st.characters(exclude_categories=("Cs",)) | st.sampled_from("?#%/."), min_size=1, max_size=30
).filter(lambda key: key.strip("/") and key == key.strip())  # URIs are stripped:
# Python's strip() removes Unicode whitespace (U+0085, U+2028...), not only ASCII.
ids = st.text(min_size=1, max_size=20)
extra_fields = st.dictionaries(
    st.text(max_size=10).filter(lambda name: name not in FIELDS), json_values, max_size=4
)


@st.composite
def valid_image_requests(draw):
    request = {
        "collection_id": draw(ids),
        "image_id": draw(ids),
        "s3_uri": f"s3://{draw(buckets)}/{draw(keys)}",
        **draw(extra_fields),
    }
    if draw(st.booleans()):
        request["request_id"] = draw(ids | st.integers(min_value=0))
    return request


@PROPERTY
@given(st.lists(valid_image_requests(), min_size=1, max_size=5), st.booleans())
@example([{"collection_id": "c", "image_id": "i", "s3_uri": "s3://bucket/?x.jpg"}], False)
@example([{"collection_id": "c", "image_id": "i", "s3_uri": "s3://bucket/#1.jpg"}], True)
def test_valid_requests_always_parse_with_their_fields_in_meta(requests, single):
    body = json.dumps(requests[0] if single else requests)
    requests = requests[:1] if single else requests
    items = request_items(parse_body(body), IMAGE_FORMAT, where=WHERE)
    assert [item.error for item in items] == [None] * len(requests)
    for item, request in zip(items, requests, strict=True):
        assert same_json(item.meta, request)
        assert item.uri == request["s3_uri"]
        assert item.decoder == "image"
        expected_id = request.get("request_id")
        assert item.identity == (
            str(expected_id) if expected_id not in (None, "") else request["image_id"]
        )


# -- the envelope of a message ----------------------------------------------------------------


def _source():
    source = SqsSource({"queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/test-queue"})
    # What open() reads from the queue; set here so no AWS call is made.
    source.info = QueueInfo("test-queue", 30, 5, None, False)
    return source


@PROPERTY
@given(any_text | json_values.map(json.dumps), st.from_regex(r"\A[0-9a-f-]{8,36}\Z"))
@example("[" * 100_000, "3f2c-deep")
@example("1" * 5_000, "3f2c-huge")
def test_any_message_becomes_an_envelope_with_items_or_an_error_naming_it(body, message_id):
    envelope = _source()._envelope({"MessageId": message_id, "Body": body}, 1)
    assert envelope.ref == f"sqs:{message_id}"
    if envelope.error is not None:
        assert envelope.error.startswith(f"sqs: message {message_id} (queue test-queue): ")
        assert envelope.items == []
    for item in envelope.items:
        assert item.error is None or f"sqs: message {message_id} " in item.error
