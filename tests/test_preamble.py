"""What ``train`` says before it starts: counts, layout, sizes, teacher, phases, test folders and an estimate;
warnings for a good-looking folder read as defects, an unreadable test split and images squashed to a square;
the timing probe leaves the model untouched."""

from __future__ import annotations

import shutil

import pytest
import torch
from helpers.hardening import TINY
from helpers.shapes import make_wide_dataset

from distillad import api
from distillad.api import build_train_sets
from distillad.preamble import GOOD_LIKE, time_one_batch
from distillad.registry import create_model


def _preamble(data, out, **kw) -> str:
    said: list[str] = []
    api.train(model="rd", data=data, out=out, announce=lambda p: said.append(str(p)), **{**TINY, **kw})
    assert len(said) == 1, "one block, once"
    return said[0]


def test_block_names_counts_layout_folders_and_estimate(tiny_data, tmp_path):
    text = _preamble(tiny_data, tmp_path / "run", val_fraction=0.2)
    assert "layout mvtec (detected)" in text
    assert "8 training + 2 validation (good), 64×64 px (all)" in text
    assert "model input: 32×32 px (squash); teacher efficientnet_lite0 (random weights)" in text
    assert "phases: train (every epoch, normal images, 1 pass); 1 epochs" in text
    # the demo data: test/good and three defect folders of 2 images each
    assert "test folders: good = good (2); read as defect classes = crack (2), scratch (2), spot (2)" in text
    assert "estimated training time: ~" in text and "an estimate" in text
    assert "warning" not in text


def test_good_looking_defect_folder_and_unreadable_split_are_warned(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shutil.copytree(data / "test" / "good", data / "test" / "ok")  # good images, no masks: read as defects
    text = _preamble(data, tmp_path / "run")
    assert "read as defect classes = crack, ok, scratch, spot" in text
    assert "warning: test folder 'ok' looks like good images but will be read as a defect class" in text
    assert "warning: the test split cannot be read, `distillad test` will fail" in text and "ok/000.png" in text


def test_good_like_names():
    assert all(GOOD_LIKE.match(n) for n in ("0", "ok", "OK", "normal", "good_2", "defect_free", "no_defect"))
    assert not any(GOOD_LIKE.match(n) for n in ("crack", "scratch", "10", "broken_large", "okra"))


def test_squash_warning_only_for_non_square_images(tiny_data, tmp_path):
    wide = make_wide_dataset(tmp_path / "wide")
    text = _preamble(wide, tmp_path / "a", val_fraction=0.3)
    assert "96×32 px (all)" in text
    assert "warning: 6 of 6 training images are far from square (e.g. 96×32); squash stretches them to 32×32" in text
    assert "stretches" not in _preamble(wide, tmp_path / "b", val_fraction=0.3, resize="pad")
    # long-side keeps the images' 3:1 only up to its 32-pixel rounding: 64×32 for 96×32 images (1.5×)
    assert "are of another shape than the long-side input (e.g. 96×32); long-side stretches them to 64×32 (1.5×" in \
        _preamble(wide, tmp_path / "d", val_fraction=0.3, resize="long-side", image_size=64)
    assert "stretches" not in _preamble(tiny_data, tmp_path / "c")


def test_without_announce_warnings_are_python_warnings(tmp_path):
    wide = make_wide_dataset(tmp_path / "wide")
    with pytest.warns(UserWarning, match="far from square"):
        api.train(model="rd", data=wide, out=tmp_path / "run", val_fraction=0.3, **TINY)


def test_probe_changes_nothing(tiny_data):
    from distillad.data import load_samples
    net = create_model("rd", teacher_weights="random")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    grads = {id(p): p.requires_grad for p in net.parameters()}
    sets = build_train_sets(net, load_samples(tiny_data, "train")[:4], 32, 0)
    rng = torch.random.get_rng_state()
    t = time_one_batch(net, sets, {"train": 4}, torch.device("cpu"))
    assert set(t) == {"train"} and t["train"] > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None and p.requires_grad == grads[id(p)] for p in net.parameters())
    assert torch.equal(rng, torch.random.get_rng_state()) and not net.training


def test_cli_prints_the_block_on_stdout_and_each_warning_on_stderr(tmp_path, capsys):
    from helpers.hardening import TINY_FLAGS

    from distillad.cli import main
    wide = make_wide_dataset(tmp_path / "wide")
    assert main(["train", "--model", "rd", "--data", str(wide), "--out", str(tmp_path / "run"),
                 "--val-fraction", "0.3", *TINY_FLAGS]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("distillad train: rd on") and "estimated training time" in cap.out
    err = cap.err.strip().splitlines()
    assert all(line.startswith("distillad: warning: ") for line in err)  # one line each, no traceback
    squash = [line for line in err if "far from square" in line]
    assert len(squash) == 1 and squash[0].startswith("distillad: warning: 6 of 6 training images are far from square")
