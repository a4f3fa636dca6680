"""How an image becomes the model's input, and how the map goes back: ``squash``, ``pad``, ``long-side``.

- ``squash`` (the papers' protocol): every image is stretched to ``image_size`` × ``image_size``;
  a 500×1247 image is squeezed 2.5× along its long side, so thin defects there can vanish.
- ``pad`` (letterbox): the image is scaled so that its long side is ``image_size``, keeping its
  aspect, and padded at the bottom and right to a square with :data:`PAD_FILL` (black); masks are
  padded alike (with "good"), and maps are cropped back to the image's region (:func:`crop_map`).
- ``long-side``: one input shape for the whole run, with the long side ``image_size`` and the
  short side derived from the *median* aspect ratio of the training images, rounded to a multiple
  of 32 (the teachers' five stride-2 stages); recorded in run.json as ``data.input_size``.

Why one shape per run rather than one per image for ``long-side``: the DataLoader's default
collate, BatchNorm, the micro-batching of ``distillad serve`` and the exported ONNX/OpenVINO
models (fixed input size) all need one shape; a dataset's images rarely differ much in aspect,
and those that do are stretched to the run's aspect, not to a square. ``pad`` is the mode for
datasets whose aspect ratios vary (each image keeps its own; the price is padded pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError

__all__ = ["RESIZE_MODES", "crop_to_images", "PAD_FILL", "SQUASH_WARN_ASPECT", "check_resize", "derive_input_size", "content_size",
           "fit_image", "fit_mask", "crop_map", "run_geometry"]

RESIZE_MODES = ("squash", "pad", "long-side")
#: the padding of ``pad``, in uint8 (0 = black); masks are padded with 0 (good)
PAD_FILL = 0
#: a training image whose aspect the input changes by this factor or more is warned about (``train``'s preamble)
SQUASH_WARN_ASPECT = 1.25


def check_resize(mode: Any) -> str:
    """``mode`` if it is one of :data:`RESIZE_MODES`, else a ``ConfigError`` naming it."""
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    return mode


def _round32(v: float) -> int:
    return max(32, int(round(v / 32.0)) * 32)


def derive_input_size(mode: str, image_size: int, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The run's model input (H, W) for ``mode`` from the training images' (width, height) ``sizes``."""
    check_resize(mode)
    if mode != "long-side" or not sizes:
        return image_size, image_size
    ratio = float(np.median([h / w for w, h in sizes]))  # height / width of the typical image
    if ratio >= 1:
        return image_size, min(image_size, _round32(image_size / ratio))
    return min(image_size, _round32(image_size * ratio)), image_size


def content_size(shape: tuple[int, int], size: tuple[int, int], mode: str) -> tuple[int, int]:
    """(h, w) of an image of ``shape`` (H, W) inside the model input ``size`` (H, W): the whole input but
    for ``pad``, where it is the image scaled by its long side (at least 1 pixel each way)."""
    if mode != "pad":
        return size
    h, w = shape
    scale = min(size[0] / h, size[1] / w)
    return max(1, min(size[0], round(h * scale))), max(1, min(size[1], round(w * scale)))


def _resize(arr: np.ndarray, hw: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    if arr.shape[:2] == hw:
        return arr
    return np.array(Image.fromarray(arr).resize((hw[1], hw[0]), resample))


def fit_image(image: np.ndarray, size: tuple[int, int], mode: str = "squash") -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 RGB (H, W, 3) → (model input (size[0], size[1], 3) uint8, (h, w) of the image inside it).

    Pillow bilinear (antialiased) resizing; ``pad`` places the image at the top left and fills the rest
    with :data:`PAD_FILL`."""
    ch, cw = content_size(image.shape[:2], size, mode)
    small = _resize(image, (ch, cw), Image.Resampling.BILINEAR)
    if (ch, cw) == tuple(size):
        return small, (ch, cw)
    out = np.full((size[0], size[1], 3), PAD_FILL, dtype=np.uint8)
    out[:ch, :cw] = small
    return out, (ch, cw)


def fit_mask(mask: np.ndarray, size: tuple[int, int], mode: str = "squash") -> np.ndarray:
    """bool mask (H, W) → bool (size) placed exactly as :func:`fit_image` places its image (nearest-neighbour;
    padding is "good")."""
    ch, cw = content_size(mask.shape, size, mode)
    small = _resize(mask, (ch, cw), Image.Resampling.NEAREST)
    if (ch, cw) == tuple(size):
        return small
    out = np.zeros(size, dtype=bool)
    out[:ch, :cw] = small
    return out


def crop_map(amap: np.ndarray | torch.Tensor, content: tuple[int, int]) -> Any:
    """The image's region of a map (..., H, W) of the model input: ``[..., :h, :w]`` (a no-op unless ``pad``)."""
    h, w = content
    return amap[..., :h, :w]


def run_geometry(spec: dict[str, Any]) -> tuple[tuple[int, int], str]:
    """(model input (H, W), resize mode) of a run.json; runs written before resize modes existed squash."""
    data = spec.get("data") or {}
    mode = data.get("resize") or "squash"
    size = data.get("input_size") or spec["image_size"]
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return hw, mode


def crop_to_images(maps: torch.Tensor, masks: torch.Tensor, ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,1,H,W) maps and masks restricted to each image's region of its input (``pad`` adds padding): cropped
    when every image has the same region; else each region resized back to (H, W) (maps bilinear, masks
    nearest), so padded pixels never count in the pixel metrics and each image weighs the same."""
    regions = [ds.content(i) for i in range(len(ds))]
    if all(r == tuple(ds.size) for r in regions):
        return maps, masks
    if len(set(regions)) == 1:
        h, w = regions[0]
        return maps[..., :h, :w], masks[..., :h, :w]
    size = tuple(ds.size)
    out_maps = torch.cat([torch.nn.functional.interpolate(m[None, :, :h, :w], size=size, mode="bilinear",
                                                          align_corners=False) for m, (h, w) in zip(maps, regions)])
    out_masks = torch.cat([torch.nn.functional.interpolate(m[None, :, :h, :w], size=size, mode="nearest")
                           for m, (h, w) in zip(masks, regions)])
    return out_maps, out_masks
