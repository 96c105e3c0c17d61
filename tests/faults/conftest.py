"""Fixtures of the fault tests: worker processes against the local AWS endpoint.

The helpers live in :mod:`fault_workers` (also used by ``tests/test_scale_out.py``) and the
predictors in :mod:`fault_predictors`, which worker subprocesses import by name.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FAULTS_DIR = Path(__file__).parent
if str(FAULTS_DIR) not in sys.path:
    sys.path.insert(0, str(FAULTS_DIR))
pytest.register_assert_rewrite("fault_workers")

from fault_workers import Workers  # noqa: E402


@pytest.fixture
def workers(aws: Any, tmp_path: Path) -> Iterator[Workers]:
    """Starts ``igata run`` worker processes; any still running at the end are killed."""
    pool = Workers(aws, tmp_path)
    yield pool
    pool.close()
