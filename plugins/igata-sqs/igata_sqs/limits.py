"""What SQS accepts in a message: characters, attribute values, FIFO ids.

SQS takes only XML 1.0 characters (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
#x10000-#x10FFFF) in message bodies and String attribute values, refuses an empty String
attribute value, and takes 1-128 alphanumeric or punctuation characters as a FIFO
message group or deduplication id. moto accepts all of it; AWS and LocalStack do not.
"""

from __future__ import annotations

import hashlib
import re

#: A character SQS refuses in a body or an attribute value (lone surrogates included).
INVALID_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: What SQS accepts as a FIFO message group or deduplication id.
_FIFO_ID = re.compile(r"^[!-~]{1,128}$")


def digest(text: str) -> str:
    """``sha256:`` and the hex digest of ``text`` (lone surrogates included)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def valid_attribute_value(text: str) -> bool:
    """Whether SQS accepts ``text`` as a String message attribute value."""
    return bool(text) and INVALID_CHARACTER.search(text) is None


def valid_fifo_id(text: str) -> bool:
    """Whether SQS accepts ``text`` as a message group or deduplication id."""
    return _FIFO_ID.match(text) is not None


def fifo_id(text: str) -> str:
    """``text`` if SQS accepts it as a FIFO id, else its SHA-256 in hex (64 characters).

    The same text always gives the same id, so deduplication and grouping still work.
    """
    if valid_fifo_id(text):
        return text
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
