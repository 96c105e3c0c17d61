"""The bad-input corpus: every hostile input found so far, with what igata must do with it.

Each :class:`Case` is one SQS message (a request list, or a raw body) and the outcome it must
have with the ``sqs`` sink and with the ``dynamodb`` sink:

* ``delivered``: its results are written once and the message is deleted;
* ``sink``: the store refuses the record's content: that record's error at stage ``sink``,
  the message retried and dead-lettered, the other messages untouched;
* ``parse``: the message or a request in it is malformed: an error at stage ``parse``, the
  message retried and dead-lettered; ``load``: likewise, for an object that cannot be read;
* ``empty``: a message with no requests: deleted, nothing written.

A case names objects by key; the test uploads them to the corpus bucket first. Add a case
here whenever a new hostile input is found: ``test_corpus.py`` runs every case on moto
(``nox -s tests``) and on the strict emulators (``nox -s aws-conformance``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

BUCKET = "corpus-images"
#: The largest message body SQS accepts (256 KiB; AWS raised it to 1 MiB in 2025, moto and
#: many deployments keep 256 KiB), and what igata must stay within when it sends.
SQS_BODY_LIMIT = 256 * 1024


@dataclass
class Case:
    name: str
    sqs: str
    dynamodb: str
    #: Request fields besides the defaults (collection_id, image_id, request_id, s3_uri).
    fields: dict[str, Any] = field(default_factory=dict)
    #: The object's key (default: ``NAME.jpg``).
    key: str = ""
    #: The whole body instead of one generated request (``{uri}`` is the object's URI).
    body: str | None = None
    #: Pad the request (field ``padding``) until its body is this many bytes long.
    fill_to: int | None = None
    why: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or f"{self.name}.jpg"

    @property
    def image_id(self) -> str:
        return f"corpus:{self.name}"

    def uri(self) -> str:
        # Keys are URL-decoded when igata reads a URI: escape what must stay literal.
        return f"s3://{BUCKET}/{quote(self.key, safe='/ +~=&')}"

    def message_body(self) -> str:
        if self.body is not None:
            return self.body.replace("{uri}", self.uri())
        request = {
            "collection_id": "corpus:1",
            "image_id": self.image_id,
            "request_id": f"request:{self.name}",
            "s3_uri": self.uri(),
            **self.fields,
        }
        body = json.dumps([request])  # non-ASCII characters escaped, as SQS needs
        if self.fill_to is not None:
            request["padding"] = ""
            body = json.dumps([request])
            request["padding"] = "p" * (self.fill_to - len(body))
            body = json.dumps([request])
        return body


CASES: list[Case] = [
    Case("plain", "delivered", "delivered", why="the control: a well-formed request"),
    # -- ids SQS cannot carry as a message attribute -----------------------------------------
    Case("id-fffe", "delivered", "delivered", {"request_id": "id-\ufffe"},
         why="U+FFFE is outside SQS's character set: the id travels in the body only"),
    Case("id-ffff", "delivered", "delivered", {"request_id": "id-\uffff"}),
    Case("id-nul", "delivered", "delivered", {"request_id": "id-\x00-nul"},
         why="U+0000: refused by SQS in attributes; DynamoDB stores it"),
    Case("id-lone-surrogate", "delivered", "sink", {"request_id": "id-\ud800"},
         why="not Unicode text: JSON-escaped in an SQS body; DynamoDB cannot store it"),
    Case("id-empty", "delivered", "delivered", {"request_id": ""},
         why="an empty id is no id: the request's identity is its image_id (SQS refuses an "
         "empty attribute value, DynamoDB an empty key)"),
    Case("id-astral", "delivered", "delivered", {"request_id": "id-\U0001f600"}),
    Case("id-long", "delivered", "sink", {"request_id": "x" * 3000},
         why="over DynamoDB's 2048-byte partition key"),
    # -- fields with hostile characters ------------------------------------------------------
    Case("fields-hostile", "delivered", "delivered",
         {"collection_id": "c-\x00-\ufffe", "note": "a\ud800b\x00c\ufffe", "empty": ""}),
    # -- numbers beyond DynamoDB's range (the predictor echoes ``value``) --------------------
    Case("number-overflow", "delivered", "sink", {"value": 1e130},
         why="DynamoDB numbers stop at 9.99E+125"),
    Case("number-39-digits", "delivered", "sink", {"value": 10**38 + 1},
         why="DynamoDB keeps 38 significant digits"),
    Case("number-tiny", "delivered", "delivered", {"value": 1e-200},
         why="rounded to DYNAMODB_DECIMAL_PRECISION_DIGITS places: stored as 0"),
    Case("number-nan", "sink", "sink", body='[{"collection_id": "corpus:1", '
         '"image_id": "corpus:number-nan", "request_id": "request:number-nan", '
         '"s3_uri": "{uri}", "value": NaN}]',
         why="JSON's NaN extension: no sink can write NaN"),
    # -- keys and URIs with odd characters ---------------------------------------------------
    Case("key-space", "delivered", "delivered", key="odd dir/with space.jpg"),
    Case("key-plus", "delivered", "delivered", key="plus+sign.jpg"),
    Case("key-unicode", "delivered", "delivered", key="画像/写真 1.jpg"),
    Case("key-percent", "delivered", "delivered", key="percent%41.jpg",
         why="a literal % in a key is written %25 in the URI"),
    Case("key-question-hash", "delivered", "delivered", key="what?is#this.jpg"),
    Case("key-double-slash", "delivered", "delivered", key="double//slash.jpg"),
    Case("uri-missing-object", "load", "load", key="no-such-object.jpg",
         why="the object does not exist: that request's load error"),
    Case("uri-other-scheme", "parse", "parse", {"s3_uri": "file:///etc/passwd"},
         why="only s3:// URIs are followed"),
    # -- bodies ------------------------------------------------------------------------------
    Case("body-not-json", "parse", "parse", body="this is not JSON {"),
    Case("body-deep", "parse", "parse", body="[" * 5000 + "]" * 5000),
    Case("body-empty-list", "empty", "empty", body="[]"),
    Case("body-single-object", "delivered", "delivered", body='{"collection_id": "corpus:1", '
         '"image_id": "corpus:body-single-object", "request_id": "request:body-single-object", '
         '"s3_uri": "{uri}"}', why="the original crashed on it; a single request is accepted"),
    Case("body-near-limit", "sink", "delivered", fill_to=SQS_BODY_LIMIT - 16,
         why="the request fits; its result (with the request's fields) is over SQS's limit"),
    Case("body-10000-requests", "parse", "parse",
         body=json.dumps([{"s3_uri": "{uri}"}] * 10_000, separators=(",", ":")),
         why="10,000 requests, none with the required fields: 10,000 errors, one message"),
]  # fmt: skip

#: Outcomes that are a record's error (the value is the stage), and so dead-letter the message.
FAILED = {"sink": "sink", "parse": "parse", "load": "load"}
