"""igata: turn a trained model into a production inference worker.

Plugin authors import everything they need from here::

    from igata_core import hookimpl, Source, Sink, Envelope, Item, Option
"""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("igata")

from igata_core.components import (  # noqa: E402
    RECORD_ID_KEY,
    RECORD_INPUT_KEY,
    Component,
    ConfigurationError,
    Decoder,
    Envelope,
    ErrorOutcome,
    Item,
    Loaded,
    Loader,
    RecordError,
    Rejection,
    RunContext,
    ServiceUnavailable,
    Sink,
    Source,
    digest_identity,
)
from igata_core.options import Option  # noqa: E402
from igata_core.plugins import HOOK_API_VERSION  # noqa: E402
from igata_core.predictor import PredictorBase  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "HOOK_API_VERSION",
    "RECORD_ID_KEY",
    "RECORD_INPUT_KEY",
    "Component",
    "ConfigurationError",
    "Decoder",
    "Envelope",
    "ErrorOutcome",
    "Item",
    "Loaded",
    "Loader",
    "Option",
    "PredictorBase",
    "RecordError",
    "Rejection",
    "RunContext",
    "ServiceUnavailable",
    "Sink",
    "Source",
    "__version__",
    "digest_identity",
    "hookimpl",
]
