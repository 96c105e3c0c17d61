"""The digits test split as PNG files named after their labels, plus deliberately bad inputs."""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

from examples.digits.model import DigitsSplit, load_split

_NAME = re.compile(r"^digit-(\d+)-label-(\d)\.png$")

#: File names of :func:`write_bad_inputs`: not digits, so :func:`label_from_name` skips them.
BAD_INPUT_NAMES = ("bad-corrupt.png", "bad-truncated.png")


def label_from_name(name: str | os.PathLike[str]) -> int | None:
    """The label a file written by :func:`write_test_pngs` carries in its name, else None."""
    match = _NAME.match(Path(name).name)
    return int(match.group(2)) if match else None


def write_test_pngs(
    directory: str | os.PathLike[str],
    count: int | None = None,
    *,
    split: DigitsSplit | None = None,
    scale: int = 4,
) -> dict[Path, int]:
    """Write the first ``count`` test images (default all) as PNG files; return path -> label.

    Each 8×8 image becomes a grayscale PNG, dark ink on white like a scan, enlarged
    ``scale`` times by pixel repetition, named ``digit-00042-label-7.png`` (index in the
    test split, then the true label).
    """
    import numpy as np
    from PIL import Image

    split = split or load_split()
    available = len(split.test_images)
    if count is None:
        count = available
    if not 0 <= count <= available:
        raise ValueError(f"count must be between 0 and {available} (the test split), not {count}")
    if scale < 1:
        raise ValueError(f"scale must be at least 1, not {scale}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[Path, int] = {}
    for index in range(count):
        image = split.test_images[index]
        label = int(split.test_labels[index])
        paper = np.rint(255.0 - image * (255.0 / 16.0)).astype(np.uint8)
        big = np.kron(paper, np.ones((scale, scale), dtype=np.uint8))
        path = directory / f"digit-{index:05d}-label-{label}.png"
        Image.fromarray(big).save(path, format="PNG")
        written[path] = label
    return written


def write_bad_inputs(directory: str | os.PathLike[str]) -> list[Path]:
    """Write two .png files no decoder can read: random bytes, and a PNG cut in half."""
    import numpy as np
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    corrupt, truncated = (directory / name for name in BAD_INPUT_NAMES)
    corrupt.write_bytes(random.Random(0).randbytes(1024))
    # Noise does not compress, so half the file cuts the image data, not just trailing chunks.
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return [corrupt, truncated]
