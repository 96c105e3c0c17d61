"""The cursor of ``igata submit``: what was sent, so an interrupted submit resumes.

One JSON document per job (queue + SOURCE + filters): the collection id, and for each
SOURCE argument the position of the last entry whose messages SQS accepted (and whose
``queued`` REQUESTS items were written). It is rewritten atomically (a temporary file
renamed into place; for ``s3://`` cursors a PUT) after a batch, at most every
``SAVE_INTERVAL`` seconds, at the end, and when submit is interrupted: a rename over the
old file costs milliseconds (ext4 writes the new file's data out first), which after every
batch of 100 requests slowed submit down by a tenth. A submit killed outright (SIGKILL, a
lost machine) sends the batches of that last half second again on resume: the request ids
are the same, so the workers' writes are idempotent; a finished cursor makes a second
submit send nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
#: Seconds between two writes of the cursor while batches are being sent.
SAVE_INTERVAL = 0.5


@dataclass
class CursorState:
    collection_id: str
    queue_url: str
    sources: list[str]
    #: Per SOURCE argument: the position of the last entry sent (None: none yet).
    positions: list[str | int | None] = field(default_factory=list)
    #: Index of the SOURCE argument being sent.
    source_index: int = 0
    requests: int = 0
    messages: int = 0
    invalid: int = 0
    #: Requests SQS refused (not in ``requests``).
    refused: int = 0
    done: bool = False
    started_at: float = field(default_factory=time.time)
    updated_at: float = 0.0
    version: int = VERSION


def job_key(queue_url: str, sources: Sequence[str], settings: dict[str, Any]) -> str:
    """A digest naming the job: the same queue, SOURCE and filters give the same cursor."""
    text = json.dumps({"queue": queue_url, "sources": list(sources), **settings}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def default_directory() -> Path:
    base = os.environ.get("IGATA_STATE_DIR")
    if base:
        return Path(base) / "submit"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "igata" / "submit"


class Cursor:
    """Where the cursor lives (a local path or an ``s3://`` URI) and its state."""

    def __init__(self, location: str):
        self.location = location
        self.state: CursorState | None = None
        self._written_at: float | None = None
        self.unsaved = False  # the state moved on since the last write

    def load(self) -> CursorState | None:
        text = self._read()
        if text is None:
            return None
        data = json.loads(text)
        if data.get("version") != VERSION:
            return None
        data["positions"] = list(data.get("positions", []))
        self.state = CursorState(**data)
        return self.state

    def save(self, *, durable: bool = False, now: bool = False) -> None:
        """Write the state: at once when ``durable`` (fsynced) or ``now``, otherwise only
        when the last write is ``SAVE_INTERVAL`` old (``unsaved`` says one is owed)."""
        assert self.state is not None
        moment = time.monotonic()
        recent = self._written_at is not None and moment - self._written_at < SAVE_INTERVAL
        if recent and not (durable or now):
            self.unsaved = True
            return
        self._written_at = moment
        self.unsaved = False
        self.state.updated_at = time.time()
        text = json.dumps(asdict(self.state), ensure_ascii=False)
        if self.location.startswith("s3://"):
            self._put(text)
            return
        path = Path(self.location)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _read(self) -> str | None:
        if self.location.startswith("s3://"):
            from igata_jobs.aws import s3_client
            from igata_s3.errors import error_code
            from igata_s3.uris import parse_uri

            where = parse_uri(self.location)
            try:
                body = s3_client().get_object(Bucket=where.bucket, Key=where.key)["Body"]
            except Exception as exc:
                if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return body.read().decode("utf-8")
        try:
            return Path(self.location).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _put(self, text: str) -> None:
        from igata_jobs.aws import s3_client
        from igata_s3.uris import parse_uri

        where = parse_uri(self.location)
        s3_client().put_object(
            Bucket=where.bucket,
            Key=where.key,
            Body=text.encode("utf-8"),
            ContentType="application/json",
        )
