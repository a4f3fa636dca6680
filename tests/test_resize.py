"""``data.resize``: the input size each mode derives, pad placing image and mask alike, maps cropped back to
the image's aspect at test and predict, run.json recording the mode (and refusing an unknown one)."""

from __future__ import annotations

import copy
import io
import time

import numpy as np
import pytest
import torch
from helpers.hardening import TINY
from helpers.shapes import bar, make_wide_dataset
from PIL import Image

from distillad import api
from distillad.checkpoint import read_run_spec
from distillad.cli import parse_train_config
from distillad.data import AnomalyDataset, Sample
from distillad.data.resize import PAD_FILL, content_size, crop_map, derive_input_size, fit_image, fit_mask
from distillad.errors import CheckpointError, ConfigError
from distillad.run_schema import seal, validate_run_spec


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    return make_wide_dataset(tmp_path_factory.mktemp("wide"))


@pytest.fixture(scope="module")
def pad_run(wide, tmp_path_factory):
    out = tmp_path_factory.mktemp("padrun") / "run"
    api.train(model="rd", data=wide, out=out, val_fraction=0.3, resize="pad", announce=lambda t: None, **TINY)
    return out


def test_input_size_of_each_mode():
    portrait = [(500, 1247), (600, 1200), (400, 800)]  # (width, height); median height/width = 2
    assert derive_input_size("squash", 256, portrait) == (256, 256)
    assert derive_input_size("pad", 256, portrait) == (256, 256)
    # long side 256, short 256 / 2 = 128 (a multiple of 32)
    assert derive_input_size("long-side", 256, portrait) == (256, 128)
    assert derive_input_size("long-side", 256, [(1247, 500)]) == (96, 256)  # 256 · 500/1247 = 102.7 → 96
    assert derive_input_size("long-side", 64, [(300, 100)]) == (32, 64)  # never below 32
    with pytest.raises(ConfigError, match="resize must be one of"):
        derive_input_size("crop", 256, portrait)


def test_pad_places_image_and_mask_alike():
    img = np.full((40, 100, 3), 50, np.uint8)
    mask = np.zeros((40, 100), bool)
    img[10:30, 50:70], mask[10:30, 50:70] = 255, True
    fitted, content = fit_image(img, (32, 32), "pad")
    assert content == content_size((40, 100), (32, 32), "pad") == (13, 32)  # 40 · 32/100 = 12.8
    assert fitted.shape == (32, 32, 3) and (fitted[13:] == PAD_FILL).all()
    m = fit_mask(mask, (32, 32), "pad")
    assert not m[13:].any()
    bright = fitted[..., 0] > 150
    assert m.sum() > 0 and (bright & m).sum() / (bright | m).sum() > 0.7  # the same place
    # rows 10..30 of 40 → 3.2..9.6 of 13; columns 50..70 of 100 → 16..22.4 of 32
    rows, cols = np.nonzero(m)
    assert 3 <= rows.min() <= 4 and 9 <= rows.max() <= 10 and cols.min() == 16 and 21 <= cols.max() <= 22
    assert crop_map(torch.zeros(2, 1, 32, 32), content).shape == (2, 1, 13, 32)


def test_dataset_fits_as_the_mode_says(wide):
    s = Sample(wide / "test/crack/000.png", 1, wide / "ground_truth/crack/000_mask.png", "crack")
    squash, pad = AnomalyDataset([s], 32), AnomalyDataset([s], 32, resize="pad")
    assert squash.content(0) == (32, 32) and pad.content(0) == (11, 32)  # 96×32 → 32×10.7
    item = pad[0]
    assert item["image"].shape == (3, 32, 32) and (item["image"][:, 11:] == PAD_FILL / 255).all()
    assert item["mask"][0, 11:].sum() == 0 and item["mask"].sum() > 0
    rows, cols = bar(96, 32)  # the bar's place in the 96×32 original, a third of it in the 32×11 region
    ys, xs = torch.nonzero(item["mask"][0], as_tuple=True)
    assert abs(ys.min() - rows.start / 3) <= 1 and abs(ys.max() + 1 - rows.stop / 3) <= 1
    assert abs(xs.min() - cols.start / 3) <= 1 and abs(xs.max() + 1 - cols.stop / 3) <= 1
    red, m = item["image"][0, :11], item["mask"][0, :11] > 0
    assert red[m].mean() > 0.85 > 0.6 > red[~m].mean()  # the bright bar is under the mask (edges antialiased)
    long = AnomalyDataset([s], (32, 96), resize="long-side")
    assert long[0]["image"].shape == (3, 32, 96)


def test_run_records_the_mode_and_test_crops_back(pad_run, wide):
    spec = read_run_spec(pad_run)
    assert spec["data"]["resize"] == "pad" and spec["data"]["input_size"] == [32, 32]
    out = api.test(pad_run, device="cpu", progress=False)
    assert 0.0 <= out["metrics"]["pixel_auroc"] <= 1.0  # on the images' 11×32 region: padding not counted


def test_predict_mask_keeps_the_aspect(pad_run, wide, tmp_path):
    rows = api.predict(pad_run, [wide / "test/crack/000.png"], tmp_path / "pred", device="cpu", num_workers=0)
    mask = np.array(Image.open(tmp_path / "pred" / rows[0]["mask"]))
    assert mask.shape[:2] == (11, 32)  # the image's 3:1 aspect, not the square input
    overlay = np.array(Image.open(tmp_path / "pred" / rows[0]["overlay"]))
    assert overlay.shape[:2] == (32, 96)  # drawn over the original


def test_pixel_metrics_never_see_padding(wide, tmp_path):
    """Padding is cut off the maps and masks that the pixel metrics read: cropped when the images share a
    region, each region resized back to the input when they differ."""
    from distillad.data.resize import crop_to_images
    tall = tmp_path / "tall.png"
    Image.fromarray(np.zeros((96, 32, 3), np.uint8)).save(tall)
    one = [Sample(wide / "test/good/000.png", 0), Sample(wide / "test/good/001.png", 0)]
    for samples, shape in ((one, (11, 32)), (one + [Sample(tall, 0)], (32, 32))):
        ds = AnomalyDataset(samples, 32, resize="pad")
        maps = torch.full((len(ds), 1, 32, 32), 1e6)
        for i in range(len(ds)):
            h, w = ds.content(i)
            maps[i, :, :h, :w] = float(i)
        m, k = crop_to_images(maps, torch.zeros_like(maps), ds)
        assert m.shape[-2:] == k.shape[-2:] == shape and m.max() < 1e6
        assert [float(v) for v in m.flatten(1).amax(1)] == list(range(len(ds)))


def test_long_side_run_and_a_bad_mode_in_run_json(wide, tmp_path):
    out = tmp_path / "run"
    spec = api.train(model="rd", data=wide, out=out, val_fraction=0.3, resize="long-side",
                     announce=lambda t: None, **{**TINY, "image_size": 64})
    assert spec["data"]["input_size"] == [32, 64]  # 96×32 images: long side 64, short 21.3 → 32
    rows = api.predict(out, [wide / "test/good"], tmp_path / "pred", device="cpu", num_workers=0)
    assert all(r["error"] is None for r in rows)
    bad = copy.deepcopy(read_run_spec(out))
    bad["data"]["resize"] = "crop"
    with pytest.raises(CheckpointError, match="data.resize"):
        validate_run_spec(seal(bad), out / "run.json")
    with pytest.raises(ConfigError, match="resize must be one of"):
        api.train(model="rd", data=wide, out=tmp_path / "x", resize="crop", **TINY)


def test_cli_flag_reaches_the_config(tiny_data, tmp_path):
    cfg = parse_train_config(["train", "--model", "rd", "--data", str(tiny_data), "--out", str(tmp_path / "r"),
                              "--resize", "long-side"])
    assert cfg["data"]["resize"] == "long-side"
    assert parse_train_config(["train", "--model", "rd", "--data", str(tiny_data), "--out",
                               str(tmp_path / "r")])["data"]["resize"] == "squash"


def test_serve_fits_and_crops_as_predict_does(pad_run, wide, tmp_path, one_thread):
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'distillad[serve]')")
    from fastapi.testclient import TestClient

    from distillad.data import load_image
    from distillad.serve import ServeConfig, create_app
    f = wide / "test/crack/000.png"
    rows = api.predict(pad_run, [f], tmp_path / "pred", device="cpu", batch_size=1, num_workers=0)
    with TestClient(create_app(ServeConfig(pad_run, max_wait_ms=1))) as c:
        for _ in range(600):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        assert c.post("/v1/predict", content=f.read_bytes()).json()["score"] == rows[0]["score"]
        heat = c.post("/v1/predict?heatmap=png", content=f.read_bytes())
        mask = c.post("/v1/predict?mask=png", content=f.read_bytes())
    ours = np.array(Image.open(io.BytesIO(heat.content)).convert("RGB"))
    np.testing.assert_array_equal(ours, load_image(tmp_path / "pred" / rows[0]["overlay"]))
    assert Image.open(io.BytesIO(mask.content)).size == (96, 32)
