"""Foreground masks M_f that confine synthetic anomalies to the object (DTSNet eq. 1, DMDD §3.4.1).

DMDD uses GrabCut; DTSNet uses IS-Net, whose weights cannot be obtained here, so its
substitute is the same GrabCut (initialised from a rectangle a few pixels inside the
border, holes filled so the object's interior counts as object). ``"otsu"`` is a fast
threshold alternative and ``"none"`` (texture categories) is the whole image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError

__all__ = ["foreground_mask", "ForegroundCache", "FOREGROUND_METHODS"]

logger = logging.getLogger("distillad")
FOREGROUND_METHODS = ("grabcut", "otsu", "none")


def _fill_holes(fg: np.ndarray) -> np.ndarray:
    """Background pixels not connected to the image border become foreground."""
    h, w = fg.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = fg
    flood = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(pad, flood, (0, 0), 1)  # reachable background becomes 1 too
    return fg | (pad[1:-1, 1:-1] == 0)


def _grabcut(image: np.ndarray, margin: float, iterations: int) -> np.ndarray:
    h, w = image.shape[:2]
    m = max(1, int(round(margin * min(h, w))))
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(image), mask, (m, m, w - 2 * m, h - 2 * m),
                    bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # a uniform image leaves GrabCut's colour models degenerate
        return np.zeros((h, w), bool)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _otsu(image: np.ndarray, border: int = 4) -> np.ndarray:
    """Otsu threshold on blurred grey levels; the class that dominates the border is background."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (5, 5), 0)
    _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    edge = np.concatenate([binary[:border].ravel(), binary[-border:].ravel(),
                           binary[:, :border].ravel(), binary[:, -border:].ravel()])
    fg = binary == (0 if edge.mean() > 0.5 else 1)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, k)
    return cv2.morphologyEx(fg, cv2.MORPH_CLOSE, k).astype(bool)


def foreground_mask(image: np.ndarray, method: str = "grabcut", *, margin: float = 0.02,
                    iterations: int = 5, fill_holes: bool = True, min_fraction: float = 0.01) -> np.ndarray:
    """Bool HxW foreground of a uint8 RGB image by ``method`` in ``FOREGROUND_METHODS``.

    GrabCut starts from the rectangle ``margin`` x min(H, W) inside the border. A result
    covering less than ``min_fraction`` of the image is replaced by the whole image (with a
    warning) so that synthesis always has somewhere to go.
    """
    if method not in FOREGROUND_METHODS:
        raise ConfigError(f"foreground method must be one of {FOREGROUND_METHODS}, not {method!r}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"foreground_mask needs a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if method == "none":
        return np.ones((h, w), bool)
    fg = _grabcut(image, margin, iterations) if method == "grabcut" else _otsu(image)
    if fill_holes:
        fg = _fill_holes(fg)
    if fg.mean() < min_fraction:
        logger.warning("%s foreground covers %.2f%% of a %dx%d image; using the whole image",
                       method, 100 * fg.mean(), h, w)
        return np.ones((h, w), bool)
    return fg


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class ForegroundCache:
    """Compute each image's foreground once: in memory by path, on disk (``cache_dir``) as PNG.

    The disk key is the SHA-256 of the image file (of the pixels when no path is given)
    plus the method and the size, so a changed file or size never reuses a stale mask.
    """

    def __init__(self, method: str = "grabcut", cache_dir: str | Path | None = None, **options: Any) -> None:
        if method not in FOREGROUND_METHODS:
            raise ConfigError(f"foreground method must be one of {FOREGROUND_METHODS}, not {method!r}")
        self.method = method
        self.options = options
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[tuple, np.ndarray] = {}
        self.computed = 0  # how many masks were actually computed (not read from a cache)

    def __len__(self) -> int:
        return len(self._memory)

    def get(self, image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
        """Read-only bool HxW foreground of ``image`` (HxWx3, uint8 or float in [0, 1])."""
        h, w = image.shape[:2]
        if self.method == "none":
            key: tuple = ("none", h, w)
        elif path is not None:
            key = (str(path), h, w)
        else:
            key = (hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(), h, w)
        fg = self._memory.get(key)
        if fg is None:
            fg = self._load_or_compute(image, path, key)
            fg.flags.writeable = False
            self._memory[key] = fg
        return fg

    def _load_or_compute(self, image: np.ndarray, path: str | Path | None, key: tuple) -> np.ndarray:
        h, w = image.shape[:2]
        if self.method == "none":
            return np.ones((h, w), bool)
        file = None
        if self.cache_dir is not None:
            digest = _file_sha256(path) if path is not None and os.path.isfile(path) else (
                key[0] if path is None else hashlib.sha256(_to_uint8(image).tobytes()).hexdigest())
            tag = "".join(f"-{k}{v}" for k, v in sorted(self.options.items()))
            file = self.cache_dir / f"{digest}_{self.method}{tag}_{h}x{w}.png"
            cached = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE) if file.is_file() else None
            if cached is not None and cached.shape == (h, w):
                return cached > 127
        fg = foreground_mask(_to_uint8(image), self.method, **self.options)
        self.computed += 1
        if file is not None:
            try:
                _write_png_atomic(file, fg.astype(np.uint8) * 255)
            except OSError as e:  # a cache is an optimisation: a read-only or full disk only costs time
                logger.warning("foreground cache %s not writable (%s); masks are kept in memory only",
                               self.cache_dir, e.strerror or e)
                self.cache_dir = None
        return fg


def _file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_png_atomic(file: Path, mask: np.ndarray) -> None:
    """Write then rename, so concurrent DataLoader workers never read a half-written mask."""
    file.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        return
    fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, file)
