"""Reverse Distillation with a variance loss: Song, Buayai & Mao, "Enhancing Reverse Distillation
for Anomaly Detection through Variance Loss Optimization". No public code; built on ``rd``.

Training loss (eq. 1) L = L_model + λ·L_var, with L_model RD's loss (``flat_cosine_loss``) and
L_var (``losses.variance_loss``, eqs. 2–5) on one student decoder block of the batch:
F_i = flatten(f_i), F̄ = (1/N) Σ_i F_i, L_var = (1/N) Σ_i [1 − cos(F_i, F̄)].
Inference is RD's, unchanged (same networks, same map): the loss costs nothing at test time.
A registry name of its own (``--model rd_var``) rather than an ``rd`` keyword, so that ``rd`` stays
the reference method; ``rd_var`` with ``variance_weight=0`` trains exactly like ``rd``.

Choices where the paper is silent or ambiguous:
- Blocks: we follow RD's notation (Deng & Li), where decoder block D^k mirrors encoder block
  E^k, so D1 is the *last* decoder block, the shallowest, highest-resolution one (stride 4,
  student_feats[0]), D3 the first block after the bottleneck (stride 16, student_feats[2]).
  The paper's Table V text agrees ("lower-level features, such as those in D1 ... finer-grained
  details"). Note that the RD reference code names its decoder stages the other way round
  (``decoder.layer1`` is the deepest). ``"all"`` sums L_var over D1 + D2 + D3.
- λ: the paper's value is only in its Fig. 4, which did not survive text extraction; the
  default 1.0 (the plain sum of eq. 1) is ours. ``benchmarks/bench_rd_var.py`` sweeps λ and
  chooses it on validation good images only.
- L1/L2 (Table III) are given without formulas: see ``losses.variance_loss``.
- F̄ is not detached (eq. 3 is a function of the batch); the batch size matters (Table IV).
- Image size: the paper trains at 225 px; we keep RD's 256 by default for comparability
  (``--image-size 225`` is accepted: RD resizes its student features to the teacher's there).
- Paper: WideResNet50-2 teacher, lr 0.005, batch 16; the teacher here is a keyword (default
  the library's), the rest are RD's defaults.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from ..hints import Betas, NonNegativeFloat, PositiveFloat
from ..losses import flat_cosine_loss, variance_loss
from ..maps import Combine
from ..registry import register_model
from .rd import ReverseDistillation

__all__ = ["RDVariance", "rd_var", "VARIANCE_BLOCKS"]

#: decoder block(s) L_var is computed on (Table V)
VarianceBlock = Literal["D1", "D2", "D3", "all"]
#: block name → indices into student_feats (shallow → deep); D^k mirrors teacher stage k
VARIANCE_BLOCKS = {"D1": (0,), "D2": (1,), "D3": (2,), "all": (0, 1, 2)}
#: distance of eq. 4 (Table III; see ``losses.variance_loss``)
VarianceDistance = Literal["cosine", "l1", "l2"]


class RDVariance(ReverseDistillation):
    """RD whose student is also trained to pull a batch's block features towards their mean."""

    train_defaults = {"epochs": 200, "batch_size": 16, "image_size": 256}

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 lr: PositiveFloat = 0.005, betas: Betas = (0.5, 0.999), sigma: NonNegativeFloat = 4.0,
                 combine: Combine = "sum", decoder_relu: bool = True, variance_weight: NonNegativeFloat = 1.0,
                 variance_block: VarianceBlock = "D1", variance_distance: VarianceDistance = "cosine") -> None:
        super().__init__(teacher, teacher_weights, teacher_sha256, out_indices, lr, betas, sigma, combine,
                         decoder_relu)
        self.variance_weight = float(variance_weight)
        self.variance_block = variance_block
        self.variance_distance = variance_distance

    def variance_features(self, student_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The decoder block(s) L_var is computed on: [(B,C,h,w)] picked by ``variance_block``."""
        return [student_feats[i] for i in VARIANCE_BLOCKS[self.variance_block]]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t, s = self(batch["image"])
        loss_rd = flat_cosine_loss(t, s)
        loss_var = variance_loss(self.variance_features(s), self.variance_distance)
        return {"loss": loss_rd + self.variance_weight * loss_var, "loss_rd": loss_rd, "loss_var": loss_var}


@register_model
def rd_var(**kwargs) -> RDVariance:
    """RD + variance loss on decoder block D1 (Song, Buayai & Mao); ``rd`` with the same weights infers identically."""
    return RDVariance(**kwargs)
