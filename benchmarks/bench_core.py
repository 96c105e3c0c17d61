"""The core's figures: engine overhead, batching, memory, start-up."""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchContext, Measurement, benchmark
from benchmarks.images import decode_rgb, read_decode, write_jpeg_dir, write_png_dir
from benchmarks.predictors import (
    BatchedMlpPredictor,
    MeanColourPredictor,
    MlpPredictor,
    NoopBatchedPredictor,
    NoopPredictor,
)
from benchmarks.subprocesses import (
    HEAVY_MODULES,
    compile_sources,
    igata_command,
    imported_modules,
    peak_rss_mb,
    wall_time,
)
from igata_core.components import Envelope, Item, Source

REPO = Path(__file__).resolve().parents[1]


def _engine_rate(
    directory: Path, n: int, predictor: type, registry: Any, **settings: Any
) -> Callable[[], float]:
    """One in-process run files -> predictor -> null sink, as records per second."""
    from igata_core.testing import run_pipeline

    def run() -> float:
        started = time.perf_counter()
        result = run_pipeline(
            "files", "null", predictor, inputs=[str(directory)], registry=registry, **settings
        )
        elapsed = time.perf_counter() - started
        if result.exit_code != 0 or result.summary["succeeded"] != n:
            raise RuntimeError(f"benchmark run went wrong: {result.summary}")
        return n / elapsed

    return run


@benchmark("core", "engine overhead: files -> no-op predictor -> null sink")
def engine_overhead(ctx: BenchContext) -> list[Measurement]:
    from igata_core.plugins import build_registry

    n = 1000
    paths = write_png_dir(ctx.tmp_path / "images", n)

    def loop() -> float:
        started = time.perf_counter()
        for path in paths:
            decode_rgb(path.read_bytes())
        return n / (time.perf_counter() - started)

    def pool() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as executor:
            for _ in executor.map(lambda p: decode_rgb(p.read_bytes()), paths):
                pass
        return n / (time.perf_counter() - started)

    registry = build_registry()
    samples = ctx.repeat_interleaved(
        {
            "igata": _engine_rate(ctx.tmp_path / "images", n, NoopPredictor, registry),
            "plain loop: read + Pillow -> numpy": loop,
            "ThreadPoolExecutor(8): same work": pool,
        },
        warmup=1,
    )
    return [
        Measurement(
            title=f"engine overhead: {n:,} 32x32 PNGs, no-op predictor, null sink",
            unit="records/s",
            igata=samples.pop("igata"),
            baselines=samples,
            target="close to the plain loop (the engine adds little per record)",
        )
    ]


class _RecordsSource(Source):
    """``n`` in-memory records, one per envelope: nothing to read or decode."""

    name = "bench-records"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def envelopes(self) -> Iterator[Envelope]:
        for i in range(self.n):
            yield Envelope(f"record-{i}", [Item(f"id-{i}", data=i)])


@benchmark("core", "engine cost per record: in-memory records -> no-op batched model -> null")
def engine_cost(ctx: BenchContext) -> list[Measurement]:
    """What the engine itself costs a record, with every delivery rule in force (ack after
    flush, per-record failure isolation, bounded prefetch): the records need no loading,
    the model does nothing, the sink keeps nothing."""
    from igata_core.plugins import build_registry
    from igata_core.testing import run_pipeline

    n, batch_size = 5000, 32
    registry = build_registry()
    records = list(range(n))

    def igata() -> float:
        started = time.perf_counter()
        result = run_pipeline(
            _RecordsSource(n), "null", NoopBatchedPredictor, registry=registry, environ={},
            batch_size=batch_size,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        if result.exit_code != 0 or result.summary["succeeded"] != n:
            raise RuntimeError(f"benchmark run went wrong: {result.summary}")
        return elapsed / n * 1e6

    def threads() -> float:
        # The same three stages as threads joined by queue.Queue, with none of the engine's
        # rules: a producer, the model by batches on this thread, a writer that drops.
        started = time.perf_counter()
        model = NoopBatchedPredictor()
        taken: queue.Queue[int | None] = queue.Queue(64)
        written: queue.Queue[list[Any] | None] = queue.Queue(64)

        def produce() -> None:
            for record in records:
                taken.put(record)
            taken.put(None)

        def write() -> None:
            while written.get() is not None:
                pass

        workers = [threading.Thread(target=produce), threading.Thread(target=write)]
        for worker in workers:
            worker.start()
        batch: list[int] = []
        while (record := taken.get()) is not None:
            batch.append(record)
            if len(batch) == batch_size:
                written.put(model.predict_batch(batch, [{}] * len(batch)))
                batch = []
        if batch:
            written.put(model.predict_batch(batch, [{}] * len(batch)))
        written.put(None)
        for worker in workers:
            worker.join()
        return (time.perf_counter() - started) / n * 1e6

    samples = ctx.repeat_interleaved(
        {"igata": igata, "producer, model and writer threads with queue.Queue": threads},
        warmup=1,
    )
    return [
        Measurement(
            title=f"engine cost per record: {n:,} in-memory records, no-op batched model "
            f"({batch_size}), null sink",
            unit="µs per record",
            igata=samples.pop("igata"),
            baselines=samples,
            higher_is_better=False,
            target="<= 50 µs per record (issue 14)",
        )
    ]


@benchmark("core", "small records: files -> batched model -> jsonl against a sequential loop")
def small_records(ctx: BenchContext) -> list[Measurement]:
    """The engine's cost per record where it is largest next to the work: tiny images."""
    import json

    from igata_core.plugins import build_registry
    from igata_core.testing import run_pipeline

    n, batch_size = 2000, 32
    directory = ctx.tmp_path / "images"
    paths = write_png_dir(directory, n)
    output = ctx.tmp_path / "out.jsonl"
    registry = build_registry()

    def igata() -> float:
        started = time.perf_counter()
        result = run_pipeline(
            "files", "jsonl", BatchedMlpPredictor, inputs=[str(directory)],
            sink_options={"path": str(output)}, registry=registry, batch_size=batch_size,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        if result.exit_code != 0 or result.summary["written"] != n:
            raise RuntimeError(f"benchmark run went wrong: {result.summary}")
        return n / elapsed

    def loop() -> float:
        # The same work one step after another: list, read, decode, predict by batches,
        # one JSON line per record with the same fields, fsync and rename at the end.
        started = time.perf_counter()
        model = BatchedMlpPredictor()
        model.setup()
        names = sorted(str(p) for p in directory.iterdir() if p.suffix == ".png")
        partial = output.with_suffix(".part")
        with open(partial, "w", encoding="utf-8") as out:
            for i in range(0, len(names), batch_size):
                chunk = names[i : i + batch_size]
                datas = [Path(name).read_bytes() for name in chunk]
                arrays = [decode_rgb(data) for data in datas]
                predictions = model.predict_batch(arrays, [{}] * len(chunk))
                for name, data, prediction in zip(chunk, datas, predictions, strict=True):
                    record = {**prediction, "path": name, "size": len(data),
                              "igata_id": Path(name).as_uri(), "igata_input": name}  # fmt: skip
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, output)
        if sum(1 for _ in output.open()) != n:
            raise RuntimeError("the loop wrote the wrong number of lines")
        return n / (time.perf_counter() - started)

    with _one_blas_thread() as blas:
        samples = ctx.repeat_interleaved(
            {"igata": igata, "plain sequential loop: same reads, decodes, batches, lines": loop},
            warmup=1,
        )
    return [
        Measurement(
            title=f"small records: {n:,} 32x32 PNGs, batched MLP ({batch_size}), jsonl sink",
            unit="records/s",
            igata=samples.pop("igata"),
            baselines=samples,
            target=">= 0.8x the sequential loop (issue 14)",
            extra={"BLAS threads": blas, "images": len(paths)},
        )
    ]


@benchmark("core", "decoding: 224 px JPEGs -> null sink against thread-pool and process-pool loops")
def decoding(ctx: BenchContext) -> list[Measurement]:
    """Where decoding is the work: igata's load threads, and its decode processes, against
    the two usual hand-written loops (a thread pool; a torch-DataLoader-style process pool
    with ``imap``), each feeding the same trivial batched model."""
    import multiprocessing

    from igata_core.plugins import build_registry
    from igata_core.testing import run_pipeline

    n, batch_size = (500 if ctx.quick else 2000), 32
    processes = os.cpu_count() or 1
    directory = ctx.tmp_path / "jpegs"
    names = [str(p) for p in write_jpeg_dir(directory, n)]
    registry = build_registry()
    model = MeanColourPredictor()

    def igata(**settings: Any) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            result = run_pipeline(
                "files", "null", MeanColourPredictor, inputs=[str(directory)],
                registry=registry, batch_size=batch_size, **settings,
            )  # fmt: skip
            if result.exit_code != 0 or result.summary["succeeded"] != n:
                raise RuntimeError(f"benchmark run went wrong: {result.summary}")
            return n / (time.perf_counter() - started)

        return run

    def consume(arrays: Iterator[Any]) -> None:
        batch: list[Any] = []
        for array in arrays:
            batch.append(array)
            if len(batch) == batch_size:
                model.predict_batch(batch, [{}] * len(batch))
                batch = []
        if batch:
            model.predict_batch(batch, [{}] * len(batch))

    def thread_pool() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as executor:
            consume(executor.map(read_decode, names))
        return n / (time.perf_counter() - started)

    def process_pool() -> float:
        # As torch's DataLoader does it: forked workers, results pickled back in order.
        started = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            consume(pool.imap(read_decode, names, chunksize=16))
        return n / (time.perf_counter() - started)

    loops = {
        "ThreadPoolExecutor(8) loop": thread_pool,
        f"multiprocessing.Pool({processes}).imap loop": process_pool,
    }
    samples = ctx.repeat_interleaved(
        {
            "igata": igata(),
            "igata --decode-processes": igata(decode_processes=processes),
            **loops,
        },
        warmup=1,
    )
    threads, in_processes = samples.pop("igata"), samples.pop("igata --decode-processes")
    return [
        Measurement(
            title=f"decoding: {n:,} 224 px JPEGs, load threads (the default), null sink",
            unit="records/s",
            igata=threads,
            baselines=dict(samples),
            target=">= 0.95x the better loop (issue 14)",
            extra={"cores": processes},
        ),
        Measurement(
            title=f"decoding: {n:,} 224 px JPEGs, --decode-processes {processes}, null sink",
            unit="records/s",
            igata=in_processes,
            baselines=dict(samples),
            target="the default is whichever of the two is faster here",
            extra={"cores": processes},
        ),
    ]


@benchmark("core", "batching: predict_batch against per-record predict, both through igata")
def batching(ctx: BenchContext) -> list[Measurement]:
    from igata_core.plugins import build_registry

    n = 1000
    directory = ctx.tmp_path / "images"
    paths = write_png_dir(directory, n)
    registry = build_registry()
    with _one_blas_thread() as blas:
        ceiling = _model_alone([decode_rgb(p.read_bytes()) for p in paths], batch_size=32)
        samples = ctx.repeat_interleaved(
            {
                "igata": _engine_rate(directory, n, BatchedMlpPredictor, registry, batch_size=32),
                "per-record predict": _engine_rate(
                    directory, n, MlpPredictor, registry, batch_size=32
                ),
            },
            warmup=1,
        )
    return [
        Measurement(
            title=f"batching: MLP 3072-256-10 on {n:,} 32x32 PNGs, predict_batch (32)",
            unit="records/s",
            igata=samples.pop("igata"),
            baselines=samples,
            target="> 1: one vectorised call per batch beats a call per record",
            extra={
                "BLAS threads": blas,
                "model alone on decoded arrays (records/s)": (
                    f"per record {ceiling['per record']:,.0f}, batched {ceiling['batched']:,.0f}"
                ),
            },
        )
    ]


@contextmanager
def _one_blas_thread() -> Iterator[str]:
    """Single-threaded BLAS for the block, when threadpoolctl is there to set it.

    OpenBLAS's worker threads spin while they wait; next to igata's loader threads on a
    small machine they slow a tiny matmul down tenfold, and the figure would measure that
    contention instead of batching.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "library default (threadpoolctl not installed)"
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield "1 (threadpoolctl)"


def _model_alone(arrays: list[Any], batch_size: int) -> dict[str, float]:
    """The model's own speed without igata, per record and batched (best of 3)."""
    per_record, batched = MlpPredictor(), BatchedMlpPredictor()
    per_record.setup()
    batched.setup()
    n = len(arrays)

    def time_per_record() -> float:
        started = time.perf_counter()
        for array in arrays:
            per_record.predict(array, {})
        return n / (time.perf_counter() - started)

    def time_batched() -> float:
        started = time.perf_counter()
        for i in range(0, n, batch_size):
            chunk = arrays[i : i + batch_size]
            batched.predict_batch(chunk, [{}] * len(chunk))
        return n / (time.perf_counter() - started)

    return {
        "per record": max(time_per_record() for _ in range(3)),
        "batched": max(time_batched() for _ in range(3)),
    }


@benchmark("core", "memory: peak RSS of igata run over 10x more images")
def memory(ctx: BenchContext) -> list[Measurement]:
    small, large = 1000, 10_000
    write_png_dir(ctx.tmp_path / "small", small)
    write_png_dir(ctx.tmp_path / "large", large)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }

    def igata_run(directory: Path) -> Callable[[], float]:
        predictor = "benchmarks.predictors:NoopPredictor"
        command = [*igata_command(), "-q", "run", "--source", "files", "--sink", "null",
                   "--predictor", predictor, str(directory)]  # fmt: skip
        return lambda: peak_rss_mb(command, env=env)

    floor = [sys.executable, "-c", "import numpy, PIL.Image, igata_core.pipeline"]
    # Peak memory varies little between runs; three samples show the spread.
    repeats = ctx.repeats
    ctx.repeats = min(repeats, 3)
    try:
        samples = ctx.repeat_interleaved(
            {
                "igata": igata_run(ctx.tmp_path / "large"),
                f"igata over {small:,} images": igata_run(ctx.tmp_path / "small"),
                "interpreter + numpy + Pillow + engine imported": (
                    lambda: peak_rss_mb(floor, env=env)
                ),
            }
        )
    finally:
        ctx.repeats = repeats
    return [
        Measurement(
            title=f"memory: peak RSS, igata run over {large:,} PNGs (null sink)",
            unit="MiB",
            igata=samples.pop("igata"),
            baselines=samples,
            higher_is_better=False,
            target=f"ratio to {small:,} images >= 0.9 (memory does not grow with input count)",
        )
    ]


_FRAMEWORK_IMPORTS = """\
import click, pluggy
"""

_PLAIN_FIRST_RECORD = """\
import json, sys
import numpy as np
from PIL import Image
sys.path.insert(0, {repo!r})
from benchmarks.predictors import BatchedMlpPredictor
model = BatchedMlpPredictor()
model.setup()
with open({image!r}, "rb") as handle, Image.open(handle) as img:
    array = np.asarray(img.convert("RGB"), dtype=np.uint8)
with open({out!r}, "w") as out:
    out.write(json.dumps(model.predict_batch([array], [{{}}])[0]) + "\\n")
"""


@benchmark("core", "start-up: igata run to its first record against a plain script")
def first_record(ctx: BenchContext) -> list[Measurement]:
    """A whole process for one image: start, import, set the model up, read, predict,
    write. The plain script imports the same libraries (numpy, Pillow), not igata's; a
    second one also imports the libraries igata is built on (click, pluggy)."""
    directory = ctx.tmp_path / "one"
    (image,) = write_png_dir(directory, 1)
    script = ctx.tmp_path / "plain_first_record.py"
    script.write_text(
        _PLAIN_FIRST_RECORD.format(repo=str(REPO), image=str(image),
                                   out=str(ctx.tmp_path / "plain.jsonl"))
    )  # fmt: skip
    # The same script, also importing what igata is built on: what is left between the two
    # is igata's own (its modules, the plugins', finding them, the engine).
    framed = ctx.tmp_path / "framed_first_record.py"
    framed.write_text(_FRAMEWORK_IMPORTS + script.read_text())
    command = [
        *igata_command(), "run", "--source", "files", "--sink", "jsonl",
        "--sink-opt", f"path={ctx.tmp_path / 'igata.jsonl'}",
        "--predictor", "benchmarks.predictors:BatchedMlpPredictor", "--app-dir", str(REPO),
        str(directory),
    ]  # fmt: skip
    plugins = sorted(ep.name for ep in metadata.entry_points(group="igata"))
    compile_sources(REPO)
    samples = ctx.repeat_interleaved(
        {
            "igata": lambda: wall_time(command) * 1000,
            "plain script: same libraries, same work": lambda: (
                wall_time([sys.executable, str(script)]) * 1000
            ),
            "the same + import click, pluggy": lambda: (
                wall_time([sys.executable, str(framed)]) * 1000
            ),
        },
        warmup=1,
    )
    return [
        Measurement(
            title="start-up: igata run on one image, start to exit",
            unit="ms",
            igata=samples.pop("igata"),
            baselines=samples,
            higher_is_better=False,
            target="close to the plain script (issue 14)",
            extra={"plugins installed": ", ".join(plugins) or "none"},
        )
    ]


@benchmark("core", "start-up: igata --help against a bare interpreter")
def startup(ctx: BenchContext) -> list[Measurement]:
    command = [*igata_command(), "--help"]
    plugins = sorted(ep.name for ep in metadata.entry_points(group="igata"))
    heavy = sorted(set(HEAVY_MODULES) & imported_modules(command))
    compile_sources(REPO)
    samples = ctx.repeat_interleaved(
        {
            "igata": lambda: wall_time(command) * 1000,
            "python -c pass": lambda: wall_time([sys.executable, "-c", "pass"]) * 1000,
            "import click, pluggy": lambda: (
                wall_time([sys.executable, "-c", "import click, pluggy"]) * 1000
            ),
        },
        warmup=1,
    )
    return [
        Measurement(
            title="start-up: igata --help",
            unit="ms",
            igata=samples.pop("igata"),
            baselines=samples,
            higher_is_better=False,
            target="no boto3/botocore/numpy/PIL imported",
            extra={
                "plugins installed": ", ".join(plugins) or "none",
                "heavy modules imported": ", ".join(heavy) or "none",
            },
        )
    ]
