"""The installed plugins' entry points, found without importing ``importlib.metadata``
at every start.

Importing ``importlib.metadata`` and scanning ``sys.path`` with it takes 20-25 ms, which
every ``igata run`` and ``igata --help`` would pay before doing anything. So the entry
points found are kept in a cache file, and the cache is used only while nothing that
``importlib.metadata`` reads has changed. Its fingerprint is, for each ``sys.path`` entry,
the names of the distributions' metadata directories in it (``*.dist-info``,
``*.egg-info``), each with the modification time, change time, inode and size of the
directory and of its ``entry_points.txt`` (a zip file on the path: the same of the file).
Installing, upgrading or removing a package adds, renames or removes a metadata directory;
rewriting ``entry_points.txt`` changes its times, and replacing it with a copy that keeps
the modification time (``cp -p``, ``rsync -a``, a tar file) still changes its inode and
change time, which no copy can set. The path entries' own modification times are left
out: writing any file into the script's directory or the working directory (both on
``sys.path``) would change them. (stevedore keeps an entry-point cache of the same kind
for OpenStack's command-line tools.)

The cache lives in ``IGATA_CACHE_DIR``, else ``$XDG_CACHE_HOME/igata``, else
``~/.cache/igata``: one small file per Python environment, holding the entry points found
under the last few ``sys.path`` fingerprints (``igata run`` puts its application directory
on the path, other commands do not; runs from several directories differ by their first
entry). ``IGATA_CACHE_DIR=""`` turns it off, as does a home directory that cannot be
found. A cache that cannot be read or written is ignored: discovery is then as slow as
``importlib.metadata``, never wrong. When another import system that lists distributions
is installed (a finder on ``sys.meta_path`` with ``find_distributions`` other than
Python's own), the cache is not used, since its fingerprint would not cover what that
finder reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import zlib
from collections.abc import Mapping
from importlib.machinery import PathFinder
from stat import S_ISDIR
from typing import Any

#: Bumped when the cache file's layout changes; a file of another version is a miss.
_CACHE_FORMAT = 2
#: Fingerprints kept per file, most recently written first.
_CACHE_RECORDS = 8
_METADATA_SUFFIXES = (".dist-info", ".egg-info")


class FoundEntryPoint:
    """An entry point of an installed distribution: its name, its ``module:attr`` value,
    and the distribution's name and version (for ``igata plugins``)."""

    __slots__ = ("dist_name", "dist_version", "name", "value")

    def __init__(
        self, name: str, value: str, dist_name: str | None = None, dist_version: str | None = None
    ) -> None:
        self.name = name
        self.value = value
        self.dist_name = dist_name
        self.dist_version = dist_version

    def load(self) -> Any:
        """Import the module and return the attribute the value names (as
        ``importlib.metadata.EntryPoint.load`` does; extras are ignored)."""
        from pkgutil import resolve_name

        return resolve_name("".join(self.value.partition("[")[0].split()))

    def to_list(self) -> list[str | None]:
        return [self.name, self.value, self.dist_name, self.dist_version]

    def __repr__(self) -> str:
        return f"FoundEntryPoint({self.name!r}, {self.value!r})"


def find_entry_points(
    group: str, *, environ: Mapping[str, str] | None = None, fresh: bool = False
) -> list[FoundEntryPoint]:
    """The entry points of ``group``, sorted by name, from the cache when it is still valid.

    ``fresh=True`` reads them through ``importlib.metadata`` whatever the cache holds (and
    refreshes the cache): ``igata plugins`` does, so it always shows what is installed.
    """
    environ = os.environ if environ is None else environ
    path = cache_path(group, environ)
    if path is None or not _only_python_lists_distributions():
        return _read_installed(group)
    fingerprint = path_fingerprint(sys.path)
    records = _read_cache(path)
    if not fresh:
        for record in records:
            if record.get("fingerprint") == fingerprint:
                try:
                    return [FoundEntryPoint(*entry) for entry in record["entry_points"]]
                except (KeyError, TypeError):
                    break
    found = _read_installed(group)
    _write_cache(path, fingerprint, found, records)
    return found


def cache_path(group: str, environ: Mapping[str, str]) -> str | None:
    """The cache file of this Python environment, or None when caching is turned off."""
    directory = environ.get("IGATA_CACHE_DIR")
    if directory is None:
        base = environ.get("XDG_CACHE_HOME")
        if not base:
            home = os.path.expanduser("~")
            if home.startswith("~"):  # no HOME and no passwd entry: no cache, not ./~
                return None
            base = os.path.join(home, ".cache")
        directory = os.path.join(base, "igata")
    if not directory:
        return None
    # One file per interpreter: a checksum of its path names it (the fingerprint inside
    # decides whether it is valid, so a collision only costs a miss).
    key = f"{sys.prefix}\0{sys.executable}\0{group}".encode()
    return os.path.join(directory, f"entry-points-{zlib.crc32(key):08x}.json")


def path_fingerprint(paths: list[str]) -> list[Any]:
    """What ``importlib.metadata`` reads to find distributions on ``paths``, by modification
    and change time, inode and size (see the module's docstring)."""
    fingerprint: list[Any] = []
    for entry in paths:
        root = os.path.abspath(entry or os.curdir)
        try:
            stat = os.stat(root)
        except OSError:
            fingerprint.append([root])
            continue
        if not S_ISDIR(stat.st_mode):
            fingerprint.append([root, *_identity(stat)])
            continue
        children: list[Any] = []
        is_egg = root.lower().endswith(".egg")
        try:
            with os.scandir(root) as scan:
                for child in scan:
                    lower = child.name.lower()
                    if lower.endswith(_METADATA_SUFFIXES) or (is_egg and lower == "egg-info"):
                        children.append([child.name, *_stats(child.path)])
        except OSError:
            pass
        children.sort()
        fingerprint.append([root, children])
    return fingerprint


def _stats(metadata_dir: str) -> list[int | None]:
    result: list[int | None] = []
    for path in (metadata_dir, os.path.join(metadata_dir, "entry_points.txt")):
        try:
            result += _identity(os.stat(path))
        except OSError:
            result += [None] * 4
    return result


def _identity(stat: os.stat_result) -> list[int | None]:
    return [stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_size]


def _only_python_lists_distributions() -> bool:
    return all(
        finder is PathFinder or not hasattr(finder, "find_distributions")
        for finder in sys.meta_path
    )


def _read_installed(group: str) -> list[FoundEntryPoint]:
    from importlib import metadata

    found = []
    for ep in metadata.entry_points(group=group):
        dist_name = dist_version = None
        dist = ep.dist
        # Unreadable METADATA leaves them unknown: the plugin may still load.
        with contextlib.suppress(Exception):
            if dist is not None:
                dist_name, dist_version = dist.name, dist.version
        found.append(FoundEntryPoint(ep.name, ep.value, dist_name, dist_version))
    return sorted(found, key=lambda ep: ep.name)


def _read_cache(path: str) -> list[dict[str, Any]]:
    """The records of the cache file, most recently written first ([] when there is none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            # The file names modules to import: only one this user wrote is trusted (a
            # cache directory others can write to must not choose what igata imports).
            if hasattr(os, "getuid") and os.fstat(handle.fileno()).st_uid != os.getuid():
                return []
            data = json.load(handle)
        if data.get("format") != _CACHE_FORMAT:
            return []
        return [record for record in data["records"] if isinstance(record, dict)]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


def _write_cache(
    path: str, fingerprint: list[Any], found: list[FoundEntryPoint], records: list[dict[str, Any]]
) -> None:
    record = {"fingerprint": fingerprint, "entry_points": [ep.to_list() for ep in found]}
    kept = [r for r in records if r.get("fingerprint") != fingerprint]
    data = {"format": _CACHE_FORMAT, "records": [record, *kept][:_CACHE_RECORDS]}
    # Written aside under a name no other process uses (containers sharing the directory
    # may all be PID 1), created exclusively, then renamed into place: a worker starting
    # meanwhile reads the old file or the new one, never half of one.
    partial = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(partial)
