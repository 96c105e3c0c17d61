"""Plugin discovery and the component registry.

Entry points of the group ``igata`` are loaded in our own loop, one try/except per plugin,
so that one broken plugin is listed with its error instead of breaking every command.
The core's built-in components register through the same hooks.

Environment:

* ``IGATA_LOAD_PLUGINS``: unset = all; ``''`` = none; ``a,b`` = only those entry points.
* ``IGATA_DISABLED_PLUGINS``: ``a,b`` = skip (and block) those.
* ``IGATA_STRICT_PLUGINS=1``: a broken plugin or a name clash is fatal.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from igata_core import hookspecs
from igata_core.discovery import find_entry_points

log = logging.getLogger("igata.plugins")

HOOK_API_VERSION = 1
ENTRY_POINT_GROUP = "igata"
BUILTIN_PLUGIN = "igata-core"

#: Which distribution provides the well-known components, for "pip install" hints.
KNOWN_PROVIDERS: dict[str, str] = {
    "s3": "igata-s3",
    "s3-csv": "igata-s3",
    "s3-jsonl": "igata-s3",
    "S3BucketImageInputCtxManager": "igata-s3",
    "S3BucketCsvFileOutputCtxManager": "igata-s3",
    "sqs": "igata-sqs",
    "SQSMessageS3InputImageCtxManager": "igata-sqs",
    "SQSMessageS3InputCSVCtxManager": "igata-sqs",
    "sqs-csv": "igata-sqs",
    "SQSRecordOutputCtxManager": "igata-sqs",
    "dynamodb": "igata-dynamodb",
    "DynamodbOutputCtxManager": "igata-dynamodb",
}

KINDS = ("source", "sink", "loader", "decoder", "predictor", "command")
_HOOK_OF_KIND = {
    "source": "register_sources",
    "sink": "register_sinks",
    "loader": "register_loaders",
    "decoder": "register_decoders",
    "predictor": "register_predictors",
    "command": "register_commands",
}


class PluginError(Exception):
    """A plugin could not be loaded or registered something invalid."""


class UnknownComponent(LookupError):
    """No component of that kind and name is registered (message says what to install)."""


@dataclass
class Registration:
    kind: str
    name: str
    obj: Any
    plugin: str
    aliases: tuple[str, ...] = ()


class PluginInfo:
    """A plugin as loaded: its distribution, version, hooks, components, or its error.

    An entry point's distribution and version come with it from discovery (read from the
    distribution's metadata only when the entry-point cache is refreshed); the core's own
    are read on first use, through ``metadata_of``, since only ``igata plugins`` shows them.
    """

    def __init__(
        self,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
        *,
        metadata_of: Callable[[], tuple[str | None, str | None]] | None = None,
    ) -> None:
        self.name = name
        self._distribution = distribution
        self._version = version
        self._metadata_of = metadata_of
        self.hooks: list[str] = []
        self.components: list[str] = []
        self.error: str | None = None

    def _load_metadata(self) -> None:
        if self._metadata_of is not None:
            distribution, version = self._metadata_of()
            self._metadata_of = None
            self._distribution = self._distribution or distribution
            self._version = self._version or version

    @property
    def distribution(self) -> str | None:
        self._load_metadata()
        return self._distribution

    @property
    def version(self) -> str | None:
        self._load_metadata()
        return self._version

    def __repr__(self) -> str:
        return f"PluginInfo({self.name!r}, error={self.error!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "components": self.components,
            "error": self.error,
        }


class Registry:
    """Components by kind and name (aliases included); clashes are recorded, not resolved.

    A kind is filled on first use: ``fill(kind)`` calls the plugins' hooks of that kind
    then, so ``igata run`` never imports the modules behind the plugins' subcommands, and
    ``igata --help`` none behind their sources and sinks. ``plugins`` and ``clashes``
    describe every kind, and fill them all.
    """

    def __init__(self, fill: Callable[[str], None] | None = None) -> None:
        self._by_kind: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        #: kind -> name -> message, for names registered by two plugins.
        self._clashes: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._plugins: dict[str, PluginInfo] = {}
        self._extensions: dict[str, Registration] = {}
        self._fill = fill
        self._filled: set[str] = set()
        self._filling: set[str] = set()
        # Load threads may ask for the first loader at the same moment.
        self._lock = threading.RLock()

    def _kind(self, kind: str) -> dict[str, Registration]:
        if kind not in self._filled:
            with self._lock:
                if kind not in self._filled and kind not in self._filling:
                    self._filling.add(kind)
                    try:
                        if self._fill is not None:
                            self._fill(kind)
                    finally:
                        self._filling.discard(kind)
                        self._filled.add(kind)
        return self._by_kind[kind]

    def complete(self) -> None:
        """Fill every kind (call every plugin's hooks)."""
        for kind in KINDS:
            self._kind(kind)

    @property
    def plugins(self) -> dict[str, PluginInfo]:
        """Every plugin by name, with the hooks it implements and what they registered."""
        self.complete()
        return self._plugins

    @property
    def clashes(self) -> dict[str, dict[str, str]]:
        """kind -> name -> message, for names registered by two plugins (every kind)."""
        self.complete()
        return self._clashes

    def clashes_of(self, kind: str) -> dict[str, str]:
        """name -> message, for the names of one kind registered by two plugins."""
        self._kind(kind)
        return self._clashes[kind]

    def add(self, kind: str, obj: Any, plugin: str) -> None:
        if kind == "command":
            name = getattr(obj, "name", None)
            aliases: tuple[str, ...] = ()
        else:
            name = getattr(obj, "name", None)
            aliases = tuple(getattr(obj, "aliases", ()) or ())
        if not name or not isinstance(name, str):
            raise PluginError(f"plugin {plugin!r} registered a {kind} without a name: {obj!r}")
        keys = [name, *aliases]
        if kind == "loader":
            keys = list(getattr(obj, "schemes", ()) or ())
            if not keys:
                raise PluginError(f"plugin {plugin!r}: loader {name!r} declares no schemes")
        registration = Registration(kind, name, obj, plugin, aliases)
        table = self._by_kind[kind]
        for key in keys:
            existing = table.get(key)
            if existing is not None and existing.obj is not obj:
                what = "scheme" if kind == "loader" else "name"
                message = (
                    f"{kind} {what} {key!r} is registered by both plugin {existing.plugin!r} "
                    f"and plugin {plugin!r}; uninstall or disable one "
                    f"(IGATA_DISABLED_PLUGINS={plugin})"
                )
                self._clashes[kind][key] = message
                log.error("%s", message)
                continue
            table[key] = registration
        if kind == "decoder":
            self._add_extensions(registration)
        info = self._plugins.get(plugin)
        if info is not None:
            info.components.append(f"{kind}:{name}")

    def _add_extensions(self, registration: Registration) -> None:
        for ext in getattr(registration.obj, "extensions", ()) or ():
            existing = self._extensions.get(ext)
            if existing is not None and existing.obj is not registration.obj:
                message = (
                    f"file extension {ext!r} is claimed by decoder {existing.name!r} (plugin "
                    f"{existing.plugin!r}) and decoder {registration.name!r} (plugin "
                    f"{registration.plugin!r}); choose one with --decoder"
                )
                self._clashes["decoder"][ext] = message
                log.error("%s", message)
                continue
            self._extensions[ext] = registration

    def decoder_extensions(self) -> dict[str, str]:
        """File extension -> decoder name (an extension two decoders claim maps to itself,
        and its clash message is in ``clashes["decoder"]``)."""
        self._kind("decoder")
        mapping = {ext: reg.name for ext, reg in self._extensions.items()}
        mapping.update({ext: ext for ext in self._clashes["decoder"] if ext.startswith(".")})
        return mapping

    def get(self, kind: str, name: str) -> Registration:
        table = self._kind(kind)
        clash = self._clashes[kind].get(name)
        if clash:
            raise UnknownComponent(clash)
        try:
            return table[name]
        except KeyError:
            pass
        provider = KNOWN_PROVIDERS.get(name)
        known = ", ".join(self.names(kind)) or "none"
        if provider and kind in ("source", "sink", "loader"):
            broken = self.plugins.get(provider.removeprefix("igata-"))
            if broken is not None and broken.error:
                raise UnknownComponent(
                    f"{kind} {name!r} comes from {provider}, which failed to load: {broken.error}"
                )
            raise UnknownComponent(
                f"{kind} {name!r} is provided by the package {provider}, which is not "
                f"installed: pip install {provider}  (installed {kind}s: {known})"
            )
        failed = "; ".join(f"{i.name}: {i.error}" for i in self.broken)
        hint = f"; plugins that failed to load: {failed}" if failed else ""
        raise UnknownComponent(f"unknown {kind} {name!r} (installed {kind}s: {known}){hint}")

    def find(self, kind: str, name: str) -> Registration | None:
        try:
            return self.get(kind, name)
        except UnknownComponent:
            return None

    def names(self, kind: str) -> list[str]:
        """Primary names (not aliases) of the registered components of a kind."""
        return sorted({reg.name for reg in self._kind(kind).values()})

    def registrations(self, kind: str) -> list[Registration]:
        unique = {id(reg.obj): reg for reg in self._kind(kind).values()}
        return sorted(unique.values(), key=lambda reg: reg.name)

    def table(self, kind: str) -> Mapping[str, Registration]:
        return self._kind(kind)

    @property
    def broken(self) -> list[PluginInfo]:
        return [info for info in self.plugins.values() if info.error]


def _env_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _strict(environ: Mapping[str, str]) -> bool:
    return environ.get("IGATA_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


def _builtin_modules() -> list[ModuleType]:
    from igata_core.builtins import decoders, files, sinks

    return [files, decoders, sinks]


def build_registry(
    *,
    entry_points: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    environ: Mapping[str, str] | None = None,
    fresh: bool = False,
) -> Registry:
    """Load the built-ins, the ``igata`` entry points and ``extra_plugins``; fill a registry.

    ``extra_plugins`` are ``(name, module_or_object)`` pairs registered after the entry
    points, for tests and embedding. The entry points come from a cache checked against
    what is installed (:mod:`igata_core.discovery`); ``fresh=True`` reads them from the
    installed distributions' metadata instead. Raises :class:`PluginError` only in strict
    mode.
    """
    environ = os.environ if environ is None else environ
    strict = _strict(environ)
    pm = pluggy.PluginManager("igata")
    pm.add_hookspecs(hookspecs)
    registry = Registry(fill=lambda kind: _call_hooks(pm, registry, kind, strict))

    registry._plugins[BUILTIN_PLUGIN] = PluginInfo(
        BUILTIN_PLUGIN, "igata-core", metadata_of=lambda: (None, _dist_version("igata-core"))
    )
    for module in _builtin_modules():
        pm.register(module, name=f"{BUILTIN_PLUGIN}:{module.__name__.rsplit('.', 1)[-1]}")

    candidates: list[tuple[str, Callable[[], object], PluginInfo]] = []
    if entry_points:
        only = _env_list(environ.get("IGATA_LOAD_PLUGINS"))
        disabled = set(_env_list(environ.get("IGATA_DISABLED_PLUGINS")) or [])
        for ep in find_entry_points(ENTRY_POINT_GROUP, environ=environ, fresh=fresh):
            if only is not None and ep.name not in only:
                continue
            if ep.name in disabled:
                pm.set_blocked(ep.name)
                continue
            info = PluginInfo(ep.name, ep.dist_name, ep.dist_version)
            candidates.append((ep.name, ep.load, info))
    for name, obj in extra_plugins:
        candidates.append((name, _constant(obj), PluginInfo(name)))

    for name, load, info in candidates:
        registry._plugins[name] = info
        try:
            plugin = load()
            _check_api_version(name, plugin)
            pm.register(plugin, name=name)
            try:
                pm.check_pending()
            except pluggy.PluginValidationError:
                pm.unregister(name=name)
                raise
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            log.warning("plugin %r could not be loaded and is skipped: %s", name, info.error)
            if strict:
                raise PluginError(f"plugin {name!r} failed to load: {info.error}") from exc

    if strict:
        # A plugin developer wants every hook's failure and every clash now, not when a
        # command first needs that kind.
        clashes = [msg for table in registry.clashes.values() for msg in table.values()]
        if clashes:
            raise PluginError("; ".join(clashes))
    return registry


def _call_hooks(pm: pluggy.PluginManager, registry: Registry, kind: str, strict: bool) -> None:
    """Call every plugin's hook of one kind, in plugin-name order, into the registry."""
    hook_name = _HOOK_OF_KIND[kind]
    for impl in sorted(getattr(pm.hook, hook_name).get_hookimpls(), key=lambda i: i.plugin_name):
        plugin_name = impl.plugin_name.split(":", 1)[0]
        owner = registry._plugins.get(plugin_name)
        if owner is not None and hook_name not in owner.hooks:
            owner.hooks.append(hook_name)

        def register(obj: Any, _plugin: str = plugin_name) -> None:
            registry.add(kind, obj, _plugin)

        try:
            impl.function(register=register)
        except Exception as exc:
            error = f"{hook_name} failed: {type(exc).__name__}: {exc}"
            if owner is not None:
                owner.error = error
            log.warning("plugin %r: %s", plugin_name, error)
            if strict:
                raise PluginError(f"plugin {plugin_name!r}: {error}") from exc


def _constant(obj: object) -> Callable[[], object]:
    return lambda: obj


def _check_api_version(name: str, plugin: object) -> None:
    wanted = getattr(plugin, "IGATA_HOOK_API", None)
    if wanted is not None and int(wanted) != HOOK_API_VERSION:
        raise PluginError(
            f"plugin {name!r} was built for igata hook API {wanted}, but this igata-core "
            f"provides hook API {HOOK_API_VERSION}; install a matching version of the plugin"
        )


def _dist_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def heavy_modules_loaded() -> list[str]:
    """The heavy libraries already imported (``igata --help`` must import none)."""
    return [m for m in ("boto3", "botocore", "numpy", "PIL") if m in sys.modules]
