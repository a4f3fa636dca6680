"""DSKD-fusion (models/dskd_fusion.py): shapes through both students (64 px, and 128/256 px with the
paper's WideResNet50), our reading of eq. 2, parameter counts against the paper, the 6 + 1 fusion
parameters, Dice loss (eq. 4) on crafted masks, the fusion phase touching only the fusion net, the
ablation modes (Tables 4–5), issue 29's non-negative fusion weights and ``skip=False``. Random teacher
weights, CPU, one intra-op thread."""

from __future__ import annotations

import pytest
import torch

from distillad import api, create_model
from distillad.engine import TrainConfig, _enter_phase, fit
from distillad.errors import ConfigError
from distillad.losses import flat_cosine_loss
from distillad.maps import cosine_distance
from distillad.models.dskd_fusion import FUSION_MODES, dice_loss
from distillad.phases import param_groups, validate_phases

from helpers import n_params as _n  # noqa: E402  (tests/ is on sys.path)

SIZE = 64  # the ``images`` fixture (tests/models/conftest.py) is SIZE x SIZE


def _model(**kw):
    torch.manual_seed(0)
    return create_model("dskd_fusion", teacher_weights="random", **kw)




@pytest.fixture(scope="module")
def wrn():
    """The paper's configuration: a WideResNet50-2 teacher (random weights), learned fusion."""
    return _model(teacher="wide_resnet50_2").eval()


def _skip_shapes(model, x):
    """(input x, teacher block e, output) shapes of each eq. 2 block, deepest first."""
    seen = []
    hooks = [s.register_forward_hook(lambda m, a, out: seen.append((*(tuple(t.shape) for t in a), tuple(out.shape))))
             for s in model.reverse_student.skips]
    with torch.no_grad():
        feats = model.features(x)
    for h in hooks:
        h.remove()
    return feats, seen


def test_shapes_default_teacher(images):
    m = _model().eval()
    chans, sizes = [24, 40, 112, 320], [SIZE // 4, SIZE // 8, SIZE // 16, SIZE // 32]
    expect = [(2, c, s, s) for c, s in zip(chans, sizes)]
    f, skips = _skip_shapes(m, images)
    assert [tuple(x.shape) for x in f["t"]] == [tuple(x.shape) for x in f["f"]] == expect  # D_f: E1..E4
    assert [tuple(x.shape) for x in f["r"]] == expect[:3]  # D_r: E1..E3
    # eq. 2, our reading: x = D_r^{t+1} (bottleneck first), e = E^t at twice its size, out shaped like x
    assert skips == [((2, 224, 2, 2), (2, 112, 4, 4), (2, 224, 2, 2)), ((2, 112, 4, 4), (2, 40, 8, 8), (2, 112, 4, 4)),
                     ((2, 40, 8, 8), (2, 24, 16, 16), (2, 40, 8, 8))]
    with torch.no_grad():
        ref, stu = m(images)
        sm = m.student_maps(images)
        maps, scores = m.predict(images)
    assert len(ref) == len(stu) == 6 and all(a.shape == b.shape for a, b in zip(ref, stu))
    assert sm.shape == (2, 6, SIZE, SIZE) and maps.shape == (2, 1, SIZE, SIZE) and scores.shape == (2,)
    assert torch.allclose(scores, maps.flatten(1).amax(1))


@pytest.mark.parametrize("size", [128, 256])
def test_shapes_wide_resnet50_at_paper_sizes(wrn, size):
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    f, skips = _skip_shapes(wrn, x)
    expect = [(1, 256 * 2 ** k, size // 2 ** (k + 2), size // 2 ** (k + 2)) for k in range(4)]
    assert [tuple(t.shape) for t in f["t"]] == [tuple(t.shape) for t in f["f"]] == expect
    assert [tuple(t.shape) for t in f["r"]] == expect[:3]
    h = size // 32  # the bottleneck D_r^4: 2048 × (size/32)², then D_r^3, D_r^2 at E3's and E2's sizes
    xs = [(1, 2048, h, h), (1, 1024, 2 * h, 2 * h), (1, 512, 4 * h, 4 * h)]
    assert [(a, b, c) for a, b, c in skips] == [(x_, e, x_) for x_, e in zip(xs, expect[2::-1])]
    with torch.no_grad():
        assert wrn.anomaly_map(x).shape == (1, 1, size, size)


def test_parameter_counts_against_the_paper(wrn):
    """Teacher and D_f 66.83 M (the paper's 68.8 M is torchvision's classifier with its 2.05 M fc);
    D_r 100.36 M, the paper's 108 M once RD's never-called conv4 + bn4 (which its 67.2 M for RD's
    bottleneck also counts) is added: 108.75 M; the eq. 2 blocks are 16.56 M of it."""
    fc = 2048 * 1000 + 1000
    unused_conv4 = 4096 * 2048 + 2 * 2048
    assert _n(wrn.forward_student) == _n(wrn.teacher) == 66_834_240
    assert round((_n(wrn.teacher) + fc) / 1e6, 2) == 68.88
    r = wrn.reverse_student
    assert round(_n(r) / 1e6, 2) == 100.36 and round(_n(r.skips) / 1e6, 2) == 16.56
    assert round(_n(r.bottleneck) / 1e6, 2) == 58.89 and round(_n(r.decoder) / 1e6, 2) == 24.92
    assert abs((_n(r) + unused_conv4) / 1e6 - 108) / 108 < 0.01


@pytest.mark.parametrize("weights", ["nonneg", "free"])
def test_fusion_net_has_six_weights_and_one_bias(weights):
    m = _model(fusion_weights=weights)
    assert [tuple(p.shape) for p in m.fusion.parameters()] == [(1, 6, 1, 1), (1,)] and _n(m.fusion) == 7
    torch.testing.assert_close(m.fusion.weight.detach(), torch.full((1, 6, 1, 1), 1 / 6))  # the maps' mean
    assert m.fusion.bias.item() == 0
    maps = torch.rand(2, 6, 5, 5)
    with torch.no_grad():
        out = m.fuse(maps)
        assert torch.allclose(out, torch.sigmoid(maps.mean(1, keepdim=True)))
        assert torch.allclose(m.fuse(-maps), torch.full_like(out, 0.5))  # ReLU before the sigmoid: floor 0.5
        assert torch.all(_model(fusion_relu=False, fusion_weights=weights).fuse(-maps) < 0.5)


def test_nonneg_fusion_weights_stay_positive_where_free_ones_turn_negative():
    """Maps 0–2 mark the defect, maps 3–5 mark everything but it: Dice pushes the weights of 3–5 below
    zero. The free conv follows (it can subtract a student's map); softplus weights only shrink."""
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(4, 1, 16, 16, generator=g) > 0.9).float()
    noise = 0.1 * torch.rand(4, 6, 16, 16, generator=g)
    maps = torch.cat([mask.expand(-1, 3, -1, -1), (1 - mask).expand(-1, 3, -1, -1)], 1) + noise
    final = {}
    for weights in ("nonneg", "free"):
        m = _model(fusion_weights=weights)
        opt = torch.optim.Adam(m.fusion.parameters(), lr=0.05, betas=m.betas)
        for _ in range(100):
            opt.zero_grad()
            dice_loss(m.fuse(maps), mask).backward()
            opt.step()
        final[weights] = m.fusion.weight.detach().flatten()
    assert (final["nonneg"] > 0).all() and (final["free"][3:] < 0).all()
    assert (final["nonneg"][3:] < final["nonneg"][:3]).all()  # the misleading maps were still weighted down


def test_reverse_student_without_skips(images):
    """``skip=False``: D_r is RD's OCBE + decoder alone, no eq. 2 block sees the teacher block it is scored
    against; shapes, loss and map as with the skips."""
    on, off = _model(), _model(skip=False)
    assert off.reverse_student.skips is None and _n(on.reverse_student) - _n(off.reverse_student) == _n(
        on.reverse_student.skips)
    f = off.features(images)
    assert [t.shape for t in f["r"]] == [t.shape for t in f["t"][:3]]
    out = off.loss({"image": images})
    out["loss"].backward()
    assert all(p.grad is not None for p in off.reverse_student.parameters())
    with torch.no_grad():
        assert off.eval().anomaly_map(images).shape == (2, 1, SIZE, SIZE)


def test_dice_loss_on_crafted_masks():
    g = torch.zeros(1, 1, 4, 4)
    g[..., :2, :2] = 1  # 4 of 16 pixels
    assert dice_loss(g, g).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(1 - g, g).item() == pytest.approx(1.0)  # disjoint
    # everywhere 0.5: Σpg = 2, Σp² = 16·0.25 = 4, Σg² = 4 → 1 − 4/8
    assert dice_loss(torch.full_like(g, 0.5), g).item() == pytest.approx(0.5)
    p = torch.tensor([0.8, 0.2, 0.0, 0.0]).view(1, 1, 2, 2)
    t = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    assert dice_loss(p, t).item() == pytest.approx(1 - 1.6 / 1.68, abs=1e-6)  # Σpg 0.8, Σp² 0.68, Σg² 1
    both = dice_loss(torch.cat([g, 1 - g]), torch.cat([g, g]))  # per image, then the batch mean
    assert both.item() == pytest.approx(0.5)
    assert dice_loss(torch.zeros_like(g), torch.zeros_like(g)).item() == pytest.approx(1.0)  # empty: eps only


@pytest.mark.parametrize("form", ["position", "flat"])
def test_student_loss_is_eq1_per_stage(form, images):
    m = _model(loss_form=form)
    out = m.loss({"image": images})
    f = m.features(images)
    if form == "flat":
        lf, lr = flat_cosine_loss(f["t"], f["f"]), flat_cosine_loss(f["t"][:3], f["r"])
    else:  # mean over positions of 1 − cos, summed over stages
        lf = sum(cosine_distance(a, b).mean() for a, b in zip(f["t"], f["f"]))
        lr = sum(cosine_distance(a, b).mean() for a, b in zip(f["t"], f["r"]))
    assert set(out) == {"loss", "loss_f", "loss_r"}
    assert torch.allclose(out["loss_f"], lf, atol=1e-5) and torch.allclose(out["loss_r"], lr, atol=1e-5)
    assert torch.allclose(out["loss"], out["loss_f"] + out["loss_r"])


def test_fusion_phase_touches_only_the_fusion_net(tiny_data):
    """After the students' epochs the fusion net trains alone: students' weights and BatchNorm buffers
    bit-identical, no gradient, eval mode; the fusion net learns, and only in its phase."""
    model = _model(fusion_epochs=2)
    sets = api.build_train_sets(model, api.load_samples(tiny_data, "train"), SIZE, seed=0)
    assert set(sets) == {"normal", "synthetic"} and model.needs_synthesis
    start = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    seen: list[dict] = []

    def hook(step, m):
        seen.append({"phase": step.phase.name,
                     "students": {f"{n}.{k}": v.clone() for n in ("forward_student", "reverse_student")
                                  for k, v in getattr(m, n).state_dict().items()},
                     "fusion": {k: v.clone() for k, v in m.fusion.state_dict().items()},
                     "student_grads": [p.grad for n in ("forward_student", "reverse_student")
                                       for p in getattr(m, n).parameters()],
                     "training": (m.forward_student.training, m.reverse_student.training, m.fusion.training)})

    log = fit(model, sets, TrainConfig(epochs=1, batch_size=4, seed=0, device="cpu"), progress=False,
              on_step_end=hook)
    assert [r["phase"] for r in log] == ["students", "fusion", "fusion"]
    after_students = seen[0]["students"]
    for s in seen[1:]:
        assert s["training"] == (False, False, True) and all(g is None for g in s["student_grads"])
        for k, v in s["students"].items():  # weights, running_mean/var, num_batches_tracked
            assert torch.equal(v, after_students[k]), k
    assert all(torch.equal(v, start[k]) for k, v in seen[0]["fusion"].items())  # untouched by phase 1 ...
    assert not any(torch.equal(v, seen[2]["fusion"][k]) for k, v in seen[0]["fusion"].items())  # ... then learned


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_ablation_modes_build_train_and_map(mode, images):
    """Each mode builds what it uses; one step per declared phase gives every trained parameter a
    gradient and no other; the map is the mode's combination of the students' maps."""
    m = _model(fusion=mode)
    built = {n for n in ("forward_student", "reverse_student", "fusion") if hasattr(m, n)}
    expect = {"learned": {"forward_student", "reverse_student", "fusion"},
              "manual": {"forward_student", "reverse_student"},
              "forward": {"forward_student"}, "reverse": {"reverse_student"}}[mode]
    assert built == expect and m.needs_synthesis == (mode == "learned")
    assert len(m.teacher.channels) == (3 if mode == "reverse" else 4)  # E4 only trains D_f
    phases = m.phases()
    validate_phases(m, phases)
    assert [p.name for p in phases] == (["students", "fusion"] if mode == "learned" else ["students"])
    trainable = {id(p): p.requires_grad for p in m.parameters()}
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[..., 8:24, 8:24] = 1
    batch = {"image": images, "anomalous": torch.where(mask.bool(), 1 - images, images), "mask": mask}
    for ph in phases:
        _enter_phase(m, ph, trainable)
        opt = m.build_optimizer(param_groups(m, ph, trainable))
        opt.zero_grad()
        getattr(m, ph.loss)(batch)["loss"].backward()
        own = {id(p) for n in ph.modules for p in m.get_submodule(n).parameters()}
        assert all((p.grad is not None) == (id(p) in own) for p in m.parameters()), ph.name
        opt.step()
    m.eval()
    with torch.no_grad():
        sm, amap = m.student_maps(images), m.anomaly_map(images)
    assert sm.shape[1] == (3 if mode in ("forward", "reverse") else 6)
    if mode == "manual":
        ref = (sm[:, :3].sum(1, keepdim=True) + 3 * sm[:, 3:].sum(1, keepdim=True)) / 4
    elif mode == "learned":
        ref = torch.sigmoid(torch.relu(m.fusion(sm)))
    else:
        ref = sm.sum(1, keepdim=True)
    torch.testing.assert_close(amap, ref)


def test_sizes_not_divisible_by_32():
    m = _model().eval()
    x = torch.rand(1, 3, 80, 80)
    with torch.no_grad():
        f = m.features(x)
        amap = m.anomaly_map(x)
    assert [t.shape for t in f["r"]] == [t.shape for t in f["t"][:3]] and amap.shape == (1, 1, 80, 80)


@pytest.mark.parametrize("kw, needle", [({"fusion": "mean"}, "fusion must be one of"),
                                        ({"loss_form": "l2"}, "loss_form"),
                                        ({"out_indices": (1, 2)}, "at least 3"),
                                        ({"fusion_epochs": 0}, "fusion_epochs"),
                                        ({"skip_ratio": 0.0}, "skip_ratio"),
                                        ({"fusion_weights": "positive"}, "fusion_weights"),
                                        ({"manual_weights": (-1.0, 3.0)}, "manual_weights")])
def test_bad_keywords_are_config_errors(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        _model(**kw)
