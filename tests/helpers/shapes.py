"""A tiny MVTec-layout dataset of non-square images (for resize modes, the squash warning, tiling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_wide_dataset(root: Path, width: int = 96, height: int = 32, n_train: int = 8, seed: int = 0) -> Path:
    """``root/wide/{train/good, test/good, test/crack, ground_truth/crack}``: smooth noise images of
    ``width``×``height``; each crack image has a bright bar at a known place, its mask marking it exactly."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "wide"

    def image() -> np.ndarray:
        small = rng.integers(60, 120, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        return np.array(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))

    for split, n in (("train/good", n_train), ("test/good", 2)):
        (base / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(image()).save(base / split / f"{i:03d}.png")
    (base / "test/crack").mkdir(parents=True)
    (base / "ground_truth/crack").mkdir(parents=True)
    for i in range(2):
        img, mask = image(), np.zeros((height, width), np.uint8)
        rows, cols = bar(width, height)
        img[rows, cols] = 255
        mask[rows, cols] = 255
        Image.fromarray(img).save(base / "test/crack" / f"{i:03d}.png")
        Image.fromarray(mask).save(base / "ground_truth/crack" / f"{i:03d}_mask.png")
    return base


def bar(width: int, height: int) -> tuple[slice, slice]:
    """The defect's place: the right half's middle third of the rows, a quarter of the width wide."""
    return slice(height // 3, 2 * height // 3), slice(width * 5 // 8, width * 7 // 8)
