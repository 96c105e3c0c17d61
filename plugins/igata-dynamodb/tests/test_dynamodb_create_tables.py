"""``igata dynamodb create-tables``: the original README's layout, idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from igata_dynamodb.cli import dynamodb


def describe(ddb: Any, table: str) -> dict[str, Any]:
    return ddb.describe_table(TableName=table)["Table"]


def keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(dynamodb, ["create-tables", *args], env=env, catch_exceptions=False)


def test_the_igata_command_creates_the_documented_layout(aws: Any, ddb: Any) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OUTPUT_CTXMGR_")},
        **aws.env(),
        "OUTPUT_CTXMGR_REQUESTS_TABLENAME": "requests",
        "OUTPUT_CTXMGR_RESULTS_TABLENAME": "results",
    }
    igata = os.path.join(os.path.dirname(sys.executable), "igata")
    done = subprocess.run(
        [igata, "dynamodb", "create-tables"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["created: requests", "created: results"]

    requests = describe(ddb, "requests")
    assert requests["TableStatus"] == "ACTIVE"
    assert keys(requests["KeySchema"]) == [("request_id", "HASH")]
    assert {a["AttributeName"]: a["AttributeType"] for a in requests["AttributeDefinitions"]} == {
        "request_id": "S",
        "collection_id": "S",
        "state": "S",
    }
    [index] = requests["GlobalSecondaryIndexes"]
    assert keys(index["KeySchema"]) == [("collection_id", "HASH"), ("state", "RANGE")]
    assert index["Projection"]["ProjectionType"] == "ALL"
    assert requests["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    results = describe(ddb, "results")
    assert keys(results["KeySchema"]) == [("hashkey", "HASH"), ("s3_uri", "RANGE")]
    assert {a["AttributeName"]: a["AttributeType"] for a in results["AttributeDefinitions"]} == {
        "hashkey": "S",
        "s3_uri": "S",
        "collection_id": "S",
        "valid_number": "S",
    }
    [index] = results["GlobalSecondaryIndexes"]
    assert keys(index["KeySchema"]) == [("collection_id", "HASH"), ("valid_number", "RANGE")]
    assert index["Projection"]["ProjectionType"] == "ALL"

    again = subprocess.run(
        [igata, "dynamodb", "create-tables"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["exists: requests", "exists: results"]


def test_key_names_follow_the_original_variables_and_flags(aws: Any, ddb: Any) -> None:
    result = invoke(
        "--requests-table", "jobs", "--results-table", "job-results", "--state-keyname", "status",
        env={"REQUESTS_TABLE_HASHKEY_KEYNAME": "job_id", "RESULTS_SORTKEY_KEYNAME": "image_uri"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    jobs = describe(ddb, "jobs")
    assert keys(jobs["KeySchema"]) == [("job_id", "HASH")]
    assert keys(jobs["GlobalSecondaryIndexes"][0]["KeySchema"]) == [
        ("collection_id", "HASH"),
        ("status", "RANGE"),
    ]
    assert keys(describe(ddb, "job-results")["KeySchema"]) == [
        ("hashkey", "HASH"),
        ("image_uri", "RANGE"),
    ]


def test_provisioned_billing_sets_capacity_on_tables_and_indexes(aws: Any, ddb: Any) -> None:
    result = invoke(
        "--requests-table", "req", "--results-table", "res",
        "--billing-mode", "PROVISIONED", "--read-capacity", "3", "--write-capacity", "7",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("req", "res"):
        table = describe(ddb, name)
        throughput = table["ProvisionedThroughput"]
        assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (3, 7)
        index = table["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"]
        assert (index["ReadCapacityUnits"], index["WriteCapacityUnits"]) == (3, 7)


def test_an_existing_table_keyed_otherwise_is_an_error(aws: Any, ddb: Any) -> None:
    ddb.create_table(
        TableName="req",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    result = CliRunner().invoke(
        dynamodb, ["create-tables", "--requests-table", "req", "--results-table", "res"]
    )
    assert result.exit_code == 1
    assert "table 'req' is keyed [id (HASH, S)]" in result.output
    assert "needs [request_id (HASH, S)]" in result.output


def test_missing_table_names_are_a_usage_error(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTPUT_CTXMGR_REQUESTS_TABLENAME", raising=False)
    monkeypatch.delenv("OUTPUT_CTXMGR_RESULTS_TABLENAME", raising=False)
    result = CliRunner().invoke(dynamodb, ["create-tables", "--results-table", "res"])
    assert result.exit_code == 2
    assert "missing required option 'requests_tablename'" in result.output
    assert "OUTPUT_CTXMGR_REQUESTS_TABLENAME" in result.output
    assert "--requests-table" in result.output
