"""The ``igata`` command: ``run``, ``plugins``, ``describe`` and plugins' own commands."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
from typing import Any

import click

from igata_core.options import OptionsError, all_env_names, parse_assignments
from igata_core.plugins import KINDS, PluginError, Registry, build_registry

log = logging.getLogger("igata")

_registry: Registry | None = None


def get_registry(*, fresh: bool = False) -> Registry:
    """The registry of this process, built on first use (plugins are imported then).

    ``fresh``: find the plugins from the installed distributions' metadata, not from the
    entry-point cache (``igata plugins`` shows what is installed, and refreshes the cache).
    """
    global _registry
    if _registry is None:
        _registry = build_registry(fresh=fresh)
    return _registry


class PluginsFailed(click.ClickException):
    """A broken plugin in strict mode (``IGATA_STRICT_PLUGINS=1``): a usage error."""

    exit_code = 2


class IgataGroup(click.Group):
    """Adds the commands that plugins register, looked up lazily."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        try:
            registry = get_registry()
        except PluginError as exc:
            raise PluginsFailed(str(exc)) from exc
        return {reg.name: reg.obj for reg in registry.registrations("command")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = sorted({*super().list_commands(ctx), *_LAZY_CORE_COMMANDS})
        return own + sorted(set(self._plugin_commands()) - set(own))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        if cmd_name in _LAZY_CORE_COMMANDS:
            from pkgutil import resolve_name

            command = resolve_name(_LAZY_CORE_COMMANDS[cmd_name])
            self.add_command(command, cmd_name)
            return command
        return self._plugin_commands().get(cmd_name)


#: Core commands whose modules are imported only when they run or --help lists them
#: (igata_core.scaffold holds the plugin templates: ~1 ms that a run need not pay).
_LAZY_CORE_COMMANDS = {"new-plugin": "igata_core.scaffold:new_plugin"}


@click.group(cls=IgataGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="igata-core", prog_name="igata")
@click.option("-v", "--verbose", count=True, help="More log output (DEBUG).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="IGATA_LOG_FORMAT",
    show_default=True,
    help="Log line format on standard error (env IGATA_LOG_FORMAT).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, log_format: str) -> None:
    """igata: run a trained model as an inference worker.

    Inputs come from a source (local files, S3, SQS), go through your Predictor, and the
    results go to a sink (JSONL/CSV files, SQS, S3, DynamoDB). Log level from LOG_LEVEL.
    """
    from igata_core.logs import level_from, setup_logging

    setup_logging(level_from(verbose, quiet), log_format)
    ctx.obj = {"quiet": quiet}


def _run_option(name: str, help_text: str, type_: Any) -> Any:
    from igata_core.assembly import RUN_OPTIONS

    opt = next(o for o in RUN_OPTIONS if o.name == name)
    env = ", ".join(opt.env)
    default = f"; default {opt.default}" if opt.default not in (None, 0, "") else ""
    # Taken as text and converted by the declaration in RUN_OPTIONS, so that a bad value
    # is reported together with every other problem instead of alone by click.
    return click.option(
        "--" + name.replace("_", "-"),
        name,
        type=str,
        metavar={int: "INTEGER", float: "FLOAT"}.get(type_, "TEXT"),
        default=None,
        help=f"{help_text} (env {env}{default})",
    )


@cli.command()
@click.argument("inputs", nargs=-1)
@click.option("--source", "-s", help="Source name or alias (env INPUT_CONTEXT_MANAGER; default s3, "
              "or files when every INPUT is a local path).")  # fmt: skip
@click.option("--sink", "-o", help="Sink name or alias (env OUTPUT_CONTEXT_MANAGER; default sqs).")
@click.option("--predictor", "-p", help="module:Class, a module (class PREDICTOR_CLASS_NAME, "
              "default Predictor) or a registered predictor (env PREDICTOR_MODULE).")  # fmt: skip
@click.option("--source-opt", multiple=True, metavar="K=V", help="A source option (repeatable).")
@click.option("--sink-opt", multiple=True, metavar="K=V", help="A sink option (repeatable).")
@click.option("--loader-opt", multiple=True, metavar="NAME.K=V",
              help="A loader option, e.g. s3.allowed_buckets=a,b (repeatable).")  # fmt: skip
@click.option("--decoder-opt", multiple=True, metavar="NAME.K=V",
              help="A decoder option, e.g. image.max_image_pixels=0 (repeatable).")  # fmt: skip
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="IGATA_CONFIG",
              help="A TOML config file ([run], [source], [sink], [loaders.NAME], "
              "[decoders.NAME]); env IGATA_CONFIG; default: igata.toml in the working "
              "directory, if there is one.")  # fmt: skip
@click.option("--app-dir", default=None, show_default="the working directory",
              envvar="IGATA_APP_DIR",
              help="Directory put first on the import path, so that --predictor / "
              "PREDICTOR_MODULE find a module there (e.g. mymodel.py); '' to import only "
              "installed modules (env IGATA_APP_DIR).")  # fmt: skip
@_run_option("concurrency", "Threads loading and decoding inputs", int)
@_run_option("batch_size", "Records per predictor call", int)
@_run_option("max_batch_wait", "Seconds to wait for a batch to fill", float)
@_run_option("chunk_size", "Records per sink write", int)
@_run_option("flush_interval", "Flush when the oldest buffered result is this old (s)", float)
@_run_option("sink_retry_budget", "Seconds to retry a failing sink, then exit 3", float)
@_run_option("load_retry_budget", "Seconds to retry loads while the input store is down", float)
@_run_option("predict_timeout", "Seconds one predict call may take", float)
@_run_option("prefetch", "Records loaded ahead of the predictor", int)
@_run_option(
    "decode_processes",
    "Worker processes that load and decode inputs, arrays "
    "back through shared memory (0: in the load threads)",
    int,
)
@_run_option("decoder", "Decode all inputs with this decoder", str)
@_run_option("errors", "Write failed records as JSON lines to this file", str)
@click.option("--metrics-port", type=click.IntRange(0, 65535), envvar="IGATA_METRICS_PORT",
              help="Serve Prometheus /metrics and the /healthz and /readyz probes on this "
              "port (needs igata-core[metrics]; env IGATA_METRICS_PORT).")  # fmt: skip
@click.option("--metrics-host", default="0.0.0.0", show_default=True,
              envvar="IGATA_METRICS_HOST", help="Address the metrics port binds to "
              "(env IGATA_METRICS_HOST).")  # fmt: skip
@click.pass_context
def run(ctx: click.Context, inputs: tuple[str, ...], **kwargs: Any) -> None:
    """Run a pipeline: read INPUTS (or a queue) with the source, predict, write to the sink.

    \b
    Examples:
      igata run --source files --sink jsonl --sink-opt path=out.jsonl \\
                --predictor mymodel:Predictor images/
      igata run --source sqs --sink dynamodb --predictor mymodel:Predictor
      PREDICTOR_MODULE=mymodel OUTPUT_CTXMGR_SQS_QUEUE_URL=... igata run s3://bucket/x.jpg

    Exit codes: 0 done, 1 some records failed (finite inputs), 2 usage or configuration
    error, 3 a sink or the input service stayed unavailable, 4 a fatal error in the
    predictor or a component (SystemExit, KeyboardInterrupt).
    """
    from igata_core.assembly import (
        RunRequest,
        assemble,
        default_config_path,
        load_config,
        split_dotted,
    )
    from igata_core.pipeline import Pipeline

    problems: list[str] = []
    source_opts, found = parse_assignments(kwargs.pop("source_opt"), "--source-opt")
    problems += found
    sink_opts, found = parse_assignments(kwargs.pop("sink_opt"), "--sink-opt")
    problems += found
    loader_opts, found = split_dotted(kwargs.pop("loader_opt"), "--loader-opt")
    problems += found
    decoder_opts, found = split_dotted(kwargs.pop("decoder_opt"), "--decoder-opt")
    problems += found
    source, sink, predictor = kwargs.pop("source"), kwargs.pop("sink"), kwargs.pop("predictor")
    config_path = kwargs.pop("config_path")
    metrics_port, metrics_host = kwargs.pop("metrics_port"), kwargs.pop("metrics_host")
    _add_app_dir(kwargs.pop("app_dir"))
    try:
        if problems:
            raise OptionsError(problems)
        config = load_config(config_path or default_config_path())
        request = RunRequest(
            source=source,
            sink=sink,
            predictor=predictor,
            inputs=list(inputs),
            source_options=source_opts,
            sink_options=sink_opts,
            loader_options=loader_opts,
            decoder_options=decoder_opts,
            run_options={k: v for k, v in kwargs.items() if v is not None},
            config=config,
            environ=dict(os.environ),
        )
        assembly = assemble(get_registry(), request)
    except OptionsError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        ctx.exit(2)
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)

    predictor_obj = assembly.predictor
    stopper = _install_signal_handlers()
    try:
        predictor_obj.setup()
    except Exception as exc:
        log.debug("setup failed", exc_info=True)
        click.echo(
            f"error: predictor {type(predictor_obj).__name__}.setup() failed: "
            f"{type(exc).__name__}: {exc}",
            err=True,
        )
        ctx.exit(2)

    from igata_core.progress import Progress

    metrics, health, server = _metrics_server(ctx, metrics_port, metrics_host, assembly)
    progress = Progress(assembly.source, enabled=not ctx.obj.get("quiet"))
    pipeline = Pipeline(
        assembly.source,
        assembly.sink,
        predictor_obj,
        assembly.reader,
        assembly.settings,
        on_progress=progress.update,
        metrics=metrics,
        health=health,
    )
    stopper.attach(pipeline)
    log.info(
        "run %s: source %s -> predictor %s -> sink %s",
        assembly.context.run_id, assembly.source.name, type(predictor_obj).__name__,
        assembly.sink.name,
    )  # fmt: skip
    try:
        summary = pipeline.run()
    finally:
        if server is not None:
            server.close()
    progress.finish()
    level = logging.INFO if summary.exit_code == 0 else logging.WARNING
    # A rate over a handful of records or a fraction of a second says nothing.
    rate = (
        f" ({summary.records_per_second:.1f} records/s)"
        if summary.succeeded >= 10 and summary.seconds >= 1.0
        else ""
    )
    log.log(
        level,
        "summary: read %d, succeeded %d, failed %d, written %d in %.1f s%s%s%s",
        summary.read, summary.succeeded, summary.failed, summary.written, summary.seconds,
        rate, "; interrupted" if summary.interrupted else "",
        f"; exit {summary.exit_code}: {summary.reason}" if summary.exit_code else "",
    )  # fmt: skip
    if summary.exit_code in _WHAT_TO_DO:
        log.log(level, "what to do: %s", _WHAT_TO_DO[summary.exit_code])
    if summary.failed_by_stage:
        log.log(level, "failed by stage: %s", json.dumps(summary.failed_by_stage, sort_keys=True))
    ctx.exit(summary.exit_code)


#: The next step for each failing exit code, logged after the summary.
_WHAT_TO_DO = {
    1: "the failed records are listed above (and in --errors PATH if given); fix the inputs "
    "or the predictor and run those again",
    2: "fix the configuration named above (option, environment variable, or the resource it "
    "names) and run again; restarting as is fails the same way",
    3: "check that the service named above is reachable (endpoint, network, credentials) and "
    "run again; nothing unwritten was acknowledged, so queued input is redelivered",
    4: "fix the predictor or component named above; what was written is acknowledged, the "
    "rest was handed back to the queue",
}


def _add_app_dir(app_dir: str | None) -> None:
    """Put ``app_dir`` first on the import path, as uvicorn and gunicorn do (``python -m``
    does it for the working directory; an installed ``igata`` script does not)."""
    if app_dir is None:
        # Click reads an empty IGATA_APP_DIR as unset; here '' turns it off, as --app-dir ''.
        app_dir = os.environ.get("IGATA_APP_DIR", ".")
    if not app_dir:
        return
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)


def _metrics_server(ctx: click.Context, port: int | None, host: str, assembly: Any) -> Any:
    """Metrics, health and their HTTP server when ``--metrics-port`` is given."""
    from igata_core.metrics import Health

    stuck_after = max(300.0, 2 * (assembly.settings.predict_timeout or 0))
    health = Health(stuck_after=stuck_after)
    if port is None:
        return None, health, None
    try:
        from igata_core.metrics import MetricsServer, PrometheusMetrics

        metrics = PrometheusMetrics()
        server = MetricsServer(host, port, metrics, health).start()
    except ImportError:
        click.echo(
            "error: --metrics-port needs prometheus-client: pip install 'igata-core[metrics]'",
            err=True,
        )
        ctx.exit(2)
    except OSError as exc:
        click.echo(f"error: --metrics-port {port}: cannot listen on {host}: {exc}", err=True)
        ctx.exit(2)
    log.info("metrics and probes on http://%s:%d (/metrics, /healthz, /readyz)", host, server.port)
    return metrics, health, server


class _Stopper:
    """SIGINT/SIGTERM: the first stops the run gracefully, a second exits at once.

    Installed before the model loads, so a stop during a slow ``setup()`` is not ignored
    (as PID 1 in a container, an unhandled SIGTERM would be).
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.pipeline: Any = None

    def attach(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        if self.received:
            pipeline.stop(self.received[0])

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received:
            # Second signal: leave at once; the source redelivers whatever was not acked.
            os._exit(128 + signum)
        self.received.append(signum)
        name = signal.Signals(signum).name
        if self.pipeline is None:
            # Nothing read yet: nothing to finish.
            log.warning("%s received while starting: exiting", name)
            os._exit(128 + signum)
        log.warning(
            "%s received: finishing in-flight work, then exiting (send again to exit at once)",
            name,
        )
        self.pipeline.stop(signum)


def _install_signal_handlers() -> _Stopper:
    stopper = _Stopper()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopper)
    return stopper


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions, hooks and components, and broken ones."""
    registry = get_registry(fresh=True)
    infos = list(registry.plugins.values())
    if as_json:
        data = {
            "plugins": [info.to_dict() for info in infos],
            "components": {
                kind: [
                    {"name": reg.name, "aliases": list(reg.aliases), "plugin": reg.plugin}
                    for reg in registry.registrations(kind)
                ]
                for kind in KINDS
            },
            "clashes": [msg for table in registry.clashes.values() for msg in table.values()],
        }
        click.echo(json.dumps(data, indent=2))
        return
    for info in infos:
        version = info.version or "?"
        click.echo(
            f"{info.name} {version}" + (f" ({info.distribution})" if info.distribution else "")
        )
        if info.error:
            click.echo(f"  BROKEN: {info.error}")
            continue
        if info.hooks:
            click.echo(f"  hooks: {', '.join(info.hooks)}")
        for component in info.components:
            click.echo(f"  {component}")
    for table in registry.clashes.values():
        for message in table.values():
            click.echo(f"CLASH: {message}")


@cli.command()
@click.argument("name")
@click.option("--kind", type=click.Choice([k for k in KINDS if k not in ("command",)]),
              help="Which kind of component, when a name is used by several kinds.")  # fmt: skip
def describe(name: str, kind: str | None) -> None:
    """Show a component's description and options with their environment variables."""
    from igata_core.assembly import env_names_for

    registry = get_registry()
    kinds = [kind] if kind else [k for k in KINDS if k != "command"]
    found = [(k, reg) for k in kinds if (reg := registry.find(k, name)) is not None]
    if not found:
        from igata_core.plugins import KNOWN_PROVIDERS

        provider = KNOWN_PROVIDERS.get(name)
        if provider is not None:
            raise click.ClickException(
                f"{name!r} is provided by the package {provider}, which is not installed: "
                f"pip install {provider}"
            )
        raise click.ClickException(
            f"no component named {name!r}; see 'igata plugins' for what is installed"
        )
    for index, (component_kind, reg) in enumerate(found):
        if index:
            click.echo()
        cls = reg.obj
        click.echo(f"{component_kind} {reg.name} (plugin {reg.plugin})")
        description = getattr(cls, "description", "") or (cls.__doc__ or "").strip().split("\n")[0]
        if description:
            click.echo(f"  {description}")
        if reg.aliases:
            click.echo(f"  aliases: {', '.join(reg.aliases)}")
        if getattr(cls, "schemes", ()):
            click.echo(f"  schemes: {', '.join(cls.schemes)}")
        if getattr(cls, "extensions", ()):
            click.echo(f"  extensions: {', '.join(cls.extensions)}")
        options = getattr(cls, "options", ())
        if not options:
            click.echo("  options: none")
            continue
        click.echo("  options:")
        for opt in options:
            flags = "required" if opt.required else f"default {opt.default!r}"
            click.echo(f"    {opt.name} ({opt.type}, {flags})")
            if opt.help:
                click.echo(f"        {opt.help}")
            envs = all_env_names(opt, env_names_for(component_kind, cls.name))
            if envs:
                click.echo(f"        env: {', '.join(envs)}")


def main() -> None:
    """The ``igata`` command (a process of its own; embedders call :data:`cli`)."""
    try:
        cli(prog_name="igata")
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        # The process is about to end: nothing it holds needs the collector any more, and
        # its last full collection at exit would walk every module, plugin and model object
        # (about 13 ms of a one-image run with every plugin installed). Frozen here, at the
        # very end, it leaks nothing that could have been reclaimed during the run.
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
