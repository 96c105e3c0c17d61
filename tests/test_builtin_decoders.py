"""The built-in decoders: images to RGB uint8 arrays, CSV to row dicts, JSON, raw bytes."""

from __future__ import annotations

import io
import json
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from igata_core.builtins.decoders import CsvDecoder, ImageDecoder, JsonDecoder, RawDecoder
from igata_core.components import RecordError

REF = "file:///data/in/sample"


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def decode(data: bytes, ref: str = REF + ".png", **options) -> np.ndarray:
    return ImageDecoder(options).decode(data, ref)


def checkerboard() -> np.ndarray:
    """A 4×6 RGB array with distinct pixels (any lossless round trip keeps it exactly)."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)


# -- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_lossless_formats_decode_exactly(fmt, params):
    pixels = checkerboard()
    array = decode(encode(Image.fromarray(pixels), fmt, **params))
    assert_rgb(array, 4, 6)
    np.testing.assert_array_equal(array, pixels)


def test_jpeg_decodes_to_rgb():
    pixels = np.full((16, 24, 3), (200, 40, 90), dtype=np.uint8)
    array = decode(encode(Image.fromarray(pixels), "JPEG", quality=95), REF + ".jpg")
    assert_rgb(array, 16, 24)
    assert np.abs(array.astype(int) - (200, 40, 90)).max() <= 4


def test_gif_decodes_its_palette_colours():
    img = Image.new("RGB", (5, 3), (255, 0, 0))
    img.putpixel((4, 2), (0, 0, 255))
    array = decode(encode(img, "GIF"), REF + ".gif")
    assert_rgb(array, 3, 5)
    assert tuple(array[0, 0]) == (255, 0, 0)
    assert tuple(array[2, 4]) == (0, 0, 255)


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    array = decode(data, REF + ".gif")
    assert_rgb(array, 4, 4)
    assert np.all(array == (255, 0, 0))


# -- modes ---------------------------------------------------------------------------------------


def test_grayscale_is_repeated_into_three_channels():
    gray = np.array([[0, 17, 128], [200, 254, 255]], dtype=np.uint8)
    array = decode(encode(Image.fromarray(gray, "L"), "PNG"))
    assert_rgb(array, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(array[:, :, channel], gray)


def test_palette_without_transparency():
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    array = decode(encode(img, "PNG"))
    assert array.tolist() == [[[10, 20, 30], [200, 100, 50], [0, 255, 0]]]


def test_palette_with_a_transparent_entry_keeps_the_palette_colour():
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.putdata([0, 1])
    data = encode(img, "PNG", transparency=1)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    assert decode(data).tolist() == [[[10, 20, 30], [200, 100, 50]]]


def test_rgba_drops_alpha_without_blending():
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 128], [70, 80, 90, 255]]], dtype=np.uint8)
    array = decode(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert array.tolist() == [[[10, 20, 30], [40, 50, 60], [70, 80, 90]]]


def test_gray_with_alpha_drops_alpha():
    la = Image.new("LA", (2, 2), (77, 0))
    array = decode(encode(la, "PNG"))
    assert Image.open(io.BytesIO(encode(la, "PNG"))).mode == "LA"
    assert np.all(array == 77)


def test_cmyk_is_converted_to_rgb():
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    data = encode(cmyk, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert decode(data, REF + ".tif").tolist() == [[[255, 255, 255], [0, 255, 255], [0, 0, 0]]]


def test_one_bit_images_become_black_and_white():
    img = Image.new("1", (2, 1))
    img.putdata([0, 255])
    data = encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "1"
    assert decode(data).tolist() == [[[0, 0, 0], [255, 255, 255]]]


SIXTEEN_BIT = [0, 128, 257, 32768, 65535]
SIXTEEN_BIT_AS_8 = [0, 0, 1, 128, 255]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_is_scaled_not_clipped(fmt):
    img = Image.fromarray(np.array([SIXTEEN_BIT], dtype=np.uint16))
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    array = decode(data)
    assert_rgb(array, 1, 5)
    assert array[0, :, 0].tolist() == SIXTEEN_BIT_AS_8
    assert np.all(array[:, :, 0] == array[:, :, 2])


def test_big_endian_sixteen_bit_is_read_with_its_byte_order():
    img = Image.frombytes("I;16B", (5, 1), np.array(SIXTEEN_BIT, dtype=">u2").tobytes())
    data = encode(img, "TIFF")
    assert decode(data)[0, :, 1].tolist() == SIXTEEN_BIT_AS_8


def test_sixteen_bit_pgm_in_mode_i_is_scaled_like_sixteen_bit():
    # Pillow opens 16-bit PGM as 32-bit mode "I" holding 0..65535.
    data = b"P5 5 1 65535\n" + np.array(SIXTEEN_BIT, dtype=">u2").tobytes()
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert decode(data, REF + ".pgm")[0, :, 0].tolist() == SIXTEEN_BIT_AS_8


def test_mode_i_does_not_depend_on_the_other_pixels():
    # A dark 16-bit image stays dark: no stretching by the image's own maximum.
    dark = Image.fromarray(np.array([[0, 1000]], dtype=np.int32), "I")
    array = decode(encode(dark, "TIFF"), REF + ".tif")
    assert array[0, :, 0].tolist() == [0, 4]


def test_mode_i_outside_the_sixteen_bit_range_is_clipped():
    img = Image.fromarray(np.array([[-5, 70000, 65535]], dtype=np.int32), "I")
    assert decode(encode(img, "TIFF"), REF + ".tif")[0, :, 0].tolist() == [0, 255, 255]


def test_float_images_are_read_on_pillows_0_to_255_scale():
    values = np.array([[0.0, 0.4, 127.6, 255.0, 300.0, -5.0, np.nan]], dtype=np.float32)
    img = Image.fromarray(values, "F")
    array = decode(encode(img, "TIFF"), REF + ".tif")
    assert_rgb(array, 1, 7)
    assert array[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0, 0]


def test_a_constant_float_image_keeps_its_value():
    img = Image.fromarray(np.full((2, 2), 200.0, dtype=np.float32), "F")
    assert np.all(decode(encode(img, "TIFF"), REF + ".tif") == 200)


@pytest.mark.parametrize("mode", ["LAB", "YCbCr"])
def test_other_colour_spaces_are_converted(mode):
    img = Image.new("RGB", (3, 2), (250, 10, 10)).convert(mode)
    data = encode(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    array = decode(data, REF + ".tif")
    assert_rgb(array, 2, 3)
    assert array[0, 0, 0] > 200 and array[0, 0, 1] < 60


def test_a_mode_without_an_rgb_conversion_is_named():
    # Pillow cannot convert premultiplied "La"; a plugin could hand out such an image.
    from igata_core.builtins.decoders import _ModeError, _to_rgb_array

    with pytest.raises(_ModeError, match="image mode La cannot be converted to RGB"):
        _to_rgb_array(Image.new("La", (2, 2)), np)


def test_arrays_are_writable_and_independent_of_pillow():
    array = decode(encode(Image.fromarray(checkerboard()), "PNG"))
    assert array.flags.writeable and array.flags.c_contiguous
    array[0, 0] = 0  # a predictor may normalise in place


# -- EXIF orientation ---------------------------------------------------------------------------


def oriented_jpeg(orientation: int) -> tuple[bytes, np.ndarray]:
    """A 16×32 JPEG with four colour blocks and an EXIF Orientation tag."""
    pixels = np.zeros((16, 32, 3), dtype=np.uint8)
    pixels[:8, :16] = (255, 0, 0)
    pixels[:8, 16:] = (0, 255, 0)
    pixels[8:, :16] = (0, 0, 255)
    pixels[8:, 16:] = (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif), pixels


def block_colours(array: np.ndarray) -> list[tuple[int, ...]]:
    h, w = array.shape[0] // 4, array.shape[1] // 4
    corners = [array[h, w], array[h, -w - 1], array[-h - 1, w], array[-h - 1, -w - 1]]
    return [tuple(round(c / 255) * 255 for c in pixel) for pixel in corners]


@pytest.mark.parametrize(("orientation", "turns"), [(1, 0), (6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(orientation, turns):
    data, pixels = oriented_jpeg(orientation)
    array = decode(data, REF + ".jpg")
    expected = np.rot90(pixels, turns)
    assert array.shape == expected.shape
    assert block_colours(array) == block_colours(expected)


# -- bad data -----------------------------------------------------------------------------------


def test_zero_bytes_is_a_record_error_naming_the_input():
    with pytest.raises(RecordError, match=r"sample\.png: empty file"):
        decode(b"")


def test_random_bytes_are_a_record_error_naming_the_input():
    noise = np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    with pytest.raises(RecordError, match=r"sample\.png: not an image"):
        decode(noise)


@pytest.mark.parametrize(("fmt", "ext"), [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_images_are_a_record_error_naming_the_input(fmt, ext):
    rng = np.random.default_rng(3)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(RecordError, match=rf"sample\{ext}: corrupt or truncated image"):
        decode(data[: len(data) // 2], REF + ext)


def test_a_png_with_a_damaged_chunk_is_a_record_error():
    data = bytearray(encode(Image.fromarray(checkerboard()), "PNG"))
    data[40:48] = b"\x00" * 8  # inside IDAT: its CRC no longer matches
    with pytest.raises(RecordError, match=r"sample\.png"):
        decode(bytes(data))


# -- the decompression-bomb guard ---------------------------------------------------------------


def image_of(width: int, height: int) -> bytes:
    return encode(Image.new("L", (width, height), 9), "PNG")


def test_max_image_pixels_refuses_larger_images_before_decoding():
    with pytest.raises(RecordError, match=r"sample\.png: 400 pixels is over max_image_pixels"):
        decode(image_of(20, 20), max_image_pixels=399)
    assert decode(image_of(20, 20), max_image_pixels=400).shape == (20, 20, 3)


def test_a_tighter_limit_leaves_pillows_global_alone(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(RecordError):
        decode(image_of(20, 20), max_image_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == 10_000


def test_a_looser_limit_overrides_pillows_own_guard(monkeypatch):
    # Pillow warns above its global limit and refuses above twice it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert decode(image_of(50, 50), max_image_pixels=5000).shape == (50, 50, 3)
        assert decode(image_of(40, 40), max_image_pixels=5000).shape == (40, 40, 3)
    with pytest.raises(RecordError, match="max_image_pixels"), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        decode(image_of(80, 80), max_image_pixels=5000)


def test_zero_turns_the_guard_off(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert decode(image_of(50, 50), max_image_pixels=0).shape == (50, 50, 3)
    assert Image.MAX_IMAGE_PIXELS is None


def test_pillows_own_refusal_is_a_record_error(monkeypatch):
    # Pillow also refuses by itself (in some format plugins, per frame or tile), e.g. after
    # code outside igata lowered its global limit again.
    from igata_core.builtins import decoders

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(decoders, "_let_pillow_allow", lambda limit: None)
    with pytest.raises(RecordError, match=r"sample\.png: refused as a possible decompression"):
        decode(image_of(50, 50), max_image_pixels=5000)


def test_decoders_with_different_limits_work_side_by_side(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    loose = ImageDecoder({"max_image_pixels": 5000})
    tight = ImageDecoder({"max_image_pixels": 500})
    data = image_of(50, 50)  # 2500 pixels: over twice Pillow's limit, within loose's
    problems: list[str] = []

    def run(decoder: ImageDecoder, should_pass: bool) -> None:
        for _ in range(30):
            try:
                decoder.decode(data, "x.png")
                if not should_pass:
                    problems.append("tight decoder accepted 2500 pixels")
            except RecordError as exc:
                if should_pass:
                    problems.append(f"loose decoder refused: {exc}")

    threads = [threading.Thread(target=run, args=(d, d is loose)) for d in (loose, tight) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []


# -- CSV ----------------------------------------------------------------------------------------


def test_csv_rows_are_dicts_by_header():
    data = b'id,name,note\n1,apple,"red, round"\n2,"b""q",\n'
    assert CsvDecoder().decode(data, "x.csv") == [
        {"id": "1", "name": "apple", "note": "red, round"},
        {"id": "2", "name": 'b"q', "note": ""},
    ]


def test_csv_quoted_newlines_stay_in_the_field():
    data = b'id,text\r\n1,"two\r\nlines"\r\n'
    assert CsvDecoder().decode(data, "x.csv") == [{"id": "1", "text": "two\r\nlines"}]


def test_csv_utf8_bom_is_stripped():
    data = "\ufeffid,名前\n1,りんご\n".encode()
    assert CsvDecoder().decode(data, "x.csv") == [{"id": "1", "名前": "りんご"}]


def test_csv_latin1_encoding_option():
    data = "id,name\n1,café\n".encode("latin-1")
    with pytest.raises(RecordError, match=r"x\.csv: not valid utf-8-sig text.*encoding"):
        CsvDecoder().decode(data, "x.csv")
    assert CsvDecoder({"encoding": "latin-1"}).decode(data, "x.csv") == [
        {"id": "1", "name": "café"}
    ]


@pytest.mark.parametrize("ref", ["s3://b/x.tsv", "x.TSV", "file:///d/x.tsv.gz"])
def test_tsv_files_are_split_on_tabs(ref):
    data = b"a\tb\n1,5\t2\n"
    assert CsvDecoder().decode(data, ref) == [{"a": "1,5", "b": "2"}]


@pytest.mark.parametrize(("given", "separator"), [(";", ";"), ("tab", "\t"), ("\\t", "\t")])
def test_csv_delimiter_option(given, separator):
    data = f"a{separator}b\n1{separator}2\n".encode()
    assert CsvDecoder({"delimiter": given}).decode(data, "x.csv") == [{"a": "1", "b": "2"}]


def test_csv_bad_options_are_refused_when_the_decoder_is_made():
    with pytest.raises(ValueError, match="delimiter must be one character"):
        CsvDecoder({"delimiter": ";;"})
    with pytest.raises(ValueError, match="unknown encoding 'klingon'"):
        CsvDecoder({"encoding": "klingon"})


def test_csv_row_with_extra_fields_is_an_error_naming_the_line():
    data = b"a,b\n1,2\n3,4,5\n"
    with pytest.raises(RecordError, match=r"x\.csv: line 3 has 3 fields, the header has 2"):
        CsvDecoder().decode(data, "x.csv")


def test_csv_short_row_gets_none():
    assert CsvDecoder().decode(b"a,b\n1\n", "x.csv") == [{"a": "1", "b": None}]


def test_csv_empty_file_has_no_rows():
    assert CsvDecoder().decode(b"", "x.csv") == []


def test_csv_malformed_is_a_record_error():
    huge_field = b"a,b\n1," + b"x" * 200_000 + b"\n"
    with pytest.raises(RecordError, match=r"x\.csv: malformed CSV at line 2: field larger"):
        CsvDecoder().decode(huge_field, "x.csv")


# -- JSON and raw ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        json.dumps({"a": [1, 2.5, None], "b": "é"}).encode(),
        b"\xef\xbb\xbf" + json.dumps({"a": [1, 2.5, None], "b": "é"}).encode(),
        json.dumps({"a": [1, 2.5, None], "b": "é"}).encode("utf-16"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16"],
)
def test_json_documents(data):
    assert JsonDecoder().decode(data, "x.json") == {"a": [1, 2.5, None], "b": "é"}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"a": ', "Expecting value"),
        (b"\xff\xfe\xfa", "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"1" * 5000, "invalid JSON"),
    ],
    ids=["truncated", "not-text", "deep", "huge-integer"],
)
def test_json_invalid_is_a_record_error_naming_the_input(data, why):
    with pytest.raises(RecordError, match=rf"x\.json: invalid JSON.*{why}|x\.json: .*{why}"):
        JsonDecoder().decode(data, "x.json")


def test_raw_returns_the_bytes():
    assert RawDecoder().decode(b"\x00\x01", "x.bin") == b"\x00\x01"


def test_decoders_declare_their_extensions():
    assert {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"} <= set(
        ImageDecoder.extensions
    )
    assert set(CsvDecoder.extensions) == {".csv", ".tsv"}
    assert JsonDecoder.extensions == (".json",)
