"""Built-in decoders: images (Pillow -> RGB numpy array), CSV (row dicts), JSON, raw bytes."""

from __future__ import annotations

import codecs
import csv
import io
import json
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from igata_core import hookimpl
from igata_core.components import Decoder, RecordError
from igata_core.options import Option

#: The EXIF tag that says how a photo is rotated (1: as stored).
_EXIF_ORIENTATION = 0x0112


class ImageDecoder(Decoder):
    """Any image Pillow reads, as an RGB ``uint8`` array of shape H×W×3.

    Grayscale, palette (with or without transparency), RGBA and LA (alpha dropped), CMYK,
    1-bit and 16-bit images are converted to RGB; 16-bit and 32-bit integer images are
    scaled from the 16-bit range (65535 -> 255), float images are read on Pillow's 0-255
    scale (clipped; NaN as 0). The EXIF orientation is applied; of an animation, the first
    frame is decoded. Images over ``max_image_pixels`` are refused before they are
    decompressed.
    """

    name = "image"
    description = "Images (png, jpg, gif, bmp, tiff, webp) to an RGB uint8 numpy array"
    extensions = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "max_image_pixels",
            "int",
            default=89_478_485,
            help="Refuse images with more pixels than this (decompression-bomb guard; "
            "0 turns the guard off). A limit above Pillow's own (PIL.Image.MAX_IMAGE_PIXELS) "
            "raises Pillow's for the whole process.",
            env=("IGATA_MAX_IMAGE_PIXELS",),
            minimum=0,
        ),
    )

    def decode(self, data: bytes, ref: str) -> Any:
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        if not data:
            raise RecordError(f"{ref}: empty file (0 bytes), not an image")
        limit = self.opts["max_image_pixels"] or None
        _let_pillow_allow(limit)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if limit is not None and width * height > limit:
                    raise RecordError(_too_large(ref, width * height, limit))
                img.load()
                if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    # Imported only for an image that says it is rotated (ImageOps costs
                    # a run's start-up 1.5 ms); in place, so no copy of the pixels.
                    from PIL import ImageOps

                    ImageOps.exif_transpose(img, in_place=True)
                return _to_rgb_array(img, np)
        except RecordError:
            raise
        except UnidentifiedImageError:
            raise RecordError(f"{ref}: not an image Pillow can read") from None
        except Image.DecompressionBombError as exc:
            raise RecordError(f"{ref}: refused as a possible decompression bomb ({exc})") from None
        except _ModeError as exc:
            raise RecordError(f"{ref}: {exc}") from None
        except MemoryError:
            raise RecordError(f"{ref}: not enough memory to decode this image") from None
        except Exception as exc:
            # Pillow reports damage as OSError, SyntaxError, ValueError, struct.error,
            # IndexError... depending on the format; all of them mean this image is bad.
            raise RecordError(
                f"{ref}: corrupt or truncated image ({type(exc).__name__}: {exc})"
            ) from None


def _too_large(ref: str, pixels: int, limit: int) -> str:
    return (
        f"{ref}: {pixels} pixels is over max_image_pixels ({limit}); refused as a possible "
        "decompression bomb (raise it with --decoder-opt image.max_image_pixels=N, 0 = off)"
    )


_PILLOW_LIMIT_LOCK = threading.Lock()


def _let_pillow_allow(limit: int | None) -> None:
    """Make Pillow's process-wide guard at least as permissive as ``limit`` (None: off).

    Pillow checks ``Image.MAX_IMAGE_PIXELS`` itself while opening (a warning above it, an
    error above twice it), in several of its format plugins. A looser limit of ours must
    raise that global; it is only ever raised (under a lock, so concurrent decoders with
    different limits cannot undo each other), and each decoder enforces its own limit.
    """
    from PIL import Image

    current = Image.MAX_IMAGE_PIXELS
    if current is None or (limit is not None and limit <= current):
        return
    with _PILLOW_LIMIT_LOCK:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and (limit is None or limit > current):
            Image.MAX_IMAGE_PIXELS = limit


class _ModeError(Exception):
    """An image mode with no conversion to RGB."""


def _to_rgb_array(img: Any, np: Any) -> Any:
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # Pillow holds 16-bit samples in these modes (PNG, TIFF: I;16; PGM/PPM: I) and
        # clips them in convert(); scale them instead, rounding: 65535 -> 255, 32768 -> 128.
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        # A signalling NaN raises numpy's "invalid value" warning in the cast; NaN is 0 anyway.
        with np.errstate(invalid="ignore"):
            values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        # Through RGBA so that a palette with a transparent entry converts cleanly.
        img = img.convert("RGBA")
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except ValueError as exc:
            raise _ModeError(f"image mode {img.mode} cannot be converted to RGB ({exc})") from None
    return np.array(img, dtype=np.uint8)


class CsvDecoder(Decoder):
    """A CSV file with a header row, as a list of row dicts (``.gz`` is gunzipped first).

    A row with more fields than the header is an error (the values would have no column);
    a row with fewer gets None for the missing fields.
    """

    name = "csv"
    description = "CSV with a header row to a list of row dicts"
    extensions = (".csv", ".tsv")
    options: ClassVar[tuple[Option, ...]] = (
        Option("encoding", default="utf-8-sig",
               help="Text encoding of CSV files (utf-8-sig also strips a BOM; e.g. latin-1).",
               env=("IGATA_CSV_ENCODING",)),
        Option("delimiter", default="",
               help="Field delimiter, one character or 'tab'/'\\t' (default: tab for .tsv, "
               "',' otherwise).", env=("IGATA_CSV_DELIMITER",)),
    )  # fmt: skip

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        encoding = self.opts["encoding"]
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"csv decoder: unknown encoding {encoding!r} "
                "(use a Python codec name such as utf-8 or latin-1)"
            ) from None
        try:
            # bytes.decode refuses bytes-to-bytes codecs (base64, zlib, rot13...) at every
            # call: refuse them here, before any input is read. (Empty bytes skip the check.)
            b"a".decode(encoding)
        except UnicodeError:
            pass
        except LookupError:
            raise ValueError(
                f"csv decoder: encoding {encoding!r} is not a text encoding "
                "(use a Python codec name such as utf-8 or latin-1)"
            ) from None
        self._delimiter = delimiter_option(self.opts["delimiter"], "csv decoder")

    def decode(self, data: bytes, ref: str) -> Any:
        encoding = self.opts["encoding"]
        try:
            text = data.decode(encoding)
        except UnicodeError as exc:
            # Most codecs raise UnicodeDecodeError; idna and punycode a bare UnicodeError.
            where = f"at byte {exc.start}" if isinstance(exc, UnicodeDecodeError) else f"({exc})"
            raise RecordError(
                f"{ref}: not valid {encoding} text {where} "
                "(set the csv decoder's encoding option, e.g. "
                "--decoder-opt csv.encoding=latin-1)"
            ) from None
        name = ref.lower().removesuffix(".gz")
        delimiter = self._delimiter or ("\t" if name.endswith(".tsv") else ",")
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = []
        try:
            for row in reader:
                if None in row:
                    header = len(reader.fieldnames or ())
                    raise RecordError(
                        f"{ref}: line {reader.line_num} has {header + len(row[None])} fields, "
                        f"the header has {header}"
                    )
                rows.append(row)
        except csv.Error as exc:
            raise RecordError(
                f"{ref}: malformed CSV at line {reader.reader.line_num}: {exc}"
            ) from None
        return rows


def delimiter_option(value: str, owner: str) -> str:
    """A delimiter option's character ('' stays '': the default); 'tab' and '\\t' mean tab."""
    if value.lower() in ("tab", "\\t"):
        return "\t"
    if len(value) > 1:
        raise ValueError(f"{owner}: delimiter must be one character or 'tab', got {value!r}")
    return value


class JsonDecoder(Decoder):
    """A JSON document as Python objects (UTF-8, -16 or -32, with or without a BOM)."""

    name = "json"
    description = "JSON documents to Python objects"
    extensions = (".json",)

    def decode(self, data: bytes, ref: str) -> Any:
        try:
            return json.loads(data)
        except RecursionError:
            raise RecordError(f"{ref}: invalid JSON: nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
            raise RecordError(f"{ref}: invalid JSON: {exc}") from None


class RawDecoder(Decoder):
    """The bytes as they are (choose it with ``--decoder raw``)."""

    name = "raw"
    description = "The bytes unchanged"

    def decode(self, data: bytes, ref: str) -> Any:
        return data


@hookimpl
def register_decoders(register: Callable[[type[Decoder]], None]) -> None:
    for decoder in (ImageDecoder, CsvDecoder, JsonDecoder, RawDecoder):
        register(decoder)
