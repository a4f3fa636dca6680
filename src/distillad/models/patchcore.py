"""PatchCore: a memory bank of the frozen teacher's patch features, no student. Roth et al., "Towards
Total Recall in Industrial Anomaly Detection", CVPR 2022. Upstream: amazon-science/patchcore-inspection
(``patchcore.py``, ``sampler.py``, ``common.py``).

The library's reference: what the same ImageNet teacher gives without any training, so every student
is judged against it in the same benchmark run (``distillad benchmark --models rd,patchcore``).

- Features (Sec. 3.1): two mid-level teacher stages (WideResNet layer2+3, strides 8 and 16; for
  EfficientNet-Lite the stride-8/16 stages, ``out_indices=(2, 3)``), each averaged over its 3×3
  neighbourhood (local aggregation, stride 1), the deeper upsampled bilinearly to the shallower's
  grid, concatenated along channels. The reference then averages each level and the whole vector down to
  1024 dimensions; lite0's 40 + 112 = 152 channels are used as they are (no projection needed).
- Memory bank (Sec. 3.2): greedy k-center coreset of ``coreset_ratio`` of all training patches, chosen
  on a Johnson–Lindenstrauss random projection to ``projection_dim`` dimensions (Eq. 4 with the
  approximation of Sec. 3.2; the reference starts from one random point, as here).
- Score (Sec. 3.3): each patch's distance to its nearest bank entry (Eq. 6); the map is that patch grid
  upsampled bilinearly and blurred (σ = 4); the image score is its maximum. The paper's reweighting
  of the image score by the neighbourhood of the nearest entry (Eq. 7) is left out: the reference's
  own default scorer, and the image score then follows the map as for every other method here.
- Fit: one pass over the good training images (a ``gradient=False`` phase, ``schedule="once"``),
  whatever ``--epochs`` says; no optimiser. The bank is a buffer saved in ``model.safetensors``.

Paper's PatchCore-1% (coreset 1 %): 99.0 I-AUROC on MVTec AD with WideResNet50; the issue's anomalib 2.7
comparison used 1 % too, which is the default here (10 % and 25 % are one keyword away, at 10× and
25× the bank's size and its scoring cost).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..hints import Fraction, NonNegativeFloat, PositiveInt
from ..maps import Combine
from ..phases import Phase
from ..registry import register_model
from ..teachers import Teacher
from ._base import DistillationModel

__all__ = ["PatchCore", "patchcore", "greedy_coreset", "nearest_distance"]


def greedy_coreset(features: torch.Tensor, n: int, projection_dim: int = 128,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``n`` rows of ``features`` (N, D) chosen by greedy k-center selection (Eq. 4): each new
    row is the one farthest from those chosen so far, distances measured after a random Gaussian
    projection to ``projection_dim`` dimensions (when D is larger). O(n·N·d) time, O(N) extra memory."""
    total = len(features)
    n = max(1, min(int(n), total))
    z = features.float()
    if z.shape[1] > projection_dim:
        proj = torch.randn(z.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        z = z @ proj.to(z.device)
    sq = (z * z).sum(1)
    chosen = torch.empty(n, dtype=torch.long)
    idx = int(torch.randint(total, (1,), generator=generator))
    min_d = torch.full((total,), float("inf"), device=z.device)
    for i in range(n):
        chosen[i] = idx
        c = z[idx]
        # ‖z − c‖² as ‖z‖² − 2 z·c + ‖c‖²: one matrix-vector product per step instead of an (N, d) temporary
        min_d = torch.minimum(min_d, sq - 2.0 * (z @ c) + sq[idx])
        idx = int(torch.argmax(min_d))
    return chosen


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance of each query (Q, D) to its nearest bank row (M, D) → (Q,); matrix products only,
    so it exports to ONNX; the bank is taken ``chunk`` rows at a time to bound the (Q, chunk) temporary."""
    q2 = (queries * queries).sum(1, keepdim=True)
    best = None
    for part in bank.split(chunk):
        d = q2 - 2.0 * queries @ part.t() + (part * part).sum(1).unsqueeze(0)
        m = d.min(dim=1).values
        best = m if best is None else torch.minimum(best, m)
    return best.clamp_min(0).sqrt()  # type: ignore[union-attr]


class MemoryBank(nn.Module):
    """The bank of nominal patch features as a buffer (M, D); its size is set by the fit (and by loading)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        # one zero row until fitted: an unfitted model still scores (like an untrained student: meaninglessly)
        self.register_buffer("bank", torch.zeros(1, dim))

    def resize_to(self, shape: torch.Size) -> None:
        if len(shape) != 2 or shape[1] != self.bank.shape[1] or shape[0] < 1:
            raise ConfigError(f"memory bank of shape {tuple(shape)} does not fit features of {self.bank.shape[1]} "
                              "dimensions")
        self.bank = torch.zeros(shape, dtype=self.bank.dtype, device=self.bank.device)


class PatchCore(DistillationModel):
    """Frozen teacher → locally aggregated patch features → nearest-neighbour distance to a coreset bank."""

    train_defaults = {"epochs": 1, "batch_size": 16, "image_size": 256}

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (2, 3),
                 coreset_ratio: Fraction = 0.01, projection_dim: PositiveInt = 128, neighbourhood: PositiveInt = 3,
                 max_patches: PositiveInt = 1_000_000, sigma: NonNegativeFloat = 4.0) -> None:
        super().__init__(lr=1.0, betas=(0.9, 0.999), sigma=sigma)  # no optimiser: a fit, not a descent
        out_indices = tuple(out_indices)
        if not out_indices:
            raise ConfigError("patchcore needs at least one teacher stage (out_indices)")
        if neighbourhood % 2 == 0:
            raise ConfigError(f"neighbourhood must be odd (a centred p×p window), got {neighbourhood}")
        self.coreset_ratio, self.projection_dim = coreset_ratio, projection_dim
        self.neighbourhood, self.max_patches = neighbourhood, max_patches
        self.teacher = Teacher(teacher, out_indices, teacher_weights, teacher_sha256)
        self.memory = MemoryBank(sum(self.teacher.channels))

    # -- features ---------------------------------------------------------------------
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W) → locally aggregated patch features (B, D, h, w) on the shallowest stage's grid."""
        feats = self.teacher(images)
        p = self.neighbourhood
        feats = [F.avg_pool2d(f.float(), p, stride=1, padding=p // 2, count_include_pad=False) for f in feats]
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return torch.cat(feats, dim=1)

    # -- fit ----------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase("memory", ("memory",), loss="embed", gradient=False, schedule="once", finish="build_bank")]

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch's patch features as rows (``features``, (B·h·w, D)), collected by the engine over the pass;
        ``loss`` (logged) is their mean norm."""
        f = self.patch_features(batch["image"])
        rows = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        return {"loss": rows.norm(dim=1).mean(), "features": rows}

    def build_bank(self, outputs: dict[str, torch.Tensor]) -> None:
        """Greedy coreset of the pass's patch features into the bank; over ``max_patches`` rows, a random
        subset of that many is the pool (said in the docstring, so the cost stays bounded)."""
        rows = outputs["features"]
        if len(rows) > self.max_patches:
            rows = rows[torch.randperm(len(rows))[: self.max_patches]]
        n = max(1, round(len(rows) * self.coreset_ratio))
        idx = greedy_coreset(rows, n, self.projection_dim)
        self.memory.bank = rows[idx].contiguous().to(self.memory.bank.dtype)

    def resize_state(self, state: dict[str, torch.Tensor]) -> None:
        """Before loading ``state``: give the bank the saved bank's number of rows (checkpoint loading)."""
        if "memory.bank" in state:
            self.memory.resize_to(state["memory.bank"].shape)

    # -- score --------------------------------------------------------------------------
    def map_parts(self, images: torch.Tensor) -> tuple[list[torch.Tensor], Combine]:
        """Nearest-bank distance of every patch (Eq. 6) on the patch grid: [(B, 1, h, w)]."""
        f = self.patch_features(images)
        b, d, h, w = f.shape
        dist = nearest_distance(f.permute(0, 2, 3, 1).reshape(-1, d), self.memory.bank.float())
        return [dist.reshape(b, 1, h, w)], "sum"

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """No loss is descended; the fit is ``embed`` + ``build_bank``."""
        return self.embed(batch)


@register_model
def patchcore(**kwargs) -> PatchCore:
    """PatchCore-1% on the teacher's stride-8/16 stages (a memory-bank reference, no student)."""
    return PatchCore(**kwargs)
