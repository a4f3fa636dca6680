"""Feature distances → anomaly maps: per-stage distance, upsampling, combination, Gaussian blur.

All functions are batched torch ops (no per-image or per-pixel Python loops), so maps are
computed on the model's device and the same code exports to ONNX.
"""

from __future__ import annotations

import functools
from typing import Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["cosine_distance", "normalized_l2_distance", "combine_maps", "gaussian_blur", "max_score",
           "gaussian_kernel1d", "Combine", "COMBINE_MODES", "check_combine", "smooth_combined",
           "bilinear_matrix", "blur_matrix", "fp32", "as_fp32", "FUSED_MAX_SIZE"]

#: how per-stage maps are combined: the type hint of every method's ``combine`` keyword
Combine = Literal["sum", "product", "mean"]
COMBINE_MODES: tuple[str, ...] = get_args(Combine)


def fp32(device: torch.device) -> "torch.autocast":
    """A region where autocast is off: maps are computed in fp32 whatever precision made the features
    (1 − cos of nearly equal bf16 features is mostly rounding noise)."""
    return torch.autocast(device.type, enabled=False)


def as_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 when it is half precision (bf16/fp16), else unchanged (fp32 and fp64 stay)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def cosine_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """1 − cos(t, s) along channels, in fp32: (B,C,h,w) × 2 → (B,1,h,w)."""
    with fp32(t.device):
        return 1.0 - F.cosine_similarity(as_fp32(t), as_fp32(s), dim=1).unsqueeze(1)


def normalized_l2_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """½‖t̂ − ŝ‖² of channel-ℓ2-normalised features (STFPM), in fp32: (B,C,h,w) × 2 → (B,1,h,w)."""
    with fp32(t.device):
        return 0.5 * (F.normalize(as_fp32(t), dim=1) - F.normalize(as_fp32(s), dim=1)).pow(2).sum(1, keepdim=True)


def check_combine(value: str) -> str:
    """``value`` if it is one of ``COMBINE_MODES``, else ConfigError naming it: the check of ``combine_maps``
    called directly (a method's ``combine`` keyword is its ``Combine`` hint, checked by the registry)."""
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
    maps = as_fp32(maps)  # maps are fp32 (or fp64) whatever precision made the features
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma, truncate).to(maps.device, maps.dtype)
    r = (k.numel() - 1) // 2
    b, c, h, w = maps.shape
    with fp32(maps.device):
        x = maps.reshape(b * c, 1, h, w)
        x = x.index_select(2, _reflect_index(h, r, maps.device))
        x = x.index_select(3, _reflect_index(w, r, maps.device))
        x = F.conv2d(x, k.view(1, 1, -1, 1))
        x = F.conv2d(x, k.view(1, 1, 1, -1))
    return x.reshape(b, c, h, w)


def max_score(maps: torch.Tensor) -> torch.Tensor:
    """Image score = maximum of the map: (B,1,H,W) → (B,)."""
    return maps.flatten(1).amax(1)



# --------------------------------------------------------------------------- fused map stage
# Bilinear upsampling, the sum over stages and the Gaussian blur are all linear, and each is separable
# along rows and columns, so blur(Σ_k up(M_k)) = Σ_k (G_H U_k) M_k (G_W V_k)ᵀ: a few small matmuls on the
# stage maps at their own resolution, never a full-resolution map per stage nor an index-select/conv
# pass over padded copies. Equal to the reference path up to float rounding (tests/test_speed_paths.py).

def bilinear_matrix(n_out: int, n_in: int, align_corners: bool = True) -> torch.Tensor:
    """(n_out, n_in) float64 matrix U with U @ x = F.interpolate(x, n_out, 'linear') of a length-n_in signal,
    with torch's source-index rule. Built in NumPy, so an ONNX trace sees a constant, not the arithmetic."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    u = np.zeros((n_out, n_in))
    np.add.at(u, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(u, (np.arange(n_out), i1), lam)
    return torch.from_numpy(u)


def blur_matrix(n: int, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """(n, n) float64 matrix G with G @ x = scipy.ndimage.gaussian_filter1d(x, σ, mode='reflect') (NumPy-built)."""
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    idx = np.remainder(np.arange(-r, n + r), 2 * n)
    idx = np.where(idx >= n, 2 * n - 1 - idx, idx)  # scipy's 'reflect' (d c b a | a b c d | d c b a)
    cols = idx[np.arange(n)[:, None] + np.arange(2 * r + 1)[None, :]]
    g = np.zeros((n, n))
    np.add.at(g, (np.broadcast_to(np.arange(n)[:, None], cols.shape), cols), np.broadcast_to(k, cols.shape))
    return torch.from_numpy(g)


@functools.lru_cache(maxsize=64)
def _operator(n_out: int, n_in: int, sigma: float, truncate: float, align_corners: bool,
              device: torch.device) -> torch.Tensor:
    """G U (n_out, n_in) in fp32 on ``device``: upsample one axis, then blur it."""
    a = bilinear_matrix(n_out, n_in, align_corners)
    if sigma > 0:
        a = blur_matrix(n_out, sigma, truncate) @ a
    return a.float().to(device)


#: above this map side the dense operators cost more than they save (they grow as side²): reference path
FUSED_MAX_SIZE = 1024


def blur_matrix_op(n: int, sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    """``blur_matrix`` in fp32 on ``device``, cached."""
    return _operator(n, n, sigma, truncate, True, device)  # the n→n bilinear matrix is the identity


def smooth_combined(maps: Sequence[torch.Tensor], size: tuple[int, int], mode: Combine = "sum", sigma: float = 4.0,
                    align_corners: bool = True, truncate: float = 4.0) -> torch.Tensor:
    """``gaussian_blur(combine_maps(maps, size, mode), sigma)`` in fp32 as one sum of small matmuls on the
    stage maps (B,1,h_k,w_k) → (B,1,H,W); ``product`` is not linear and takes the reference path."""
    check_combine(mode)
    h, w = int(size[0]), int(size[1])
    if not maps or max(h, w) > FUSED_MAX_SIZE:
        return gaussian_blur(combine_maps(maps, size, mode, align_corners), sigma, truncate)
    dev = maps[0].device
    with fp32(dev):
        if mode == "product":  # not linear across stages: upsample each (U M Vᵀ), multiply, blur (G X Gᵀ)
            out = None
            for m in maps:
                up = _operator(h, int(m.shape[-2]), 0.0, truncate, align_corners, dev) @ m.float() \
                    @ _operator(w, int(m.shape[-1]), 0.0, truncate, align_corners, dev).t()
                out = up if out is None else out * up
            if sigma <= 0:
                return out
            return blur_matrix_op(h, sigma, truncate, dev) @ out @ blur_matrix_op(w, sigma, truncate, dev).t()
        rows, cols = [], []
        for m in maps:
            m = m.float()
            rows.append(_operator(h, int(m.shape[-2]), sigma, truncate, align_corners, dev))
            cols.append(m @ _operator(w, int(m.shape[-1]), sigma, truncate, align_corners, dev).t())  # (B,1,h_k,W)
        out = torch.cat(rows, 1) @ torch.cat(cols, 2)  # Σ_k A_k (M_k B_kᵀ): one matmul over the stacked stages
    return out / len(maps) if mode == "mean" else out
