"""``AnomalyDataset``: samples -> resized [0, 1] image tensors, binary masks and labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from ..progress import bar as progress_bar
from .io import load_image, load_mask
from .resize import check_resize, fit_image, fit_mask
from .samples import Sample

__all__ = ["AnomalyDataset", "resize_image", "image_to_tensor"]


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int or an (H, W) pair."""
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise ConfigError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return int(size[0]), int(size[1])


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB (H, W, 3) squashed to ``size`` (H, W) with Pillow bilinear (antialiased); as is when it fits.
    ``resize.fit_image`` (every mode) is what datasets, ``predict`` and ``serve`` use."""
    return fit_image(image, tuple(size), "squash")[0]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W) in [0, 1], the model's input."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class AnomalyDataset(Dataset):
    """Items: ``image`` float32 (3, H, W) in [0, 1] (not normalised), ``mask`` float32 (1, H, W)
    in {0, 1}, ``label`` int64, ``path`` and ``defect`` str.

    Images are fitted to ``image_size`` ((H, W) or an int) as ``resize`` says (``data.resize``: squash,
    pad or long-side) with Pillow bilinear (antialiased); masks are thresholded at full resolution,
    then placed alike, nearest-neighbour. ``content(i)``: the (h, w) of image ``i`` inside its input
    (less than the input under ``pad``). ``cache=True`` decodes everything now (uint8), so a bad file
    fails before training, naming it.
    """

    def __init__(self, samples: Sequence[Sample], image_size: int | Sequence[int] = 256, mask_threshold: int = 128,
                 cache: bool = True, resize: str = "squash") -> None:
        self.samples = list(samples)
        if not self.samples:
            raise DataError("AnomalyDataset: no samples (the image list is empty)")
        self.size = _size(image_size)
        self.resize = check_resize(resize)
        self._content: dict[int, tuple[int, int]] = {}
        if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, (int, np.integer)) or not 1 <= mask_threshold <= 255:
            raise ConfigError(f"mask_threshold must be an integer in 1..255, got {mask_threshold!r}")
        self.mask_threshold = int(mask_threshold)
        self.cache = cache
        self._images: np.ndarray | None = None
        self._masks: dict[int, np.ndarray] = {}
        if cache:
            h, w = self.size
            self._images = np.empty((len(self.samples), h, w, 3), dtype=np.uint8)
            bar = progress_bar(self.samples, desc="decoding images", unit="img", disable=None if len(self.samples) > 50 else True)
            for i, s in enumerate(bar):
                self._images[i], mask = self._decode(s, i)
                if mask is not None:
                    self._masks[i] = mask
        else:
            for s in self.samples:
                for p in (s.image, s.mask):
                    if p is not None and not p.is_file():
                        raise DataError(f"{p}: no such file")

    def _decode(self, s: Sample, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Fitted uint8 RGB image and bool mask (None when the sample has none); records its content size."""
        h, w = self.size
        image = load_image(s.image)
        mask = None
        if s.mask is not None:
            threshold = s.mask_threshold if s.mask_threshold is not None else self.mask_threshold
            full = load_mask(s.mask, threshold)
            if full.shape != image.shape[:2]:
                raise DataError(
                    f"{s.mask}: mask is {full.shape[1]}x{full.shape[0]} but its image {s.image} is "
                    f"{image.shape[1]}x{image.shape[0]} (width x height)"
                )
            mask = fit_mask(full, (h, w), self.resize)
        fitted, self._content[index] = fit_image(image, (h, w), self.resize)
        return fitted, mask

    def content(self, index: int) -> tuple[int, int]:
        """(h, w) of image ``index`` inside the model input (top left); the whole input unless ``pad``."""
        if index not in self._content:
            self._decode(self.samples[index], index)
        return self._content[index]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        if self._images is not None:
            image, mask = self._images[index], self._masks.get(index)
        else:
            image, mask = self._decode(s, index)
        h, w = self.size
        mask_t = torch.zeros(1, h, w) if mask is None else torch.from_numpy(np.ascontiguousarray(mask)).float()[None]
        return {
            "image": image_to_tensor(image),
            "mask": mask_t,
            "label": torch.tensor(s.label, dtype=torch.int64),
            "path": str(s.image),
            "defect": s.defect,
        }
