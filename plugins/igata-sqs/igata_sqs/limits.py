"""What SQS accepts in a message: characters, attribute values, FIFO ids.

SQS takes only XML 1.0 characters (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
#x10000-#x10FFFF) in message bodies and String attribute values, refuses an empty String
attribute value, and takes 1-128 alphanumeric or punctuation characters as a FIFO
message group or deduplication id. moto accepts all of it; AWS and LocalStack do not.
"""

from __future__ import annotations

import functools
import re
from typing import Any

# The patterns are compiled, and hashlib imported, on first use: at import they would cost
# every `igata` command (this module is imported when the plugin registers) ~7 ms.

#: A character SQS refuses in a body or an attribute value (lone surrogates included).
_INVALID_CHARACTER = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
#: What SQS accepts as a FIFO message group or deduplication id.
_FIFO_ID = r"^[!-~]{1,128}$"


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def has_invalid_character(text: str) -> bool:
    """Whether ``text`` holds a character SQS refuses in a body or an attribute value."""
    return _pattern(_INVALID_CHARACTER).search(text) is not None


def _sha256(text: str) -> Any:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass"))


def digest(text: str) -> str:
    """``sha256:`` and the hex digest of ``text`` (lone surrogates included)."""
    return "sha256:" + _sha256(text).hexdigest()


def valid_attribute_value(text: str) -> bool:
    """Whether SQS accepts ``text`` as a String message attribute value."""
    return bool(text) and not has_invalid_character(text)


def valid_fifo_id(text: str) -> bool:
    """Whether SQS accepts ``text`` as a message group or deduplication id."""
    return _pattern(_FIFO_ID).match(text) is not None


def fifo_id(text: str) -> str:
    """``text`` if SQS accepts it as a FIFO id, else its SHA-256 in hex (64 characters).

    The same text always gives the same id, so deduplication and grouping still work.
    """
    if valid_fifo_id(text):
        return text
    return _sha256(text).hexdigest()
