"""Message bodies -> Items: the original request formats, field by field (no AWS)."""

from __future__ import annotations

import json

import pytest

from igata_core import digest_identity
from igata_sqs.messages import BodyError, RequestFormat, parse_body, request_items


def fmt(name: str = "image", **overrides):
    settings = {
        "uri_fields": ["s3_uri"],
        "id_field": "request_id",
        "required_fields": [],
        "allowed_schemes": ["s3"],
        "decoder": "",
        **overrides,
    }
    return RequestFormat.build(name, **settings)


IMAGE = {"collection_id": "events:1234", "image_id": "images:1234", "s3_uri": "s3://b/k.jpg"}
CSV = {"collection_id": "c-1", "file_id": "f-1", "s3_uri": "s3://b/data.csv"}


def items_of(body, format_=None):
    return request_items(parse_body(body), format_ or fmt(), where="sqs: message m1 (queue q)")


def test_image_request_array_becomes_items_with_all_fields():
    request = {**IMAGE, "sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:done", "x": 1}
    items = items_of(json.dumps([request, {**IMAGE, "image_id": "images:2"}]))
    assert [item.identity for item in items] == ["images:1234", "images:2"]
    assert items[0].uri == "s3://b/k.jpg"
    assert items[0].meta == request
    assert items[0].decoder == "image"
    assert items[0].error is None


def test_single_object_body_is_one_request():
    (item,) = items_of(json.dumps(IMAGE))
    assert item.identity == "images:1234" and item.error is None


def test_request_id_field_wins_over_image_id():
    (item,) = items_of(json.dumps({**IMAGE, "request_id": "r-9"}))
    assert item.identity == "r-9"


def test_configured_id_field_and_digest_fallback():
    (item,) = items_of(json.dumps({**IMAGE, "job": 17}), fmt(id_field="job"))
    assert item.identity == "17"
    request = {"collection_id": "c", "s3_uri": "s3://b/k.png"}
    (item,) = items_of(json.dumps(request), fmt(required_fields=["collection_id"]))
    assert item.error is None
    assert item.identity == digest_identity(request)


def test_csv_format_accepts_file_id_or_image_id_and_decodes_csv():
    csv_format = fmt("csv")
    (item,) = items_of(json.dumps([CSV]), csv_format)
    assert (item.identity, item.decoder, item.error) == ("f-1", "csv", None)
    legacy = {"collection_id": "c-1", "image_id": "i-1", "s3_uri": "s3://b/data.csv"}
    (item,) = items_of(json.dumps([legacy]), csv_format)
    assert (item.identity, item.error) == ("i-1", None)
    (item,) = items_of(json.dumps([{"collection_id": "c", "s3_uri": "s3://b/d.csv"}]), csv_format)
    assert "lacks required field 'file_id' or 'image_id'" in item.error


def test_missing_s3_uri_is_that_requests_error_naming_message_and_field():
    bad = {k: v for k, v in IMAGE.items() if k != "s3_uri"}
    good, broken = items_of(json.dumps([IMAGE, bad]))
    assert good.error is None
    assert broken.identity == "images:1234"
    assert broken.error == (
        "sqs: message m1 (queue q): request #2 (image_id 'images:1234') "
        "lacks required field 's3_uri'"
    )
    assert broken.uri is None and broken.meta == bad


def test_missing_collection_and_image_id_are_reported_together():
    (item,) = items_of(json.dumps([{"s3_uri": "s3://b/k.jpg"}]))
    assert "lacks required field 'collection_id'" in item.error
    assert "lacks required field 'image_id'" in item.error


@pytest.mark.parametrize(
    "uri, why",
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("/etc/passwd", "scheme 'file'"),
        ("http://169.254.169.254/latest/meta-data", "scheme 'http'"),
        ("s3://bucket-only", "not an s3://BUCKET/KEY URI"),
        ("s3:///key", "not an s3://BUCKET/KEY URI"),
    ],
)
def test_disallowed_uris_are_refused_before_loading(uri, why):
    (item,) = items_of(json.dumps([{**IMAGE, "s3_uri": uri}]))
    assert item.error is not None and why in item.error
    assert item.uri is None


def test_allowed_schemes_can_be_widened():
    (item,) = items_of(
        json.dumps([{**IMAGE, "s3_uri": "https://example.com/a.jpg"}]),
        fmt(allowed_schemes=["s3", "https"]),
    )
    assert item.error is None and item.uri == "https://example.com/a.jpg"


def test_several_uri_fields_give_a_dict_uri():
    request = {**IMAGE, "mask_uri": "s3://b/mask.png"}
    (item,) = items_of(json.dumps([request]), fmt(uri_fields=["s3_uri", "mask_uri"]))
    assert item.uri == {"s3_uri": "s3://b/k.jpg", "mask_uri": "s3://b/mask.png"}
    (item,) = items_of(json.dumps([IMAGE]), fmt(uri_fields=["s3_uri", "mask_uri"]))
    assert "lacks required field 'mask_uri'" in item.error


def test_non_string_uri_and_non_object_request():
    items = items_of(json.dumps([{**IMAGE, "s3_uri": ["s3://b/k"]}, "s3://b/k.jpg"]))
    assert "is a JSON array, expected a URI string" in items[0].error
    assert items[1].error == "sqs: message m1 (queue q): request #2 is a JSON string, not an object"
    assert items[1].identity.startswith("sha256:")


@pytest.mark.parametrize(
    "body, why",
    [
        ("not json", "body is not JSON (Expecting value at line 1 column 1)"),
        ('"s3://b/k.jpg"', "body is a JSON string; expected an array of request objects"),
        ("42", "body is a JSON number"),
        ("null", "body is a JSON null"),
        ("", "body is not JSON"),
    ],
)
def test_malformed_bodies_raise_body_error(body, why):
    with pytest.raises(BodyError) as raised:
        parse_body(body)
    assert why in str(raised.value)


def test_empty_array_has_no_requests():
    assert parse_body("[]") == []


def test_sns_notification_envelope_is_unwrapped():
    envelope = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:requests",
        "Message": json.dumps([IMAGE]),
    }
    assert parse_body(json.dumps(envelope)) == [IMAGE]
    envelope["Message"] = "garbage"
    with pytest.raises(BodyError, match="SNS notification's Message is not JSON"):
        parse_body(json.dumps(envelope))


def test_decoder_option():
    assert fmt(decoder="auto").decoder is None
    assert fmt(decoder="raw").decoder == "raw"
    assert fmt("csv").decoder == "csv"


def test_uri_fields_must_not_be_empty():
    with pytest.raises(ValueError, match="uri_fields"):
        fmt(uri_fields=[])
