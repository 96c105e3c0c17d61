"""Stopping a scan on SIGINT/SIGTERM without leaving messages hidden."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class StopOnSignal:
    """SIGINT/SIGTERM end the scan between steps; a second one interrupts at once."""

    def __init__(self, event: threading.Event, say: Callable[[str, bool], None]):
        self.event = event
        self.say = say
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        self.say(
            "replay: stopping after the current step; held messages are made visible again "
            "(signal again to interrupt at once)",
            True,
        )

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
