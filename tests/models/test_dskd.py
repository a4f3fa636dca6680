"""DSKD (models/dskd.py): shapes through T, S_e, DFE, S_d; eqs. 3–7 against a direct computation;
which networks get gradients; ablation switches; parameters and FLOPs against the paper's Table 6.

Random teacher weights, 64 px, batch 2, CPU (the FLOP check runs one 256 px forward).
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from distillad import create_model
from distillad.errors import ConfigError
from distillad.models.dskd import dskd_loss, dskd_map

from helpers import n_params as _n  # noqa: E402  (tests/ is on sys.path)

SIZE = 64  # the ``images`` fixture (tests/models/conftest.py) is SIZE x SIZE


def _model(teacher: str = "resnet18", **kw):
    torch.manual_seed(0)
    return create_model("dskd", teacher=teacher, teacher_weights="random", **kw)




@pytest.mark.parametrize("teacher, chans, c_emb", [("resnet18", [64, 128, 256], 512),
                                                   ("efficientnet_lite0", [24, 40, 112], 224)])
def test_shapes_through_the_networks(teacher, chans, c_emb, images):
    m = _model(teacher).eval()
    sizes = [SIZE // 4, SIZE // 8, SIZE // 16]
    expect = [(2, c, s, s) for c, s in zip(chans, sizes)]
    with torch.no_grad():
        t = m.teacher(images)
        e = m.encoder_features(images)
        emb = m.embedding([f for f in e])
        f = m.features(images)
        ref, stu = m(images)
        amap = m.anomaly_map(images)
        maps, scores = m.predict(images)
    assert [tuple(x.shape) for x in t] == expect
    assert [tuple(x.shape) for x in e] == expect
    assert tuple(emb.shape) == (2, c_emb, SIZE // 32, SIZE // 32)  # F_emb: half F3's resolution, 2·c3 channels
    assert [tuple(x.shape) for x in f["d"]] == expect
    assert all(torch.equal(a, b) for a, b in zip(ref, t)) and all(torch.equal(a, b) for a, b in zip(stu, f["d"]))
    assert amap.shape == maps.shape == (2, 1, SIZE, SIZE) and scores.shape == (2,)
    assert torch.allclose(scores, maps.flatten(1).amax(1))


def _direct_loss(ref, stu, lam):
    """Eqs. 3–7 written out position by position with explicit norms."""
    stages = []
    for t, s in zip(ref, stu):
        b, c, h, w = t.shape
        total = torch.zeros((), dtype=torch.float64)
        for n in range(b):
            for i in range(h):
                for j in range(w):
                    tv, sv = t[n, :, i, j].double(), s[n, :, i, j].double()
                    th, sh = tv / tv.norm(), sv / sv.norm()  # eq. 3
                    l2 = 0.5 * ((th - sh) ** 2).sum()  # eq. 4
                    cos = 1 - (th @ sh) / (th.norm() * sh.norm())  # eq. 5
                    total = total + lam * l2 + cos  # eq. 6
        stages.append(total / (b * h * w))  # mean over positions (and batch)
    return torch.stack(stages).mean()  # eq. 7: 1/K Σ_k


def test_loss_matches_direct_computation():
    g = torch.Generator().manual_seed(1)
    shapes = [(2, 8, 4, 4), (2, 16, 2, 2), (2, 32, 1, 1)]
    ref = [torch.randn(s, generator=g) for s in shapes]
    stu = [torch.randn(s, generator=g) for s in shapes]
    for lam in (0.1, 0.7):
        assert torch.allclose(dskd_loss(ref, stu, lam).double(), _direct_loss(ref, stu, lam), atol=1e-6)
    # for unit vectors ½‖t̂ − ŝ‖² = 1 − cos: the map is (1 + λ)(1 − cos)
    cos = torch.nn.functional.cosine_similarity(ref[0], stu[0], dim=1).unsqueeze(1)
    assert torch.allclose(dskd_map(ref[0], stu[0], 0.1), 1.1 * (1 - cos), atol=1e-6)


def test_model_loss_is_eq7_for_both_pairs(images):
    m = _model()
    out = m.loss({"image": images})
    f = m.features(images)
    assert set(out) == {"loss", "loss_e", "loss_d"}
    assert torch.allclose(out["loss_e"], _direct_loss(f["t"], f["e"], 0.1).float(), atol=1e-5)
    assert torch.allclose(out["loss_d"], _direct_loss(f["t"], f["d"], 0.1).float(), atol=1e-5)
    assert torch.allclose(out["loss"], out["loss_e"] + out["loss_d"])


def _grads(m, loss) -> dict[str, list[bool]]:
    """Top-level child → for each of its parameters, whether ``loss`` gave it a non-zero gradient."""
    m.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    out: dict[str, list[bool]] = {}
    for name, p in m.named_parameters():
        out.setdefault(name.split(".")[0], []).append(p.grad is not None and bool(p.grad.abs().sum() > 0))
    return out


def test_only_students_and_dfe_get_gradients(images):
    m = _model()
    bn_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    m.train()
    out = m.loss({"image": images})
    g = _grads(m, out["loss"])
    assert not any(g["teacher"]) and not any(p.requires_grad for p in m.teacher.parameters())
    assert all(g["encoder"]) and all(g["embedding"]) and all(g["decoder"])
    # Algorithm 1, "separately and independently": ℓ_e trains S_e, ℓ_d trains DFE + S_d
    g = _grads(m, out["loss_e"])
    assert all(g["encoder"]) and not any(g["embedding"]) and not any(g["decoder"])
    g = _grads(m, out["loss_d"])
    assert not any(g["encoder"]) and all(g["embedding"]) and all(g["decoder"])
    # one optimiser step leaves the teacher, BatchNorm statistics included, untouched
    opt = m.build_optimizer(m.trainable_parameters())
    assert opt.defaults["lr"] == 0.001 and opt.defaults["betas"] == (0.5, 0.999)
    opt.step()
    assert all(torch.equal(v, bn_before[k]) for k, v in m.teacher.state_dict().items())


def test_joint_mode_lets_loss_d_reach_the_encoder(images):
    m = _model(independent=False)
    g = _grads(m, m.loss({"image": images})["loss_d"])
    assert all(g["encoder"])


@pytest.mark.parametrize("structure, nets, losses", [
    ("T-E", {"encoder"}, {"loss", "loss_e"}),
    ("T-D", {"embedding", "decoder"}, {"loss", "loss_d"}),
    ("E-D", {"encoder", "embedding", "decoder"}, {"loss", "loss_e", "loss_d"}),
])
def test_structures(structure, nets, losses, images):
    m = _model("efficientnet_lite0", structure=structure)
    assert {n for n, _ in m.named_children()} == {"teacher"} | nets
    out = m.loss({"image": images})
    assert set(out) == losses and torch.isfinite(out["loss"])
    g = _grads(m, out["loss"])
    assert all(all(g[k]) for k in nets)
    with torch.no_grad():
        f = m.features(images)
        ref, stu = m(images)
    pair = {"T-E": ("t", "e"), "T-D": ("t", "d"), "E-D": ("e", "d")}[structure]
    assert all(torch.equal(a, b) for a, b in zip(ref, f[pair[0]]))
    assert all(torch.equal(a, b) for a, b in zip(stu, f[pair[1]]))
    if structure == "E-D":  # S_d learns from S_e's features as fixed targets
        g = _grads(m, out["loss_d"])
        assert not any(g["encoder"])


def test_dfe_off_and_map_selection(images):
    m = _model("efficientnet_lite0", dfe=False).eval()
    # the DFE is RD's OCBE; without fusion it has no down-sampling convs and sees F3 (112 channels) alone
    assert not hasattr(m.embedding, "conv1") and m.embedding.bn_layer[0].conv1.in_channels == 112
    with torch.no_grad():
        assert m.anomaly_map(images).shape == (2, 1, SIZE, SIZE)
    full = _model("efficientnet_lite0").eval()
    with torch.no_grad():
        ref, stu = full(images)
        per_stage = [torch.nn.functional.interpolate(dskd_map(a, b), size=(SIZE, SIZE), mode="bilinear",
                                                     align_corners=True) for a, b in zip(ref, stu)]
        assert torch.allclose(full.anomaly_map(images), sum(per_stage), atol=1e-5)  # eq. 8
        for k in (1, 2, 3):
            full.maps = f"M{k}"
            assert torch.allclose(full.anomaly_map(images), per_stage[k - 1], atol=1e-6)


def test_odd_sizes_and_signed_decoder():
    """72 px (not divisible by 32): S_d's overshooting stages are resized to T's; decoder_relu=False
    lets S_d output negative values, like EfficientNet's linear-bottleneck stages."""
    m = _model("efficientnet_lite0", decoder_relu=False)
    x = torch.rand(2, 3, 72, 72)
    out = m.loss({"image": x})
    f = m.features(x)
    assert torch.isfinite(out["loss"]) and [a.shape for a in f["d"]] == [a.shape for a in f["t"]]
    assert all(bool((a < 0).any()) for a in f["d"])
    with torch.no_grad():
        assert m.eval().anomaly_map(x).shape == (2, 1, 72, 72)


@pytest.mark.parametrize("kw", [{"structure": "TE"}, {"maps": "M4"}, {"out_indices": (1, 2)},
                                {"dfe_blocks": 0}, {"lambda_": 0.1}])
def test_bad_settings_fail_at_construction(kw):
    with pytest.raises(ConfigError):
        _model("efficientnet_lite0", **kw)



def test_dfe_blocks_bound_is_declared():
    """dfe_blocks >= 1 is a hint bound (PositiveInt | None): the registry's message names it."""
    from distillad.models.dskd import DSKD
    from distillad.registry import keyword_bounds
    assert keyword_bounds(DSKD)["dfe_blocks"] == [("ge", 1)]
    with pytest.raises(ConfigError, match="dfe_blocks must be >= 1, got 0"):
        _model("efficientnet_lite0", dfe_blocks=0)

def test_parameters_and_flops_match_table6():
    """Table 6: 39.3 M parameters, 6.17 G FLOPs (ResNet18, 256 px).

    We build T and S_e only up to conv4_x and omit RD's unused ``conv4``; the paper's count is
    what RD's reference code holds: full ResNet18s (with layer4 and fc) for T and S_e, plus the
    BN layer's unused 1×1 ``conv4`` + BN (1024→512). FLOPs: thop-style MACs of the inference path.
    """
    m = _model()
    ours = _n(m)
    assert (_n(m.teacher), _n(m.encoder), _n(m.embedding), _n(m.decoder)) == (2_782_784, 2_782_784, 11_680_000,
                                                                             3_703_168)
    full = timm.create_model("resnet18")
    unused = _n(full.layer4) + _n(full.fc)  # per ResNet18: 8.91 M
    conv4 = 1024 * 512 + 2 * 512
    paper_layout = ours + 2 * unused + conv4
    assert ours == 20_948_736 and abs(paper_layout - 39.3e6) / 39.3e6 < 0.005
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        m.eval().anomaly_map(x)  # builds the teacher's runner (one pass of its own), not counted below
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m.eval().anomaly_map(x)
    macs = fc.get_total_flops() / 2
    assert abs(macs - 6.17e9) / 6.17e9 < 0.01
    # trainable = S_e + DFE + S_d
    assert sum(p.numel() for p in m.trainable_parameters()) == ours - _n(m.teacher)


def test_keyword_hints_are_the_accepted_values():
    """The CLI types flags from the constructor's hints: they must resolve and list what is accepted."""
    from typing import get_args, get_type_hints

    from distillad.models.dskd import DSKD, MAPS, STRUCTURES
    hints = get_type_hints(DSKD.__init__)
    assert get_args(hints["structure"]) == STRUCTURES == ("DS", "T-E", "T-D", "E-D")
    assert get_args(hints["maps"]) == tuple(MAPS)
    assert hints["dfe_blocks"] == int | None and hints["out_indices"] == tuple[int, ...]
    m = _model("efficientnet_lite0", out_indices=[1, 2, 3])  # lists still accepted
    assert m.teacher.channels == [24, 40, 112]


def test_train_stores_calibration_for_eq1(tiny_data, tmp_path):
    """api.train fits the eq.-1 normalisation on the validation good images and stores it."""
    from distillad import api
    from distillad.thresholds import normalize_scores
    run = api.train("dskd", tiny_data, tmp_path / "run", epochs=1, batch_size=4, image_size=SIZE,
                    val_fraction=0.3, progress=False, device="cpu", teacher="efficientnet_lite0",
                    teacher_weights="random")
    spec = json.loads((tmp_path / "run" / "run.json").read_text())
    calib = spec["calibration"]
    assert run["method"] == "dskd" and calib["n_val"] >= 1
    thr = torch.tensor([calib["image_threshold"]])
    assert torch.allclose(normalize_scores(thr, calib), torch.tensor([0.5], dtype=thr.dtype))
    res = api.test(tmp_path / "run", progress=False, device="cpu", n_overlays=0)
    assert 0.0 <= res["metrics"]["image_auroc"] <= 1.0
