"""The README's main job (`distillad demo`) runs end to end; one epoch keeps it short here."""

from __future__ import annotations

import numpy as np
from PIL import Image

from distillad.demo import run_demo
from distillad.demo_data import DEFECTS, make_demo_dataset


def test_demo_data_is_deterministic_and_masks_match(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_train=2, n_test_good=1, n_test_defect=1, size=64, seed=3)
    b = make_demo_dataset(tmp_path / "b", n_train=2, n_test_good=1, n_test_defect=1, size=64, seed=3)
    for kind in DEFECTS:
        img_a = np.asarray(Image.open(a / "test" / kind / "000.png"))
        assert np.array_equal(img_a, np.asarray(Image.open(b / "test" / kind / "000.png")))
        mask = np.asarray(Image.open(a / "ground_truth" / kind / "000_mask.png"))
        assert mask.shape == img_a.shape[:2] and set(np.unique(mask)) == {0, 255}


def test_demo_end_to_end(tmp_path):
    m = run_demo(tmp_path / "demo", epochs=1, progress=False)
    for k in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0 <= m[k] <= 1
    assert (tmp_path / "demo" / "summary.md").read_text().startswith("# distillad demo")
    assert (tmp_path / "demo" / "run" / "overlays.png").stat().st_size > 10_000
    assert len(list((tmp_path / "demo" / "predictions").rglob("*_overlay.png"))) == 18
