"""The submit cursor: written after batches at most every SAVE_INTERVAL, and at once when
asked (the end of a submit, an interruption)."""

from __future__ import annotations

import json
import time
import types

import pytest
from igata_jobs import cursor as cursor_module
from igata_jobs.cursor import Cursor, CursorState

pytestmark = pytest.mark.timeout(30)


def _on_disk(path) -> dict:
    return json.loads(path.read_text())


def test_saves_are_spaced_and_a_forced_save_writes_what_is_owed(tmp_path, monkeypatch):
    clock = [100.0]
    fake_time = types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    monkeypatch.setattr(cursor_module, "time", fake_time)
    path = tmp_path / "job.json"
    cursor = Cursor(str(path))
    cursor.state = CursorState(collection_id="c", queue_url="q", sources=["s3://b/p/"])

    cursor.state.requests = 100
    cursor.save()  # the first save writes
    assert _on_disk(path)["requests"] == 100 and not cursor.unsaved

    clock[0] += cursor_module.SAVE_INTERVAL / 2
    cursor.state.requests = 200
    cursor.save()  # too soon: owed, not written
    assert _on_disk(path)["requests"] == 100 and cursor.unsaved

    cursor.save(now=True)  # an interruption: written at once
    assert _on_disk(path)["requests"] == 200 and not cursor.unsaved

    clock[0] += cursor_module.SAVE_INTERVAL
    cursor.state.requests = 300
    cursor.save()  # the interval has passed
    assert _on_disk(path)["requests"] == 300

    cursor.state.requests = 400
    cursor.state.done = True
    cursor.save(durable=True)  # the end: always written
    assert _on_disk(path) == {**_on_disk(path), "requests": 400, "done": True}
