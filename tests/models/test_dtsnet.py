"""DTSNet (models/dtsnet.py): coordinate attention and MFF shapes; APR noise statistics (eqs. 3–6); no noise
at inference; the loss (eq. 8) targets the normal teacher while the student sees the anomalous one; which
modules train, with which learning rates; ablation switches.

Random teacher weights, 64 px, batch 2, CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distillad import create_model
from distillad.engine import _enter_phase
from distillad.errors import ConfigError
from distillad.layers import OCBE
from distillad.losses import flat_cosine_loss
from distillad.maps import cosine_distance
from distillad.models.dtsnet import CoordinateAttention, MultiscaleFeatureFusion, apr_noise, attention_mask
from distillad.phases import param_groups

SIZE = 64


def _model(**kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model("dtsnet", teacher=kw.pop("teacher", "resnet18"), teacher_weights="random", **kw)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, SIZE, SIZE, generator=g)
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[..., 16:40, 20:44] = 1
    anomalous = torch.where(mask.bool(), torch.rand(2, 3, SIZE, SIZE, generator=g), image)
    return {"image": image, "anomalous": anomalous, "mask": mask}


# --------------------------------------------------------------------------- blocks

def test_coordinate_attention_shapes_and_reference():
    """(B,C,H,W) → same shape, H ≠ W; equals the reference's AdaptiveAvgPool2d formulation."""
    torch.manual_seed(0)
    ca = CoordinateAttention(64).eval()
    assert ca.conv1.out_channels == 8 and ca.conv_h.out_channels == ca.conv_w.out_channels == 64  # mip = max(8, 64/32)
    assert CoordinateAttention(1024).conv1.out_channels == 32
    x = torch.randn(2, 64, 6, 10)
    y = ca(x)
    assert y.shape == x.shape
    x_h = nn.AdaptiveAvgPool2d((None, 1))(x)
    x_w = nn.AdaptiveAvgPool2d((1, None))(x).permute(0, 1, 3, 2)
    z = ca.bn1(ca.conv1(torch.cat([x_h, x_w], 2)))
    z = z * F.relu6(z + 3) / 6  # h-swish
    z_h, z_w = torch.split(z, [6, 10], 2)
    ref = x * ca.conv_h(z_h).sigmoid() * ca.conv_w(z_w.permute(0, 1, 3, 2)).sigmoid()
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("teacher, chans", [("resnet18", (64, 128, 256)), ("efficientnet_lite0", (24, 40, 112))])
def test_shapes_through_the_networks(teacher, chans, batch):
    m = _model(teacher=teacher).eval()
    assert isinstance(m.bottleneck, MultiscaleFeatureFusion)
    sizes = [SIZE // 4, SIZE // 8, SIZE // 16]
    with torch.no_grad():
        t = m.teacher(batch["image"])
        emb = m.bottleneck(t)
        t2, r = m(batch["image"])
        maps, scores = m.predict(batch["image"])
    assert [tuple(f.shape) for f in t] == [(2, c, s, s) for c, s in zip(chans, sizes)]
    assert tuple(emb.shape) == (2, 2 * chans[2], SIZE // 32, SIZE // 32)
    assert [f.shape for f in r] == [f.shape for f in t]
    assert maps.shape == (2, 1, SIZE, SIZE) and scores.shape == (2,)


# --------------------------------------------------------------------------- APR

def test_attention_mask_is_eq_3_4_and_sums_to_hw():
    torch.manual_seed(0)
    f = torch.randn(2, 16, 5, 7)
    a = attention_mask(f, tau=0.5)
    assert a.shape == (2, 1, 5, 7)
    torch.testing.assert_close(a.sum((1, 2, 3)), torch.full((2,), 35.0))
    g = f.abs().mean(1)  # eq. 3
    ref = 35 * torch.exp(g / 0.5) / torch.exp(g / 0.5).sum((1, 2), keepdim=True)  # eq. 4
    torch.testing.assert_close(a[:, 0], ref)
    torch.testing.assert_close(attention_mask(f, tau=1e9), torch.ones(2, 1, 5, 7))  # τ → ∞: uniform


def test_apr_noise_zero_mean_and_std_proportional_to_attention_times_student_std():
    """Eqs. 5–6 with many channels: per position, mean ≈ 0 and std ≈ σ·ϑ(f_S)·A (ϑ per image)."""
    g = torch.Generator().manual_seed(1)
    f_s = torch.randn(2, 20000, 3, 4, generator=g) * torch.tensor([0.5, 3.0]).view(2, 1, 1, 1) + 1.0
    a = attention_mask(torch.randn(2, 8, 3, 4, generator=g) * 3, tau=1.0)
    assert a.max() / a.min() > 3  # a non-trivial attention
    eps = apr_noise(f_s, a, sigma=0.1, generator=g)
    expected = 0.1 * f_s.flatten(1).std(1).view(2, 1, 1, 1) * a  # σ'
    std, mean = eps.std(1, keepdim=True), eps.mean(1, keepdim=True)
    torch.testing.assert_close(std, expected, rtol=0.03, atol=0)
    assert (mean.abs() < 5 * expected / 20000 ** 0.5).all()
    assert not eps.requires_grad


def test_model_adds_the_apr_noise_before_r_only_when_perturbing(batch):
    """Model wiring: with R replaced by identities, f̃_S − f_S has per-position std σ·ϑ(f_S)·A_T(f_{T,a})."""
    m = _model(noise_sigma=0.1, tau=2.0).eval()
    m.reconstruction = nn.ModuleList(nn.Identity() for _ in range(3))
    with torch.no_grad():
        t_a = m.teacher(batch["anomalous"])
        clean = m.student_features(t_a)
        torch.manual_seed(3)
        noisy = m.student_features(t_a, perturb=True)
    for k, (f, n, t) in enumerate(zip(clean, noisy, t_a)):
        eps = n - f
        expected = 0.1 * f.flatten(1).std(1).view(-1, 1, 1, 1) * attention_mask(t, 2.0)
        ratio = (eps / expected).flatten(2)  # ~ N(0, 1) per element
        c = f.shape[1]
        assert abs(ratio.mean()) < 5 / ratio.numel() ** 0.5, k
        assert abs(ratio.std() - 1) < 0.05, k
        torch.testing.assert_close(eps.std(1, keepdim=True) / expected, torch.ones_like(expected),
                                   rtol=0, atol=6 / c ** 0.5)


def test_no_noise_at_inference_and_train_mode_differs_only_by_batchnorm(batch):
    m = _model()
    x = batch["anomalous"]
    m.eval()
    maps, scores = m.predict(x)
    maps2, scores2 = m.predict(x)
    assert torch.equal(maps, maps2) and torch.equal(scores, scores2)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()  # BatchNorm on batch statistics: the only difference the paper's inference has
    train_maps, _ = m.predict(x)
    assert torch.equal(train_maps, m.predict(x)[0])  # still no noise
    assert not torch.allclose(train_maps, maps)
    m.load_state_dict(state)  # undo the running-statistics updates of the train-mode passes
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eval()
    assert torch.equal(m.predict(x)[0], maps)
    m.eval()


# --------------------------------------------------------------------------- loss

def test_loss_targets_the_normal_teacher_and_student_sees_the_anomalous_one(batch):
    m = _model(noise_sigma=0.0).eval()  # no noise, BatchNorm fixed: the loss is deterministic
    seen = []
    hook = m.bottleneck.register_forward_pre_hook(lambda mod, args: seen.append([f.clone() for f in args[0]]))
    with torch.no_grad():
        loss = m.loss(batch)["loss"]
        t_n, t_a = m.teacher(batch["image"]), m.teacher(batch["anomalous"])
        expected = flat_cosine_loss(t_n, m.student_features(t_a))
        other = m.loss({**batch, "image": batch["image"].flip(-1)})["loss"]  # another I_n, same I_a
    hook.remove()
    assert all(torch.allclose(s, a, atol=1e-5) for s, a in zip(seen[0], t_a))  # student input: T(I_a)
    torch.testing.assert_close(loss, expected)
    assert abs(float(other - loss)) > 1e-3
    # f_R = f_{T,n}: zero loss; f_R = f_{T,a}: positive (I_a ≠ I_n), so the target is the normal teacher's
    m.student_features = lambda feats, perturb=False: [f.clone() for f in t_n]  # type: ignore[method-assign]
    assert float(m.loss(batch)["loss"]) < 1e-5
    m.student_features = lambda feats, perturb=False: [f.clone() for f in t_a]  # type: ignore[method-assign]
    assert float(m.loss(batch)["loss"]) > 1e-3


def test_only_student_bottleneck_and_r_train_with_the_papers_learning_rates(model, batch):
    (ph,) = model.phases()
    assert ph.data == "synthetic" and model.needs_synthesis
    assert set(ph.modules) == {"bottleneck", "decoder", "reconstruction"}
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    _enter_phase(model, ph, trainable)
    opt = model.build_optimizer(param_groups(model, ph, trainable))
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert {lrs[id(p)] for p in model.reconstruction.parameters()} == {0.001}
    assert {lrs[id(p)] for m in (model.bottleneck, model.decoder) for p in m.parameters()} == {0.005}
    model.loss(batch)["loss"].backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (not name.startswith("teacher.")), name
    model.zero_grad(set_to_none=True)
    model.eval()


# --------------------------------------------------------------------------- ablations

def test_ablation_switches(batch):
    base = _model(mff=False, apr=False)
    assert isinstance(base.bottleneck, OCBE) and not hasattr(base, "reconstruction")
    assert base.phases()[0].modules == ("bottleneck", "decoder") and not base.phases()[0].lr
    torch.manual_seed(0)
    rd = create_model("rd", teacher="resnet18", teacher_weights="random")
    sd, rd_sd = base.state_dict(), rd.state_dict()
    assert sd.keys() == rd_sd.keys() and all(torch.equal(sd[k], rd_sd[k]) for k in sd)  # RD, same draws
    assert torch.isfinite(base.loss(batch)["loss"])

    m = _model(maps="M2", diversity=False).eval()
    assert m.synthesis["mode"] == "single" and _model().synthesis["mode"] == "fas"
    with torch.no_grad():
        t, r = m(batch["image"])
        expected = F.interpolate(cosine_distance(t[1], r[1]), size=(SIZE, SIZE), mode="bilinear", align_corners=True)
        torch.testing.assert_close(m.anomaly_map(batch["image"]), expected)
    for bad, match in [(dict(maps="M4"), "maps"), (dict(tau=0.0), "tau"), (dict(out_indices=(1, 2)), "3 teacher"),
                       (dict(combine="max"), "combine"), (dict(noise_sigma=-1.0), "noise_sigma")]:
        with pytest.raises(ConfigError, match=match):
            _model(**bad)


def test_sizes_not_divisible_by_32_match_the_teacher():
    m = _model().eval()
    x = torch.rand(1, 3, 72, 72)
    with torch.no_grad():
        t, r = m(x)
    assert [f.shape for f in r] == [f.shape for f in t] and m.predict(x)[0].shape == (1, 1, 72, 72)


def test_parameter_counts_resnet18(model):
    """The counts in the module docstring (resnet18; RD's trainable count is 15.38 M)."""
    count = lambda mod: round(sum(p.numel() for p in mod.parameters()) / 1e6, 2)  # noqa: E731
    assert (count(model.bottleneck), count(model.decoder), count(model.reconstruction)) == (9.07, 3.70, 1.55)
    assert round(sum(p.numel() for p in model.trainable_parameters()) / 1e6, 2) == 14.32
