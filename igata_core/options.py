"""Option declarations and their resolution: CLI > environment > config file > default.

Every component (and the engine itself) declares its options as :class:`Option` objects.
The CLI, the environment and a config file all fill the same declaration, and every
problem (unknown name, missing required value, bad type) is collected so that the user
sees all of them at once, before any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


class OptionsError(Exception):
    """One or more options are unknown, missing or ill-typed (exit code 2)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, 1/0, yes/no), got {value!r}")


def parse_list(value: Any) -> list[str]:
    """A comma-separated string (or a list from a config file) as a list of strings."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def parse_int(value: Any) -> int:
    # int() would truncate a config file's 1.5 and accept true as 1.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None


def parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": str,
    "int": parse_int,
    "float": parse_float,
    "bool": parse_bool,
    "list": parse_list,
}


@dataclass(frozen=True)
class Option:
    """One option of a component.

    ``type`` is one of ``str``, ``int``, ``float``, ``bool``, ``list`` (comma-separated).
    ``env`` names the environment variables that set it, in order of preference; the
    original igata's names (``OUTPUT_CTXMGR_SQS_QUEUE_URL``…) belong here. Sources and
    sinks also get ``INPUT_CTXMGR_<NAME>`` / ``OUTPUT_CTXMGR_<NAME>`` automatically.
    """

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    help: str = ""
    env: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in _CONVERTERS:
            raise ValueError(f"option {self.name!r}: unknown type {self.type!r}")

    def convert(self, value: Any) -> Any:
        if value is None:
            return None
        converted = _CONVERTERS[self.type](value)
        if self.choices is not None and converted not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and converted < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, got {value!r}")
        return converted


@dataclass
class ResolvedOptions:
    """The values of a component's options, and where each came from (for ``describe``)."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    #: Missing required options, when their report was deferred (``defer_missing``).
    missing: list[str] = field(default_factory=list)


def parse_assignments(pairs: Iterable[str], what: str) -> tuple[dict[str, str], list[str]]:
    """Parse ``K=V`` strings from the command line; returns values and problems."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(f"{what} {pair!r}: expected KEY=VALUE")
            continue
        values[key.strip().replace("-", "_")] = value
    return values, problems


def resolve(
    declared: Iterable[Option],
    *,
    owner: str,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    extra_env: Callable[[Option], Iterable[str]] | None = None,
    flag: str | None = None,
    defer_missing: bool = False,
) -> tuple[ResolvedOptions, list[str]]:
    """Resolve declared options; returns the values and a list of problems (never raises).

    ``owner`` names the component in messages (``"sink 'dynamodb'"``), ``flag`` the
    command-line way to set one of its options (``"--sink-opt"``). ``extra_env`` adds
    derived environment variable names after the declared ones. With ``defer_missing``,
    missing required options go to ``ResolvedOptions.missing`` instead of the problems
    (a loader that is installed but not used must not fail a run).
    """
    cli = dict(cli or {})
    config = dict(config or {})
    environ = environ or {}
    declared = list(declared)
    known = {opt.name for opt in declared}
    problems: list[str] = []
    for origin, given in (("command line", cli), ("config file", config)):
        for key in given:
            if key not in known:
                hint = f"; known options: {', '.join(sorted(known))}" if known else ""
                problems.append(f"{owner}: unknown option {key!r} ({origin}){hint}")
    resolved = ResolvedOptions()
    for opt in declared:
        raw: Any = None
        origin = "default"
        if cli.get(opt.name) is not None:
            raw, origin = cli[opt.name], "command line"
        else:
            env_names = list(opt.env) + list(extra_env(opt) if extra_env else ())
            for name in env_names:
                if environ.get(name) not in (None, ""):
                    raw, origin = environ[name], f"environment {name}"
                    break
            else:
                if config.get(opt.name) is not None:
                    raw, origin = config[opt.name], "config file"
        if raw is None:
            if opt.required:
                ways = [f"{flag} {opt.name}=VALUE"] if flag else []
                ways += [f"environment {name}" for name in all_env_names(opt, extra_env)]
                how = f" (set it with {' or '.join(ways)})" if ways else ""
                message = f"{owner}: missing required option {opt.name!r}{how}"
                (resolved.missing if defer_missing else problems).append(message)
                continue
            resolved.values[opt.name] = opt.default
            resolved.origins[opt.name] = "default"
            continue
        try:
            resolved.values[opt.name] = opt.convert(raw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{owner}: option {opt.name!r} from {origin}: {exc}")
            continue
        resolved.origins[opt.name] = origin
    return resolved, problems


def all_env_names(
    opt: Option, extra_env: Callable[[Option], Iterable[str]] | None = None
) -> list[str]:
    names = list(opt.env) + list(extra_env(opt) if extra_env else ())
    return list(dict.fromkeys(names))
