"""The benchmark harness: ratios, repeats, the runner's statuses, JSON and comparisons."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from benchmarks import harness, run
from benchmarks.harness import BenchContext, BenchmarkSkipped, BenchmarkSpec, Measurement
from benchmarks.report import format_comparison, format_results
from benchmarks.subprocesses import imported_modules, peak_rss_mb


def test_ratio_is_oriented_so_that_above_one_means_igata_is_better() -> None:
    rate = Measurement("rate", "records/s", [90, 100, 110], {"loop": [40, 50, 60]})
    assert rate.ratio("loop") == pytest.approx(2.0)
    seconds = Measurement("time", "s", [2, 2, 9], {"loop": [1, 1, 1]}, higher_is_better=False)
    assert seconds.ratio("loop") == pytest.approx(0.5)  # medians: igata takes twice as long
    summary = seconds.to_dict()
    assert summary["igata"] == {"median": 2, "min": 2, "max": 9, "samples": [2, 2, 9]}
    assert summary["baselines"]["loop"]["ratio"] == pytest.approx(0.5)


def test_a_measurement_needs_samples() -> None:
    with pytest.raises(ValueError, match="no igata samples"):
        Measurement("x", "s", [], {})
    with pytest.raises(ValueError, match="baseline 'b' has no samples"):
        Measurement("x", "s", [1.0], {"b": []})


def _context(tmp_path: Path, repeats: int = 3) -> BenchContext:
    return BenchContext(repeats=repeats, quick=False, tmp_path=tmp_path, aws=harness.AwsHolder())


def test_repeat_interleaved_rotates_the_order_of_each_round(tmp_path: Path) -> None:
    calls: list[str] = []

    def series(name: str):  # type: ignore[no-untyped-def]
        return lambda: calls.append(name) or float(len(calls))

    samples = _context(tmp_path).repeat_interleaved(
        {"a": series("a"), "b": series("b"), "c": series("c")}, warmup=1
    )
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert samples == {"a": [4.0, 9.0, 11.0], "b": [5.0, 7.0, 12.0], "c": [6.0, 8.0, 10.0]}


def test_repeat_discards_warmup_calls(tmp_path: Path) -> None:
    counter = iter(range(100))
    assert _context(tmp_path, repeats=2).repeat(lambda: next(counter), warmup=2) == [2.0, 3.0]


def _ok(ctx: BenchContext) -> list[Measurement]:
    samples = ctx.repeat_interleaved({"igata": lambda: 100.0, "loop": lambda: 80.0})
    return [
        Measurement(
            "ok rate", "records/s", samples["igata"], {"loop": samples["loop"]},
            target="faster than the loop", extra={"images": 3},
        )
    ]  # fmt: skip


def _skipped(ctx: BenchContext) -> list[Measurement]:
    raise BenchmarkSkipped("needs a GPU")


def _broken(ctx: BenchContext) -> list[Measurement]:
    raise RuntimeError("boom\nsecond line\nthe cause")


def test_run_specs_reports_ok_skipped_and_failed() -> None:
    specs = [
        BenchmarkSpec("t", "fine", _ok),
        BenchmarkSpec("t", "skips", _skipped),
        BenchmarkSpec("t", "breaks", _broken),
    ]
    results = run.run_specs(specs, quick=True, log=io.StringIO())
    statuses = [(b["title"], b["status"], b["reason"]) for b in results["benchmarks"]]
    assert statuses == [
        ("fine", "ok", ""),
        ("skips", "skipped", "needs a GPU"),
        ("breaks", "failed", "RuntimeError: boom ... the cause"),
    ]
    assert results["repeats"] == harness.QUICK_REPEATS and results["quick"] is True
    measurement = results["benchmarks"][0]["measurements"][0]
    assert measurement["baselines"]["loop"]["ratio"] == pytest.approx(1.25)
    text = format_results(json.loads(json.dumps(results)))
    assert "1.25x" in text and "target: faster than the loop" in text and "images: 3" in text
    assert "SKIPPED: [t] skips: needs a GPU" in text and "FAILED: [t] breaks" in text


def test_a_module_that_fails_to_import_is_skipped_with_the_reason() -> None:
    [entry] = run._import_areas(["no_such_area"])
    assert entry["status"] == "skipped"
    assert "benchmarks.bench_no_such_area failed to import: ModuleNotFoundError" in entry["reason"]


def _results(median: float, low: float, high: float, ratio: float) -> dict:
    measurement = Measurement("rate", "records/s", [low, median, high], {"loop": [median / ratio]})
    return {
        "created": "now", "git_commit": "abc", "machine": "m", "quick": False, "repeats": 3,
        "benchmarks": [{"area": "core", "title": "t", "status": "ok", "reason": "",
                        "measurements": [measurement.to_dict()]}],
    }  # fmt: skip


def test_comparison_marks_changes_beyond_the_noise() -> None:
    old = _results(100, 95, 105, 1.0)
    assert "within noise" in format_comparison(old, _results(102, 97, 107, 1.02))
    worse = format_comparison(old, _results(50, 48, 52, 0.5))
    assert "WORSE" in worse and "-50.0%" in worse and "1.00x" in worse and "0.50x" in worse
    assert "better" in format_comparison(old, _results(200, 190, 210, 2.0))
    renamed = _results(100, 95, 105, 1.0)
    renamed["benchmarks"][0]["measurements"][0]["title"] = "other"
    assert "(not in the new run)" in format_comparison(old, renamed)


def test_main_writes_json_and_compares_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_results(100, 95, 105, 1.0)))
    new.write_text(json.dumps(_results(50, 48, 52, 0.5)))
    assert run.main(["--compare", str(old), "--against", str(new)]) == 0
    assert "WORSE" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run.main(["no_such_area"])
    assert "unknown area(s) no_such_area" in capsys.readouterr().err
    written = run.write_json(_results(1, 1, 1, 1), tmp_path / "sub" / "r.json")
    assert json.loads(written[0].read_text())["git_commit"] == "abc"


def test_core_area_is_discovered() -> None:
    assert "core" in run.available_areas()


def test_peak_rss_sees_the_memory_a_child_allocates() -> None:
    small = peak_rss_mb([sys.executable, "-c", "pass"])
    large = peak_rss_mb(
        [sys.executable, "-c", "x = bytearray(64 << 20); x[::4096] = b'1' * len(x[::4096])"]
    )
    assert 50 < large - small < 90, (small, large)


def test_imported_modules_lists_top_level_packages() -> None:
    names = imported_modules([sys.executable, "-c", "import json, email.message"])
    assert {"json", "email"} <= names and "numpy" not in names


def test_local_aws_is_started_lazily_and_the_environment_restored(tmp_path: Path) -> None:
    holder = harness.AwsHolder()
    ctx = BenchContext(repeats=1, quick=True, tmp_path=tmp_path, aws=holder)
    before = os.environ.get("AWS_ENDPOINT_URL")
    assert not holder.started
    aws = ctx.local_aws()
    try:
        assert ctx.local_aws() is aws and os.environ["AWS_ENDPOINT_URL"] == aws.url
        holder.reset()
    finally:
        holder.close()
    assert os.environ.get("AWS_ENDPOINT_URL") == before and not holder.started
