"""Fixtures of the acceptance tests that run on moto (``nox -s tests``) and on the strict
emulators (``nox -s aws-conformance``: SQS on LocalStack, DynamoDB on dynalite)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conformance_world import BUCKET, World


@pytest.fixture
def world(aws: Any, tmp_path: Path) -> Iterator[World]:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    yield World(aws, tmp_path, aws.client("sqs"), s3, aws.client("dynamodb"))
