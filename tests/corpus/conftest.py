"""The bad-input corpus runs in the world of the acceptance tests (tests/conformance)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "conformance"))

from conformance_world import World  # noqa: E402


@pytest.fixture
def world(aws: Any, tmp_path: Path) -> Iterator[World]:
    from cases import BUCKET

    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    yield World(aws, tmp_path, aws.client("sqs"), s3, aws.client("dynamodb"))
