"""The igata-s3 plugin: registers the S3 loader, the ``s3`` source and the S3 sinks.

Registered through the entry point ``[project.entry-points.igata] s3 = "igata_s3.plugin"``.
Importing this module imports no AWS library, and each hook imports its components'
modules only when igata calls it, which is when a command needs that kind of component
(``igata --help`` needs none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl

IGATA_HOOK_API = 1


@hookimpl
def register_loaders(register: Callable[[Any], None]) -> None:
    from igata_s3.loader import S3Loader

    register(S3Loader)


@hookimpl
def register_sources(register: Callable[[Any], None]) -> None:
    from igata_s3.source import S3Source

    register(S3Source)


@hookimpl
def register_sinks(register: Callable[[Any], None]) -> None:
    from igata_s3.sinks import S3CsvSink, S3JsonlSink

    register(S3CsvSink)
    register(S3JsonlSink)
