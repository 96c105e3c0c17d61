"""Hook specifications of igata: the reference for plugin authors.

A plugin is a module registered under the entry-point group ``igata``::

    [project.entry-points.igata]
    s3 = "igata_s3.plugin"

It implements any of the hooks below with ``from igata_core import hookimpl``. Every hook
hands over a ``register`` callback; call it once per component. Names (and aliases) are
unique across all plugins: a clash is reported naming both plugins, never resolved by the
order in which pluggy calls the hooks.

Keep plugin modules cheap to import: import each component's module inside the hook that
registers it, since igata calls a kind's hooks only when a command needs that kind
(``igata run`` never calls ``register_commands``; ``igata --help`` calls only that one).
Import boto3, numpy or Pillow inside the methods that use them, so ``igata --help`` stays
instant.

Hook API version: ``igata_core.HOOK_API_VERSION`` (``1``). A plugin built for another major
version may declare ``IGATA_HOOK_API = N`` in its plugin module and is then refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from igata_core.components import Decoder, Loader, Sink, Source
    from igata_core.predictor import PredictorBase

hookspec = pluggy.HookspecMarker("igata")


@hookspec
def register_sources(register: Callable[[type[Source]], None]) -> None:
    """Register source classes (subclasses of :class:`igata_core.Source`).

    ``register(SqsSource)`` makes the source available as ``igata run --source <name>``
    under its ``name`` and each of its ``aliases``. A source yields
    :class:`igata_core.Envelope` objects and is told, through ``ack``/``nack``, which of
    them were fully written by the sink. See ``docs/writing-a-plugin.md``.

    .. versionadded:: 1
    """


@hookspec
def register_sinks(register: Callable[[type[Sink]], None]) -> None:
    """Register sink classes (subclasses of :class:`igata_core.Sink`).

    ``register(DynamoDbSink)`` makes the sink available as ``igata run --sink <name>``
    under its ``name`` and each of its ``aliases``. A sink receives result records through
    ``put_records`` and must make them durable in ``flush``; only then does igata ack the
    source.

    .. versionadded:: 1
    """


@hookspec
def register_loaders(register: Callable[[type[Loader]], None]) -> None:
    """Register loader classes (subclasses of :class:`igata_core.Loader`).

    A loader resolves URIs of the schemes listed in its ``schemes`` attribute (``"s3"``,
    ``"https"``…) to bytes. Each scheme belongs to exactly one loader. Sources never fetch
    data themselves: they hand URIs to the loader registry.

    .. versionadded:: 1
    """


@hookspec
def register_decoders(register: Callable[[type[Decoder]], None]) -> None:
    """Register decoder classes (subclasses of :class:`igata_core.Decoder`).

    A decoder turns bytes into what the predictor receives (an image into a
    ``numpy.ndarray``, a CSV file into row dicts). It is chosen by the file extensions it
    lists in ``extensions``, or by name when a source or ``--decoder`` asks for it.

    .. versionadded:: 1
    """


@hookspec
def register_predictors(register: Callable[[type[PredictorBase]], None]) -> None:
    """Register packaged predictor classes (subclasses of :class:`igata_core.PredictorBase`).

    For models shipped as packages: ``register(DigitsPredictor)`` makes it selectable as
    ``igata run --predictor <name>`` (its ``name`` attribute) without a module path.

    .. versionadded:: 1
    """


@hookspec
def register_commands(register: Callable[[click.Command], None]) -> None:
    """Register extra ``igata`` subcommands (``click.Command`` or ``click.Group`` objects).

    ``register(dynamodb_group)`` adds ``igata dynamodb …``. Command names are unique like
    component names. Import heavy libraries inside the command's callback.

    .. versionadded:: 1
    """


HOOK_NAMES: tuple[str, ...] = (
    "register_sources",
    "register_sinks",
    "register_loaders",
    "register_decoders",
    "register_predictors",
    "register_commands",
)
