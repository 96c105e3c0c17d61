"""Logging set-up: ``LOG_LEVEL`` as in the original, text or JSON lines on standard error."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def level_from(verbose: int, quiet: bool, environ: dict[str, str] | None = None) -> int:
    if quiet:
        return logging.WARNING
    if verbose:
        return logging.DEBUG
    name = (environ if environ is not None else os.environ).get("LOG_LEVEL", "INFO").upper()
    return getattr(logging, name) if name in _LEVELS else logging.INFO


def setup_logging(level: int, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries' request logs drown the worker's own lines.
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
