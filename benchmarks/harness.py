"""The benchmark harness: every figure is a ratio against a baseline measured in the same run.

A benchmark module (``benchmarks/bench_<area>.py``) declares functions with
:func:`benchmark`; each returns :class:`Measurement` objects holding repeated samples of
igata and of one or more baselines doing the same work. The runner (``python -m
benchmarks.run``) prints medians, min-max spreads and ratios, and writes JSON (see
``docs/benchmarks.md``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from igata_core.testing.aws import LocalAws

#: Repeats of each sample in full and in ``--quick`` mode.
FULL_REPEATS = 5
QUICK_REPEATS = 2


@dataclass
class Measurement:
    """Repeated samples of igata and of baselines doing the same work, in one unit.

    ``higher_is_better`` says which direction is good for ``unit`` (records/s: True;
    seconds, MB: False); ratios are oriented so that > 1 always means igata is better.
    ``target`` is a note on what figure is expected; ``extra`` holds facts that are not
    samples (e.g. which modules an import pulled in).
    """

    title: str
    unit: str
    igata: list[float]
    baselines: dict[str, list[float]]
    higher_is_better: bool = True
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.igata:
            raise ValueError(f"measurement {self.title!r} has no igata samples")
        for name, samples in self.baselines.items():
            if not samples:
                raise ValueError(f"measurement {self.title!r}: baseline {name!r} has no samples")

    def ratio(self, baseline: str) -> float:
        """igata relative to ``baseline`` by medians, > 1 meaning igata is better."""
        ours = statistics.median(self.igata)
        theirs = statistics.median(self.baselines[baseline])
        numerator, denominator = (ours, theirs) if self.higher_is_better else (theirs, ours)
        if denominator == 0:
            return float("inf") if numerator > 0 else float("nan")
        return numerator / denominator

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "target": self.target,
            "extra": self.extra,
            "igata": summarise(self.igata),
            "baselines": {
                name: {**summarise(samples), "ratio": self.ratio(name)}
                for name, samples in self.baselines.items()
            },
        }


def summarise(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and the raw samples."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": list(samples),
    }


class BenchmarkSkipped(Exception):
    """Raised by a benchmark that cannot run here (a plugin or a tool is missing)."""


@dataclass
class BenchmarkSpec:
    area: str
    title: str
    function: Callable[[BenchContext], list[Measurement]]

    @property
    def name(self) -> str:
        return f"{self.function.__module__}:{self.function.__qualname__}"


#: Every benchmark declared by an imported benchmark module, in declaration order.
REGISTRY: list[BenchmarkSpec] = []


def benchmark(
    area: str, title: str
) -> Callable[[Callable[[BenchContext], list[Measurement]]], Callable[..., list[Measurement]]]:
    """Declare a benchmark of ``area`` (the name given to ``python -m benchmarks.run``)."""

    def register(
        function: Callable[[BenchContext], list[Measurement]],
    ) -> Callable[[BenchContext], list[Measurement]]:
        REGISTRY.append(BenchmarkSpec(area, title, function))
        return function

    return register


class AwsHolder:
    """The run's one local AWS endpoint, started on first use and stopped at the end."""

    def __init__(self) -> None:
        self._aws: LocalAws | None = None
        self._stack = ExitStack()

    @property
    def started(self) -> bool:
        return self._aws is not None

    def get(self) -> LocalAws:
        if self._aws is None:
            from igata_core.testing.aws import local_aws_environment, start_local_aws

            aws = start_local_aws()
            self._stack.callback(aws.stop)
            self._stack.enter_context(local_aws_environment(aws))
            self._aws = aws
        return self._aws

    def reset(self) -> None:
        if self._aws is not None:
            self._aws.reset()

    def close(self) -> None:
        self._stack.close()
        self._aws = None


class BenchContext:
    """What a benchmark function receives.

    ``repeats`` samples per series (``--quick`` lowers it), ``tmp_path`` a fresh directory
    for this benchmark, ``local_aws()`` the run's moto server (this process's environment
    points boto3 at it; emptied before each benchmark).
    """

    def __init__(self, *, repeats: int, quick: bool, tmp_path: Path, aws: AwsHolder):
        self.repeats = repeats
        self.quick = quick
        self.tmp_path = tmp_path
        self._aws = aws

    def local_aws(self) -> LocalAws:
        return self._aws.get()

    def repeat(self, fn: Callable[[], float], *, warmup: int = 0) -> list[float]:
        """``fn()`` called ``repeats`` times (after ``warmup`` discarded calls)."""
        for _ in range(warmup):
            fn()
        return [float(fn()) for _ in range(self.repeats)]

    def repeat_interleaved(
        self, fns: Mapping[str, Callable[[], float]], *, warmup: int = 0
    ) -> dict[str, list[float]]:
        """Each function once per round, ``repeats`` rounds, so drift hits all alike.

        The order inside a round rotates so no series always runs first (cold caches)
        or last.
        """
        names = list(fns)
        for _ in range(warmup):
            for name in names:
                fns[name]()
        samples: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(self.repeats):
            shift = round_index % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                samples[name].append(float(fns[name]()))
        return samples


def iter_area_specs(areas: list[str] | None) -> Iterator[BenchmarkSpec]:
    """Registered benchmarks of ``areas`` (all when None), in declaration order."""
    for spec in REGISTRY:
        if areas is None or spec.area in areas:
            yield spec
