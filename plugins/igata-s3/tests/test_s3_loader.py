from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from igata_core.components import ConfigurationError, RecordError, RunContext, ServiceUnavailable
from igata_s3.client import clear_clients, s3_client
from igata_s3.errors import clock_skew_seconds
from igata_s3.loader import S3Loader
from igata_s3.uris import InvalidS3Uri


def test_loads_bytes_and_object_meta(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="photos/cat.jpg", Body=b"\xff\xd8jpeg-bytes")
    loaded = S3Loader().load(f"s3://{bucket}/photos/cat.jpg")
    assert loaded.data == b"\xff\xd8jpeg-bytes"
    head = s3.head_object(Bucket=bucket, Key="photos/cat.jpg")
    assert loaded.meta == {
        "bucket": bucket,
        "key": "photos/cat.jpg",
        "s3_uri": f"s3://{bucket}/photos/cat.jpg",
        "size": 12,
        "etag": head["ETag"].strip('"'),
        "last_modified": head["LastModified"],
    }
    assert isinstance(loaded.meta["last_modified"], dt.datetime)


def test_keys_are_url_decoded_like_the_original(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="my photo.jpg", Body=b"spaced")
    s3.put_object(Bucket=bucket, Key="100%.jpg", Body=b"percent")
    loader = S3Loader()
    assert loader.load(f"s3://{bucket}/my%20photo.jpg").data == b"spaced"
    assert loader.load(f"s3://{bucket}/my photo.jpg").data == b"spaced"
    assert loader.load(f"s3://{bucket}/100%25.jpg").data == b"percent"


def test_a_named_version_is_loaded(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k.csv", Body=b"a\n1\n")["VersionId"]
    s3.put_object(Bucket=bucket, Key="k.csv", Body=b"a\n2\n")
    loaded = S3Loader().load(f"s3://{bucket}/k.csv?versionId={first}")
    assert loaded.data == b"a\n1\n"
    assert loaded.meta["version_id"] == first
    assert loaded.meta["s3_uri"] == f"s3://{bucket}/k.csv"
    assert S3Loader().load(f"s3://{bucket}/k.csv").data == b"a\n2\n"


def test_missing_key_is_a_precise_record_error(s3: Any, bucket: str) -> None:
    with pytest.raises(RecordError) as raised:
        S3Loader().load(f"s3://{bucket}/photos/missing.jpg")
    message = str(raised.value)
    assert f"s3://{bucket}/photos/missing.jpg: no such key 'photos/missing.jpg'" in message
    assert f"in bucket '{bucket}'" in message
    assert raised.value.code == "NoSuchKey"  # type: ignore[attr-defined]


def test_missing_bucket_is_a_precise_record_error(aws: Any) -> None:
    # A request named the bucket, not the worker's options: that record's error.
    with pytest.raises(RecordError) as raised:
        S3Loader().load("s3://no-such-bucket-here/k.jpg")
    assert "bucket 'no-such-bucket-here' does not exist" in str(raised.value)
    assert raised.value.code == "NoSuchBucket"  # type: ignore[attr-defined]
    assert not isinstance(raised.value, ConfigurationError)


def test_missing_version_is_a_precise_record_error(s3: Any, bucket: str) -> None:
    # moto answers NoSuchVersion, Ceph's RADOS Gateway NoSuchKey: the same message for both.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=b"x")
    with pytest.raises(RecordError) as raised:
        S3Loader().load(f"s3://{bucket}/k.jpg?versionId=nope")
    assert str(raised.value) == (
        f"s3://{bucket}/k.jpg?versionId=nope: no such version 'nope' of s3://{bucket}/k.jpg"
    )


@pytest.mark.parametrize(("status", "code"), [(404, "NoSuchKey"), (404, "NoSuchVersion")])
def test_missing_version_whatever_s3_calls_it(
    s3: Any, bucket: str, inject: Any, status: int, code: str
) -> None:
    loader = S3Loader()
    inject.fail(loader.client, "GetObject", status, code)
    with pytest.raises(RecordError) as raised:
        loader.load(f"s3://{bucket}/dir/k.jpg?versionId=3HL4kqtJlcpXroDTDmJ%2Brmsq")
    message = str(raised.value)
    assert message.endswith(
        f": no such version '3HL4kqtJlcpXroDTDmJ+rmsq' of s3://{bucket}/dir/k.jpg"
    )
    assert "end the URI with '/'" not in message
    assert raised.value.code == code  # type: ignore[attr-defined]


def test_malformed_version_id_is_named(s3: Any, bucket: str, inject: Any) -> None:
    loader = S3Loader()
    inject.fail(loader.client, "GetObject", 400, "InvalidArgument",
                message="Invalid version id specified")  # fmt: skip
    with pytest.raises(RecordError) as raised:
        loader.load(f"s3://{bucket}/k.jpg?versionId=nope")
    assert str(raised.value) == (
        f"s3://{bucket}/k.jpg?versionId=nope: S3 refused version id 'nope' of "
        f"s3://{bucket}/k.jpg (InvalidArgument: Invalid version id specified); version ids "
        "are the VersionId values S3 returns"
    )


def test_missing_key_without_a_version_keeps_the_prefix_hint(
    s3: Any, bucket: str, inject: Any
) -> None:
    loader = S3Loader()
    inject.fail(loader.client, "GetObject", 404, "NoSuchKey")
    with pytest.raises(RecordError) as raised:
        loader.load(f"s3://{bucket}/photos")
    assert str(raised.value) == (
        f"s3://{bucket}/photos: no such key 'photos' in bucket '{bucket}'; to read every "
        "object under a prefix, end the URI with '/'"
    )


def test_invalid_uri_is_a_record_error_before_any_request(aws: Any, inject: Any) -> None:
    loader = S3Loader()
    inject.count(loader.client, "GetObject")
    with pytest.raises(InvalidS3Uri) as raised:
        loader.load("s3://Not_A_Bucket/k.jpg")
    assert isinstance(raised.value, RecordError)
    assert "bucket name 'Not_A_Bucket' is invalid" in str(raised.value)
    assert inject.calls == {}


def test_access_denied_names_the_missing_permission(s3: Any, bucket: str, inject: Any) -> None:
    loader = S3Loader()
    inject.fail(loader.client, "GetObject", 403, "AccessDenied")
    with pytest.raises(RecordError) as raised:
        loader.load(f"s3://{bucket}/secret.jpg")
    message = str(raised.value)
    assert "access denied (AccessDenied)" in message
    assert f"s3:GetObject on arn:aws:s3:::{bucket}/secret.jpg" in message
    # The object was named by a request, not by the worker's options: its record's error.
    assert not isinstance(raised.value, ConfigurationError)
    assert inject.calls["GetObject"] == 1, "a denial is not retried"


def test_throttling_is_retried_by_botocore(s3: Any, bucket: str, inject: Any) -> None:
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=b"after the storm")
    loader = S3Loader({"max_attempts": 3})
    inject.fail(loader.client, "GetObject", 503, "SlowDown", times=1)
    assert loader.load(f"s3://{bucket}/k.jpg").data == b"after the storm"
    assert inject.calls["GetObject"] == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (503, "ServiceUnavailable"),
     (400, "RequestTimeout"), (429, "TooManyRequests"), (502, "BadGateway")],
)  # fmt: skip
def test_throttling_and_5xx_that_persist_are_an_outage_not_the_records(
    s3: Any, bucket: str, inject: Any, status: int, code: str
) -> None:
    loader = S3Loader({"max_attempts": 2})
    inject.fail(loader.client, "GetObject", status, code)
    with pytest.raises(ServiceUnavailable) as raised:
        loader.load(f"s3://{bucket}/k.jpg")
    assert not isinstance(raised.value, (RecordError, ConfigurationError))
    message = str(raised.value)
    assert message.startswith("s3: S3 ")
    assert f"while reading s3://{bucket}/k.jpg ({code}, HTTP {status})" in message
    assert "the engine pauses and retries" in message


@pytest.mark.parametrize(
    ("code", "hint"),
    [("InvalidAccessKeyId", "S3 does not know the access key id"),
     ("SignatureDoesNotMatch", "the secret key does not match the access key id"),
     ("ExpiredToken", "the session token has expired")],
)  # fmt: skip
def test_refused_credentials_are_a_configuration_error(
    s3: Any, bucket: str, inject: Any, code: str, hint: str
) -> None:
    loader = S3Loader()
    inject.fail(loader.client, "GetObject", 403, code)
    with pytest.raises(ConfigurationError) as raised:
        loader.load(f"s3://{bucket}/k.jpg")
    assert str(raised.value).startswith(
        f"s3: S3 refused the worker's credentials while reading s3://{bucket}/k.jpg "
        f"({code}: {hint}); this is a configuration error, not the input's"
    )
    assert inject.calls["GetObject"] == 1


def test_a_wrong_secret_on_a_strict_s3_is_a_configuration_error(
    s3: Any, bucket: str, strict_s3: None, wrong_secret: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=b"x")
    wrong_secret()
    with pytest.raises(ConfigurationError, match=r"\(SignatureDoesNotMatch: the secret key"):
        S3Loader().load(f"s3://{bucket}/k.jpg")


def test_no_credentials_at_all_is_a_configuration_error(aws: Any, no_credentials: None) -> None:
    with pytest.raises(ConfigurationError) as raised:
        S3Loader().load("s3://igata-in/k.jpg")
    assert "cannot sign a request while reading s3://igata-in/k.jpg (NoCredentialsError" in str(
        raised.value
    )


@pytest.mark.parametrize("code", ["KeyTooLongError", "InvalidObjectName", "InvalidBucketName"])
def test_a_key_or_name_s3_refuses_in_a_request_is_that_records_error(
    s3: Any, bucket: str, inject: Any, code: str
) -> None:
    loader = S3Loader()
    inject.fail(loader.client, "GetObject", 400, code)
    with pytest.raises(RecordError) as raised:
        loader.load(f"s3://{bucket}/k.jpg")
    assert not isinstance(raised.value, ConfigurationError)
    assert code in str(raised.value)
    assert raised.value.code == code  # type: ignore[attr-defined]


def test_a_bucket_in_another_region_is_that_records_error(
    s3: Any, bucket: str, inject: Any
) -> None:
    loader = S3Loader()
    inject.fail(loader.client, "GetObject", 301, "PermanentRedirect",
                headers={"x-amz-bucket-region": "eu-west-1"})  # fmt: skip
    with pytest.raises(RecordError) as raised:
        loader.load(f"s3://{bucket}/k.jpg")
    assert str(raised.value) == (
        f"s3://{bucket}/k.jpg: bucket '{bucket}' is in region 'eu-west-1', not the worker's "
        "(PermanentRedirect)"
    )


def test_clock_skew_is_the_workers_trouble_not_the_records(
    s3: Any, bucket: str, inject: Any
) -> None:
    loader = S3Loader()
    # AWS's answer: the request's and the server's time in the body.
    inject.fail(loader.client, "GetObject", 403, "RequestTimeTooSkewed",
                message="The difference between the request time and the current time is "
                "too large.",
                fields={"RequestTime": "20240501T115000Z",
                        "ServerTime": "2024-05-01T12:10:00Z",
                        "MaxAllowedSkewMilliseconds": "900000"})  # fmt: skip
    with pytest.raises(ServiceUnavailable) as raised:
        loader.load(f"s3://{bucket}/k.jpg")
    assert not isinstance(raised.value, RecordError)
    assert str(raised.value) == (
        f"s3: S3 refused reading s3://{bucket}/k.jpg because the request was signed with a "
        "time too far from S3's clock (RequestTimeTooSkewed; this worker's clock is 20 "
        "minutes behind S3's); check the worker's clock and its time synchronisation (NTP: "
        "e.g. `timedatectl status`, `chronyc tracking`)"
    )
    assert inject.calls["GetObject"] == 1, "botocore does not retry a refused clock"


@pytest.mark.parametrize(
    ("response", "skew"),
    [
        # AWS: both times in the error body.
        ({"Error": {"RequestTime": "20240501T123000Z", "ServerTime": "2024-05-01T12:10:00Z"}},
         1200.0),
        # RGW: only the Date header, compared with this worker's clock.
        ({"ResponseMetadata": {"HTTPHeaders": {"date": "Wed, 01 May 2024 12:10:00 GMT"}}},
         -1200.0),
        ({"Error": {"Code": "RequestTimeTooSkewed"}}, None),
        ({"ResponseMetadata": {"HTTPHeaders": {"date": "yesterday"}}}, None),
    ],
)  # fmt: skip
def test_clock_skew_is_measured_from_what_s3_says(response: dict[str, Any],
                                                  skew: float | None) -> None:  # fmt: skip
    now = dt.datetime(2024, 5, 1, 11, 50, tzinfo=dt.UTC).timestamp()
    assert clock_skew_seconds(response, now=now) == skew


def test_clock_skew_on_a_strict_s3(
    s3: Any, bucket: str, strict_s3: None, skewed_clock: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=b"x")
    skewed_clock()
    with pytest.raises(ServiceUnavailable) as raised:
        S3Loader().load(f"s3://{bucket}/k.jpg")
    message = str(raised.value)
    assert f"S3 refused reading s3://{bucket}/k.jpg" in message
    assert "(RequestTimeTooSkewed" in message and "NTP" in message


def test_object_over_the_limit_is_refused_before_its_body_is_read(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.response import StreamingBody

    s3.put_object(Bucket=bucket, Key="big.jpg", Body=b"x" * 5000)
    reads: list[Any] = []
    original = StreamingBody.read

    def counting_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StreamingBody, "read", counting_read)
    loader = S3Loader({"max_object_bytes": 4999})
    with pytest.raises(RecordError) as raised:
        loader.load(f"s3://{bucket}/big.jpg")
    assert "object is 5000 bytes, over max_object_bytes (4999); not downloaded" in str(raised.value)
    assert reads == []
    assert S3Loader({"max_object_bytes": 5000}).load(f"s3://{bucket}/big.jpg").data == b"x" * 5000


def test_allowed_buckets_refuses_others_without_fetching(s3: Any, bucket: str, inject: Any) -> None:
    s3.create_bucket(Bucket="other-bucket")
    s3.put_object(Bucket="other-bucket", Key="k.jpg", Body=b"secret")
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=b"fine")
    loader = S3Loader({"allowed_buckets": [bucket]})
    inject.count(loader.client, "GetObject")
    with pytest.raises(RecordError) as raised:
        loader.load("s3://other-bucket/k.jpg")
    assert "bucket 'other-bucket' is not in allowed_buckets (igata-in)" in str(raised.value)
    assert "IGATA_S3_ALLOWED_BUCKETS" in str(raised.value)
    assert inject.calls == {}
    assert loader.load(f"s3://{bucket}/k.jpg").data == b"fine"
    assert inject.calls == {"GetObject": 1}


def test_one_shared_client_sized_to_the_concurrency(aws: Any) -> None:
    clear_clients()
    small = S3Loader(context=RunContext(concurrency=4))
    large = S3Loader(context=RunContext(concurrency=32))
    client = small.client
    assert small.client is client, "one client per process and settings"
    config = large.client.meta.config
    assert config.max_pool_connections >= 32
    assert small.client is large.client, "the larger pool replaces the smaller for everyone"
    assert config.retries["mode"] == "standard"
    assert config.connect_timeout == 5.0 and config.read_timeout == 30.0
    assert S3Loader({"read_timeout": 7.0}).client is not large.client


def test_client_is_safe_to_share_between_threads(s3: Any, bucket: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for i in range(40):
        s3.put_object(Bucket=bucket, Key=f"k{i}.bin", Body=str(i).encode())
    loader = S3Loader(context=RunContext(concurrency=8))
    with ThreadPoolExecutor(8) as pool:
        data = list(pool.map(lambda i: loader.load(f"s3://{bucket}/k{i}.bin").data, range(40)))
    assert data == [str(i).encode() for i in range(40)]


def test_original_s3_endpoint_variable_is_honoured(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.client("s3").create_bucket(Bucket="endpoint-test")
    aws.client("s3").put_object(Bucket="endpoint-test", Key="k.txt", Body=b"via S3_ENDPOINT")
    s3_url = aws.s3_url
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("S3_ENDPOINT", s3_url)
    client = s3_client()
    assert client.meta.endpoint_url == s3_url
    assert S3Loader().load("s3://endpoint-test/k.txt").data == b"via S3_ENDPOINT"


def test_unreachable_endpoint_is_reported_as_unavailable(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: refused
    loader = S3Loader({"max_attempts": 1, "connect_timeout": 0.5})
    with pytest.raises(ServiceUnavailable) as raised:
        loader.load("s3://igata-in/k.jpg")
    assert "cannot reach the S3 endpoint" in str(raised.value)
