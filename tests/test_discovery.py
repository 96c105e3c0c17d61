"""Finding the ``igata`` entry points: the cache is used while nothing installed changed,
and never hides an install, an uninstall or an edited ``entry_points.txt``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import clean_env, igata, make_distribution

from igata_core import discovery
from igata_core.discovery import FoundEntryPoint, find_entry_points

GROUP = "igata"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory of throwaway distributions on this process's sys.path."""
    directory = tmp_path / "site"
    directory.mkdir()
    make_distribution(directory, "alpha-plugin", {"alpha": "igata_test_alpha"})
    monkeypatch.syspath_prepend(str(directory))
    return directory


@pytest.fixture
def cache(tmp_path):
    """The environment that points the cache at a fresh directory."""
    return {"IGATA_CACHE_DIR": str(tmp_path / "cache")}


def plant(path: Path) -> None:
    """Make the cache's most recent record list an entry point that is not installed."""
    data = json.loads(path.read_text())
    data["records"][0]["entry_points"] = [["planted", "igata_test_planted", None, None]]
    path.write_text(json.dumps(data))


def names(found: list[FoundEntryPoint]) -> dict[str, str]:
    return {ep.name: ep.value for ep in found}


def cache_file(environ: dict[str, str]) -> Path:
    path = discovery.cache_path(GROUP, environ)
    assert path is not None
    return Path(path)


def test_finds_what_importlib_metadata_finds_then_the_same_from_the_cache(site, cache):
    expected = {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}
    assert expected["alpha"] == "igata_test_alpha"
    first = find_entry_points(GROUP, environ=cache)
    assert cache_file(cache).exists()
    second = find_entry_points(GROUP, environ=cache)
    assert names(first) == names(second) == expected
    assert [ep.name for ep in second] == sorted(expected)
    alpha = next(ep for ep in second if ep.name == "alpha")
    assert (alpha.dist_name, alpha.dist_version) == ("alpha-plugin", "0.1")


def test_the_cache_is_what_a_second_lookup_reads(site, cache):
    find_entry_points(GROUP, environ=cache)
    path = cache_file(cache)
    plant(path)
    assert names(find_entry_points(GROUP, environ=cache)) == {"planted": "igata_test_planted"}
    # fresh=True reads the installed metadata, whatever the cache holds, and refreshes it.
    assert "alpha" in names(find_entry_points(GROUP, environ=cache, fresh=True))
    assert "alpha" in names(find_entry_points(GROUP, environ=cache))


def test_other_files_written_into_a_path_directory_keep_the_cache(site, cache):
    # The script's directory and the working directory are on sys.path, and runs write
    # their output there: that must not cost every start the metadata scan.
    find_entry_points(GROUP, environ=cache)
    path = cache_file(cache)
    plant(path)
    (site / "out.jsonl").write_text("{}\n")
    (site / "results").mkdir()
    assert names(find_entry_points(GROUP, environ=cache)) == {"planted": "igata_test_planted"}


def test_a_distribution_installed_after_the_cache_was_written_is_found(site, cache):
    assert "beta" not in names(find_entry_points(GROUP, environ=cache))
    make_distribution(site, "beta-plugin", {"beta": "igata_test_beta"})
    assert names(find_entry_points(GROUP, environ=cache))["beta"] == "igata_test_beta"


def test_a_distribution_removed_after_the_cache_was_written_is_gone(site, cache):
    assert "alpha" in names(find_entry_points(GROUP, environ=cache))
    shutil.rmtree(site / "alpha_plugin-0.1.dist-info")
    assert "alpha" not in names(find_entry_points(GROUP, environ=cache))


def test_entry_points_rewritten_in_place_are_seen(site, cache):
    find_entry_points(GROUP, environ=cache)
    info = site / "alpha_plugin-0.1.dist-info"
    (info / "entry_points.txt").write_text("[igata]\nalpha = igata_test_alpha\ngamma = gam\n")
    assert names(find_entry_points(GROUP, environ=cache))["gamma"] == "gam"


def test_a_new_directory_on_sys_path_is_seen(site, cache, tmp_path, monkeypatch):
    find_entry_points(GROUP, environ=cache)
    other = tmp_path / "other"
    other.mkdir()
    make_distribution(other, "delta-plugin", {"delta": "igata_test_beta"})
    monkeypatch.syspath_prepend(str(other))
    assert "delta" in names(find_entry_points(GROUP, environ=cache))


def test_lookups_under_several_paths_each_keep_their_record(site, cache, tmp_path, monkeypatch):
    # igata run puts its application directory first on sys.path, other commands do not:
    # alternating between them must not rewrite one record over the other.
    find_entry_points(GROUP, environ=cache)
    plant(cache_file(cache))
    app = tmp_path / "app"
    app.mkdir()
    monkeypatch.syspath_prepend(str(app))
    assert "alpha" in names(find_entry_points(GROUP, environ=cache))  # a miss: written
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(app)])
    assert names(find_entry_points(GROUP, environ=cache)) == {"planted": "igata_test_planted"}
    records = json.loads(cache_file(cache).read_text())["records"]
    assert len(records) == 2


def test_only_the_last_few_paths_are_kept(site, cache, tmp_path, monkeypatch):
    for index in range(discovery._CACHE_RECORDS + 3):
        directory = tmp_path / f"p{index}"
        directory.mkdir()
        monkeypatch.setattr(sys, "path", [str(directory), *sys.path[1:]])
        find_entry_points(GROUP, environ=cache)
    records = json.loads(cache_file(cache).read_text())["records"]
    assert len(records) == discovery._CACHE_RECORDS
    assert records[0]["fingerprint"][0][0] == str(directory)


def test_a_copy_that_keeps_the_modification_time_is_seen(site, cache):
    find_entry_points(GROUP, environ=cache)
    entry_points = site / "alpha_plugin-0.1.dist-info" / "entry_points.txt"
    before = entry_points.stat()
    # The same size and modification time, other content (as cp -p or a tar file leave it).
    replacement = entry_points.with_name("entry_points.new")
    replacement.write_text(entry_points.read_text().replace("alpha", "omega"))
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, entry_points)
    assert entry_points.stat().st_size == before.st_size
    assert entry_points.stat().st_mtime_ns == before.st_mtime_ns
    assert names(find_entry_points(GROUP, environ=cache))["omega"] == "igata_test_omega"


def test_a_zip_on_the_path_is_fingerprinted_by_the_file(cache, tmp_path, monkeypatch):
    archive = tmp_path / "plugins.zip"

    def write(path: Path, value: str) -> None:
        with zipfile.ZipFile(path, "w") as zipped:
            zipped.writestr("zipped_plugin-0.1.dist-info/METADATA", "Name: zipped-plugin\n")
            zipped.writestr("zipped_plugin-0.1.dist-info/entry_points.txt", f"[igata]\n{value}\n")

    write(archive, "zipped = igata_zip_a")
    monkeypatch.syspath_prepend(str(archive))
    assert names(find_entry_points(GROUP, environ=cache))["zipped"] == "igata_zip_a"
    plant(cache_file(cache))
    assert "planted" in names(find_entry_points(GROUP, environ=cache))
    # Replaced by a copy of the same size that keeps the modification time: a miss. (What
    # the miss then reads is importlib.metadata's business; in this process it caches a
    # zip's listing by modification time.)
    copy = tmp_path / "copy.zip"
    write(copy, "zipped = igata_zip_b")
    mtime = archive.stat().st_mtime_ns
    os.utime(copy, ns=(mtime, mtime))
    os.replace(copy, archive)
    assert "planted" not in names(find_entry_points(GROUP, environ=cache))


def test_the_working_directory_on_the_path_is_the_current_one(cache, tmp_path, monkeypatch):
    for name in ("one", "two"):
        make_distribution(tmp_path / name, f"{name}-plugin", {name: "igata_test_alpha"})
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    monkeypatch.chdir(tmp_path / "one")
    found = names(find_entry_points(GROUP, environ=cache))
    assert "one" in found and "two" not in found
    monkeypatch.chdir(tmp_path / "two")
    found = names(find_entry_points(GROUP, environ=cache))
    assert "two" in found and "one" not in found


def test_no_home_directory_means_no_cache(monkeypatch):
    monkeypatch.setattr(discovery.os.path, "expanduser", lambda path: path)
    assert discovery.cache_path(GROUP, {}) is None


def test_an_empty_cache_dir_setting_turns_the_cache_off(site, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert discovery.cache_path(GROUP, {"IGATA_CACHE_DIR": ""}) is None
    assert "alpha" in names(find_entry_points(GROUP, environ={"IGATA_CACHE_DIR": ""}))
    assert not (tmp_path / "xdg").exists()


def test_the_cache_defaults_to_xdg_cache_home_then_the_home_directory(tmp_path, monkeypatch):
    path = discovery.cache_path(GROUP, {"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert Path(path).parent == tmp_path / "xdg" / "igata"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = discovery.cache_path(GROUP, {})
    assert Path(path).parent == tmp_path / "home" / ".cache" / "igata"


def test_an_unwritable_cache_is_ignored(site, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory would be")
    environ = {"IGATA_CACHE_DIR": str(blocker / "igata")}
    assert "alpha" in names(find_entry_points(GROUP, environ=environ))
    assert "alpha" in names(find_entry_points(GROUP, environ=environ))
    assert blocker.read_text().startswith("a file")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        '{"format": 2, "records": 3}',
        '{"format": 2, "records": [{"fingerprint": [], "entry_points": 3}]}',
        "[1, 2]",
    ],
)
def test_a_damaged_cache_file_is_read_as_a_miss_and_replaced(site, cache, content):
    path = cache_file(cache)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert "alpha" in names(find_entry_points(GROUP, environ=cache))
    assert json.loads(path.read_text())["format"] == discovery._CACHE_FORMAT


def test_a_cache_file_another_user_wrote_is_not_trusted(site, cache, monkeypatch):
    find_entry_points(GROUP, environ=cache)
    path = cache_file(cache)
    plant(path)
    assert "planted" in names(find_entry_points(GROUP, environ=cache))
    # Seen from another user, the same file is a miss (and is replaced by this one's).
    monkeypatch.setattr(discovery.os, "getuid", lambda: path.stat().st_uid + 1)
    assert "planted" not in names(find_entry_points(GROUP, environ=cache))


def test_the_cache_directory_is_made_for_this_user_alone(site, tmp_path):
    environ = {"IGATA_CACHE_DIR": str(tmp_path / "new" / "igata")}
    find_entry_points(GROUP, environ=environ)
    assert (tmp_path / "new" / "igata").stat().st_mode & 0o077 == 0


def test_another_import_system_listing_distributions_turns_the_cache_off(site, cache, monkeypatch):
    class ListingFinder:
        def find_spec(self, *args: object) -> None:
            return None

        def find_distributions(self, *args: object) -> list[object]:
            return []

    monkeypatch.setattr(sys, "meta_path", [ListingFinder(), *sys.meta_path])
    assert "alpha" in names(find_entry_points(GROUP, environ=cache))
    assert not cache_file(cache).exists()


def test_load_imports_the_module_and_follows_the_attribute_path(site):
    (site / "igata_test_target.py").write_text("class Outer:\n    class Inner:\n        x = 1\n")
    assert FoundEntryPoint("t", "igata_test_target:Outer.Inner").load().x == 1
    assert FoundEntryPoint("t", "igata_test_target").load().__name__ == "igata_test_target"
    assert FoundEntryPoint("t", "igata_test_target : Outer [extra]").load().__name__ == "Outer"


_PROBE = textwrap.dedent(
    """
    import json, sys
    from igata_core.plugins import build_registry
    registry = build_registry()
    print(json.dumps([sorted(registry.plugins), "importlib.metadata" in sys.modules]))
    """
)


def test_a_start_with_a_valid_cache_does_not_import_importlib_metadata(tmp_path):
    env = clean_env(IGATA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    (first_plugins, first_imported), (second_plugins, second_imported) = runs
    assert first_plugins == second_plugins
    assert "s3" in first_plugins
    assert first_imported is True  # the cache was written from the metadata
    assert second_imported is False


def test_igata_plugins_refreshes_the_cache(tmp_path):
    environ = {"IGATA_CACHE_DIR": str(tmp_path / "cache")}
    env = clean_env(**environ)
    assert igata("--help", env=env).returncode == 0
    path = cache_file(environ)
    # The probe's cache file is this interpreter's: the igata script runs the same one.
    plant(path)
    done = igata("plugins", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert "planted" not in {p["name"] for p in json.loads(done.stdout)["plugins"]}
    assert "planted" not in path.read_text()
