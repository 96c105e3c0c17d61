"""Built-in decoders: images (Pillow -> RGB numpy array), CSV (row dicts), JSON, raw bytes."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, ClassVar

from igata_core import hookimpl
from igata_core.components import Decoder, RecordError
from igata_core.options import Option


class ImageDecoder(Decoder):
    """Any image Pillow reads, as an RGB ``uint8`` array of shape H×W×3.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted
    correctly; the EXIF orientation is applied. Pillow's decompression-bomb guard stays on
    (``max_image_pixels``).
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
            "0 turns the guard off).",
            env=("IGATA_MAX_IMAGE_PIXELS",),
            minimum=0,
        ),
    )

    def decode(self, data: bytes, ref: str) -> Any:
        import numpy as np
        from PIL import Image, ImageOps, UnidentifiedImageError

        if not data:
            raise RecordError(f"{ref}: empty file (0 bytes), not an image")
        limit = self.opts["max_image_pixels"] or None
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if limit is not None and width * height > limit:
                    raise RecordError(
                        f"{ref}: {width}x{height} = {width * height} pixels is over "
                        f"max_image_pixels ({limit}); possible decompression bomb"
                    )
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return _to_rgb_array(img, np)
        except RecordError:
            raise
        except UnidentifiedImageError:
            raise RecordError(f"{ref}: not an image Pillow can read") from None
        except Image.DecompressionBombError as exc:
            raise RecordError(f"{ref}: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise RecordError(f"{ref}: corrupt or truncated image ({exc})") from None


def _to_rgb_array(img: Any, np: Any) -> Any:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping (Pillow's convert clips).
        array = np.asarray(img, dtype=np.uint32 if mode == "I" else np.uint16)
        maximum = 65535 if mode != "I" else max(int(array.max()), 1)
        gray = (array.astype(np.float64) * (255.0 / maximum)).round().astype(np.uint8)
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
    if mode == "F":
        array = np.asarray(img, dtype=np.float64)
        span = float(array.max() - array.min()) or 1.0
        gray = ((array - array.min()) * (255.0 / span)).round().astype(np.uint8)
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


class CsvDecoder(Decoder):
    """A CSV file with a header row, as a list of row dicts (gzip by ``.gz`` extension)."""

    name = "csv"
    description = "CSV with a header row to a list of row dicts"
    extensions = (".csv", ".tsv")
    options: ClassVar[tuple[Option, ...]] = (
        Option("encoding", default="utf-8-sig", help="Text encoding of CSV files.",
               env=("IGATA_CSV_ENCODING",)),
        Option("delimiter", default="", help="Field delimiter (default: ',' or tab for .tsv).",
               env=("IGATA_CSV_DELIMITER",)),
    )  # fmt: skip

    def decode(self, data: bytes, ref: str) -> Any:
        try:
            text = data.decode(self.opts["encoding"])
        except UnicodeDecodeError as exc:
            raise RecordError(
                f"{ref}: not valid {self.opts['encoding']} text at byte {exc.start} "
                "(set the csv decoder's encoding option)"
            ) from None
        delimiter = self.opts["delimiter"] or ("\t" if ref.lower().endswith(".tsv") else ",")
        if len(delimiter) != 1:
            raise RecordError(f"csv delimiter must be one character, got {delimiter!r}")
        try:
            return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
        except csv.Error as exc:
            raise RecordError(f"{ref}: malformed CSV: {exc}") from None


class JsonDecoder(Decoder):
    name = "json"
    description = "JSON documents to Python objects"
    extensions = (".json",)

    def decode(self, data: bytes, ref: str) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(f"{ref}: invalid JSON: {exc}") from None


class RawDecoder(Decoder):
    """The bytes as they are (choose it with ``--decoder raw``)."""

    name = "raw"
    description = "The bytes unchanged"

    def decode(self, data: bytes, ref: str) -> Any:
        return data


@hookimpl
def register_decoders(register):  # type: ignore[no-untyped-def]
    for decoder in (ImageDecoder, CsvDecoder, JsonDecoder, RawDecoder):
        register(decoder)
