"""The testing kit's routing of SQS and DynamoDB to strict emulators (LocalStack, dynalite)."""

from __future__ import annotations

from typing import Any

import pytest

from igata_core.testing.aws import LocalAws, strict_endpoints_from_env
from igata_core.testing.emulators import EmulatorError, start_dynalite, start_localstack_sqs

pytest_plugins = ["igata_core.testing"]


def test_endpoints_from_the_environment() -> None:
    env = {
        "IGATA_TEST_SQS_ENDPOINT": "http://127.0.0.1:4566/",
        "IGATA_TEST_DYNAMODB_ENDPOINT": "http://localhost:8000",
    }
    assert strict_endpoints_from_env(env) == {
        "sqs": "http://127.0.0.1:4566",
        "dynamodb": "http://localhost:8000",
    }
    assert strict_endpoints_from_env({}) == {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IGATA_TEST_SQS_ENDPOINT": "http://10.0.0.5:4566"}, "not an http:// endpoint"),
        ({"IGATA_TEST_DYNAMODB_ENDPOINT": "ftp://127.0.0.1:1"}, "IGATA_TEST_DYNAMODB_ENDPOINT"),
        (
            {"IGATA_TEST_SQS_ENDPOINT": "http://127.0.0.1:4566", "PYTEST_XDIST_WORKER_COUNT": "2"},
            "run without -n",
        ),
    ],
)
def test_endpoints_that_the_kit_refuses(env: dict[str, str], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        strict_endpoints_from_env(env)


def test_a_routed_service_has_its_own_endpoint_in_clients_and_workers() -> None:
    aws = LocalAws("http://127.0.0.1:5000", endpoints={"sqs": "http://127.0.0.1:4566"})
    assert aws.strict == {"sqs"}
    assert aws.url_for("sqs") == "http://127.0.0.1:4566"
    assert aws.url_for("sns") == aws.url_for("dynamodb") == aws.url_for("s3") == aws.url
    env = aws.env()
    assert env["AWS_ENDPOINT_URL"] == aws.url
    assert env["AWS_ENDPOINT_URL_SQS"] == "http://127.0.0.1:4566"
    assert "AWS_ENDPOINT_URL_DYNAMODB" not in env
    assert aws.client("sqs").meta.endpoint_url == "http://127.0.0.1:4566"  # type: ignore[attr-defined]
    moto_sqs = aws.client("sqs", on_moto=True)
    assert moto_sqs.meta.endpoint_url == aws.url  # type: ignore[attr-defined]


def test_missing_emulators_say_how_to_install_them(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGATA_EMULATORS_HOME", str(tmp_path))
    for start in (start_localstack_sqs, start_dynalite):
        with pytest.raises(EmulatorError, match=r"igata_core\.testing\.emulators install"):
            start()


def test_queues_live_on_the_emulator_and_reset_empties_it(aws: Any) -> None:
    if "sqs" not in aws.strict:
        pytest.skip("SQS is on moto here; nox -s aws-conformance sends it to LocalStack")
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="kit-check")["QueueUrl"]
    assert url.startswith(aws.url_for("sqs"))
    assert not sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"].get(
        "RedrivePolicy"
    )
    aws.reset()
    assert not sqs.list_queues().get("QueueUrls")


def test_tables_live_on_the_emulator_and_reset_empties_it(aws: Any) -> None:
    if "dynamodb" not in aws.strict:
        pytest.skip("DynamoDB is on moto here; nox -s aws-conformance sends it to dynalite")
    dynamodb = aws.client("dynamodb")
    dynamodb.create_table(
        TableName="kit-check",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # dynalite is strict where AWS is: 39 significant digits are refused (moto stores them).
    with pytest.raises(Exception, match="38 significant digits"):
        dynamodb.put_item(TableName="kit-check", Item={"pk": {"S": "a"}, "n": {"N": "1" * 39}})
    aws.reset()
    assert dynamodb.list_tables()["TableNames"] == []
