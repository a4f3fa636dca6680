"""Training-loop helpers: configuration defaults (calibration: tests/test_calibration.py)."""

from __future__ import annotations

import distillad
from distillad.engine import TrainConfig


def test_train_config_takes_paper_defaults_unless_given():
    model = distillad.create_model("rd", teacher_weights="random")
    cfg = TrainConfig(epochs=3).resolved(model)
    assert (cfg.epochs, cfg.batch_size, cfg.image_size) == (3, 16, 256)
