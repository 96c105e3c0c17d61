"""``run_pipeline``: run a whole pipeline in-process, for tests of plugins and predictors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from igata_core.assembly import RunRequest, assemble
from igata_core.components import ErrorOutcome, Sink, Source
from igata_core.pipeline import Pipeline, RunSummary
from igata_core.plugins import Registry, build_registry
from igata_core.predictor import PredictorBase


@dataclass
class RunResult:
    """What a run did: exit code, summary (as a dict), error outcomes, the components used."""

    exit_code: int
    summary: dict[str, Any]
    outcomes: list[ErrorOutcome] = field(default_factory=list)
    source: Source | None = None
    sink: Sink | None = None
    run_summary: RunSummary | None = None


def run_pipeline(
    source: str | type[Source] | Source,
    sink: str | type[Sink] | Sink,
    predictor: str | type[PredictorBase] | PredictorBase,
    *,
    inputs: Iterable[str] | None = None,
    source_options: Mapping[str, Any] | None = None,
    sink_options: Mapping[str, Any] | None = None,
    loader_options: Mapping[str, Mapping[str, Any]] | None = None,
    decoder_options: Mapping[str, Mapping[str, Any]] | None = None,
    registry: Registry | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> RunResult:
    """Assemble and run a pipeline as ``igata run`` would, in this process.

    ``settings`` are engine options by name (``batch_size=4``, ``chunk_size=2``,
    ``flush_interval=0.1``, ``sink_retry_budget=1``, ``errors="errors.jsonl"``…). Options
    are resolved exactly as for the CLI (given here > environment > defaults); problems
    raise :class:`~igata_core.options.OptionsError`. The predictor's ``setup()`` is called.
    """
    if registry is None:
        registry = build_registry(extra_plugins=extra_plugins)
    if "errors_path" in settings:
        settings["errors"] = settings.pop("errors_path")
    request = RunRequest(
        source=source,
        sink=sink,
        predictor=predictor,
        inputs=list(inputs or []),
        source_options=dict(source_options or {}),
        sink_options=dict(sink_options or {}),
        loader_options={k: dict(v) for k, v in (loader_options or {}).items()},
        decoder_options={k: dict(v) for k, v in (decoder_options or {}).items()},
        run_options=dict(settings),
        environ=dict(os.environ if environ is None else environ),
    )
    assembly = assemble(registry, request)
    assembly.predictor.setup()
    pipeline = Pipeline(
        assembly.source, assembly.sink, assembly.predictor, assembly.reader, assembly.settings
    )
    summary = pipeline.run()
    return RunResult(
        exit_code=summary.exit_code,
        summary=summary.to_dict(),
        outcomes=list(pipeline.outcomes),
        source=assembly.source,
        sink=assembly.sink,
        run_summary=summary,
    )
