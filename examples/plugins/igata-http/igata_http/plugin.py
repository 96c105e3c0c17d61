"""Entry point of igata-http (``[project.entry-points.igata] http = "igata_http.plugin"``).

igata imports this module on every start: it imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl
from igata_http.loader import HttpLoader
from igata_http.webhook import WebhookSink

#: The igata hook API this plugin is written for; another igata-core refuses to load it.
IGATA_HOOK_API = 1


@hookimpl
def register_loaders(register: Callable[[Any], None]) -> None:
    register(HttpLoader)


@hookimpl
def register_sinks(register: Callable[[Any], None]) -> None:
    register(WebhookSink)
