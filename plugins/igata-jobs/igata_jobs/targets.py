"""SOURCE of ``igata submit``: S3 prefixes, lists of URIs and manifests, as a stream of
objects to submit.

* an S3 prefix (``s3://bucket/photos/``, ``s3://bucket``) or object URIs
  (``s3://b/a.jpg``, several comma-separated in one argument): listed by igata-s3's ``s3``
  source (its URI parsing, filters and listing), page by page, so memory stays flat;
* a manifest: a local file or an S3 object whose name ends in ``.csv``, ``.jsonl``,
  ``.ndjson`` or ``.txt`` (each optionally ``.gz``), read as a stream:

  - CSV as S3 Batch Operations writes it: ``bucket,key[,version_id]`` without a header,
    the key URL-encoded; or a header row naming ``s3_uri`` (and optionally ``image_id``,
    ``version_id``); or one ``s3://`` URI per row;
  - JSON Lines: a URI string, or an object with ``s3_uri`` or ``bucket`` + ``key`` (and
    optionally ``image_id``, ``version_id``);
  - text: one URI per line.

Every entry has a *position* that orders it within its source (the key for a prefix, the
entry number otherwise): the cursor records it so a resumed submit skips what was sent.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote

MANIFEST_SUFFIX = re.compile(r"\.(csv|jsonl|ndjson|txt)(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """One object to submit, or (``error`` set) an entry that names none."""

    bucket: str = ""
    key: str = ""
    version_id: str | None = None
    image_id: str | None = None
    #: Where the entry is in its source: the key (prefix listings) or the entry number.
    position: str | int = 0
    error: str | None = None
    #: The source argument this entry came from (for messages).
    source: str = ""


def is_manifest(source: str) -> bool:
    return bool(MANIFEST_SUFFIX.search(source.split("?", 1)[0]))


@dataclass
class Filters:
    extensions: Sequence[str] | None = None
    pattern: str = ""


class SourceReader:
    """The entries of one SOURCE argument."""

    def __init__(self, source: str, filters: Filters):
        self.source = source
        self.filters = filters
        self.manifest = is_manifest(source)
        self._s3source: Any = None

    @property
    def kind(self) -> str:
        if self.manifest:
            return "manifest"
        return "prefix" if _is_prefix(self.source) else "uris"

    def open(self) -> None:
        """Check what can be checked before anything is sent (a missing bucket: exit 2)."""
        if self.manifest:
            return
        from igata_s3.source import S3Source

        options: dict[str, Any] = {"inputs": [self.source], "count_limit": 0}
        if self.filters.extensions is not None:
            options["extensions"] = list(self.filters.extensions)
        if self.filters.pattern:
            options["pattern"] = self.filters.pattern
        self._s3source = S3Source(options)
        self._s3source.open()

    def entries(self, after: str | int | None = None) -> Iterator[Target]:
        """Entries in order; with ``after``, only those past that position (a resume)."""
        if self.manifest:
            yield from self._manifest_entries(after if isinstance(after, int) else None)
            return
        yield from self._listed_entries(after)

    # -- prefixes and URIs: the s3 source ------------------------------------------------

    def _listed_entries(self, after: str | int | None) -> Iterator[Target]:
        if self._s3source is None:
            self.open()
        prefix = self.kind == "prefix"
        for number, envelope in enumerate(self._s3source.envelopes()):
            position: str | int = number
            item = envelope.items[0]
            if prefix and item.error is None:
                position = item.meta["key"]
            if after is not None and _not_after(position, after):
                continue
            if item.error is not None or envelope.error:
                yield Target(
                    position=position, error=item.error or envelope.error, source=self.source
                )
                continue
            from igata_s3.uris import parse_uri

            location = parse_uri(str(item.uri))
            yield Target(
                location.bucket,
                location.key,
                location.version_id,
                position=position,
                source=self.source,
            )

    # -- manifests -----------------------------------------------------------------------

    def _open_manifest(self) -> IO[bytes]:
        if self.source.startswith("s3://"):
            from igata_jobs.aws import s3_client
            from igata_s3.uris import parse_uri

            location = parse_uri(self.source)
            request: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key}
            if location.version_id:
                request["VersionId"] = location.version_id
            stream: IO[bytes] = s3_client().get_object(**request)["Body"]
        else:
            stream = open(self.source, "rb")  # noqa: SIM115
        if self.source.split("?", 1)[0].lower().endswith(".gz"):
            stream = gzip.GzipFile(fileobj=stream)  # type: ignore[assignment]
        return stream

    def _manifest_entries(self, after: int | None) -> Iterator[Target]:
        kind = MANIFEST_SUFFIX.search(self.source.split("?", 1)[0]).group(1).lower()  # type: ignore[union-attr]
        raw = self._open_manifest()
        try:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            rows = _csv_rows(text) if kind == "csv" else _line_rows(text, kind)
            for number, (line, parsed) in enumerate(rows):
                if after is not None and number <= after:
                    continue
                if isinstance(parsed, str):
                    yield Target(
                        position=number,
                        error=f"{self.source} line {line}: {parsed}",
                        source=self.source,
                    )
                else:
                    yield _target(parsed, number, self.source, line)
        finally:
            raw.close()


def _is_prefix(source: str) -> bool:
    from igata_s3.source import split_inputs
    from igata_s3.uris import InvalidS3Uri, parse_uri

    parts = split_inputs([source])
    if len(parts) != 1:
        return False
    try:
        return parse_uri(parts[0], allow_prefix=True).is_prefix
    except InvalidS3Uri:
        return False


def _not_after(position: str | int, after: str | int) -> bool:
    if isinstance(position, str) and isinstance(after, str):
        # S3 lists keys in the order of their UTF-8 bytes.
        return position.encode("utf-8") <= after.encode("utf-8")
    if isinstance(position, int) and isinstance(after, int):
        return position <= after
    return False


def _target(fields: dict[str, Any], number: int, source: str, line: int) -> Target:
    from igata_s3.uris import InvalidS3Uri, bucket_problem, parse_uri

    where = f"{source} line {line}"
    version = fields.get("version_id") or None
    image_id = fields.get("image_id") or None
    if fields.get("s3_uri"):
        try:
            location = parse_uri(str(fields["s3_uri"]))
        except InvalidS3Uri as exc:
            return Target(position=number, error=f"{where}: {exc}", source=source)
        return Target(
            location.bucket,
            location.key,
            version or location.version_id,
            None if image_id is None else str(image_id),
            number,
            source=source,
        )
    bucket, key = str(fields.get("bucket") or ""), str(fields.get("key") or "")
    problem = bucket_problem(bucket) or ("no key" if not key else None)
    if problem:
        return Target(position=number, error=f"{where}: {problem}", source=source)
    return Target(
        bucket,
        key,
        None if version is None else str(version),
        None if image_id is None else str(image_id),
        number,
        source=source,
    )


def _csv_rows(text: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(text)
    header: list[str] | None = None
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if header is None and line == 1 and "s3_uri" in [c.lower() for c in cells]:
            header = [c.lower() for c in cells]
            continue
        if header is not None:
            yield line, dict(zip(header, cells, strict=False))
        elif cells[0].startswith("s3://"):
            yield line, {"s3_uri": cells[0]}
        elif len(cells) >= 2:
            # S3 Batch Operations: bucket, URL-encoded key, optional version id.
            yield (
                line,
                {
                    "bucket": cells[0],
                    "key": unquote(cells[1]),
                    "version_id": cells[2] if len(cells) > 2 else None,
                },
            )
        else:
            yield line, f"expected bucket,key[,version_id] or an s3:// URI, got {row!r}"


def _line_rows(text: IO[str], kind: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, raw in enumerate(text, start=1):
        value = raw.strip()
        if not value:
            continue
        if kind == "txt":
            yield line, {"s3_uri": value}
            continue
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            yield line, f"not JSON ({exc})"
            continue
        if isinstance(parsed, str):
            yield line, {"s3_uri": parsed}
        elif isinstance(parsed, dict):
            yield line, parsed
        else:
            yield line, "expected a URI string or an object with s3_uri or bucket and key"
