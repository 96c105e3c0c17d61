from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from igata_core.components import ConfigurationError, Envelope, RunContext, ServiceUnavailable
from igata_core.options import OptionsError
from igata_core.plugins import build_registry
from igata_s3.source import S3Source, split_inputs


def _opened(options: dict[str, Any]) -> S3Source:
    source = S3Source(options)
    source.open()
    return source


def _refs(envelopes: list[Envelope]) -> list[str]:
    return [e.ref for e in envelopes]


def _put_many(s3: Any, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))


def test_registered_under_its_name_and_the_original_alias() -> None:
    registry = build_registry()
    assert registry.get("source", "s3").obj is S3Source
    assert registry.get("source", "S3BucketImageInputCtxManager").obj is S3Source


def test_a_single_object_uri(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="cat.jpg", Body=b"x")
    envelopes = list(_opened({"inputs": [f"s3://{bucket}/cat.jpg"]}).envelopes())
    assert len(envelopes) == 1
    item = envelopes[0].items[0]
    assert envelopes[0].ref == item.identity == item.uri == f"s3://{bucket}/cat.jpg"
    assert item.meta == {"bucket": bucket, "key": "cat.jpg", "s3_uri": f"s3://{bucket}/cat.jpg"}
    assert S3Source.finite


def test_comma_separated_uris_in_one_argument() -> None:
    assert split_inputs(["s3://b1/a.jpg,s3://b1/b.jpg", "s3://b2/c, d.jpg"]) == [
        "s3://b1/a.jpg",
        "s3://b1/b.jpg",
        "s3://b2/c, d.jpg",
    ]
    assert split_inputs(["s3://b1/a.jpg, s3://b1/p/"]) == ["s3://b1/a.jpg", "s3://b1/p/"]


def test_a_version_is_part_of_the_identity(s3: Any, bucket: str) -> None:
    envelope = next(_opened({"inputs": [f"s3://{bucket}/k.jpg?versionId=v1"]}).envelopes())
    assert envelope.items[0].identity == f"s3://{bucket}/k.jpg?versionId=v1"
    assert envelope.items[0].meta["s3_uri"] == f"s3://{bucket}/k.jpg"


def test_a_prefix_over_1000_objects_is_streamed_page_by_page(
    s3: Any, bucket: str, inject: Any
) -> None:
    keys = [f"photos/{i:05d}.jpg" for i in range(1003)]
    _put_many(s3, bucket, keys)
    s3.put_object(Bucket=bucket, Key="photos/notes.txt", Body=b"skip me")
    s3.put_object(Bucket=bucket, Key="photos/folder/", Body=b"")
    s3.put_object(Bucket=bucket, Key="elsewhere/x.jpg", Body=b"x")
    source = _opened({"inputs": [f"s3://{bucket}/photos/"]})
    inject.count(source.client, "ListObjectsV2")

    iterator = source.envelopes()
    first = next(iterator)
    assert inject.calls["ListObjectsV2"] == 1, "the first envelope comes from the first page"
    envelopes = [first, *iterator]
    assert inject.calls["ListObjectsV2"] == 2
    assert _refs(envelopes) == [f"s3://{bucket}/{key}" for key in keys]

    listed = {o["Key"]: o for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in p.get("Contents", [])}  # fmt: skip
    meta = envelopes[1002].items[0].meta
    assert meta == {
        "bucket": bucket,
        "key": "photos/01002.jpg",
        "s3_uri": f"s3://{bucket}/photos/01002.jpg",
        "size": 1,
        "etag": listed["photos/01002.jpg"]["ETag"].strip('"'),
        "last_modified": listed["photos/01002.jpg"]["LastModified"],
    }
    assert source.total() == 1003


def test_extensions_and_pattern_filter_a_prefix(s3: Any, bucket: str) -> None:
    for key in ["a.jpg", "b.PNG", "c.csv", "d.csv.gz", "e.txt", "sub/f.jpg", "sub/g.jpeg"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    everything = [
        e.items[0].meta["key"] for e in _opened({"inputs": [f"s3://{bucket}"]}).envelopes()
    ]
    assert everything == ["a.jpg", "b.PNG", "c.csv", "d.csv.gz", "sub/f.jpg", "sub/g.jpeg"]
    only_csv = _opened({"inputs": [f"s3://{bucket}/"], "extensions": [".csv", "csv.gz"]})
    assert [e.items[0].meta["key"] for e in only_csv.envelopes()] == ["c.csv", "d.csv.gz"]
    all_keys = _opened({"inputs": [f"s3://{bucket}/"], "extensions": ["*"]})
    assert len(list(all_keys.envelopes())) == 7
    globbed = _opened({"inputs": [f"s3://{bucket}/"], "pattern": "sub/*.jp*g"})
    assert [e.items[0].meta["key"] for e in globbed.envelopes()] == ["sub/f.jpg", "sub/g.jpeg"]


def test_a_named_object_is_never_filtered(s3: Any, bucket: str) -> None:
    source = _opened({"inputs": [f"s3://{bucket}/notes.txt"], "extensions": [".jpg"]})
    assert _refs(list(source.envelopes())) == [f"s3://{bucket}/notes.txt"]


def test_bad_inputs_become_error_records_and_the_rest_goes_on(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="p/a.jpg", Body=b"x")
    s3.create_bucket(Bucket="not-allowed")
    source = _opened({
        "inputs": ["http://example.com/x.jpg", f"s3://{bucket}/p/", "s3://not-allowed/",
                   f"s3://{bucket}/missing.jpg"],
        "allowed_buckets": [bucket],
    })  # fmt: skip
    envelopes = list(source.envelopes())
    errors = {e.ref: e.items[0].error for e in envelopes if e.items[0].error}
    assert "scheme 'http' is not 's3'" in errors["http://example.com/x.jpg"]
    assert "bucket 'not-allowed' is not in allowed_buckets" in errors["s3://not-allowed/"]
    # An object named one by one is not checked here: the loader reports it precisely.
    good = [e.ref for e in envelopes if not e.items[0].error]
    assert good == [f"s3://{bucket}/p/a.jpg", f"s3://{bucket}/missing.jpg"]
    assert source.total() == 4


@pytest.mark.parametrize("given", ["s3://no-such-bucket-x/p/", "s3://no-such-bucket-x",
                                   "s3://no-such-bucket-x/k.jpg"])  # fmt: skip
def test_an_input_bucket_that_does_not_exist_is_a_configuration_error_at_open(
    s3: Any, bucket: str, given: str
) -> None:
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=b"x")
    source = S3Source({"inputs": [f"s3://{bucket}/", given]})
    with pytest.raises(ConfigurationError) as raised:
        source.open()
    assert str(raised.value) == (
        f"s3: the bucket 'no-such-bucket-x' of the input {given} does not exist "
        "(NoSuchBucket); create it or fix the input (the command's INPUTS)"
    )
    assert source.total() is None or source.total() >= 1, "total() does not raise"


def test_one_check_per_input_bucket_at_open(s3: Any, bucket: str, inject: Any) -> None:
    s3.create_bucket(Bucket="other-in")
    source = S3Source({"inputs": [f"s3://{bucket}/a/", f"s3://{bucket}/b/", f"s3://{bucket}/k.jpg",
                                  "s3://other-in/x.jpg", "s3://other-in/y.jpg"]})  # fmt: skip
    inject.count(source.client, "ListObjectsV2")
    inject.count(source.client, "HeadBucket")
    source.open()
    assert inject.calls == {"ListObjectsV2": 1, "HeadBucket": 1}


@pytest.mark.parametrize("code", ["AccessDenied", "AllAccessDisabled"])
def test_an_input_prefix_the_worker_may_not_list_is_a_configuration_error(
    s3: Any, bucket: str, inject: Any, code: str
) -> None:
    source = S3Source({"inputs": [f"s3://{bucket}/p/"]})
    inject.fail(source.client, "ListObjectsV2", 403, code)
    with pytest.raises(ConfigurationError) as raised:
        source.open()
    assert str(raised.value).startswith(
        f"s3: access denied while listing s3://{bucket}/p/ ({code}); the worker's "
        f"credentials need s3:ListBucket on arn:aws:s3:::{bucket} (for the prefix 'p/')"
    )


def test_a_listing_denied_after_open_stops_the_source_too(
    s3: Any, bucket: str, inject: Any
) -> None:
    source = _opened({"inputs": [f"s3://{bucket}/p/"]})
    inject.fail(source.client, "ListObjectsV2", 403, "AccessDenied")
    with pytest.raises(ConfigurationError, match=r"access denied while listing .*AccessDenied"):
        list(source.envelopes())


def test_a_bucket_of_named_objects_the_worker_may_not_head_is_left_to_the_loader(
    s3: Any, bucket: str, inject: Any
) -> None:
    # A worker may read objects without s3:ListBucket: a HEAD's 403 says nothing more.
    source = S3Source({"inputs": [f"s3://{bucket}/k.jpg"]})
    inject.fail(source.client, "HeadBucket", 403, "403")
    source.open()
    assert _refs(list(source.envelopes())) == [f"s3://{bucket}/k.jpg"]


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_refused_credentials_are_a_configuration_error(
    s3: Any, bucket: str, inject: Any, code: str
) -> None:
    source = S3Source({"inputs": [f"s3://{bucket}/p/"]})
    inject.fail(source.client, "ListObjectsV2", 403, code)
    with pytest.raises(ConfigurationError, match=f"refused the worker's credentials.*{code}"):
        source.open()


def test_a_wrong_secret_on_a_strict_s3_is_a_configuration_error(
    s3: Any, bucket: str, strict_s3: None, wrong_secret: Any
) -> None:
    wrong_secret()
    source = S3Source({"inputs": [f"s3://{bucket}/p/"]})
    with pytest.raises(ConfigurationError, match=r"\(SignatureDoesNotMatch: the secret key"):
        source.open()


def test_no_credentials_at_all_is_a_configuration_error(aws: Any, no_credentials: None) -> None:
    source = S3Source({"inputs": ["s3://igata-in/p/"]})
    with pytest.raises(ConfigurationError, match=r"cannot sign a request .*NoCredentialsError"):
        source.open()


def test_allowed_buckets_never_lists_another_bucket(s3: Any, bucket: str, inject: Any) -> None:
    s3.create_bucket(Bucket="private-data")
    s3.put_object(Bucket="private-data", Key="a.jpg", Body=b"x")
    source = _opened({"inputs": ["s3://private-data/"], "allowed_buckets": [bucket]})
    inject.count(source.client, "ListObjectsV2")
    envelopes = list(source.envelopes())
    assert len(envelopes) == 1 and envelopes[0].items[0].error
    assert inject.calls == {}


def test_another_listing_error_is_that_inputs_error(s3: Any, bucket: str, inject: Any) -> None:
    source = _opened({"inputs": [f"s3://{bucket}/p/", f"s3://{bucket}/q/"]})
    inject.fail(source.client, "ListObjectsV2", 400, "InvalidArgument", times=1)
    first, *rest = list(source.envelopes())
    assert "S3 error InvalidArgument (HTTP 400)" in (first.items[0].error or "")
    assert rest == []


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_listing_throttled_or_failing_beyond_retries_stops_as_unavailable(
    s3: Any, bucket: str, inject: Any, status: int, code: str
) -> None:
    source = _opened({"inputs": [f"s3://{bucket}/p/"], "max_attempts": 1})
    inject.fail(source.client, "ListObjectsV2", status, code)
    with pytest.raises(ServiceUnavailable) as raised:
        list(source.envelopes())
    assert not isinstance(raised.value, ConfigurationError)
    assert f"while listing s3://{bucket}/p/ ({code}, HTTP {status})" in str(raised.value)


def test_listing_with_a_refused_clock_stops_as_unavailable(
    s3: Any, bucket: str, inject: Any
) -> None:
    source = _opened({"inputs": [f"s3://{bucket}/p/"]})
    inject.fail(source.client, "ListObjectsV2", 403, "RequestTimeTooSkewed")
    with pytest.raises(ServiceUnavailable) as raised:
        list(source.envelopes())
    message = str(raised.value)
    assert message.startswith(f"s3: S3 refused listing s3://{bucket}/p/ because the request")
    assert "(RequestTimeTooSkewed)" in message and "NTP" in message


def test_total_beyond_count_limit_is_unknown(s3: Any, bucket: str) -> None:
    _put_many(s3, bucket, [f"{i}.jpg" for i in range(5)])
    assert _opened({"inputs": [f"s3://{bucket}/"], "count_limit": 4}).total() is None
    assert _opened({"inputs": [f"s3://{bucket}/"], "count_limit": 5}).total() == 5
    assert _opened({"inputs": [f"s3://{bucket}/"], "count_limit": 0}).total() is None


def test_stop_ends_the_listing(s3: Any, bucket: str) -> None:
    _put_many(s3, bucket, [f"{i}.jpg" for i in range(5)])
    source = _opened({"inputs": [f"s3://{bucket}/"]})
    iterator = source.envelopes()
    next(iterator)
    source.stop()
    assert list(iterator) == []


def test_no_inputs_is_a_usage_error() -> None:
    with pytest.raises(OptionsError) as raised:
        S3Source({"inputs": []})
    assert "no inputs" in str(raised.value)


@pytest.mark.parametrize(
    ("ledger", "problem"),
    [
        ("s3://B/ledger", "bucket name 'B' is invalid"),
        ("s3://bucket/", "names no ledger"),
        # 1010 bytes pass as a URI; "/run-1-99999.jsonl" after them does not.
        ("s3://bucket/" + "l" * 1010,
         "its segment objects' keys would be up to 1028 bytes ("),
    ],
)  # fmt: skip
def test_invalid_s3_ledger_is_a_usage_error(ledger: str, problem: str) -> None:
    with pytest.raises(OptionsError) as raised:
        S3Source({"inputs": ["s3://bucket/"], "ledger": ledger}, RunContext(run_id="run-1"))
    assert "option 'ledger'" in str(raised.value)
    assert problem in str(raised.value)
