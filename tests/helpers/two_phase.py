"""A tiny two-phase method for engine tests: a student (joint phase on normal images), then a
segmentation head on synthetic defects with the student frozen (``schedule="after"``)."""

from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from distillad.models._base import DistillationModel
from distillad.phases import Phase
from distillad.registry import _CLASSES, _MODELS, register_model
from distillad.synthesis import PAPER_PRESETS
from distillad.teachers import Teacher

NAME = "two_phase_test"


class TwoPhase(DistillationModel):
    """Teacher stage 1, a conv student, and a head trained on the student's distance map."""

    train_defaults = {"epochs": 2, "batch_size": 4, "image_size": 32}
    synthesis = dict(PAPER_PRESETS["dskd"])

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "random",
                 lr: float = 0.01, betas: tuple[float, float] = (0.5, 0.999), sigma: float = 0.0,
                 head_epochs: int = 2, head_lr: float = 0.05, delay: float = 0.0) -> None:
        super().__init__(lr, betas, sigma)
        self.head_epochs, self.head_lr, self.delay = head_epochs, head_lr, delay
        self.teacher = Teacher(teacher, (1,), teacher_weights, None)
        c = self.teacher.channels[0]
        self.student = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                     nn.Conv2d(c, c, 1))
        self.head = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))

    def phases(self) -> list[Phase]:
        return [Phase("students", ("student",)),
                Phase("head", ("head",), loss="head_loss", data="synthetic", schedule="after", after="students",
                      epochs=self.head_epochs, lr={"head": self.head_lr})]

    def distance(self, images: torch.Tensor) -> torch.Tensor:
        t = self.teacher(images)[0]
        s = F.interpolate(self.student(self.teacher.normalize(images)), size=t.shape[-2:], mode="bilinear")
        return 1 - F.cosine_similarity(t, s, dim=1).unsqueeze(1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.distance(batch["image"]).mean()}

    def head_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.delay:
            time.sleep(self.delay)
        logit = self.head(self.distance(batch["anomalous"]))
        mask = F.interpolate(batch["mask"], size=logit.shape[-2:], mode="area")
        return {"loss": F.binary_cross_entropy_with_logits(logit, mask)}

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(torch.sigmoid(self.head(self.distance(images))), size=images.shape[-2:], mode="bilinear")


def register() -> None:
    """Register under ``NAME`` (idempotent); tests unregister with ``unregister`` so the registry stays clean."""
    if NAME not in _MODELS:
        def two_phase_test(**kwargs) -> TwoPhase:
            return TwoPhase(**kwargs)
        register_model(two_phase_test)


def unregister() -> None:
    _MODELS.pop(NAME, None)
    _CLASSES.pop(NAME, None)
