"""Fixtures of the igata-jobs tests: buckets of objects, queues and tables on the local AWS
(moto, or the strict emulators for SQS and DynamoDB when IGATA_TEST_*_ENDPOINT is set)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["igata_core.testing"]

TESTS = Path(__file__).parent
if "job_world" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("job_world", TESTS / "job_world.py")
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["job_world"] = _module
    _spec.loader.exec_module(_module)

from job_world import World  # noqa: E402


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cursors of each test in its own directory; no job variable leaks in."""
    directory = tmp_path / "state"
    monkeypatch.setenv("IGATA_STATE_DIR", str(directory))
    for name in (
        "INPUT_CTXMGR_SQS_QUEUE_URL",
        "INPUT_CTXMANAGER_SQS_QUEUE_URL",
        "OUTPUT_CTXMGR_REQUESTS_TABLENAME",
        "OUTPUT_CTXMGR_RESULTS_TABLENAME",
        "REQUESTS_TABLE_HASHKEY_KEYNAME",
        "REQUESTS_TABLE_STATE_KEYNAME",
        "RESULTS_SORTKEY_KEYNAME",
    ):
        monkeypatch.delenv(name, raising=False)
    return directory


@pytest.fixture
def world(aws: Any) -> Iterator[World]:
    yield World(aws)
