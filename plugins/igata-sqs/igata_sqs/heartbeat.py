"""The visibility heartbeat: keeps held messages invisible while they are being processed.

A background thread extends, in batches, every lease whose visibility is about to end, by
the queue's visibility timeout each time (with the lease's newest receipt handle), until
the message is settled or its processing budget is spent. A budget-spent message is left
to reappear: a hung prediction does not hold a message forever. If the worker dies, the
heartbeat dies with it and its messages reappear within one visibility timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from igata_core import ConfigurationError
from igata_sqs.leases import LeaseTable
from igata_sqs.queue import SqsQueue

log = logging.getLogger("igata.sqs")


class Heartbeat:
    def __init__(
        self,
        queue: SqsQueue,
        leases: LeaseTable,
        visibility: int,
        *,
        on_refused: Callable[[ConfigurationError], None] | None = None,
    ):
        self.queue = queue
        #: Told when SQS refuses the visibility changes for good (access denied…).
        self.on_refused = on_refused
        self.leases = leases
        self.visibility = visibility
        #: Extend when this little of the visibility is left; checked every ``interval``.
        self.margin = max(visibility / 2, 0.5)
        self.interval = max(0.1, min(visibility / 4, 5.0))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="igata-sqs-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except ConfigurationError as exc:
                # Retrying cannot help (no permission to change visibility, queue gone).
                if self.on_refused is not None:
                    self.on_refused(exc)
                else:
                    log.error("sqs: visibility heartbeat refused: %s", exc)
                return
            except Exception:
                # The heartbeat must outlive any single failure; a lapse only risks a
                # duplicate delivery, which the lease table absorbs.
                log.exception("sqs: visibility heartbeat failed; retrying")

    def beat(self) -> None:
        """Extend every lease that is due (one round)."""
        now = time.monotonic()
        changes = []
        for lease in self.leases.due(now, self.margin):
            timeout = float(self.visibility)
            if lease.deadline is not None:
                timeout = min(timeout, lease.deadline - now)
            timeout = min(timeout, lease.limit - now)
            if timeout < 1:
                if not lease.budget_reported:
                    lease.budget_reported = True
                    log.warning(
                        "sqs: message %s on queue %s is still being processed after its "
                        "processing budget (max_processing_seconds); no longer extending its "
                        "visibility, so it will be delivered again",
                        lease.message_id, self.queue.name,
                    )  # fmt: skip
                continue
            changes.append((lease, int(timeout)))
        if not changes:
            return
        sent = time.monotonic()
        extended = self.queue.change_visibility(
            changes, what="visibility extension", held=self.leases.holds
        )
        for lease, timeout in changes:
            if lease.message_id in extended:
                self.leases.extended(lease.message_id, sent + timeout)
