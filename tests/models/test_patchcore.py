"""PatchCore: the coreset and the distance against brute force, a known answer (fit on one image, score
it ~0), the fit through the engine (one pass whatever the epochs), and the bank through a run folder."""

from __future__ import annotations

import json

import pytest
import torch

import distillad
from distillad.errors import CheckpointError
from distillad.models.patchcore import greedy_coreset, nearest_distance
from distillad.phases import plan
from distillad.run_schema import seal


def _naive_k_center(x: torch.Tensor, n: int, first: int) -> list[int]:
    chosen = [first]
    for _ in range(n - 1):
        d = torch.cdist(x, x[chosen]).min(dim=1).values
        chosen.append(int(torch.argmax(d)))
    return chosen


def test_greedy_coreset_equals_brute_force_k_center():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    first = int(torch.randint(300, (1,), generator=torch.Generator().manual_seed(5)))
    got = greedy_coreset(x, 20, projection_dim=8, generator=g).tolist()  # no projection: D <= projection_dim
    assert got == _naive_k_center(x, 20, first)
    assert len(set(got)) == 20


def test_nearest_distance_equals_cdist_min():
    g = torch.Generator().manual_seed(1)
    q, bank = torch.randn(50, 16, generator=g), torch.randn(37, 16, generator=g)
    ref = torch.cdist(q, bank).min(dim=1).values
    for chunk in (5, 37, 4096):
        torch.testing.assert_close(nearest_distance(q, bank, chunk=chunk), ref, atol=1e-4, rtol=1e-4)


def _fit(model: torch.nn.Module, images: torch.Tensor) -> None:
    (ph,) = model.phases()
    with torch.no_grad():
        out = getattr(model, ph.loss)({"image": images})
    getattr(model, ph.finish)({"features": out["features"]})


def test_known_answer_fit_on_an_image_scores_it_zero():
    torch.manual_seed(0)
    model = distillad.create_model("patchcore", teacher_weights="random", coreset_ratio=1.0).eval()
    img = torch.rand(1, 3, 128, 128)
    _fit(model, img)
    maps, scores = model.predict(img)
    assert float(scores.max()) < 1e-2 * float(model.patch_features(img).norm(dim=1).mean())
    changed = img.clone()
    changed[:, :, 8:40, 8:40] = 1 - changed[:, :, 8:40, 8:40]
    maps2, scores2 = model.predict(changed)
    assert float(scores2) > 100 * float(scores) + 1e-6
    assert maps2[0, 0, :64, :64].mean() > 2 * maps2[0, 0, 64:, 64:].mean()  # the map points at the change


def test_fit_runs_once_whatever_the_epochs_and_keeps_the_ratio(tiny_data, tmp_path):
    from distillad import api
    model = distillad.create_model("patchcore", teacher_weights="random")
    assert len(plan(model.phases(), 5)) == 1
    spec = api.train("patchcore", tiny_data, tmp_path / "run", epochs=3, batch_size=4, image_size=64,
                     teacher_weights="random", val_fraction=0.3, coreset_ratio=0.05, progress=False)
    assert [h["phase"] for h in spec["history"]] == ["memory"]
    net, _ = distillad.checkpoint.load_run(tmp_path / "run")
    n_train = 7  # 10 images, 30 % held out for validation
    patches = n_train * (64 // 8) ** 2
    assert len(net.memory.bank) == round(patches * 0.05)
    metrics = api.test(tmp_path / "run", progress=False)["metrics"]
    assert 0.0 <= metrics["image_auroc"] <= 1.0


def test_a_bank_of_the_wrong_width_is_refused(tiny_data, tmp_path):
    from distillad import api
    from distillad.checkpoint import load_weights, save_weights
    api.train("patchcore", tiny_data, tmp_path / "run", batch_size=4, image_size=64, teacher_weights="random",
              val_fraction=0.3, progress=False)
    run = tmp_path / "run"
    spec = json.loads((run / "run.json").read_text())
    state = load_weights(run / "model.safetensors")
    state["memory.bank"] = torch.zeros(5, 7)
    sha = save_weights(run / "model.safetensors", state)
    spec["weights"]["sha256"] = sha
    (run / "run.json").write_text(json.dumps(seal(spec)))  # a consistent folder, but a bank of 7 columns
    with pytest.raises(CheckpointError, match="memory bank"):
        distillad.checkpoint.load_run(run)
