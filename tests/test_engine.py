"""Training-loop helpers: configuration defaults (calibration: tests/test_calibration.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.hardening import TINY_FLAGS  # tests/ is on sys.path

import distillad
from distillad import api
from distillad import precision as prec
from distillad.cli import main
from distillad.data import load_samples, train_val_split
from distillad.engine import TrainConfig, fit
from distillad.errors import ConfigError


def test_train_config_takes_paper_defaults_unless_given():
    model = distillad.create_model("rd", teacher_weights="random")
    cfg = TrainConfig(epochs=3).resolved(model)
    assert (cfg.epochs, cfg.batch_size, cfg.image_size) == (3, 16, 256)


def _tiny_fit(tiny_data, precision: str, dtypes: list | None = None) -> tuple[list, dict]:
    """One epoch of rd on the tiny data at ``precision``; the dtypes a student conv produced, if asked."""
    train_s, _ = train_val_split(load_samples(tiny_data, "train"), 0.1, 0)
    torch.manual_seed(0)
    net = distillad.create_model("rd", teacher_weights="random")
    if dtypes is not None:
        conv = next(m for m in getattr(net, net.student_modules()[0]).modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    sets = api.build_train_sets(net, train_s, 32, 0)
    hist = fit(net, sets, TrainConfig(epochs=1, batch_size=4, image_size=32, device="cpu", precision=precision),
               progress=False)
    return hist, net.student_state_dict()


def test_bf16_training_autocasts_the_networks_and_keeps_fp32_weights(tiny_data, one_thread):
    try:
        prec.check_precision("bf16", "cpu")
    except ConfigError as e:
        pytest.skip(str(e))
    dtypes: list = []
    h16, s16 = _tiny_fit(tiny_data, "bf16", dtypes)
    h32, s32 = _tiny_fit(tiny_data, "fp32")
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in s16.values() if v.is_floating_point())
    assert math.isfinite(h16[0]["loss"]) and h16[0]["loss"] != h32[0]["loss"]
    assert abs(h16[0]["loss"] - h32[0]["loss"]) < 0.05 * abs(h32[0]["loss"])  # same training, rounded


def test_training_precision_is_checked_before_anything_is_written(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2"}))
    out = tmp_path / "run"
    assert main(["train", "--model", "rd", "--data", str(tiny_data), "--out", str(out), *TINY_FLAGS,
                 "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bf16" in err and "fp32" in err, err
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"precision must be one of 'fp32', 'bf16', got 'fp16' \(--precision\)"):
        TrainConfig(precision="fp16").check_precision(torch.device("cpu"))
