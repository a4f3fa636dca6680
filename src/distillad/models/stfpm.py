"""STFPM, forward distillation: Wang et al., "Student-Teacher Feature Pyramid Matching for
Anomaly Detection", BMVC 2021. Upstream for comparison: anomalib ``models/image/stfpm``.

- Student: the teacher's architecture, randomly initialised, fed the same normalised image.
- Loss: Σ_k 1/(h_k w_k) Σ ½‖t̂ − ŝ‖² of channel-ℓ2-normalised features (``losses.normalized_mse_loss``);
  averaged over the batch (anomalib sums it, which only rescales the gradient under Adam).
- Map: per stage ½‖t̂ − ŝ‖², bilinear to the image size, combined by product (anomalib and the
  paper) or sum; Gaussian σ = 4 (anomalib applies none; the blur helps pixel metrics and is
  common to all methods here; ``sigma=0`` turns it off); score = max.
- Optimiser: the paper uses SGD lr 0.4, momentum 0.9, weight decay 1e-4; ``optimizer='adam'``
  (lr 0.005, betas (0.5, 0.999)) is offered for budget-matched comparisons with RD.
"""

from __future__ import annotations

from typing import Annotated, Any, Iterable, Literal

import torch
from annotated_types import Interval

from ..hints import Betas, NonNegativeFloat, PositiveFloat
from ..losses import normalized_mse_loss
from ..maps import Combine, normalized_l2_distance
from ..registry import register_model
from ..teachers import Teacher, build_backbone
from ._base import DistillationModel

__all__ = ["STFPM", "stfpm"]


class STFPM(DistillationModel):
    """Teacher and same-architecture student side by side; the student imitates each stage."""

    train_defaults = {"epochs": 100, "batch_size": 32, "image_size": 256}

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 optimizer: Literal["sgd", "adam"] = "sgd", lr: PositiveFloat = 0.4,
                 momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.9,
                 weight_decay: NonNegativeFloat = 1e-4, betas: Betas = (0.5, 0.999), sigma: NonNegativeFloat = 4.0,
                 combine: Combine = "product") -> None:
        super().__init__(lr, betas, sigma)
        self.optimizer, self.momentum, self.weight_decay = optimizer, momentum, weight_decay
        self.combine = combine
        out_indices = tuple(out_indices)
        self.teacher = Teacher(teacher, out_indices, teacher_weights, teacher_sha256)
        self.student = build_backbone(teacher, out_indices)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """images (B,3,H,W) → (teacher_feats, student_feats), each [(B,C_k,H/r_k,W/r_k)]."""
        return self.teacher(images), list(self.student(self.teacher.normalize(images)))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t, s = self(batch["image"])
        return {"loss": normalized_mse_loss(t, s)}

    def map_parts(self, images: torch.Tensor) -> tuple[list[torch.Tensor], Combine]:
        t, s = self(images)
        return [normalized_l2_distance(a, b) for a, b in zip(t, s)], self.combine

    def build_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The paper's SGD (lr, momentum, weight decay) over ``params`` (parameters or param-group
        dicts), or the base class's Adam for ``optimizer='adam'``."""
        if self.optimizer == "adam":
            return super().build_optimizer(params)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


@register_model
def stfpm(**kwargs) -> STFPM:
    """STFPM with the paper's defaults (SGD lr 0.4)."""
    return STFPM(**kwargs)
