"""The igata plugin module (entry point ``dynamodb``): the sink and ``igata dynamodb``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl

IGATA_HOOK_API = 1


@hookimpl
def register_sinks(register: Callable[[Any], None]) -> None:
    from igata_dynamodb.sink import DynamoDbSink

    register(DynamoDbSink)


@hookimpl
def register_commands(register: Callable[[Any], None]) -> None:
    from igata_dynamodb.cli import dynamodb

    register(dynamodb)
