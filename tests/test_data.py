"""Tests for distillad.data: decoding, dataset layouts, splits and the torch Dataset."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from distillad.data import (
    AnomalyDataset,
    Sample,
    btad_samples,
    detect_layout,
    folder_samples,
    load_image,
    load_mask,
    load_samples,
    magnetic_tile_samples,
    mpdd_samples,
    mvtec3d_samples,
    mvtec_samples,
    train_val_split,
    visa_samples,
)
from distillad.errors import DataError

S = 32


def img(path: Path, value: int = 100, size: tuple[int, int] = (S, S), mode: str = "RGB") -> Path:
    """Write a small flat image (any format from the extension); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ("L", "P") else (value, value // 2, 255 - value)).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = (S, S), value: int = 255) -> Path:
    """Write a grey mask whose top-left quarter is ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros(size[::-1], np.uint8)
    a[: size[1] // 2, : size[0] // 2] = value
    Image.fromarray(a).save(path)
    return path


def names(samples: list[Sample]) -> list[tuple[str, int, str, str | None]]:
    return [(s.image.name, s.label, s.defect, s.mask.name if s.mask else None) for s in samples]


# ---------------------------------------------------------------- io


def test_conversions(tmp_path: Path) -> None:
    grey = np.arange(S * S, dtype=np.uint8).reshape(S, S)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (S, S, 3) and out.dtype == np.uint8
    assert (out == grey[:, :, None]).all()

    rgba = np.zeros((S, S, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == [10, 20, 30]).all()  # alpha dropped, not composited

    g16 = np.full((S, S), 65535, np.uint16)
    g16[0, 0], g16[0, 1] = 0, 257 * 100
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[0, 1, 1] == 100 and out[5, 5, 2] == 255

    c16 = np.zeros((S, S, 3), np.uint16)
    c16[..., 2] = 65535  # BGR on disk -> red in RGB
    c16[..., 1] = 257 * 7
    cv2.imwrite(str(tmp_path / "c16.png"), c16)
    assert (load_image(tmp_path / "c16.png")[0, 0] == [255, 7, 0]).all()

    pal = Image.new("P", (S, S), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert (load_image(tmp_path / "p.png") == [200, 100, 50]).all()

    Image.new("1", (S, S), 1).save(tmp_path / "b.bmp")
    assert (load_image(tmp_path / "b.bmp") == 255).all()

    Image.fromarray(np.ones((S, S), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match="f.tif"):
        load_image(tmp_path / "f.tif")


def test_decode_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    full = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(full).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    cases = {"junk.png": "junk.png", "half.png": "half.png", "x.gif": "supported: .png", "none.png": "none.png"}
    for name, text in cases.items():
        with pytest.raises(DataError, match=text) as err:
            load_image(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_mask_threshold(tmp_path: Path) -> None:
    a = np.array([[0, 127, 128, 255]], np.uint8)
    Image.fromarray(a).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]
    assert load_mask(tmp_path / "m.png", threshold=1).tolist() == [[False, True, True, True]]
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 1, 2] = 200  # one channel is enough (max over channels)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_mask(tmp_path / "rgb.png").tolist() == [[False, True]]
    Image.fromarray(np.array([[127 * 257, 128 * 257]], np.uint16)).save(tmp_path / "m16.png")
    assert load_mask(tmp_path / "m16.png").tolist() == [[False, True]]


# ---------------------------------------------------------------- layouts


def make_mvtec(root: Path, cat: str = "bottle") -> Path:
    base = root / cat
    for i in range(3):
        img(base / "train" / "good" / f"{i:03d}.png")
    img(base / "test" / "good" / "000.png")
    for d in ("crack", "hole"):
        img(base / "test" / d / "000.png")
        mask(base / "ground_truth" / d / "000_mask.png")
    return base


def test_mvtec_and_mpdd(tmp_path: Path) -> None:
    make_mvtec(tmp_path / "mvtec")
    assert len(mvtec_samples(tmp_path / "mvtec", "bottle", "train")) == 3
    test = mvtec_samples(tmp_path / "mvtec", "bottle", "test")
    assert names(test) == [("000.png", 0, "good", None), ("000.png", 1, "crack", "000_mask.png"), ("000.png", 1, "hole", "000_mask.png")]
    assert mvtec_samples(tmp_path / "mvtec" / "bottle", None, "test") == test
    assert detect_layout(tmp_path / "mvtec") == "mvtec" == detect_layout(tmp_path / "mvtec" / "bottle")
    assert load_samples(tmp_path / "mvtec", "test", category="bottle") == test
    make_mvtec(tmp_path / "mpdd", "tubes")
    assert detect_layout(tmp_path / "mpdd") == "mpdd"
    assert len(mpdd_samples(tmp_path / "mpdd", "tubes", "test")) == 3
    (tmp_path / "mvtec" / "bottle" / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DataError, match=r"test/hole/000.png.*ground_truth/hole/000_mask.png"):
        mvtec_samples(tmp_path / "mvtec", "bottle", "test")
    with pytest.raises(DataError, match="nope"):
        detect_layout(tmp_path / "mvtec", category="nope")


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does_not_exist"):
        mvtec_samples(tmp_path / "does_not_exist", "bottle", "train")
    (tmp_path / "e" / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/good: no images found"):
        mvtec_samples(tmp_path / "e", "bottle", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="looked for magnetic_tile"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(DataError, match="empty: no images"):
        folder_samples(tmp_path / "empty")


def make_mt(root: Path, n_free: int = 12) -> None:
    for i in range(n_free):
        img(root / "MT_Free" / "Imgs" / f"f{i:02d}.jpg", mode="L")
        mask(root / "MT_Free" / "Imgs" / f"f{i:02d}.png", value=0)
    for d, n in (("MT_Crack", 2), ("MT_Uneven", 1)):
        for i in range(n):
            img(root / d / "Imgs" / f"{d}{i}.jpg", mode="L")
            mask(root / d / "Imgs" / f"{d}{i}.png", value=0 if d == "MT_Uneven" else 200)


def test_magnetic_tile_split_rule(tmp_path: Path) -> None:
    make_mt(tmp_path)
    train = magnetic_tile_samples(tmp_path, "train")
    test = magnetic_tile_samples(tmp_path, "test")
    good_test = sorted(s.image.name for s in test if s.label == 0)
    assert good_test == ["f00.jpg", "f05.jpg", "f10.jpg"]
    assert len(train) == 9 and all(s.label == 0 and s.image.suffix == ".jpg" for s in train)
    bad = [s for s in test if s.label == 1]
    assert [(s.defect, s.mask.name) for s in bad] == [("Crack", "MT_Crack0.png"), ("Crack", "MT_Crack1.png"), ("Uneven", "MT_Uneven0.png")]
    assert detect_layout(tmp_path) == "magnetic_tile"
    ds = AnomalyDataset(test, image_size=16)  # empty Uneven mask: anomalous image, no anomalous pixel
    items = {Path(ds[i]["path"]).name: ds[i] for i in range(len(ds))}
    assert items["MT_Uneven0.jpg"]["label"] == 1 and items["MT_Uneven0.jpg"]["mask"].sum() == 0
    assert items["MT_Crack0.jpg"]["mask"].sum() == 64


def test_folder_samples(tmp_path: Path) -> None:
    for i in range(4):
        img(tmp_path / "ok" / f"n{i}.png")
    img(tmp_path / "bad" / "scratch" / "a.jpg")
    mask(tmp_path / "masks" / "scratch" / "a_mask.png")
    img(tmp_path / "bad" / "dent" / "b.jpg")
    mask(tmp_path / "masks" / "b_mask.bmp")
    bad = [tmp_path / "bad" / "scratch", tmp_path / "bad" / "dent"]
    out = folder_samples(tmp_path / "ok", bad, tmp_path / "masks", "_mask")
    assert names(out)[-2:] == [("b.jpg", 1, "dent", "b_mask.bmp"), ("a.jpg", 1, "scratch", "a_mask.png")]
    assert len(out) == 6
    split = folder_samples(tmp_path / "ok", bad, tmp_path / "masks", "_mask", split="test", test_every=2)
    assert [s.image.name for s in split if s.label == 0] == ["n0.png", "n2.png"]
    assert len(folder_samples(tmp_path / "ok", split="train", test_every=2)) == 2
    no_masks = folder_samples(tmp_path / "ok", bad)  # image-level labels only
    assert all(s.mask is None for s in no_masks)
    assert AnomalyDataset(no_masks, 8)[5]["mask"].sum() == 0  # image-level label only: no anomalous pixel
    with pytest.raises(DataError, match=r"scratch/a.jpg: anomalous image has no mask"):
        folder_samples(tmp_path / "ok", bad, tmp_path / "masks", "_gt")
    assert detect_layout(tmp_path / "ok") == "folder"
    assert len(load_samples(tmp_path / "ok", "train")) == 4
    # masks beside with a suffix: the *_mask files are masks, not images
    img(tmp_path / "side" / "c.png")
    mask(tmp_path / "side" / "c_mask.png")
    out = folder_samples(tmp_path / "ok", tmp_path / "side", mask_suffix="_mask", masks_beside=True)
    assert names(out)[-1] == ("c.png", 1, "side", "c_mask.png")


def test_visa_csv_and_raw(tmp_path: Path) -> None:
    data = tmp_path / "candle" / "Data"
    for i in range(12):
        img(data / "Images" / "Normal" / f"{i:04d}.JPG")
    for i in range(2):
        img(data / "Images" / "Anomaly" / f"{i:03d}.JPG")
        mask(data / "Masks" / "Anomaly" / f"{i:03d}.png", value=1)  # class index, not 255
    assert detect_layout(tmp_path) == "visa"
    with pytest.warns(UserWarning, match="1cls.csv"):
        raw = visa_samples(tmp_path, "candle", "test")
    assert [s.image.name for s in raw if s.label == 0] == ["0000.JPG", "0010.JPG"]
    (tmp_path / "split_csv").mkdir()
    with open(tmp_path / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        for i in range(12):
            w.writerow(["candle", "train" if i < 10 else "test", "normal", f"candle/Data/Images/Normal/{i:04d}.JPG", ""])
        w.writerow(["candle", "test", "anomaly", "candle/Data/Images/Anomaly/001.JPG", "candle/Data/Masks/Anomaly/001.png"])
        w.writerow(["other", "test", "anomaly", "other/x.JPG", "other/x.png"])
    assert len(visa_samples(tmp_path, "candle", "train")) == 10
    test = load_samples(tmp_path, "test", category="candle")
    assert names(test) == [("0010.JPG", 0, "good", None), ("0011.JPG", 0, "good", None), ("001.JPG", 1, "anomaly", "001.png")]
    assert AnomalyDataset(test, 16)[2]["mask"].sum() == 64  # index-1 mask is anomalous
    assert load_samples(tmp_path / "candle", "test") == test  # category folder given directly


def test_btad(tmp_path: Path) -> None:
    base = tmp_path / "01"
    img(base / "train" / "ok" / "0000.bmp")
    img(base / "train" / "ok" / "0001.bmp")
    img(base / "test" / "ok" / "0000.bmp")
    img(base / "test" / "ko" / "0005.bmp")
    mask(base / "ground_truth" / "ko" / "0005.png")
    assert detect_layout(tmp_path) == "btad"
    assert len(btad_samples(tmp_path, "01", "train")) == 2
    assert names(load_samples(tmp_path, "test")) == [("0000.bmp", 0, "good", None), ("0005.bmp", 1, "ko", "0005.png")]


def test_mvtec3d(tmp_path: Path) -> None:
    base = tmp_path / "bagel"
    img(base / "train" / "good" / "rgb" / "000.png")
    img(base / "validation" / "good" / "rgb" / "000.png")
    img(base / "test" / "good" / "rgb" / "000.png")
    img(base / "test" / "crack" / "rgb" / "000.png")
    mask(base / "test" / "crack" / "gt" / "000.png")
    assert detect_layout(tmp_path, "bagel") == "mvtec3d"
    train = mvtec3d_samples(tmp_path, "bagel", "train")
    assert sorted(s.image.parts[-4] for s in train) == ["train", "validation"]
    assert len(mvtec3d_samples(tmp_path, "bagel", "train", include_validation=False)) == 1
    assert names(mvtec3d_samples(tmp_path, "bagel", "test"))[1] == ("000.png", 1, "crack", "000.png")


# ---------------------------------------------------------------- split and dataset


def test_train_val_split() -> None:
    samples = [Sample(Path(f"/x/{i:03d}.png"), 0) for i in range(20)]
    train, val = train_val_split(samples, 0.1, seed=0)
    assert len(val) == 2 and len(train) == 18
    assert not {s.image for s in train} & {s.image for s in val}
    assert train_val_split(samples[::-1], 0.1, seed=0) == (train, val)  # order-independent
    assert train_val_split(samples, 0.1, seed=1)[1] != val
    assert len(train_val_split(samples, 0.5)[1]) == 10
    assert len(train_val_split(samples[:3], 0.01)[1]) == 1
    assert train_val_split(samples, 0.0) == (samples, [])
    with pytest.raises(DataError, match="good training images only"):
        train_val_split(samples + [Sample(Path("/x/bad.png"), 1, None, "crack")], 0.1)


def test_dataset_items_and_collate(tmp_path: Path) -> None:
    base = make_mvtec(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(base / "test" / "good" / "001.png")
    samples = mvtec_samples(tmp_path, "bottle", "test")
    ds = AnomalyDataset(samples, image_size=24)
    item = ds[len(ds) - 1]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["mask"].shape == (1, 24, 24) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["label"].dtype == torch.int64 and item["label"] == 1
    assert ds[0]["mask"].sum() == 0 and ds[0]["label"] == 0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 24, 24) and batch["label"].tolist() == [0, 0, 1, 1]
    assert isinstance(batch["path"][0], str) and batch["defect"] == ["good", "good", "crack", "hole"]
    lazy = AnomalyDataset(samples, image_size=(16, 20), cache=False)
    assert lazy[3]["image"].shape == (3, 16, 20) and lazy[3]["mask"].shape == (1, 16, 20)


def test_dataset_validates_eagerly(tmp_path: Path) -> None:
    base = make_mvtec(tmp_path)
    mask(base / "ground_truth" / "crack" / "000_mask.png", size=(S, S + 1))
    samples = mvtec_samples(tmp_path, "bottle", "test")
    with pytest.raises(DataError, match=r"000_mask.png: mask is 32x33 but its image .*crack/000.png is 32x32"):
        AnomalyDataset(samples)
    (base / "test" / "good" / "000.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="good/000.png"):
        AnomalyDataset(mvtec_samples(tmp_path, "bottle", "test"))


# ---------------------------------------------------------------- real data


# ``data_root`` is the shared fixture of tests/conftest.py (skips with a reason when absent).


@pytest.mark.realdata
def test_real_mvtec_bottle(data_root: Path) -> None:
    if not (data_root / "mvtec_ad" / "bottle").is_dir():
        pytest.skip(f"{data_root}/mvtec_ad/bottle absent")
    assert detect_layout(data_root / "mvtec_ad", "bottle") == "mvtec"
    assert len(load_samples(data_root / "mvtec_ad", "train", "bottle")) == 209
    test = load_samples(data_root / "mvtec_ad", "test", "bottle")
    bad = [s for s in test if s.label == 1]
    assert len(test) == 83 and len(bad) == 63 and all(s.mask is not None for s in bad)
    ds = AnomalyDataset(bad[:2] + test[:1], image_size=64)
    assert ds[0]["mask"].sum() > 0 and ds[2]["mask"].sum() == 0


@pytest.mark.realdata
def test_real_magnetic_tile(data_root: Path) -> None:
    if not (data_root / "magnetic_tile" / "MT_Free").is_dir():
        pytest.skip(f"{data_root}/magnetic_tile absent")
    assert detect_layout(data_root / "magnetic_tile") == "magnetic_tile"
    train = magnetic_tile_samples(data_root / "magnetic_tile", "train")
    test = magnetic_tile_samples(data_root / "magnetic_tile", "test")
    assert len(train) == 761 and all(s.label == 0 for s in train)
    assert sum(s.label == 0 for s in test) == 191 and sum(s.label == 1 for s in test) == 392
    assert all(s.mask is not None and s.mask.suffix == ".png" for s in test if s.label == 1)
