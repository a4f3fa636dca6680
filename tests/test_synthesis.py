"""Tests for distillad.synthesis: Perlin masks, textures, foregrounds, blending, dataset, preview."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from distillad.errors import DataError
from distillad.synthesis import (
    PAPER_PRESETS,
    ForegroundCache,
    SyntheticAnomalyDataset,
    TextureSource,
    anomaly_mask,
    blend,
    foreground_mask,
    min_blob,
    perlin_mask,
    perlin_noise,
    sample_beta,
    synth_preview,
    synthesize,
)
from distillad.synthesis import textures as textures_module

S = 64


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def disc_image(size: int = S, radius: float = 0.35, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB dark textured disc on a light background, and the disc as a bool mask."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (radius * size) ** 2
    noise = rng(seed).normal(0, 8, (size, size, 3))
    img = np.where(disc[..., None], np.array([60, 50, 40]), np.array([235, 235, 235])) + noise
    return np.clip(img, 0, 255).astype(np.uint8), disc


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


class ListDataset:
    """Items as distillad.data.AnomalyDataset yields them (image 3xSxS float, path)."""

    def __init__(self, n: int = 4, size: int = S) -> None:
        self.items = [disc_image(size, 0.3 + 0.02 * i, seed=i)[0] for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        img = torch.from_numpy(self.items[i].transpose(2, 0, 1).astype(np.float32) / 255.0)
        return {"image": img, "path": f"mem/{i}.png", "label": 0}


# --- Perlin -----------------------------------------------------------------------------------

def _draem_perlin(shape, res, angles):
    """DRAEM's rand_perlin_2d_np (reference), with the gradient angles passed in."""
    fade = lambda t: 6 * t**5 - 15 * t**4 + 10 * t**3  # noqa: E731
    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0:res[0]:delta[0], 0:res[1]:delta[1]].transpose(1, 2, 0) % 1
    g = np.stack((np.cos(angles), np.sin(angles)), axis=-1)
    tile = lambda s1, s2: np.repeat(np.repeat(g[s1[0]:s1[1], s2[0]:s2[1]], d[0], 0), d[1], 1)  # noqa: E731
    dot = lambda gr, sh: ((grid + np.array(sh)) * gr).sum(-1)  # noqa: E731
    n00, n10 = dot(tile([0, -1], [0, -1]), [0, 0]), dot(tile([1, None], [0, -1]), [-1, 0])
    n01, n11 = dot(tile([0, -1], [1, None]), [0, -1]), dot(tile([1, None], [1, None]), [-1, -1])
    t = fade(grid)
    lerp = lambda a, b, w: (b - a) * w + a  # noqa: E731
    return math.sqrt(2) * lerp(lerp(n00, n10, t[..., 0]), lerp(n01, n11, t[..., 0]), t[..., 1])


@pytest.mark.parametrize("res", [(1, 1), (4, 8), (32, 2)])
def test_perlin_noise_matches_draem(res):
    ours = perlin_noise((64, 128), res, rng(5))
    angles = rng(5).uniform(0, 2 * math.pi, size=(res[0] + 1, res[1] + 1))
    assert ours.dtype == np.float32 and ours.shape == (64, 128)
    np.testing.assert_allclose(ours, _draem_perlin((64, 128), res, angles), atol=1e-5)


def test_perlin_noise_any_shape_is_continuous():
    n = perlin_noise((61, 47), (8, 4), rng(1))
    assert n.shape == (61, 47) and np.isfinite(n).all()
    assert np.abs(np.diff(n, axis=0)).max() < 0.5 and np.abs(np.diff(n, axis=1)).max() < 0.5


def test_perlin_mask_binary_deterministic():
    m = perlin_mask((S, 80), rng(3))
    assert m.dtype == bool and m.shape == (S, 80)
    np.testing.assert_array_equal(m, perlin_mask((S, 80), rng(3)))
    fractions = [perlin_mask((S, S), rng(i)).mean() for i in range(40)]
    assert 0.0 < np.mean(fractions) < 0.5  # DRAEM's threshold 0.5 keeps the noise peaks only


# --- masks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["fas", "single", "plain"])
def test_anomaly_mask_nonempty_and_restricted(mode):
    _, fg = disc_image()
    for seed in range(30):
        m = anomaly_mask((S, S), rng(seed), fg, mode)
        assert m.dtype == bool and m.shape == (S, S) and m.any()
        if mode != "plain":
            assert not (m & ~fg).any(), "mask pixel outside the foreground"


def test_plain_mode_ignores_foreground():
    _, fg = disc_image(radius=0.2)
    assert any((anomaly_mask((S, S), rng(s), fg, "plain") & ~fg).any() for s in range(20))


def test_fas_uses_intersection_and_union():
    """With alpha=1 FAS always intersects, with alpha=0 always unites: areas must order so."""
    inter = np.mean([anomaly_mask((S, S), rng(s), None, "fas", alpha=1.0).mean() for s in range(30)])
    union = np.mean([anomaly_mask((S, S), rng(s), None, "fas", alpha=0.0).mean() for s in range(30)])
    assert inter < union


def test_min_blob_fallback():
    _, fg = disc_image()
    m = anomaly_mask((S, S), rng(0), fg, "fas", threshold=5.0, max_tries=3)  # Perlin never reaches 5
    assert m.any() and not (m & ~fg).any()
    assert m.sum() <= math.pi * (S / 32 + 1) ** 2 + 1
    one = np.zeros((S, S), bool)
    one[10, 20] = True
    np.testing.assert_array_equal(min_blob(one, rng(0)), one)


# --- blending ---------------------------------------------------------------------------------

def test_sample_beta_range():
    b = np.array([sample_beta(rng(0 + i)) for i in range(2000)])
    assert b.min() >= 0.15 and b.max() <= 1.0 and b.min() < 0.17 and b.max() > 0.98


@pytest.mark.parametrize("form", ["dtsnet", "dskd"])
def test_blend_forms_exact(form):
    r = rng(1)
    normal = r.random((S, S, 3), dtype=np.float32)
    source = r.random((S, S, 3), dtype=np.float32)
    mask = perlin_mask((S, S), r) | (np.arange(S)[:, None] < 4)
    beta = 0.3
    out = blend(normal, source, mask, beta, form)
    assert out.dtype == np.float32 and out.shape == normal.shape
    np.testing.assert_array_equal(out[~mask], normal[~mask])  # bit-exact outside M
    m = mask[..., None]
    if form == "dtsnet":  # eq. (2)
        expect = beta * (m * normal) + (1 - beta) * (m * source) + (~m) * normal
    else:  # eq. (3)
        expect = beta * (m * source) + (1 - beta) * (m * normal) + (1 - m) * normal
    np.testing.assert_allclose(out, expect, atol=1e-6)


@pytest.mark.parametrize("form", ["dtsnet", "dskd"])
def test_beta_weighs_the_side_each_paper_writes(form):
    normal, source = np.zeros((S, S, 3), np.float32), np.ones((S, S, 3), np.float32)
    values = []
    for seed in range(300):
        a, m = synthesize(normal, rng(seed), source, mode="plain", form=form)
        values.append(a[m].mean())  # = texture weight: 1-β (eq. 2) or β (eq. 3)
    values = np.array(values)
    if form == "dtsnet":
        assert values.min() >= -1e-6 and values.max() <= 0.85 + 1e-6
    else:
        assert values.min() >= 0.15 - 1e-6 and values.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("form", ["dtsnet", "dskd"])
@pytest.mark.parametrize("mode", ["fas", "single", "plain"])
def test_synthesize_changes_only_inside_mask(form, mode):
    img, fg = disc_image()
    normal = img.astype(np.float32) / 255
    src = TextureSource(None, fallback="noise")
    for seed in range(5):
        a, m = synthesize(normal, rng(seed), src, foreground=fg, mode=mode, form=form)
        assert a.dtype == np.float32 and a.shape == normal.shape and m.dtype == bool and m.any()
        assert a.min() >= 0 and a.max() <= 1
        np.testing.assert_array_equal(a[~m], normal[~m])
        assert not np.array_equal(a, normal)
        if mode != "plain":
            assert not (m & ~fg).any()


# --- textures ---------------------------------------------------------------------------------

def test_texture_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TextureSource(tmp_path / "missing", S)
    with pytest.raises(DataError, match="no texture images"):
        TextureSource(tmp_path, S)


def test_texture_folder_sample(tmp_path):
    for i, (h, w) in enumerate([(40, 90), (100, 30)]):
        Image.fromarray(rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"t{i}.png")
    src = TextureSource(tmp_path, S)
    assert len(src) == 2 and not src.is_fallback
    for seed in range(10):
        t = src.sample(rng(seed))
        assert t.dtype == np.float32 and t.shape == (S, S, 3) and 0 <= t.min() and t.max() <= 1
    assert src.sample(rng(0), shape=(32, 48)).shape == (32, 48, 3)
    np.testing.assert_array_equal(src.sample(rng(7)), src.sample(rng(7)))


def test_texture_fallback_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(textures_module, "_ANNOUNCED", set())
    with caplog.at_level(logging.WARNING, logger="distillad"):
        a = TextureSource(None, S)
        TextureSource(None, S)
    assert sum("no texture folder" in r.message for r in caplog.records) == 1
    t = a.sample(rng(0))
    assert t.dtype == np.float32 and t.shape == (S, S, 3) and 0 <= t.min() and t.max() <= 1 and t.std() > 0
    shifted = TextureSource(None, S, fallback="shifted").sample(rng(0), other=disc_image()[0])
    assert shifted.shape == (S, S, 3) and shifted.dtype == np.float32


def test_dtd_textures(data_root):
    folder = data_root / "dtd" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    src = TextureSource(folder, 256)
    assert len(src) >= 100
    t = src.sample(rng(0))
    assert t.shape == (256, 256, 3) and t.dtype == np.float32 and t.std() > 0.01


# --- foreground -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["grabcut", "otsu"])
def test_foreground_methods_find_disc(method):
    img, disc = disc_image()
    fg = foreground_mask(img, method)
    assert fg.dtype == bool and fg.shape == (S, S)
    assert iou(fg, disc) > 0.85


def test_foreground_none_and_degenerate(caplog):
    img, _ = disc_image()
    assert foreground_mask(img, "none").all()
    flat = np.full((S, S, 3), 128, np.uint8)
    with caplog.at_level(logging.WARNING, logger="distillad"):
        assert foreground_mask(flat, "otsu").all()  # nothing found -> whole image, with a warning
    with pytest.raises(ValueError):
        foreground_mask(img, "isnet")


def test_foreground_cache_memory_and_disk(tmp_path):
    img, _ = disc_image()
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    cache = ForegroundCache("otsu", cache_dir=tmp_path / "cache")
    a = cache.get(img, path)
    b = cache.get(img.astype(np.float32) / 255, path)
    assert cache.computed == 1 and a is b and not a.flags.writeable
    assert len(list((tmp_path / "cache").glob("*_otsu_64x64.png"))) == 1
    fresh = ForegroundCache("otsu", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(fresh.get(img, path), a)
    assert fresh.computed == 0  # read from disk, keyed by the file's SHA-256
    Image.fromarray(disc_image(seed=9)[0]).save(path)  # new content: new key
    ForegroundCache("otsu", cache_dir=tmp_path / "cache").get(img, path)
    assert len(list((tmp_path / "cache").glob("*.png"))) == 2


def test_grabcut_on_real_bottle(data_root):
    path = data_root / "mvtec_ad" / "bottle" / "train" / "good" / "000.png"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    img = cv2.resize(np.asarray(Image.open(path).convert("RGB")), (256, 256), interpolation=cv2.INTER_AREA)
    fg = foreground_mask(img, "grabcut")
    yy, xx = np.mgrid[:256, :256]
    # The bottle (top view) spans pixels ~12..243 at 256 px: a centred disc of radius 0.45 S.
    prior = (yy - 127.5) ** 2 + (xx - 127.5) ** 2 < (0.45 * 256) ** 2
    assert iou(fg, prior) > 0.9
    assert fg[128, 128] and not fg[:4].any() and not fg[:, -4:].any()  # centre in, corners out


# --- dataset ----------------------------------------------------------------------------------

def test_dataset_items():
    ds = SyntheticAnomalyDataset(ListDataset(), foreground="otsu", mode="fas", form="dtsnet", seed=0)
    assert len(ds) == 4
    for i in range(len(ds)):
        it = ds[i]
        assert set(it) == {"image", "anomalous", "mask", "foreground", "path"}
        assert it["image"].shape == it["anomalous"].shape == (3, S, S)
        assert it["mask"].shape == it["foreground"].shape == (1, S, S)
        for k in ("image", "anomalous", "mask", "foreground"):
            assert it[k].dtype == torch.float32
        m, fg = it["mask"].bool(), it["foreground"].bool()
        assert set(it["mask"].unique().tolist()) <= {0.0, 1.0} and m.any()
        assert not (m & ~fg).any()
        outside = ~m.expand(3, S, S)
        assert torch.equal(it["anomalous"][outside], it["image"][outside])
        assert it["path"] == f"mem/{i}.png"
    assert ds.foregrounds.computed == 4
    ds[0]
    assert ds.foregrounds.computed == 4  # cached: never recomputed


def test_dataset_determinism_epochs_and_workers():
    base = ListDataset()
    a = SyntheticAnomalyDataset(base, seed=3)
    b = SyntheticAnomalyDataset(base, seed=3)
    first = [a[i]["anomalous"] for i in (0, 1, 2, 3)]
    second = [b[i]["anomalous"] for i in (3, 2, 1, 0)][::-1]  # order does not matter
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    a.set_epoch(1)
    assert not torch.equal(a[0]["anomalous"], first[0])
    b.set_epoch(1)
    assert torch.equal(a[0]["mask"], b[0]["mask"])
    assert not torch.equal(SyntheticAnomalyDataset(base, seed=4)[0]["mask"], first[0])
    loader = torch.utils.data.DataLoader(a, batch_size=2, num_workers=2)
    batched = torch.cat([batch["anomalous"] for batch in loader])
    assert torch.equal(batched, torch.stack([a[i]["anomalous"] for i in range(4)]))


def test_dataset_p_anomaly_zero_is_normal():
    it = SyntheticAnomalyDataset(ListDataset(), p_anomaly=0.0)[0]
    assert torch.equal(it["anomalous"], it["image"]) and not it["mask"].any()


def test_presets_build():
    for name, preset in PAPER_PRESETS.items():
        it = SyntheticAnomalyDataset(ListDataset(2), **{**preset, "foreground": "otsu"})[1]
        assert it["mask"].any(), name


# --- preview ----------------------------------------------------------------------------------

def test_preview_grid(tmp_path):
    out = synth_preview(ListDataset(3), tmp_path / "grid.png", n=3, foreground="otsu")
    im = np.asarray(Image.open(out))
    assert im.shape[0] == 4 * (S + 4) + 4 and im.shape[1] > 3 * S


def test_preview_cli(tmp_path):
    from distillad.synthesis.preview import main
    folder = tmp_path / "cat" / "train" / "good"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(disc_image(seed=i)[0]).save(folder / f"{i:03d}.png")
    assert main(["--data", str(tmp_path / "cat"), "--out", str(tmp_path / "g.png"), "--size", "64",
                 "--foreground", "otsu", "-n", "3"]) == 0
    assert (tmp_path / "g.png").is_file()
    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2


def test_a_methods_synthetic_set_reuses_foregrounds_across_runs(tmp_path, monkeypatch, caplog):
    """``synthetic_train_set`` caches masks under DISTILLAD_CACHE, so the next run on the same files skips
    GrabCut; a cache that cannot be written only warns, and training data is the same."""
    from distillad.data import AnomalyDataset, load_samples
    from distillad.demo_data import make_demo_dataset
    from distillad.registry import create_model

    data = make_demo_dataset(tmp_path / "data", n_train=3, n_test_good=1, n_test_defect=1, size=32, seed=0)
    base = AnomalyDataset(load_samples(data, "train"), image_size=32)
    net = create_model("dtsnet", teacher_weights="random")
    monkeypatch.setenv("DISTILLAD_CACHE", str(tmp_path / "cache"))
    first = net.synthetic_train_set(base, seed=0)
    second = net.synthetic_train_set(base, seed=0)
    assert first.foregrounds.computed == len(base) and second.foregrounds.computed == 0
    assert len(list((tmp_path / "cache" / "foregrounds").glob("*.png"))) == len(base)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DISTILLAD_CACHE", str(blocked))
    with caplog.at_level("WARNING", logger="distillad"):
        third = net.synthetic_train_set(base, seed=0)
    assert third.foregrounds.computed == len(base) and "not writable" in caplog.text
    for i in range(len(base)):
        np.testing.assert_array_equal(third.foreground_of(i), first.foreground_of(i))
