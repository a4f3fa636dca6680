"""Feature distances → anomaly maps: per-stage distance, upsampling, combination, Gaussian blur.

All functions are batched torch ops (no per-image or per-pixel Python loops), so maps are
computed on the model's device and the same code exports to ONNX.
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["cosine_distance", "normalized_l2_distance", "combine_maps", "gaussian_blur", "max_score",
           "gaussian_kernel1d", "Combine", "COMBINE_MODES", "check_combine"]

#: how per-stage maps are combined: the type hint of every method's ``combine`` keyword
Combine = Literal["sum", "product", "mean"]
COMBINE_MODES: tuple[str, ...] = get_args(Combine)


def cosine_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """1 − cos(t, s) along channels: (B,C,h,w) × 2 → (B,1,h,w)."""
    return 1.0 - F.cosine_similarity(t, s, dim=1).unsqueeze(1)


def normalized_l2_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """½‖t̂ − ŝ‖² of channel-ℓ2-normalised features (STFPM): (B,C,h,w) × 2 → (B,1,h,w)."""
    return 0.5 * (F.normalize(t, dim=1) - F.normalize(s, dim=1)).pow(2).sum(1, keepdim=True)


def check_combine(value: str) -> str:
    """``value`` if it is one of ``COMBINE_MODES``, else ConfigError naming it: the one check behind
    ``combine_maps`` and the methods' ``combine`` keywords (which fail at construction, not at test)."""
    if value not in COMBINE_MODES:
        raise ConfigError(f"combine must be one of {', '.join(map(repr, COMBINE_MODES))}, got {value!r}")
    return value


def combine_maps(maps: Sequence[torch.Tensor], size: tuple[int, int], mode: Combine = "sum",
                 align_corners: bool = True) -> torch.Tensor:
    """Upsample per-stage maps (B,1,h_k,w_k) bilinearly to ``size`` and sum, multiply or average them."""
    check_combine(mode)
    up = [F.interpolate(m, size=size, mode="bilinear", align_corners=align_corners) for m in maps]
    out = up[0]
    for m in up[1:]:
        out = out * m if mode == "product" else out + m
    return out / len(up) if mode == "mean" else out


def _reflect_index(n: int, r: int, device: torch.device) -> torch.Tensor:
    """Indices of scipy's 'reflect' padding (d c b a | a b c d | d c b a) of width r."""
    idx = torch.arange(-r, n + r, device=device)
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's kernel: radius int(truncate·σ + 0.5), normalised to sum 1."""
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian filter of (B,1,H,W) maps, equal to scipy.ndimage.gaussian_filter
    (mode 'reflect') per map, as RD's reference applies with σ = 4."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma, truncate).to(maps.device, maps.dtype)
    r = (k.numel() - 1) // 2
    b, c, h, w = maps.shape
    x = maps.reshape(b * c, 1, h, w)
    x = x.index_select(2, _reflect_index(h, r, maps.device))
    x = x.index_select(3, _reflect_index(w, r, maps.device))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return x.reshape(b, c, h, w)


def max_score(maps: torch.Tensor) -> torch.Tensor:
    """Image score = maximum of the map: (B,1,H,W) → (B,)."""
    return maps.flatten(1).amax(1)

