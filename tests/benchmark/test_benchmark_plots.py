"""distillad.benchmark.plots and the overlay strip shared with ``api.test``
(``visualize.overlay_strip_for_run``): files written, and a colour scale fixed by the run's
validation statistics that no test map changes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from distillad import api
from distillad.benchmark import MEASURES, RANKING_METRICS
from distillad.data import AnomalyDataset, load_samples
from distillad.visualize import calibrated_colour_scale, overlay_strip_for_run, strip_indices

MODELS = ["rd", "stfpm"]
CALIB = {"pixel_mean": 0.1, "pixel_std": 0.05, "pixel_threshold": 0.25, "score_mean": 0.2, "image_threshold": 0.4}
TILE = 160  # overlay_strip's default tile; columns are TILE wide with a 2-pixel gap


def test_plots_are_written_and_decodable(bench: SimpleNamespace) -> None:
    plots = bench.out / "plots"
    names = [f"{k}.png" for k, _ in RANKING_METRICS] + [f"{k}.png" for k, _, _ in MEASURES]
    names += [f"overlays_washer_{m}.png" for m in MODELS] + ["overlays_washer.png"]
    for name in names:
        path = plots / name
        assert path.is_file(), name
        assert path.stat().st_size > 1024, name
        img = cv2.imread(str(path))
        assert img is not None and img.ndim == 3 and min(img.shape[:2]) > 50, name
    strip = cv2.imread(str(plots / "overlays_washer_rd.png"))
    combined = cv2.imread(str(plots / "overlays_washer.png"))
    assert combined.shape[1] == strip.shape[1] and combined.shape[0] == 2 * strip.shape[0]
    assert strip.std() > 10  # a picture, not a blank canvas


def test_colour_scale_comes_from_the_calibration_only() -> None:
    vmin, vmax = calibrated_colour_scale(CALIB)
    assert vmin == pytest.approx(0.1) and vmax == pytest.approx(0.4)
    assert (vmin + vmax) / 2 == pytest.approx(CALIB["pixel_threshold"])  # the threshold is the middle colour
    assert calibrated_colour_scale({"n_val": 0}) == (0.0, 1.0)  # no validation pixels: fixed, not from test maps


@pytest.fixture()
def test_set(tiny_data: Path) -> tuple[AnomalyDataset, torch.Tensor]:
    ds = AnomalyDataset(load_samples(tiny_data, "test"), image_size=64)
    maps = torch.rand(len(ds), 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    return ds, maps


def test_strip_images_are_chosen_by_label_defect_and_path(test_set: tuple[AnomalyDataset, torch.Tensor]) -> None:
    ds, _ = test_set
    idx = strip_indices(ds.samples, 8)
    rev = list(reversed(ds.samples))
    assert {rev[i].image for i in strip_indices(rev, 8)} == {ds.samples[i].image for i in idx}  # by path, not order
    labels = [ds.samples[i].label for i in idx]
    assert labels[:2] == [0, 0] and labels[2:] == [1] * 6
    assert len({ds.samples[i].defect for i in idx[2:]}) == 3  # every defect type shown
    assert strip_indices(ds.samples, 0) == []


def _first_column(strip: np.ndarray) -> np.ndarray:
    return strip[:, :TILE]


def test_strip_colours_do_not_depend_on_the_other_test_maps(test_set: tuple[AnomalyDataset, torch.Tensor]) -> None:
    ds, maps = test_set
    items = [ds[i] for i in range(len(ds))]
    scores = [0.3] * len(ds)
    louder = maps.clone()
    louder[1:] *= 10  # every test map but the first: ten times larger
    a = overlay_strip_for_run(items, maps, scores, CALIB)
    b = overlay_strip_for_run(items, louder, scores, CALIB)
    assert np.array_equal(_first_column(a), _first_column(b)), "the first image's colours moved with the others' maps"
    assert not np.array_equal(a[:, TILE + 2:2 * TILE + 2], b[:, TILE + 2:2 * TILE + 2])  # the changed maps show


def test_api_test_overlays_use_the_same_strip(test_set: tuple[AnomalyDataset, torch.Tensor], tmp_path: Path) -> None:
    ds, maps = test_set
    labels = torch.tensor([s.label for s in ds.samples])
    res = {"maps": maps, "scores": maps.flatten(1).amax(1), "labels": labels}
    api._save_overlay_strip(tmp_path / "a.png", ds, res, CALIB, 8)
    louder = {**res, "maps": maps * torch.where(labels == 0, 1.0, 10.0)[:, None, None, None]}
    api._save_overlay_strip(tmp_path / "b.png", ds, louder, CALIB, 8)
    a, b = cv2.imread(str(tmp_path / "a.png")), cv2.imread(str(tmp_path / "b.png"))
    assert np.array_equal(_first_column(a), _first_column(b))  # a good image, its map unchanged
    idx = strip_indices(ds.samples, 8)
    want = overlay_strip_for_run([ds[i] for i in idx], [maps[i] for i in idx],
                                 [float(res["scores"][i]) for i in idx], CALIB)
    assert np.array_equal(a[..., ::-1], want)  # api.test's overlays.png is the shared strip
