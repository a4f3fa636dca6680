"""Reverse Distillation (RD4AD): Deng & Li, "Anomaly detection via reverse distillation from
one-class embedding", CVPR 2022. Upstream: hq-deng/RD4AD (``main.py``, ``resnet.py``, ``de_resnet.py``).

- Teacher E: frozen encoder, three stages (ResNet layer1–3; for EfficientNet-Lite the
  stride-4/8/16 stages).
- One-class bottleneck embedding (OCBE): multi-scale fusion of the three stages + residual
  stage (``layers.OCBE``).
- Student D: decoder mirroring the teacher (``layers.ReverseDecoder``).
- Loss (reference code): Σ_k [1 − cos(vec E_k, vec D_k)] over whole flattened maps.
- Map: per stage 1 − cos along channels, bilinear (align_corners) to the image size,
  summed, Gaussian σ = 4; image score = max of the map.
- Adam lr 0.005, betas (0.5, 0.999), batch 16, 256 px, 200 epochs.

For ``resnet18/34/50`` and ``wide_resnet50_2`` teachers the bottleneck and decoder have the
reference layout and parameter counts (minus the reference's unused ``conv4``, see layers.py;
the table is ``layers.reverse_layout``, shared with dskd); for other teachers the decoder is
built from the teacher's stage channels with basic blocks (resnet18-style: two blocks per stage).

Two differences from the reference, both no-ops for ResNet teachers at sizes divisible by 32:
- ``decoder_relu`` (default True, the reference) ends each decoder stage with ReLU. EfficientNet-Lite
  stage outputs are signed (linear bottlenecks), which a ReLU output cannot reproduce;
  ``decoder_relu=False`` lets the student match them (a much lower final training loss), but it is
  chosen no better on validation images: ``distillad tune --grid decoder_relu=true,false`` on four
  categories (validation good images vs. synthetic defects, 10 epochs) puts the two heads within seed
  noise, and on Magnetic Tile's test set the signed head is less stable. So the reference layout stays
  the default (measured, with the commands: benchmarks/results/defaults.md).
- At image sizes that are not multiples of 32 (e.g. 225 px) the decoder's stage sizes overshoot
  the teacher's; student features are resized bilinearly to the teacher's before loss and map
  (``layers.match_sizes``).
Optional variance loss (Song, Buayai & Mao) is added by ``rd_var`` in ``rd_var.py``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..hints import Betas, NonNegativeFloat, PositiveFloat
from ..layers import match_sizes, reverse_layout
from ..losses import flat_cosine_loss
from ..maps import Combine, cosine_distance
from ..registry import register_model
from ..teachers import Teacher
from ._base import DistillationModel

__all__ = ["ReverseDistillation", "rd"]


class ReverseDistillation(DistillationModel):
    """Teacher encoder → OCBE → decoder student; the student reconstructs the teacher's stages."""

    train_defaults = {"epochs": 200, "batch_size": 16, "image_size": 256}

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 lr: PositiveFloat = 0.005, betas: Betas = (0.5, 0.999), sigma: NonNegativeFloat = 4.0,
                 combine: Combine = "sum", decoder_relu: bool = True) -> None:
        super().__init__(lr, betas, sigma)
        out_indices = tuple(out_indices)
        if len(out_indices) != 3:
            raise ConfigError(f"rd needs exactly 3 teacher stages, got out_indices={out_indices}")
        self.combine = combine
        self.teacher = Teacher(teacher, out_indices, teacher_weights, teacher_sha256)
        self.bottleneck, self.decoder = reverse_layout(teacher).build(self.teacher.channels, act_out=decoder_relu)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """images (B,3,H,W) → (teacher_feats, student_feats), each [(B,C_k,H/r_k,W/r_k)] shallow→deep."""
        t = self.teacher(images)
        s = self.decoder(self.bottleneck(t))
        return t, match_sizes(s, t)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t, s = self(batch["image"])
        loss = flat_cosine_loss(t, s)
        return {"loss": loss}

    def map_parts(self, images: torch.Tensor) -> tuple[list[torch.Tensor], Combine]:
        t, s = self(images)
        return [cosine_distance(a, b) for a, b in zip(t, s)], self.combine


@register_model
def rd(**kwargs) -> ReverseDistillation:
    """Reverse Distillation with the paper's defaults (RD4AD, CVPR 2022)."""
    return ReverseDistillation(**kwargs)
