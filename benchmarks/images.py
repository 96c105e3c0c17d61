"""Benchmark inputs: small random PNG and JPEG images."""

from __future__ import annotations

import io
from pathlib import Path

#: Distinct images encoded per data set; files repeat them (decoding costs the same).
DISTINCT = 64


def png_images(count: int, size: int = 32, seed: int = 0) -> list[bytes]:
    """``count`` distinct random RGB PNGs of ``size``×``size`` pixels."""
    return random_images(count, size, seed, format="PNG")


def jpeg_images(count: int, size: int = 32, seed: int = 7) -> list[bytes]:
    """``count`` distinct random RGB JPEGs (quality 90) of ``size``×``size`` pixels."""
    return random_images(count, size, seed, format="JPEG", quality=90)


def random_images(count: int, size: int, seed: int, **save: object) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, **save)
        images.append(buffer.getvalue())
    return images


def write_png_dir(directory: Path, n: int, size: int = 32) -> list[Path]:
    """Write ``n`` PNG files into ``directory`` (created); their paths in sorted order."""
    directory.mkdir(parents=True, exist_ok=True)
    images = png_images(min(n, DISTINCT), size)
    paths = []
    for i in range(n):
        path = directory / f"img-{i:06d}.png"
        path.write_bytes(images[i % len(images)])
        paths.append(path)
    return paths


def decode_rgb(data: bytes) -> object:
    """What the baselines do per file: Pillow -> RGB -> numpy array (as the image decoder)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def write_jpeg_dir(directory: Path, n: int, size: int = 224) -> list[Path]:
    """Write ``n`` JPEG files of ``size``×``size`` pixels; their paths in sorted order."""
    directory.mkdir(parents=True, exist_ok=True)
    images = jpeg_images(min(n, DISTINCT), size)
    paths = []
    for i in range(n):
        path = directory / f"img-{i:06d}.jpg"
        path.write_bytes(images[i % len(images)])
        paths.append(path)
    return paths


def read_decode(path: str) -> object:
    """Read and decode one file (a module-level function: process pools pickle it)."""
    with open(path, "rb") as handle:
        return decode_rgb(handle.read())
