"""Assembling a run from names and options: components, predictor, engine settings.

Everything here is checked before any I/O; every problem is collected and raised at once
as :class:`~igata_core.options.OptionsError` (exit code 2).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from igata_core.components import Component, RunContext, Sink, Source
from igata_core.inputs import ComponentPool, InputReader
from igata_core.options import Option, OptionsError, resolve
from igata_core.pipeline import Settings
from igata_core.plugins import Registry, UnknownComponent
from igata_core.predictor import PredictorBase, PredictorError, load_predictor

#: The original igata's defaults: S3 image input, SQS record output.
DEFAULT_SOURCE = "s3"
DEFAULT_SINK = "sqs"

#: Engine options: ``igata run --NAME`` (dashes), environment, ``[run]`` in the config file.
RUN_OPTIONS: tuple[Option, ...] = (
    Option("concurrency", "int", 8, help="Threads that load and decode inputs.",
           env=("IGATA_CONCURRENCY", "DOWNLOAD_WORKERS"), minimum=1),
    Option("batch_size", "int", 16, help="Records per predictor call (predict_batch).",
           env=("IGATA_BATCH_SIZE",), minimum=1),
    Option("max_batch_wait", "float", 0.05,
           help="Seconds to wait for a batch to fill once its first record is ready.",
           env=("IGATA_MAX_BATCH_WAIT",), minimum=0),
    Option("chunk_size", "int", 15, help="Records per sink put_records call (and flush).",
           env=("RESULT_RECORD_CHUNK_SIZE",), minimum=1),
    Option("flush_interval", "float", 1.0,
           help="Flush when the oldest buffered result has waited this many seconds.",
           env=("IGATA_FLUSH_INTERVAL",), minimum=0.01),
    Option("sink_retry_budget", "float", 60.0,
           help="Seconds to keep retrying a failing sink before stopping with exit code 3.",
           env=("IGATA_SINK_RETRY_BUDGET",), minimum=0),
    Option("load_retry_budget", "float", 60.0,
           help="Seconds to keep retrying loads while the input store (S3…) is unreachable "
           "before stopping with exit code 3.", env=("IGATA_LOAD_RETRY_BUDGET",), minimum=0),
    Option("predict_timeout", "float", None,
           help="Seconds a predict call may take (SIGALRM); a slower call is that "
           "record's error.", env=("IGATA_PREDICT_TIMEOUT",), minimum=0),
    Option("prefetch", "int", 0,
           help="Records loaded ahead of the predictor (0: twice max(concurrency, batch size)).",
           env=("IGATA_PREFETCH",), minimum=0),
    Option("decode_processes", "int", 0,
           help="Load and decode inputs in this many worker processes, arrays handed back "
           "through shared memory (0: in the load threads). For many cores and a fast "
           "model, where the load threads are bound by the interpreter lock.",
           env=("IGATA_DECODE_PROCESSES",), minimum=0),
    Option("decoder", help="Decode every input with this decoder instead of by extension.",
           env=("IGATA_DECODER",)),
    Option("errors", help="Write one JSON line per failed record to this file.",
           env=("IGATA_ERRORS_PATH",)),
)  # fmt: skip


def _source_env(opt: Option) -> list[str]:
    key = opt.name.upper().replace("-", "_")
    return [f"INPUT_CTXMGR_{key}", f"INPUT_CTXMANAGER_{key}"]


def _sink_env(opt: Option) -> list[str]:
    key = opt.name.upper().replace("-", "_")
    return [f"OUTPUT_CTXMGR_{key}"]


def _component_env(component: str) -> Any:
    prefix = "IGATA_" + component.upper().replace("-", "_") + "_"
    return lambda opt: [prefix + opt.name.upper().replace("-", "_")]


def env_names_for(kind: str, component: str) -> Any:
    """The derived environment variable names of a component's options (for ``describe``)."""
    if kind == "source":
        return _source_env
    if kind == "sink":
        return _sink_env
    return _component_env(component)


#: The config file read when none is named (``--config``, ``IGATA_CONFIG``).
DEFAULT_CONFIG = "igata.toml"


def default_config_path(directory: str | os.PathLike[str] = ".") -> str | None:
    """``igata.toml`` in ``directory`` (the working directory) if there is one, else None."""
    path = os.path.join(directory, DEFAULT_CONFIG)
    return path if os.path.isfile(path) else None


def load_config(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read an ``igata.toml``; a missing or malformed file is a usage error."""
    if not path:
        return {}
    import tomllib  # here: most runs have no config file

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise OptionsError([f"config file {path}: not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionsError([f"config file {path}: invalid TOML: {exc}"]) from None


@dataclass
class RunRequest:
    """What the user asked for, before resolution (names or ready-made objects)."""

    source: str | type[Source] | Source | None = None
    sink: str | type[Sink] | Sink | None = None
    predictor: str | type[PredictorBase] | PredictorBase | None = None
    inputs: list[str] = field(default_factory=list)
    source_options: dict[str, Any] = field(default_factory=dict)
    sink_options: dict[str, Any] = field(default_factory=dict)
    loader_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    decoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Assembly:
    source: Source
    sink: Sink
    predictor: PredictorBase
    reader: InputReader
    settings: Settings
    context: RunContext


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def assemble(registry: Registry, request: RunRequest) -> Assembly:
    """Resolve every option and build the components; raises OptionsError with all problems."""
    problems: list[str] = []
    environ = request.environ
    config = request.config
    run_config = dict(config.get("run", {}))
    selection = {k: run_config.pop(k, None) for k in ("source", "sink", "predictor")}

    run_values, run_problems = resolve(
        RUN_OPTIONS, owner="igata run", cli=request.run_options, environ=environ,
        config=run_config, flag="--OPTION",
    )  # fmt: skip
    problems += run_problems
    values = run_values.values
    context = RunContext(
        concurrency=values.get("concurrency") or 8,
        chunk_size=values.get("chunk_size") or 15,
        run_id=new_run_id(),
        prefetch=Settings(
            concurrency=values.get("concurrency") or 8,
            batch_size=values.get("batch_size") or 16,
            prefetch=values.get("prefetch") or 0,
        ).window(),
    )

    # The original read only S3; local paths given without a source mean the files source.
    local = request.inputs and not any("://" in i for i in request.inputs)
    source = _component(
        registry, "source", request.source, environ.get("INPUT_CONTEXT_MANAGER"),
        selection["source"], "files" if local else DEFAULT_SOURCE, _with_inputs(request),
        config.get("source", {}),
        environ, context, problems,
    )  # fmt: skip
    sink = _component(
        registry, "sink", request.sink, environ.get("OUTPUT_CONTEXT_MANAGER"),
        selection["sink"], DEFAULT_SINK, request.sink_options, config.get("sink", {}),
        environ, context, problems,
    )  # fmt: skip
    if request.inputs and isinstance(source, Source) and not _declares(source, "inputs"):
        problems.append(f"source {source.name!r} takes no INPUTS (got {' '.join(request.inputs)})")

    loaders = _pool(registry, "loader", request.loader_options, config.get("loaders", {}),
                    environ, context, problems)  # fmt: skip
    decoders = _pool(registry, "decoder", request.decoder_options, config.get("decoders", {}),
                     environ, context, problems)  # fmt: skip
    decoder = values.get("decoder")
    if decoder and registry.find("decoder", decoder) is None:
        problems.append(
            f"unknown decoder {decoder!r} (installed: {', '.join(registry.names('decoder'))})"
        )

    predictor = None
    try:
        predictor = _predictor(registry, request.predictor or selection["predictor"], environ)
    except PredictorError as exc:
        problems.append(str(exc))

    if problems:
        raise OptionsError(problems)
    assert isinstance(source, Source) and isinstance(sink, Sink) and predictor is not None
    extensions = registry.decoder_extensions()
    settings = Settings(
        concurrency=values["concurrency"],
        batch_size=values["batch_size"],
        max_batch_wait=values["max_batch_wait"],
        chunk_size=values["chunk_size"],
        flush_interval=values["flush_interval"],
        sink_retry_budget=values["sink_retry_budget"],
        load_retry_budget=values["load_retry_budget"],
        predict_timeout=values["predict_timeout"],
        prefetch=values["prefetch"],
        errors_path=values["errors"],
        decode_processes=values["decode_processes"],
    )
    reader = InputReader(loaders, decoders, extensions, default_decoder=decoder)
    return Assembly(source, sink, predictor, reader, settings, context)


def _with_inputs(request: RunRequest) -> dict[str, Any]:
    options = dict(request.source_options)
    if request.inputs:
        options.setdefault("inputs", list(request.inputs))
    return options


def _declares(component: Component, option: str) -> bool:
    return any(opt.name == option for opt in component.options)


def _component(
    registry: Registry,
    kind: str,
    given: Any,
    from_env: str | None,
    from_config: str | None,
    default: str,
    cli: Mapping[str, Any],
    config: Mapping[str, Any],
    environ: Mapping[str, str],
    context: RunContext,
    problems: list[str],
) -> Component | None:
    if isinstance(given, Component):
        return given
    cls: type[Component]
    if isinstance(given, type):
        cls = given
    else:
        name = given or from_env or from_config or default
        try:
            cls = registry.get(kind, name).obj
        except UnknownComponent as exc:
            problems.append(str(exc))
            return None
    flag = f"--{kind}-opt"
    resolved, found = resolve(
        cls.options, owner=f"{kind} {cls.name!r}", cli=cli, environ=environ, config=config,
        extra_env=env_names_for(kind, cls.name), flag=flag,
    )  # fmt: skip
    problems += found
    if found:
        return None
    try:
        return cls(resolved.values, context)
    except Exception as exc:
        problems.append(f"{kind} {cls.name!r}: {exc}")
        return None


def _pool(
    registry: Registry,
    kind: str,
    cli: Mapping[str, Mapping[str, Any]],
    config: Mapping[str, Mapping[str, Any]],
    environ: Mapping[str, str],
    context: RunContext,
    problems: list[str],
) -> ComponentPool:
    """Loaders or decoders, built now so that bad options are reported before any I/O.

    One that lacks a required option is not an error until an input needs it.
    """
    instances = ComponentFactory()
    unavailable: dict[str, str] = dict(registry.clashes_of(kind))
    names = set(registry.names(kind))
    for name in [*cli, *config]:
        if name not in names:
            known = ", ".join(sorted(names))
            problems.append(f"unknown {kind} {name!r} in {kind} options (installed: {known})")
    table = registry.table(kind)
    for registration in registry.registrations(kind):
        cls = registration.obj
        resolved, found = resolve(
            cls.options, owner=f"{kind} {cls.name!r}", cli=cli.get(cls.name, {}),
            environ=environ, config=config.get(cls.name, {}),
            extra_env=env_names_for(kind, cls.name), flag=f"--{kind}-opt {cls.name}.",
            defer_missing=True,
        )  # fmt: skip
        problems += found
        if resolved.missing:
            for key, reg in table.items():
                if reg.obj is cls:
                    unavailable.setdefault(key, "; ".join(resolved.missing))
            continue
        if found:
            continue
        try:
            instances.add(cls, resolved.values, context)
        except Exception as exc:
            problems.append(f"{kind} {cls.name!r}: {exc}")
    classes = {key: reg.obj for key, reg in table.items() if reg.obj in instances}
    return ComponentPool(classes, instances, clashes=unavailable)


class ComponentFactory:
    """Loaders or decoders built from their resolved options.

    Each is built once at assembly, so that a bad option is reported before any I/O. The
    factory pickles as the classes and their options only: a decode process
    (``--decode-processes``) builds its own instances from them.
    """

    def __init__(self) -> None:
        self._recipes: dict[type, tuple[Any, RunContext]] = {}
        self._built: dict[type, Any] = {}

    def add(self, cls: type, values: Any, context: RunContext) -> None:
        self._built[cls] = cls(values, context)
        self._recipes[cls] = (values, context)

    def __contains__(self, cls: object) -> bool:
        return cls in self._recipes

    def __call__(self, cls: type) -> Any:
        built = self._built.pop(cls, None)
        return built if built is not None else cls(*self._recipes[cls])

    def __getstate__(self) -> dict[str, Any]:
        return {"_recipes": self._recipes, "_built": {}}


def _predictor(registry: Registry, given: Any, environ: Mapping[str, str]) -> PredictorBase:
    if isinstance(given, PredictorBase):
        return given
    if isinstance(given, type):
        if not issubclass(given, PredictorBase):
            raise PredictorError(
                f"{given.__qualname__} is not a subclass of igata_core.PredictorBase"
            )
        cls = given
    else:
        registered = {reg.name: reg.obj for reg in registry.registrations("predictor")}
        cls = load_predictor(given, environ=environ, registered=registered)
    try:
        return cls()
    except Exception as exc:
        raise PredictorError(
            f"predictor {cls.__module__}:{cls.__qualname__} could not be created: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def split_dotted(pairs: Iterable[str], what: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Parse ``NAME.KEY=VALUE`` (``--loader-opt s3.allowed_buckets=a,b``)."""
    result: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot or not name.strip() or not option.strip():
            problems.append(f"{what} {pair!r}: expected NAME.KEY=VALUE")
            continue
        result.setdefault(name.strip(), {})[option.strip().replace("-", "_")] = value
    return result, problems
