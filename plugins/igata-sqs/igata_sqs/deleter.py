"""Deleting acked messages in the background, in batches, then announcing them.

The engine acks from its single writer thread after every flush; deleting there would add
a round trip to every flush. Acked messages are handed to this thread instead, which waits
a moment (``linger``) so that the acks of consecutive flushes share one
``DeleteMessageBatch`` call, deletes them, and then publishes their completion notices.
The leases stay held (and heartbeated) until the delete is done, and ``close`` deletes
whatever is still waiting, so a clean stop deletes every acked message. A worker killed in
between only causes a redelivery, which idempotent sinks absorb.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from igata_core import ConfigurationError
from igata_sqs.leases import Lease, LeaseTable
from igata_sqs.notices import CompletionNotifier
from igata_sqs.queue import BATCH_SIZE, SqsQueue

log = logging.getLogger("igata.sqs")


class Deleter:
    def __init__(
        self,
        queue: SqsQueue,
        leases: LeaseTable,
        notices: CompletionNotifier,
        *,
        linger: float = 0.1,
        on_refused: Callable[[ConfigurationError], None] | None = None,
    ):
        self.queue = queue
        #: Told when SQS refuses the deletes for good (access denied, queue gone).
        self.on_refused = on_refused
        self.leases = leases
        self.notices = notices
        self.linger = linger
        self._pending: list[Lease] = []
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="igata-sqs-delete", daemon=True)
        self._thread.start()

    def submit(self, leases: list[Lease]) -> None:
        if not leases:
            return
        with self._cond:
            self._pending.extend(leases)
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted message was deleted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Delete what is waiting, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("sqs: deleting acked messages did not finish in %g s; they will be "
                      "delivered again", timeout)  # fmt: skip

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed and nothing left
                if len(self._pending) < BATCH_SIZE and not self._closed:
                    # Let the acks of the next flushes join this batch.
                    self._cond.wait_for(
                        lambda: len(self._pending) >= BATCH_SIZE or self._closed, self.linger
                    )
                batch, self._pending = self._pending, []
                self._busy = True
            try:
                self._delete(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _delete(self, batch: list[Lease]) -> None:
        try:
            deleted = self.queue.delete(batch)
        except ConfigurationError as exc:
            log.error("sqs: deleting %d acked message(s) refused: %s; they will be delivered "
                      "again", len(batch), exc)  # fmt: skip
            if self.on_refused is not None:
                self.on_refused(exc)
            deleted = set()
        except Exception:
            log.exception("sqs: deleting %d acked message(s) failed; they will be delivered "
                          "again", len(batch))  # fmt: skip
            deleted = set()
        self.leases.release([lease.message_id for lease in batch])
        self.notices.completed(
            lease.envelope
            for lease in batch
            if lease.message_id in deleted and lease.envelope is not None
        )
