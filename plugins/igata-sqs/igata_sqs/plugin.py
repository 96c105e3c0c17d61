"""The igata-sqs plugin: the ``sqs`` and ``sqs-csv`` sources, the ``sqs`` sink, ``igata replay``.

Registered through the entry point ``[project.entry-points.igata] sqs = "igata_sqs.plugin"``.
Importing this module imports no AWS library (``igata --help`` stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl
from igata_sqs.sink import SqsSink
from igata_sqs.source import SqsCsvSource, SqsSource

IGATA_HOOK_API = 1


@hookimpl
def register_sources(register: Callable[[Any], None]) -> None:
    register(SqsSource)
    register(SqsCsvSource)


@hookimpl
def register_sinks(register: Callable[[Any], None]) -> None:
    register(SqsSink)


@hookimpl
def register_commands(register: Callable[[Any], None]) -> None:
    from igata_sqs.replay import replay

    register(replay)
