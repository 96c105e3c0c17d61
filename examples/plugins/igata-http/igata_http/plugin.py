"""Entry point of igata-http (``[project.entry-points.igata] http = "igata_http.plugin"``).

igata imports this module on every start: it imports only the standard library, and each
hook imports its component's module only when igata calls it, which is when a command
needs that kind of component (``igata --help`` needs none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl

#: The igata hook API this plugin is written for; another igata-core refuses to load it.
IGATA_HOOK_API = 1


@hookimpl
def register_loaders(register: Callable[[Any], None]) -> None:
    from igata_http.loader import HttpLoader

    register(HttpLoader)


@hookimpl
def register_sinks(register: Callable[[Any], None]) -> None:
    from igata_http.webhook import WebhookSink

    register(WebhookSink)
