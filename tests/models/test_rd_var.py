"""rd_var: the variance loss (Song, Buayai & Mao eqs. 2–5), where its gradient goes, which decoder
block it reads, and that inference is plain RD's. Random teacher, 64 px, CPU."""

from __future__ import annotations

import pytest
import torch

import distillad
from distillad.errors import ConfigError
from distillad.losses import variance_loss

DISTANCES = ("cosine", "l1", "l2")


def _make(name: str = "rd_var", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return distillad.create_model(name, teacher_weights="random", **kw)


def _images(b: int = 3, size: int = 64) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ the loss itself

@pytest.mark.parametrize("distance", DISTANCES)
def test_variance_loss_zero_for_identical_features(distance):
    f = torch.rand(1, 8, 5, 5).expand(4, -1, -1, -1).contiguous()
    assert float(variance_loss(f, distance)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distance", DISTANCES)
def test_variance_loss_positive_for_different_features(distance):
    f = torch.rand(4, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    assert float(variance_loss(f, distance)) > 1e-3


def test_variance_loss_matches_the_equations():
    f = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    flat = f.flatten(1)  # eq. 2
    mean = flat.sum(0) / 5  # eq. 3
    cos = torch.stack([flat[i] @ mean / (flat[i].norm() * mean.norm()) for i in range(5)])  # eq. 4
    assert torch.allclose(variance_loss(f), (1 - cos).mean(), atol=1e-6)  # eq. 5
    dev = flat - mean
    assert torch.allclose(variance_loss(f, "l1"), dev.abs().sum(1).mean() / 48, atol=1e-6)
    assert torch.allclose(variance_loss(f, "l2"), dev.norm(dim=1).mean() / 48 ** 0.5, atol=1e-6)


def test_variance_loss_scale_and_shift_behaviour():
    f = torch.rand(4, 6, 3, 3, generator=torch.Generator().manual_seed(3)) + 0.1
    assert torch.allclose(variance_loss(3 * f), variance_loss(f), atol=1e-6)  # cosine: scale-free
    assert torch.allclose(variance_loss(f + 5, "l1"), variance_loss(f, "l1"), atol=1e-5)  # l1/l2: shift-free
    assert torch.allclose(variance_loss(3 * f, "l2"), 3 * variance_loss(f, "l2"), atol=1e-5)


def test_variance_loss_batch_of_one_is_zero_and_differentiable():
    f = torch.rand(1, 4, 3, 3, requires_grad=True)
    for d in DISTANCES:
        loss = variance_loss(f, d)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.equal(f.grad, torch.zeros_like(f))


def test_variance_loss_list_sums_and_rejects_unknown_distance():
    a, b = torch.rand(3, 4, 4, 4), torch.rand(3, 2, 2, 2)
    assert torch.allclose(variance_loss([a, b]), variance_loss(a) + variance_loss(b))
    with pytest.raises(ValueError, match="manhattan"):
        variance_loss(a, "manhattan")


# ------------------------------------------------------------------ the model

def test_loss_parts_and_total():
    model = _make(variance_weight=0.5).train()
    out = model.loss({"image": _images()})
    assert set(out) == {"loss", "loss_rd", "loss_var"}
    assert torch.allclose(out["loss"], out["loss_rd"] + 0.5 * out["loss_var"])
    assert float(out["loss_var"].detach()) > 0


@pytest.mark.parametrize("distance", DISTANCES)
def test_variance_gradient_reaches_only_student_and_bottleneck(distance):
    model = _make(variance_distance=distance).train()
    model.loss({"image": _images()})["loss_var"].backward()
    for name, p in model.named_parameters():
        if name.startswith("teacher."):
            assert p.grad is None and not p.requires_grad, name
        else:  # D1 is the decoder's last block: every decoder and bottleneck weight feeds it
            assert name.startswith(("bottleneck.", "decoder.")), name
            assert p.grad is not None, f"no gradient for {name}"
    assert any(float(p.grad.abs().sum()) > 0 for p in model.bottleneck.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize("block, index", [("D1", 0), ("D2", 1), ("D3", 2)])
def test_block_option_picks_the_intended_tensor(block, index):
    model = _make(variance_block=block).train()
    x = _images()
    t, s = model(x)
    picked = model.variance_features(s)
    assert len(picked) == 1 and picked[0] is s[index]
    # D^k mirrors teacher stage k (RD's notation): D1 the shallowest, stride 4; D3 stride 16
    assert picked[0].shape == t[index].shape
    assert picked[0].shape[-1] == 64 // (4 * 2 ** index)
    assert torch.allclose(model.loss({"image": x})["loss_var"], variance_loss(s[index]), atol=1e-6)


def test_block_d3_gradient_skips_the_later_decoder_blocks():
    model = _make(variance_block="D3").train()
    model.loss({"image": _images()})["loss_var"].backward()
    # D3 = decoder.layer1 (the reference's naming: first block after the bottleneck)
    assert all(p.grad is not None for p in model.decoder.layer1.parameters())
    assert all(p.grad is None for m in (model.decoder.layer2, model.decoder.layer3) for p in m.parameters())


def test_block_all_sums_the_three_blocks():
    model = _make(variance_block="all").train()
    x = _images()
    _, s = model(x)
    assert len(model.variance_features(s)) == 3
    expected = sum(variance_loss(f) for f in s)
    assert torch.allclose(model.loss({"image": x})["loss_var"], expected, atol=1e-6)


def test_predict_equals_plain_rd_with_the_same_weights():
    var = _make(variance_weight=2.0).eval()
    rd = _make("rd").eval()
    rd.load_state_dict(var.state_dict())
    x = _images(2)
    m1, s1 = var.predict(x)
    m2, s2 = rd.predict(x)
    assert torch.equal(m1, m2) and torch.equal(s1, s2)
    assert sum(p.numel() for p in var.parameters()) == sum(p.numel() for p in rd.parameters())


def test_zero_weight_trains_exactly_like_rd():
    var, rd = _make(variance_weight=0.0).train(), _make("rd").train()
    x = {"image": _images()}
    assert torch.equal(var.loss(x)["loss"], rd.loss(x)["loss"])


@pytest.mark.parametrize("size", [65, 97, 225])  # decoder stages overshoot the teacher's (64 vs 57 at 225)
def test_sizes_not_multiple_of_32(size):
    model = _make().train()
    x = _images(2, size)
    t, s = model(x)
    assert [a.shape for a in t] == [b.shape for b in s]
    out = model.loss({"image": x})
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    maps, scores = model.eval().predict(x)
    assert maps.shape == (2, 1, size, size) and torch.isfinite(scores).all()


def test_resize_is_a_noop_at_multiples_of_32():
    model = _make().eval()
    x = _images(2)
    t, s = model(x)
    raw = model.decoder(model.bottleneck(t))
    assert all(torch.equal(a, b) for a, b in zip(s, raw))


@pytest.mark.parametrize("kw, word", [({"variance_block": "D4"}, "D4"), ({"variance_distance": "kl"}, "kl"),
                                      ({"variance_weight": -1.0}, "-1")])
def test_bad_options_fail_at_construction(kw, word):
    with pytest.raises(ConfigError, match=word):
        _make(**kw)


def test_keyword_hints_are_the_accepted_values():
    """The CLI types flags from the constructor's hints: they must resolve and list what is accepted."""
    from typing import get_args, get_type_hints

    from distillad.maps import COMBINE_MODES
    from distillad.models.rd_var import VARIANCE_BLOCKS, RDVariance
    hints = get_type_hints(RDVariance.__init__)
    assert get_args(hints["variance_block"]) == tuple(VARIANCE_BLOCKS)
    assert get_args(hints["variance_distance"]) == DISTANCES
    assert get_args(hints["combine"]) == COMBINE_MODES
    assert hints["out_indices"] == tuple[int, ...] and hints["teacher_weights"] == str | None
