"""The teacher feature cache: the same losses and weights bit for bit as recomputing the teacher every
epoch, the teacher run once per image instead of once per epoch, and the memory limit's fallback."""

from __future__ import annotations

import pytest
import torch

from distillad import teacher_cache
from distillad.data import AnomalyDataset, load_samples
from distillad.engine import TrainConfig, fit, seed_everything
from distillad.errors import ConfigError
from distillad.registry import create_model
from distillad.teachers import Teacher


def _train(name: str, data, limit_mb: str, monkeypatch, epochs: int = 3) -> tuple[list, dict, int]:
    """(log, student weights, images the teacher computed) of a short fit with the cache limit given."""
    monkeypatch.setenv(teacher_cache.ENV, limit_mb)
    seen = {"images": 0}
    runner = Teacher.runner

    def counting(self):
        net = runner(self)
        return lambda x: (seen.__setitem__("images", seen["images"] + len(x)), net(x))[1]
    monkeypatch.setattr(Teacher, "runner", counting)
    seed_everything(0)
    net = create_model(name, teacher_weights="random")
    log = fit(net, data, TrainConfig(epochs=epochs, batch_size=4, image_size=64), progress=False)
    monkeypatch.setattr(Teacher, "runner", runner)
    return log, net.student_state_dict(), seen["images"]


@pytest.mark.parametrize("name", ["rd", "stfpm", "dskd", "rd_var"])
def test_cached_teacher_gives_the_recomputed_weights_bit_for_bit(name, tiny_data, monkeypatch, one_thread):
    data = AnomalyDataset(load_samples(tiny_data, "train"), image_size=64)
    log0, w0, n0 = _train(name, data, "0", monkeypatch)
    log1, w1, n1 = _train(name, data, "64", monkeypatch)
    assert [r["loss"] for r in log0] == [r["loss"] for r in log1]
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert n0 >= 3 * len(data)  # every epoch
    assert n1 <= len(data) + 1  # once (plus the size probe)


def test_over_the_limit_the_features_are_recomputed(tiny_data, monkeypatch, one_thread):
    data = AnomalyDataset(load_samples(tiny_data, "train"), image_size=64)
    teacher = Teacher("efficientnet_lite0", (1, 2, 3), "random")
    assert teacher_cache.build(teacher, data, 4, torch.device("cpu"), torch.no_grad, limit=1000) is None
    cached = teacher_cache.build(teacher, data, 4, torch.device("cpu"), torch.no_grad, limit=10**8)
    assert cached is not None and len(cached) == len(data)
    torch.testing.assert_close(cached[3]["teacher_feats"][2], teacher(data[3]["image"][None])[2][0], rtol=0, atol=0)
    _, _, n = _train("rd", data, "0.01", monkeypatch, epochs=2)
    assert n >= 2 * len(data)  # 10 kB: off, and the run trains as before


def test_synthetic_phases_get_no_cache(monkeypatch):
    from distillad.engine import _with_teacher_cache
    from distillad.phases import plan
    model = create_model("dtsnet", teacher_weights="random")
    steps = plan(model.phases(), 3)
    got = _with_teacher_cache(model, {"normal": None, "synthetic": None}, steps, {p.name: 4 for p in model.phases()},
                              TrainConfig(epochs=3), torch.device("cpu"))
    assert got == {}


@pytest.mark.parametrize("raw", ["lots", "-5"])
def test_a_bad_limit_is_a_clear_error(raw, monkeypatch):
    monkeypatch.setenv(teacher_cache.ENV, raw)
    with pytest.raises(ConfigError, match=teacher_cache.ENV):
        teacher_cache.limit_bytes()
