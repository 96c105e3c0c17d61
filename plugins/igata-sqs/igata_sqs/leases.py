"""The messages a worker holds (leases), shared by the receiver, the heartbeat and acks.

A lease lives from the receive of a message until its ack (delete), nack (visibility
reset) or hand-back. It always holds the message's NEWEST receipt handle: when SQS delivers
a message again while this worker still holds it (its visibility lapsed), the copy is not
processed twice; the lease takes the new handle, which is the one AWS accepts from then on.

FIFO queues: messages of one group are settled in the order they were received. An acked
message waits (still leased) until every earlier message of its group is acked; when one
fails, the later messages of its group that this worker holds are handed back too, so
SQS delivers the group again in order, starting with the failed message.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from igata_core import Envelope

PENDING = "pending"  # received, not yet handed to the engine
PROCESSING = "processing"  # handed to the engine, not yet acked or nacked
ACKED = "acked"  # FIFO: acked, waiting for earlier messages of its group
DELETING = "deleting"  # acked, its delete not yet done

_order = itertools.count()


@dataclass(eq=False)
class Lease:
    """One held message. Times are ``time.monotonic()`` values."""

    message_id: str
    receipt_handle: str
    receive_count: int
    visible_until: float
    #: When the processing budget ends (None: no budget).
    deadline: float | None
    #: SQS refuses to keep a message invisible past 12 hours after its receive.
    limit: float
    group_id: str | None = None
    envelope: Envelope | None = None
    state: str = PENDING
    #: FIFO: an earlier message of the group failed; this one must not be deleted.
    blocked: bool = False
    budget_reported: bool = False
    order: int = field(default_factory=lambda: next(_order))


class LeaseTable:
    """Thread-safe table of leases by message id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._leases)

    def admit(self, lease: Lease) -> Lease | None:
        """Hold a newly received message; for one already held, refresh the held lease.

        Returns None for a new message, else the existing lease (now with the newer
        receipt handle, receive count and visibility): the copy is a duplicate.
        """
        with self._lock:
            current = self._leases.get(lease.message_id)
            if current is None:
                self._leases[lease.message_id] = lease
                return None
            current.receipt_handle = lease.receipt_handle
            current.receive_count = max(current.receive_count, lease.receive_count)
            current.visible_until = lease.visible_until
            current.limit = lease.limit
            return current

    def start(self, message_id: str) -> bool:
        """Mark a pending message as handed to the engine; False if it is no longer held."""
        with self._lock:
            lease = self._leases.get(message_id)
            if lease is None or lease.state != PENDING:
                return False
            lease.state = PROCESSING
            return True

    def take_pending(self) -> list[Lease]:
        """Remove and return the messages received but not yet handed to the engine."""
        with self._lock:
            taken = [lease for lease in self._leases.values() if lease.state == PENDING]
            for lease in taken:
                del self._leases[lease.message_id]
            return taken

    def due(self, now: float, margin: float) -> list[Lease]:
        """Leases whose visibility ends within ``margin`` seconds."""
        with self._lock:
            return [lease for lease in self._leases.values() if lease.visible_until - now <= margin]

    def holds(self, message_id: str) -> bool:
        with self._lock:
            return message_id in self._leases

    def extended(self, message_id: str, visible_until: float) -> None:
        with self._lock:
            lease = self._leases.get(message_id)
            if lease is not None and visible_until > lease.visible_until:
                lease.visible_until = visible_until

    def settle_acks(self, message_ids: list[str]) -> tuple[list[Lease], list[Lease], list[str]]:
        """Mark messages acked; returns (to delete, to hand back, ids no longer held).

        The messages to delete stay held, in state DELETING, until :meth:`release`.
        """
        missing: list[str] = []
        with self._lock:
            for message_id in message_ids:
                lease = self._leases.get(message_id)
                if lease is None or lease.state == DELETING:
                    missing.append(message_id)
                else:
                    lease.state = ACKED
            delete: list[Lease] = []
            hand_back: list[Lease] = []
            for lease in sorted(self._leases.values(), key=lambda held: held.order):
                if lease.state != ACKED:
                    continue
                if lease.blocked:
                    hand_back.append(lease)
                    del self._leases[lease.message_id]
                elif lease.group_id is not None and self._earlier_unsettled(lease):
                    continue  # held until the earlier messages of its group are acked
                else:
                    # Still held (and heartbeated) until the delete is done: see release().
                    lease.state = DELETING
                    delete.append(lease)
            return delete, hand_back, missing

    def release(self, message_ids: list[str]) -> None:
        """Forget messages whose delete was attempted."""
        with self._lock:
            for message_id in message_ids:
                self._leases.pop(message_id, None)

    def settle_nacks(self, message_ids: list[str]) -> tuple[list[Lease], list[Lease], list[str]]:
        """Release failed messages; returns (nacked, hand back, ids no longer held)."""
        missing: list[str] = []
        nacked: list[Lease] = []
        hand_back: list[Lease] = []
        with self._lock:
            for message_id in message_ids:
                lease = self._leases.pop(message_id, None)
                if lease is None:
                    missing.append(message_id)
                    continue
                nacked.append(lease)
                if lease.group_id is None:
                    continue
                for other in list(self._leases.values()):
                    if other.group_id == lease.group_id and other.order > lease.order:
                        other.blocked = True
                        if other.state in (PENDING, ACKED):
                            hand_back.append(other)
                            del self._leases[other.message_id]
        return nacked, hand_back, missing

    def take_for_release(self, message_ids: list[str]) -> tuple[list[Lease], list[Lease]]:
        """Forget messages given up unsettled; returns (them, later ones of their FIFO groups
        to hand back with them). Messages whose delete is under way are left alone."""
        released: list[Lease] = []
        blocked: list[Lease] = []
        with self._lock:
            for message_id in message_ids:
                lease = self._leases.get(message_id)
                if lease is None or lease.state == DELETING:
                    continue
                del self._leases[message_id]
                released.append(lease)
            for lease in released:
                if lease.group_id is None:
                    continue
                for other in list(self._leases.values()):
                    if other.group_id == lease.group_id and other.order > lease.order:
                        other.blocked = True
                        if other.state in (PENDING, ACKED):
                            blocked.append(other)
                            del self._leases[other.message_id]
        return released, blocked

    def _earlier_unsettled(self, lease: Lease) -> bool:
        return any(
            other.group_id == lease.group_id
            and other.order < lease.order
            and other.state not in (ACKED, DELETING)
            for other in self._leases.values()
        )
