"""Progress while a run goes on: a bar on a terminal, a periodic status line otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import click

from igata_core.components import Source
from igata_core.pipeline import RunSummary

log = logging.getLogger("igata.progress")


class Progress:
    """Shows records done (succeeded + failed), rate and ETA.

    On a terminal with a finite source whose size is known: click's progress bar. Without a
    terminal (a container's log): one status line every ``interval`` seconds.
    """

    def __init__(self, source: Source, *, enabled: bool, interval: float = 30.0):
        self._source = source
        self._enabled = enabled
        self._interval = interval
        self._tty = sys.stderr.isatty()
        self._total: int | None = None
        self._bar: Any = None
        self._shown = 0
        self._last_status = time.monotonic()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        if enabled and self._tty and source.finite:
            threading.Thread(target=self._count, name="igata-count", daemon=True).start()

    def _count(self) -> None:
        try:
            total = self._source.total()
        except Exception:
            log.debug("could not count the inputs", exc_info=True)
            return
        with self._lock:
            self._total = total

    def update(self, summary: RunSummary) -> None:
        if not self._enabled:
            return
        done = summary.succeeded + summary.failed
        with self._lock:
            if self._tty and self._total:
                if self._bar is None:
                    self._bar = click.progressbar(
                        length=self._total, label="records", file=sys.stderr,
                        show_eta=True, show_percent=True, show_pos=True,
                    )  # fmt: skip
                    self._bar.render_progress()
                self._bar.update(done - self._shown)
                self._shown = done
                return
        now = time.monotonic()
        if now - self._last_status >= self._interval:
            self._last_status = now
            rate = done / max(now - self._started, 1e-9)
            log.info(
                "progress: %d records done (%d failed), %.1f records/s",
                done, summary.failed, rate,
            )  # fmt: skip

    def finish(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.render_finish()
                self._bar = None
