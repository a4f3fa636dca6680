"""Every registered method, through the registry: one training step, gradients, frozen teacher,
predict shapes, and save → load giving identical outputs. New methods are tested with no new code."""

from __future__ import annotations

import pytest
import torch

import distillad
from distillad.checkpoint import load_weights, save_weights
from distillad.errors import ConfigError

MODELS = distillad.list_models()


def _batch(b: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, size // 4: size // 2, size // 4: size // 2] = 1
    image = torch.rand(b, 3, size, size, generator=g)
    return {"image": image, "anomalous": torch.where(mask.bool(), torch.rand(b, 3, size, size, generator=g), image),
            "mask": mask, "foreground": torch.ones(b, 1, size, size), "label": torch.zeros(b, dtype=torch.long)}


def _make(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return distillad.create_model(name, teacher_weights="random", **kw)


def test_registry_lists_the_baselines():
    assert {"rd", "stfpm"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_one_training_step_per_phase(name):
    """Each declared phase: finite loss, a gradient for every parameter it trains and none elsewhere,
    the teacher (BatchNorm statistics included) unchanged."""
    from distillad.engine import _enter_phase
    from distillad.phases import param_groups, validate_phases
    model = _make(name)
    phases = model.phases()
    validate_phases(model, phases)
    teacher_state = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    for ph in phases:
        _enter_phase(model, ph, trainable)
        if not ph.gradient:  # a statistics fit (PatchCore's bank): no gradient anywhere, ``finish`` takes the rows
            with torch.no_grad():
                out = getattr(model, ph.loss)(_batch())
            assert torch.isfinite(out["loss"]) and not param_groups(model, ph, trainable)
            assert all(p.grad is None for p in model.parameters())
            getattr(model, ph.finish)({k: v for k, v in out.items() if v.dim() > 0})
            continue
        opt = (ph.optimizer or model.build_optimizer)(param_groups(model, ph, trainable))
        losses = getattr(model, ph.loss)(_batch())
        assert "loss" in losses and torch.isfinite(losses["loss"]), ph.name
        opt.zero_grad()
        losses["loss"].backward()
        own = {id(p) for m in ph.modules for p in model.get_submodule(m).parameters()}
        missing = [n for n, p in model.named_parameters() if id(p) in own and p.grad is None]
        assert not missing, f"phase {ph.name}: trained parameters without gradient: {missing[:5]}"
        leaked = [n for n, p in model.named_parameters() if id(p) not in own and p.grad is not None]
        assert not leaked, f"phase {ph.name}: frozen parameters got a gradient: {leaked[:5]}"
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(v, teacher_state[k]), f"teacher changed: {k}"
    names = {id(p) for p in model.trainable_parameters()}
    assert not names & {id(p) for p in model.teacher.parameters()}


@pytest.mark.parametrize("name", MODELS)
def test_predict_shapes_and_save_load_roundtrip(name, tmp_path):
    model = _make(name).eval()
    x = _batch()["image"]
    maps, scores = model.predict(x)
    assert maps.shape == (2, 1, 64, 64) and scores.shape == (2,)
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
    sha = save_weights(tmp_path / "w.safetensors", model.student_state_dict())
    torch.manual_seed(123)  # a differently initialised copy
    other = distillad.create_model(name, teacher_weights="random")
    other.teacher.load_state_dict(model.teacher.state_dict())  # random teacher: copy it (real ones are rebuilt from files)
    other.load_state_dict(load_weights(tmp_path / "w.safetensors", sha), strict=False)
    other.eval()
    maps2, scores2 = other.predict(x)
    torch.testing.assert_close(maps2, maps)
    torch.testing.assert_close(scores2, scores)


def test_unknown_model_and_keyword_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model 'rdx'.*available"):
        distillad.create_model("rdx")
    with pytest.raises(ConfigError, match="sigmaa"):
        distillad.create_model("rd", teacher_weights="random", sigmaa=3)
    with pytest.raises(ConfigError, match="combine"):
        distillad.create_model("rd", teacher_weights="random", combine="max")


def test_rd_reference_layout_parameter_counts():
    """WideResNet50-2 RD: decoder 24.9 M and bottleneck 67.2 M as the DSKD-fusion paper reports for RD4AD;
    our bottleneck omits the reference's never-called conv4 (1×1, 4096→2048) + bn4."""
    m = distillad.create_model("rd", teacher="wide_resnet50_2", teacher_weights="random")
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert round(count(m.decoder) / 1e6, 1) == 24.9
    unused_conv4 = 4096 * 2048 + 2 * 2048
    assert abs((count(m.bottleneck) + unused_conv4) / 1e6 - 67.2) < 0.1
