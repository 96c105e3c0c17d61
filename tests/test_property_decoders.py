"""Property-based tests of the image and CSV decoders: any bytes give data or a RecordError.

Loaded bytes come from wherever a request points. Whatever they are, the image decoder
must give an RGB ``uint8`` array of shape H×W×3 or a :class:`RecordError` naming the input,
and the CSV decoder a list of row dicts or a :class:`RecordError`, quickly: any other
exception is an unclear error and a hang holds a worker thread for good.
"""

from __future__ import annotations

import csv
import functools
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from igata_core.builtins.decoders import CsvDecoder, ImageDecoder
from igata_core.components import RecordError

pytestmark = [
    # A hang fails the test (the thread method also stops C code that never returns).
    pytest.mark.timeout(90, method="thread"),
    # Pillow warns about what it skips in broken input, and that it will drop the IM format.
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REF = "s3://bucket/inputs/sample"

# -- images ------------------------------------------------------------------------------------

IMAGE = ImageDecoder({})


def decode_image(data: bytes, decoder: ImageDecoder = IMAGE, ref: str = REF + ".img"):
    """The decoded array, or the RecordError; anything else fails the test (numpy's
    floating-point warnings too: they mean a pixel value the conversion did not expect)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "error", "(invalid value|overflow|divide by zero) encountered", RuntimeWarning
            )
            array = decoder.decode(data, ref)
    except RecordError as exc:
        assert str(exc).startswith(f"{ref}: "), f"the error must name the input: {exc}"
        return exc
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.ndim == 3 and array.shape[2] == 3
    assert array.shape[0] > 0 and array.shape[1] > 0
    return array


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


MODES = (
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
    "HSV", "I", "I;16", "I;16L", "I;16B", "I;16N", "F",
)  # fmt: skip
# Formats that keep the image's size (ICO and ICNS resize to their icon sizes).
FORMATS = (
    "PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP", "PPM", "TGA", "PCX", "SGI", "IM", "QOI",
    "JPEG2000", "DDS", "SPIDER", "MSP", "XBM", "BLP", "DIB",
)  # fmt: skip
# Modes the decoder documents as converted to RGB; any other may be refused, clearly.
CONVERTED = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}


@functools.cache
def writable_pairs() -> list[tuple[str, str]]:
    """(mode, format) pairs this Pillow can write and read back."""
    pairs = []
    for mode in MODES:
        for fmt in FORMATS:
            try:
                Image.open(io.BytesIO(encode(Image.new(mode, (3, 2)), fmt))).load()
            except Exception:
                continue
            pairs.append((mode, fmt))
    return pairs


def random_image(mode: str, width: int, height: int, data) -> Image.Image:
    size = len(Image.new(mode, (width, height)).tobytes())
    img = Image.frombytes(mode, (width, height), data.draw(st.binary(min_size=size, max_size=size)))
    if mode in ("P", "PA"):
        img.putpalette(data.draw(st.binary(min_size=768, max_size=768)))
        if data.draw(st.booleans()):
            img.info["transparency"] = data.draw(st.integers(0, 255))
    return img


@PROPERTY
@given(st.data(), st.integers(1, 12), st.integers(1, 12))
def test_small_images_of_every_mode_and_format_decode_to_rgb(data, width, height):
    mode, fmt = data.draw(st.sampled_from(writable_pairs()))
    img = random_image(mode, width, height, data)
    try:
        encoded = encode(img, fmt)
    except (OSError, ValueError):
        return  # this combination of mode, size and format cannot be written: not our input
    with Image.open(io.BytesIO(encoded)) as reopened:
        stored_mode = reopened.mode
    outcome = decode_image(encoded)
    if isinstance(outcome, RecordError):
        assert stored_mode.split(";")[0] not in CONVERTED, (
            f"a valid {fmt} image of mode {stored_mode} (written as {mode}) was refused: {outcome}"
        )
        assert "cannot be converted to RGB" in str(outcome)
        return
    assert outcome.shape == (height, width, 3)


@PROPERTY
@given(st.data(), st.integers(1, 10), st.integers(1, 10))
def test_lossless_png_pixels_convert_as_documented(data, width, height):
    mode = data.draw(st.sampled_from(["RGB", "RGBA", "L", "1", "I;16", "P"]))
    img = random_image(mode, width, height, data)
    array = decode_image(encode(img, "PNG"))
    assert not isinstance(array, RecordError), array
    if mode in ("RGB", "RGBA"):  # alpha dropped, colour kept
        expected = np.asarray(img)[:, :, :3]
    elif mode in ("L", "1"):  # grey in all three channels (1-bit: 0 or 255)
        expected = np.repeat(np.asarray(img.convert("L"))[:, :, None], 3, axis=2)
    elif mode == "I;16":  # scaled from 16 bits, rounded: 65535 -> 255
        wide = np.asarray(img).astype(np.int64)
        expected = np.repeat(((wide * 255 + 32767) // 65535)[:, :, None], 3, axis=2)
    else:  # palette: each pixel is its palette entry's colour
        palette = np.array(img.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
        expected = palette[np.asarray(img)]
    np.testing.assert_array_equal(array, expected.astype(np.uint8))


@PROPERTY
@given(st.binary(min_size=4, max_size=24), st.sampled_from(["TIFF", "PPM"]))
@example(b"\x00\x00\x81\x7f", "PPM")  # a signalling NaN
@example(b"\x00\x00\x80\x7f\x00\x00\x80\xff\x00\x00\xc0\x7f", "TIFF")  # inf, -inf, NaN
def test_float_images_of_any_bit_pattern_read_as_documented(bits, fmt):
    """Pillow's 0-255 scale, clipped, NaN as 0, whatever the 32-bit pattern."""
    count = len(bits) // 4
    img = Image.frombytes("F", (count, 1), bits[: count * 4])
    array = decode_image(encode(img, fmt))
    assert not isinstance(array, RecordError), array
    with np.errstate(invalid="ignore"):
        values = np.asarray(img).astype(np.float64)
    expected = np.clip(np.rint(np.nan_to_num(values, nan=0.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(array, np.repeat(expected[:, :, None], 3, axis=2))


# Magic numbers lead arbitrary bytes into each format's parser instead of the first check.
MAGIC = [
    b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"GIF89a", b"GIF87a",
    b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"P6\n", b"P5\n", b"P4\n", b"\x00\x00\x01\x00", b"8BPS", b"DDS ", b"qoif", b"\x0a\x05\x01\x08",
    b"\x01\xda", b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"icns", b"\x59\xa6\x6a\x95", b"%!PS",
]  # fmt: skip


@PROPERTY
@given(st.sampled_from(MAGIC), st.binary(max_size=600))
@example(b"", b"")
@example(b"\x89PNG\r\n\x1a\n", b"")
def test_arbitrary_bytes_decode_or_give_a_record_error(magic, rest):
    decode_image(magic + rest)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC, so a mutation reaches the chunk parsers and zlib."""
    out = bytearray(data[:8])
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 8 + length
        if end + 4 > len(data):
            out += data[position:]
            break
        chunk = data[position + 4 : end]
        out += data[position:end] + struct.pack(">I", zlib.crc32(chunk))
        position = end + 4
    else:
        out += data[position:]
    return bytes(out)


@functools.cache
def valid_files() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
    frames = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return [
        ("png", encode(rgb, "PNG")),
        ("png", encode(palette, "PNG", transparency=3)),
        ("png", encode(rgb.convert("I;16"), "PNG")),
        ("png", encode(rgb.convert("LA"), "PNG")),
        ("jpeg", encode(rgb, "JPEG", quality=80)),
        ("jpeg", encode(rgb, "JPEG", progressive=True)),
        ("jpeg", encode(rgb.convert("CMYK"), "JPEG")),
        ("gif", encode(palette, "GIF", transparency=2)),
        ("gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)),
        ("tiff", encode(rgb, "TIFF", compression="tiff_lzw")),
        ("tiff", encode(rgb, "TIFF", compression="tiff_adobe_deflate")),
        ("bmp", encode(rgb, "BMP")),
        ("webp", encode(rgb, "WEBP", lossless=True)),
        ("webp", encode(rgb, "WEBP", quality=50)),
    ]


@PROPERTY
@given(st.sampled_from(range(14)), st.data())
def test_mutated_valid_images_decode_or_give_a_record_error(index, data):
    kind, original = valid_files()[index]
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        if not mutated:
            break
        position = data.draw(st.integers(0, len(mutated) - 1))
        action = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if action == "flip":
            mutated[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set":
            mutated[position] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
        elif action == "truncate":
            del mutated[position:]
        elif action == "insert":
            mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del mutated[position : position + data.draw(st.integers(1, 16))]
    if kind == "png" and data.draw(st.booleans()):
        mutated = bytearray(fix_png_crcs(bytes(mutated)))
    decode_image(bytes(mutated))


@PROPERTY
@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 2000))
def test_max_image_pixels_refuses_exactly_the_larger_images(width, height, limit):
    # Not 0 (off): that raises Pillow's limit for the whole process, other tests included.
    decoder = ImageDecoder({"max_image_pixels": limit})
    outcome = decode_image(encode(Image.new("RGB", (width, height)), "PNG"), decoder)
    if width * height > limit:
        assert isinstance(outcome, RecordError) and "max_image_pixels" in str(outcome)
    else:
        assert not isinstance(outcome, RecordError), outcome


@PROPERTY
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.sampled_from([0, 2, 3, 4, 6]))
def test_png_headers_claiming_any_size_are_refused_quickly_or_decoded(width, height, colour):
    """A few bytes must not make the worker allocate gigabytes (decompression bombs)."""
    depth = 8
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + header
    ihdr += struct.pack(">I", zlib.crc32(b"IHDR" + header))
    body = zlib.compress(b"\x00" * 64)
    idat = (
        struct.pack(">I", len(body))
        + b"IDAT"
        + body
        + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    )
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    # A limit of 10 M pixels keeps the images the guard lets through small to allocate.
    decoder = ImageDecoder({"max_image_pixels": 10_000_000})
    outcome = decode_image(b"\x89PNG\r\n\x1a\n" + ihdr + idat + iend, decoder)
    if width * height > 10_000_000:
        assert isinstance(outcome, RecordError)


# -- CSV ---------------------------------------------------------------------------------------

# idna and punycode: codecs whose errors are a bare UnicodeError, not UnicodeDecodeError.
ENCODINGS = [
    "utf-8-sig", "utf-8", "latin-1", "cp1252", "utf-16", "shift_jis", "ascii", "idna", "punycode",
]  # fmt: skip
DELIMITERS = ["", ",", ";", "\t", "tab", "|", " "]


def decode_csv(data: bytes, decoder: CsvDecoder, ref: str = REF + ".csv"):
    """The rows, or the RecordError; anything else fails the test."""
    try:
        rows = decoder.decode(data, ref)
    except RecordError as exc:
        assert str(exc).startswith(f"{ref}: "), f"the error must name the input: {exc}"
        return exc
    assert isinstance(rows, list)
    for row in rows:
        assert isinstance(row, dict)
        # No values without a column (the None key of csv.DictReader).
        assert all(isinstance(key, str) for key in row)
        assert all(value is None or isinstance(value, str) for value in row.values())
    return rows


csv_text = st.text(
    st.characters(exclude_categories=("Cs",)) | st.sampled_from(',;\t|" \r\n\x00\ufeff'),
    max_size=300,
)


@PROPERTY
@given(st.binary(max_size=500), st.sampled_from(ENCODINGS), st.sampled_from(DELIMITERS))
@example(b"xn--a,b\n", "idna", "")
def test_arbitrary_bytes_give_rows_or_a_record_error(data, encoding, delimiter):
    decode_csv(data, CsvDecoder({"encoding": encoding, "delimiter": delimiter}))


@PROPERTY
@given(
    csv_text,
    st.sampled_from(ENCODINGS),
    st.sampled_from(ENCODINGS),
    st.sampled_from(DELIMITERS),
    st.sampled_from([".csv", ".tsv", ".csv.gz", ""]),
)
def test_arbitrary_text_in_any_encoding_gives_rows_or_a_record_error(
    text, written_as, read_as, delimiter, suffix
):
    try:
        data = text.encode(written_as)
    except UnicodeError:  # not every text has a form in every encoding
        data = text.encode("utf-8")
    decoder = CsvDecoder({"encoding": read_as, "delimiter": delimiter})
    decode_csv(data, decoder, ref=REF + suffix)


@pytest.mark.parametrize("encoding", ["rot13", "base64", "zlib", "hex", "uu", "bz2", "quopri"])
def test_a_codec_that_is_not_a_text_encoding_is_refused_when_configured(encoding):
    with pytest.raises(ValueError, match="encoding"):
        CsvDecoder({"encoding": encoding})


field_names = st.lists(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\ufeff"), min_size=1),
    min_size=1,
    max_size=5,
    unique=True,
)
cell = st.text(
    st.characters(exclude_categories=("Cs",)) | st.sampled_from(',;\t|" \r\n\x00'), max_size=20
)


@PROPERTY
@given(
    field_names,
    st.data(),
    st.sampled_from(["utf-8-sig", "utf-8", "utf-16"]),
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from([(csv.QUOTE_MINIMAL, "\r\n"), (csv.QUOTE_ALL, "\r\n"), (csv.QUOTE_ALL, "\n")]),
)
def test_csv_written_by_the_csv_module_reads_back_unchanged(
    names, data, encoding, delimiter, dialect
):
    # Not QUOTE_MINIMAL with "\n" lines: the csv module then leaves a "\r" in a field
    # unquoted, and no reader can tell it from a line end.
    quoting, line_end = dialect
    rows = data.draw(st.lists(st.fixed_dictionaries({name: cell for name in names}), max_size=6))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(
        buffer, fieldnames=names, delimiter=delimiter, lineterminator=line_end, quoting=quoting
    )
    writer.writeheader()
    writer.writerows(rows)
    decoder = CsvDecoder({"encoding": encoding, "delimiter": delimiter})
    assert decode_csv(buffer.getvalue().encode(encoding), decoder) == rows


@PROPERTY
@given(field_names, st.integers(1, 3), st.integers(0, 3))
def test_a_row_longer_than_the_header_is_a_record_error_naming_its_line(names, extra, before):
    header = ",".join(f"c{i}" for i in range(len(names)))
    good = ",".join("x" for _ in names)
    long = ",".join("y" for _ in range(len(names) + extra))
    data = "\n".join([header, *[good] * before, long]).encode()
    outcome = decode_csv(data, CsvDecoder({}))
    assert isinstance(outcome, RecordError)
    assert f"line {before + 2} has {len(names) + extra} fields" in str(outcome)
