"""Progress: a bar on a terminal for finite inputs, a periodic status line otherwise."""

from __future__ import annotations

import logging
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import ListSource, clean_env, data_envelopes, write_images

from igata_core.pipeline import RunSummary
from igata_core.progress import Progress


def test_without_a_terminal_a_status_line_is_logged_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="igata.progress")
    progress = Progress(ListSource(data_envelopes(range(3))), enabled=True, interval=0.0)
    progress.update(RunSummary(succeeded=7, failed=2))
    progress.finish()
    lines = [r.getMessage() for r in caplog.records if r.name == "igata.progress"]
    assert len(lines) == 1
    assert lines[0].startswith("progress: 9 records done (2 failed), ")
    assert lines[0].endswith(" records/s")


def test_quiet_shows_no_progress(caplog):
    caplog.set_level(logging.INFO, logger="igata.progress")
    progress = Progress(ListSource(data_envelopes(range(3))), enabled=False, interval=0.0)
    progress.update(RunSummary(succeeded=7))
    assert [r for r in caplog.records if r.name == "igata.progress"] == []


def test_on_a_terminal_a_finite_run_shows_a_bar_with_count_and_eta(tmp_path):
    write_images(tmp_path / "images", 30)
    env = clean_env(IGATA_LOAD_PLUGINS="", IGATA_TEST_PREDICT_DELAY="0.03")
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "igata_core", "run", "--source", "files", "--sink", "null",
         "--predictor", "helpers_core:SlowPredictor", "--batch-size", "1",
         "--flush-interval", "0.05", str(tmp_path / "images")],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        assert process.wait(30) == 0
    finally:
        process.kill()
        os.close(controller)
    text = output.decode(errors="replace")
    assert "records" in text and "30/30" in text, text[-2000:]
    assert "100%" in text
