"""The igata plugin module (entry point ``jobs``): ``igata submit``, ``status``, ``export``.

Importing it imports neither click's commands' dependencies nor boto3: the commands are
built on registration and import AWS libraries inside their callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl

IGATA_HOOK_API = 1


@hookimpl
def register_commands(register: Callable[[Any], None]) -> None:
    from igata_jobs.cli import export, status, submit

    register(submit)
    register(status)
    register(export)
