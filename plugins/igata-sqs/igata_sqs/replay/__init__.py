"""``igata replay``: move dead-lettered messages back to a queue, selectively.

SQS's own redrive moves a whole dead-letter queue; after a fix, an operator usually wants
only the messages that failed for the fixed reason, or only the recent ones. The command
scans the dead-letter queue once, selects messages by filters, and moves each selected one
to the target queue without ever losing it (see :mod:`igata_sqs.replay.mover`).

Modules: ``command`` (the click command), ``options`` (parsing option values), ``queues``
(resolving the queues), ``letters`` (what a dead-lettered message says), ``lookup`` (where
recorded errors come from), ``filters`` (selection), ``mover`` (the scan), ``pacing``
(``--rate``), ``signals`` (stopping on signals), ``exits`` (exit codes and exceptions).
"""

from igata_sqs.replay.command import replay
from igata_sqs.replay.exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ReplayError,
    ReplayUnavailable,
    Unavailable,
)
from igata_sqs.replay.filters import Filters, Selector
from igata_sqs.replay.letters import DISPLAY_ID_FIELDS, DeadLetter, outcome_text
from igata_sqs.replay.lookup import (
    ERRORS_ATTRIBUTE,
    ErrorsFile,
    ErrorSource,
    ErrorText,
    RequestsTable,
)
from igata_sqs.replay.mover import (
    CONTENT_ERRORS,
    RECEIVE_WAIT_SECONDS,
    Replayer,
    Settings,
    Summary,
    log,
)
from igata_sqs.replay.options import parse_attribute_filter, parse_rate, parse_since
from igata_sqs.replay.pacing import TokenBucket
from igata_sqs.replay.queues import default_target, queue_attributes, source_queues
from igata_sqs.replay.signals import StopOnSignal

__all__ = [
    "CONTENT_ERRORS",
    "DISPLAY_ID_FIELDS",
    "ERRORS_ATTRIBUTE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "RECEIVE_WAIT_SECONDS",
    "DeadLetter",
    "ErrorSource",
    "ErrorText",
    "ErrorsFile",
    "Filters",
    "ReplayError",
    "ReplayUnavailable",
    "Replayer",
    "RequestsTable",
    "Selector",
    "Settings",
    "StopOnSignal",
    "Summary",
    "TokenBucket",
    "Unavailable",
    "default_target",
    "log",
    "outcome_text",
    "parse_attribute_filter",
    "parse_rate",
    "parse_since",
    "queue_attributes",
    "replay",
    "source_queues",
]
