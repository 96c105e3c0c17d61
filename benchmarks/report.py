"""Text tables of benchmark results, and the comparison of two result files."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any


def number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def spread(summary: dict[str, Any]) -> str:
    return f"{number(summary['min'])}..{number(summary['max'])}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def _direction(measurement: dict[str, Any]) -> str:
    return "higher is better" if measurement["higher_is_better"] else "lower is better"


def format_results(results: dict[str, Any]) -> str:
    """The table of every measurement, then targets and facts, then skipped and failed."""
    rows: list[list[str]] = []
    notes: list[str] = []
    problems: list[str] = []
    for bench in results["benchmarks"]:
        if bench["status"] != "ok":
            problems.append(
                f"{bench['status'].upper()}: [{bench['area']}] {bench['title']}: {bench['reason']}"
            )
            continue
        for m in bench["measurements"]:
            unit = f"{m['unit']} ({_direction(m)})"
            rows.append([bench["area"], m["title"], "igata", unit, number(m["igata"]["median"]),
                         spread(m["igata"]), ""])  # fmt: skip
            for name, base in m["baselines"].items():
                rows.append(["", "", name, "", number(base["median"]), spread(base),
                             f"{base['ratio']:.2f}x"])  # fmt: skip
            facts = ([f"target: {m['target']}"] if m["target"] else []) + [
                f"{key}: {value}" for key, value in m["extra"].items()
            ]
            if facts:
                notes.append(f"[{bench['area']}] {m['title']}")
                notes.extend(f"    {fact}" for fact in facts)
    header = ["area", "measurement", "series", "unit", "median", "min..max", "ratio"]
    parts = [
        f"igata benchmarks ({'quick, ' if results['quick'] else ''}{results['repeats']} repeats; "
        f"{results['machine']})",
        "ratio = igata / baseline by medians, inverted for lower-is-better units: "
        "> 1 means igata is better",
        "",
        _table(header, rows) if rows else "(no measurements)",
    ]
    if notes:
        parts.extend(["", *notes])
    if problems:
        parts.extend(["", *problems])
    return "\n".join(parts)


def _measurements(results: dict[str, Any]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for bench in results["benchmarks"]:
        for m in bench.get("measurements", []):
            yield (bench["area"], m["title"]), m


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["min"] <= b["max"] and b["min"] <= a["max"]


def format_comparison(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Per measurement present in both: the change of igata's median and of each ratio.

    A change is marked as noise when the two runs' min-max ranges overlap.
    """
    old_by_key = dict(_measurements(old))
    rows: list[list[str]] = []
    for key, m in _measurements(new):
        before = old_by_key.get(key)
        if before is None:
            rows.append([key[0], key[1], "(new)", "", "", "", ""])
            continue
        if before["unit"] != m["unit"]:
            rows.append(
                [key[0], key[1], f"unit changed {before['unit']} -> {m['unit']}", "", "", "", ""]
            )
            continue
        old_median, new_median = before["igata"]["median"], m["igata"]["median"]
        change = (new_median / old_median - 1) if old_median else float("nan")
        better = (change > 0) == m["higher_is_better"]
        if _overlap(before["igata"], m["igata"]):
            verdict = "within noise"
        else:
            verdict = "better" if better else "WORSE"
        rows.append(
            [
                key[0],
                key[1],
                f"igata {m['unit']}",
                number(old_median),
                number(new_median),
                f"{change:+.1%}",
                verdict,
            ]
        )
        for name, base in m["baselines"].items():
            if name in before["baselines"]:
                old_ratio = before["baselines"][name]["ratio"]
                rows.append(
                    [
                        "",
                        "",
                        f"ratio vs {name}",
                        f"{old_ratio:.2f}x",
                        f"{base['ratio']:.2f}x",
                        f"{base['ratio'] - old_ratio:+.2f}",
                        "",
                    ]
                )
    gone = [key for key in old_by_key if key not in dict(_measurements(new))]
    for area, title in gone:
        rows.append([area, title, "(not in the new run)", "", "", "", ""])
    header = ["area", "measurement", "figure", "old", "new", "change", "verdict"]
    intro = (
        f"comparison: old {old.get('created', '?')} ({old.get('git_commit') or 'no commit'}) "
        f"-> new {new.get('created', '?')} ({new.get('git_commit') or 'no commit'})"
    )
    if old.get("machine") != new.get("machine"):
        intro += "\nwarning: different machines; compare ratios, not absolute figures"
    return intro + "\n\n" + (_table(header, rows) if rows else "(nothing to compare)")
