"""igata_core.testing.rgw: a one-node Ceph cluster with a RADOS Gateway as a strict S3.

The tests that start a cluster are skipped unless Ceph's programs are installed
(``apt-get install radosgw ceph-mon ceph-osd ceph-common``); ``nox -s s3-conformance``
installs them. The last test runs the digits example over S3 on the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from igata_core.testing.aws import LocalAws
from igata_core.testing.rgw import (
    ACCESS_KEY_ENV,
    ENDPOINT_ENV,
    SECRET_KEY_ENV,
    ExternalS3Aws,
    RgwError,
    RgwUnavailable,
    S3Credentials,
    S3Endpoint,
    external_s3_from_env,
    reset_s3,
    rgw_installed,
    start_rgw,
    with_external_s3,
)

ROOT = Path(__file__).resolve().parents[1]

needs_rgw = pytest.mark.skipif(
    not rgw_installed(),
    reason="Ceph's radosgw is not installed (apt-get install radosgw ceph-mon ceph-osd "
    "ceph-common, or nox -s s3-conformance)",
)


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code"))


# --------------------------------------------------------------------------- no cluster needed


def test_external_s3_comes_from_three_variables() -> None:
    assert external_s3_from_env({}) is None
    endpoint = external_s3_from_env(
        {ENDPOINT_ENV: "http://127.0.0.1:7480/", ACCESS_KEY_ENV: "AK", SECRET_KEY_ENV: "SK"}
    )
    assert endpoint == S3Endpoint("http://127.0.0.1:7480", S3Credentials("AK", "SK"))


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({ENDPOINT_ENV: "http://127.0.0.1:7480", ACCESS_KEY_ENV: "AK"},
         f"{SECRET_KEY_ENV} is not"),
        ({ENDPOINT_ENV: "http://localhost:7480"},
         f"{ACCESS_KEY_ENV} and {SECRET_KEY_ENV} is not"),
        ({ENDPOINT_ENV: "http://s3.amazonaws.com", ACCESS_KEY_ENV: "AK", SECRET_KEY_ENV: "SK"},
         "not a loopback endpoint"),
        ({ENDPOINT_ENV: "127.0.0.1:7480", ACCESS_KEY_ENV: "AK", SECRET_KEY_ENV: "SK"},
         "not an http:// or https:// URL"),
        ({ENDPOINT_ENV: "http://[::1]:7480", ACCESS_KEY_ENV: "AK", SECRET_KEY_ENV: "SK",
          "PYTEST_XDIST_WORKER_COUNT": "2"}, "run without -n"),
    ],
)  # fmt: skip
def test_external_s3_settings_are_checked(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(RgwError) as raised:
        external_s3_from_env(environ)
    assert problem in str(raised.value)


def test_reset_s3_refuses_anything_but_loopback() -> None:
    with pytest.raises(RgwError) as raised:
        reset_s3("https://s3.eu-west-1.amazonaws.com", ("AK", "SK"))
    assert "https://s3.eu-west-1.amazonaws.com is not a loopback endpoint" in str(raised.value)


def test_external_s3_aws_sends_only_s3_elsewhere() -> None:
    moto = LocalAws("http://127.0.0.1:5000")
    endpoint = S3Endpoint("http://127.0.0.1:7480", S3Credentials("AK", "SK"))
    assert with_external_s3(moto, {}) is moto
    split = with_external_s3(moto, endpoint.test_env())
    assert isinstance(split, ExternalS3Aws)
    env = split.env()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"  # SQS, SNS, DynamoDB: moto
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:7480"
    # The S3's real keys for every service (moto accepts any), and no fake session token.
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AK", "SK")
    assert env["AWS_SESSION_TOKEN"] == ""
    assert split.url == moto.url and split.s3_url == endpoint.url
    assert split.client("s3").meta.endpoint_url == endpoint.url  # type: ignore[attr-defined]
    assert split.client("sqs").meta.endpoint_url == moto.url  # type: ignore[attr-defined]


def test_without_ceph_the_error_names_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RgwUnavailable) as raised:
        start_rgw()
    message = str(raised.value)
    assert "radosgw" in message and "ceph-mon" in message and "not found on PATH" in message
    assert "apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd" in message


# --------------------------------------------------------------------------- with a cluster


@pytest.fixture(scope="module")
def cluster() -> Any:
    if not rgw_installed():
        pytest.skip("Ceph's radosgw is not installed")
    with start_rgw() as running:
        yield running


@pytest.fixture
def rgw(cluster: Any) -> Any:
    reset_s3(cluster.url, cluster.credentials)
    return cluster


def _daemons_using(directory: Path) -> list[int]:
    """Processes whose command line names a file in ``directory`` (the config file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(directory).encode() in cmdline:
            found.append(int(entry.name))
    return found


@needs_rgw
def test_signed_requests_work_and_bad_signatures_are_rejected(rgw: Any) -> None:
    from botocore.exceptions import ClientError

    s3 = rgw.endpoint.client()
    s3.create_bucket(Bucket="signed")
    s3.put_object(Bucket="signed", Key="a b/ü.txt", Body=b"hello")
    assert s3.get_object(Bucket="signed", Key="a b/ü.txt")["Body"].read() == b"hello"

    with pytest.raises(ClientError) as wrong_secret:
        rgw.endpoint.client(secret_key="not-the-secret").get_object(
            Bucket="signed", Key="a b/ü.txt"
        )
    assert _code(wrong_secret.value) == "SignatureDoesNotMatch"
    unknown = S3Endpoint(rgw.url, S3Credentials("NOSUCHKEY000", "whatever")).client()
    with pytest.raises(ClientError) as unknown_key:
        unknown.list_buckets()
    assert _code(unknown_key.value) == "InvalidAccessKeyId"


@needs_rgw
def test_reset_s3_deletes_buckets_with_versions_markers_and_uploads(rgw: Any) -> None:
    s3 = rgw.endpoint.client()
    s3.create_bucket(Bucket="plain")
    for i in range(3):
        s3.put_object(Bucket="plain", Key=f"k{i}", Body=b"x")
    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="versioned", Key="v", Body=b"1")
    s3.put_object(Bucket="versioned", Key="v", Body=b"2")
    s3.delete_object(Bucket="versioned", Key="v")  # a delete marker on top of two versions
    s3.create_bucket(Bucket="uploading")
    s3.create_multipart_upload(Bucket="uploading", Key="half-written")
    assert len(s3.list_buckets()["Buckets"]) == 3

    reset_s3(rgw.url, rgw.credentials)
    assert s3.list_buckets()["Buckets"] == []
    reset_s3(rgw.url, (rgw.credentials.access_key, rgw.credentials.secret_key))
    s3.create_bucket(Bucket="versioned")  # the names are free again
    assert s3.list_object_versions(Bucket="versioned").get("Versions", []) == []


@needs_rgw
def test_stop_ends_every_daemon_and_removes_the_directory() -> None:
    started = time.monotonic()
    cluster = start_rgw()
    start_seconds = time.monotonic() - started
    directory = cluster.directory
    assert cluster.running() and len(_daemons_using(directory)) == 3
    config = (directory / "ceph.conf").read_text()
    assert "[v2:127.0.0.1:" in config and "endpoint=127.0.0.1:" in config
    assert "tcp_nodelay=1" in config and "osd objectstore = memstore" in config

    started = time.monotonic()
    cluster.stop()
    # The gateway goes first: stopped after its cluster it hangs, and this would time out.
    assert time.monotonic() - started < 10, "stopping took too long"
    assert not directory.exists()
    assert _daemons_using(directory) == []
    cluster.stop()  # idempotent
    assert start_seconds < 30, f"start took {start_seconds:.1f} s"


@needs_rgw
def test_a_start_that_runs_out_of_time_says_where_and_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with pytest.raises(RgwError) as raised:
        start_rgw(directory=directory, timeout=0.4)
    message = str(raised.value)
    assert message.startswith("rgw: the cluster did not start within 0.4 s (")
    assert "keep_directory=True (command line: --keep) keeps the logs" in message
    assert not directory.exists()
    assert _daemons_using(directory) == []


@needs_rgw
def test_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(RgwError) as raised:
        start_rgw(directory=tmp_path)
    assert "is not empty" in str(raised.value)
    assert (tmp_path / "precious.txt").exists()


@needs_rgw
def test_the_command_line_runs_a_command_against_a_fresh_cluster() -> None:
    child = textwrap.dedent(
        """
        import os, sys, boto3
        from botocore.config import Config
        s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="from-env")
        assert os.environ["IGATA_TEST_S3_ENDPOINT"] == os.environ["AWS_ENDPOINT_URL_S3"]
        print(s3.meta.endpoint_url, [b["Name"] for b in s3.list_buckets()["Buckets"]])
        sys.exit(7)
        """
    )
    done = subprocess.run(
        [sys.executable, "-m", "igata_core.testing.rgw", "--", sys.executable, "-c", child],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert "['from-env']" in done.stdout
    assert done.stdout.startswith("http://127.0.0.1:")
    assert "rgw: S3 at http://127.0.0.1:" in done.stderr and "ready in" in done.stderr


@needs_rgw
def test_the_aws_fixture_uses_the_external_s3_when_asked(aws: Any) -> None:
    """Meaningful inside ``python -m igata_core.testing.rgw -- pytest``: the switch is wired."""
    endpoint = external_s3_from_env()
    if endpoint is None:
        pytest.skip(f"{ENDPOINT_ENV} is not set: the tests use moto for S3")
    assert os.environ.get("AWS_ENDPOINT_URL_S3") == endpoint.url, (
        f"{ENDPOINT_ENV} is set but the aws fixture kept S3 on moto: the local_aws fixture "
        "must wrap its server with igata_core.testing.rgw's ExternalS3Aws"
    )
    assert os.environ["AWS_ACCESS_KEY_ID"] == endpoint.credentials.access_key
    assert aws.client("s3").meta.endpoint_url == endpoint.url
    assert aws.client("sqs").meta.endpoint_url != endpoint.url


# --------------------------------------------------------------------------- the digits, on S3


def _igata(rgw: Any, tmp_path: Path, *args: str, secret: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "IGATA_"))}
    env.update(rgw.endpoint.env())
    if secret is not None:
        env["AWS_SECRET_ACCESS_KEY"] = secret
    env["DIGITS_MODEL_PATH"] = str(tmp_path / "digits.joblib")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "igata_core", "-q", "run", *args],
        env=env, capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def digits_bucket(rgw: Any, tmp_path: Path) -> dict[str, int]:
    """20 digit PNGs and two undecodable .png files in bucket digits-in; key -> label."""
    pytest.importorskip("sklearn")
    pytest.importorskip("igata_s3")
    from examples.digits import write_bad_inputs, write_test_pngs

    s3 = rgw.endpoint.client()
    s3.create_bucket(Bucket="digits-in")
    s3.create_bucket(Bucket="digits-out")
    labels = {}
    for path, label in write_test_pngs(tmp_path / "png", 20).items():
        s3.upload_file(str(path), "digits-in", f"png/{path.name}")
        labels[f"png/{path.name}"] = label
    for path in write_bad_inputs(tmp_path / "bad"):
        s3.upload_file(str(path), "digits-in", f"png/{path.name}")
    return labels


@needs_rgw
def test_digits_over_s3_on_the_gateway(rgw: Any, digits_bucket: dict[str, int],
                                       tmp_path: Path) -> None:  # fmt: skip
    from examples.demo import MIN_ACCURACY

    errors = tmp_path / "errors.jsonl"
    done = _igata(rgw, tmp_path, "--source", "s3", "--sink", "s3-jsonl",
                  "--sink-opt", "bucket=digits-out", "--sink-opt", "prefix=predictions/",
                  "--predictor", "examples.digits:DigitsPredictor", "--errors", str(errors),
                  "s3://digits-in/png/")  # fmt: skip
    assert done.returncode == 1, done.stderr  # a finite run with two failed records

    s3 = rgw.endpoint.client()
    listed = s3.list_objects_v2(Bucket="digits-out", Prefix="predictions/")["Contents"]
    records = []
    for obj in listed:
        body = s3.get_object(Bucket="digits-out", Key=obj["Key"])["Body"].read()
        records.extend(json.loads(line) for line in body.splitlines())
    assert sorted(r["key"] for r in records) == sorted(digits_bucket)
    correct = sum(r["label"] == digits_bucket[r["key"]] for r in records)
    assert correct / len(records) >= MIN_ACCURACY
    assert {r["igata_id"] for r in records} == {f"s3://digits-in/{k}" for k in digits_bucket}
    assert all(r["etag"] and r["bucket"] == "digits-in" for r in records)
    failed = sorted(json.loads(line)["input"] for line in errors.read_text().splitlines())
    assert failed == ["s3://digits-in/png/bad-corrupt.png", "s3://digits-in/png/bad-truncated.png"]


@needs_rgw
def test_a_worker_with_a_wrong_secret_stops_with_exit_2(
    rgw: Any, digits_bucket: dict[str, int], tmp_path: Path
) -> None:
    """Refused credentials are the configuration's fault, not the input's: exit 2 at once,
    no record failed."""
    errors = tmp_path / "errors.jsonl"
    done = _igata(rgw, tmp_path, "--source", "s3", "--sink", "jsonl",
                  "--sink-opt", f"path={tmp_path / 'out.jsonl'}",
                  "--predictor", "examples.digits:DigitsPredictor", "--errors", str(errors),
                  "s3://digits-in/png/", secret="not-the-secret")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "(SignatureDoesNotMatch: the secret key does not match the access key id)" in (
        done.stderr
    )
    assert not errors.exists() or errors.read_text() == ""
