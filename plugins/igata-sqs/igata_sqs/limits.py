"""What SQS accepts in a message: characters, attribute values, FIFO ids.

SQS takes only XML 1.0 characters (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
#x10000-#x10FFFF) in message bodies and String attribute values, refuses an empty String
attribute value, and takes 1-128 alphanumeric or punctuation characters as a FIFO
message group or deduplication id. moto accepts all of it; AWS and LocalStack do not.
"""

from __future__ import annotations

import re

# The patterns are compiled (by re's own cache), and hashlib imported, on first use: at
# import they would cost every `igata` command (this module is imported when the plugin
# registers) ~7 ms.

#: A character SQS refuses in a body or an attribute value (lone surrogates included).
_INVALID_CHARACTER = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
#: What SQS accepts as a FIFO message group or deduplication id.
_FIFO_ID = r"^[!-~]{1,128}$"


def has_invalid_character(text: str) -> bool:
    """Whether ``text`` holds a character SQS refuses in a body or an attribute value."""
    return re.search(_INVALID_CHARACTER, text) is not None


def _sha256_hex(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def digest(text: str) -> str:
    """``sha256:`` and the hex digest of ``text`` (lone surrogates included)."""
    return "sha256:" + _sha256_hex(text)


def valid_attribute_value(text: str) -> bool:
    """Whether SQS accepts ``text`` as a String message attribute value."""
    return bool(text) and not has_invalid_character(text)


def valid_fifo_id(text: str) -> bool:
    """Whether SQS accepts ``text`` as a message group or deduplication id."""
    return re.match(_FIFO_ID, text) is not None


def fifo_id(text: str) -> str:
    """``text`` if SQS accepts it as a FIFO id, else its SHA-256 in hex (64 characters).

    The same text always gives the same id, so deduplication and grouping still work.
    """
    if valid_fifo_id(text):
        return text
    return _sha256_hex(text)
