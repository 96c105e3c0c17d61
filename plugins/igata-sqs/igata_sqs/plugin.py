"""The igata-sqs plugin: the ``sqs`` and ``sqs-csv`` sources, the ``sqs`` sink, ``igata replay``.

Registered through the entry point ``[project.entry-points.igata] sqs = "igata_sqs.plugin"``.
Importing this module imports no AWS library, and each hook imports its components'
modules only when igata calls it, which is when a command needs that kind of component
(``igata --help`` needs none but the commands; ``igata run`` none of the commands).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl

IGATA_HOOK_API = 1


@hookimpl
def register_sources(register: Callable[[Any], None]) -> None:
    from igata_sqs.source import SqsCsvSource, SqsSource

    register(SqsSource)
    register(SqsCsvSource)


@hookimpl
def register_sinks(register: Callable[[Any], None]) -> None:
    from igata_sqs.sink import SqsSink

    register(SqsSink)


@hookimpl
def register_commands(register: Callable[[Any], None]) -> None:
    from igata_sqs.replay import replay

    register(replay)
