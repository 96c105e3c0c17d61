"""Every hook is documented (docstring, docs/hooks.md up to date, the guide) and tested.

datasette's test_plugin_hooks_are_documented / test_plugin_hooks_have_tests, for igata.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from click.testing import CliRunner

from igata_core import hookspecs
from igata_core.scaffold import HOOKS_DOC_COMMAND, _markdown, hooks_doc, hooks_markdown

ROOT = Path(__file__).resolve().parents[1]
HOOKS_MD = ROOT / "docs" / "hooks.md"
GUIDE = ROOT / "docs" / "writing-a-plugin.md"


def _specified_hooks() -> set[str]:
    """Functions of hookspecs.py marked as hook specifications."""
    return {
        name
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and hasattr(obj, "igata_spec")
    }


def test_hook_names_lists_every_hook_specification() -> None:
    assert set(hookspecs.HOOK_NAMES) == _specified_hooks()
    assert len(hookspecs.HOOK_NAMES) == len(set(hookspecs.HOOK_NAMES))


@pytest.mark.parametrize("hook", hookspecs.HOOK_NAMES)
def test_hook_has_a_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.split()) >= 15, f"hookspecs.{hook} needs a docstring for plugin authors"
    assert ".. versionadded::" in doc, f"hookspecs.{hook}: say in which hook API it appeared"


def test_hooks_md_is_generated_from_the_docstrings() -> None:
    assert HOOKS_MD.exists(), f"docs/hooks.md is missing; run: {HOOKS_DOC_COMMAND}"
    assert HOOKS_MD.read_text(encoding="utf-8") == hooks_markdown(), (
        f"docs/hooks.md is out of date with igata_core/hookspecs.py; run: {HOOKS_DOC_COMMAND}"
    )


@pytest.mark.parametrize("hook", hookspecs.HOOK_NAMES)
def test_hook_is_in_the_reference_and_the_guide(hook: str) -> None:
    reference = HOOKS_MD.read_text(encoding="utf-8")
    assert f"\n## {hook}\n" in reference, f"docs/hooks.md has no section for {hook}"
    summary = inspect.getdoc(getattr(hookspecs, hook)).splitlines()[0]  # type: ignore[union-attr]
    assert _markdown(summary).strip() in reference
    assert f"`{hook}`" in GUIDE.read_text(encoding="utf-8"), f"docs/writing-a-plugin.md: {hook}"


def _test_functions() -> dict[str, list[str]]:
    """Test function names under tests/, by file."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test")
        ]
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("hook", hookspecs.HOOK_NAMES)
def test_hook_has_a_test_of_its_own(hook: str) -> None:
    tests = [
        f"{path}::{name}"
        for path, names in _test_functions().items()
        for name in names
        if hook in name
    ]
    assert tests, (
        f"no test under tests/ is about the hook {hook}: add one whose name contains "
        f"'{hook}' (e.g. test_{hook}_hook) and that exercises a plugin implementing it"
    )


def test_markdown_conversion_of_rst() -> None:
    text = _markdown(
        """Register things with :class:`igata_core.Source` and ``register``::

            [project.entry-points.igata]
            x = "y"

        After the block, ``code`` again.

        .. versionadded:: 2
        """
    )
    assert text == (
        "Register things with `igata_core.Source` and `register`:\n\n"
        '```toml\n[project.entry-points.igata]\nx = "y"\n```\n\n'
        "After the block, `code` again.\n\n"
        "*Added in hook API version 2.*\n"
    )


def test_hooks_doc_command_writes_and_checks(tmp_path: Path) -> None:
    target = tmp_path / "hooks.md"
    runner = CliRunner()
    assert runner.invoke(hooks_doc, ["-o", str(target)]).exit_code == 0
    assert target.read_text(encoding="utf-8") == hooks_markdown()
    assert runner.invoke(hooks_doc, ["--check", str(target)]).exit_code == 0
    target.write_text(hooks_markdown().replace("register_sinks", "register_sink"))
    stale = runner.invoke(hooks_doc, ["--check", str(target)])
    assert stale.exit_code == 1 and "out of date" in stale.output
