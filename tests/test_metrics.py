"""Tests for distillad.metrics against sklearn and slow, obviously-correct reference implementations.

Only the comparisons with sklearn need scikit-learn (the ``sklearn_metrics`` fixture skips them
when it is absent); the AUPRO, F1 and input tests run without it."""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np
import pytest
from scipy import ndimage

from distillad.errors import DataError
from distillad.metrics import (
    aupro,
    compute_metrics,
    decision_metrics,
    f1_max,
    f1_max_threshold,
    image_auroc,
    mask_metrics,
    per_defect_metrics,
    pixel_auroc,
    pro_curve,
)


@pytest.fixture(scope="module")
def sklearn_metrics():
    """``sklearn.metrics``, or a skip of the test that asks for it."""
    return pytest.importorskip("sklearn.metrics")


# ----------------------------------------------------------------------------- references
def ref_f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Slow F1-max: try every distinct score as threshold (anomalous iff score >= t)."""
    best, best_t = -1.0, None
    for t in np.unique(scores):  # ascending, so ties keep the lowest threshold
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        fp = np.sum(pred & (labels == 0))
        fn = np.sum(~pred & (labels == 1))
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best:
            best, best_t = f1, t
    return float(best), float(best_t)


def ref_trapezoid(x: list[float], y: list[float], x_max: float) -> float:
    """Trapezoidal area up to x_max with linear interpolation, as MVTec's official trapezoid()."""
    x, y = np.asarray(x), np.asarray(y)
    correction = 0.0
    if x_max not in x:
        ins = bisect_right(x, x_max)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y[ins - 1] + y_interp) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def ref_pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[list[float], list[float]]:
    """Slow PRO curve: loop over every distinct threshold, per-region overlap, FPR over all normal pixels."""
    masks = masks.astype(bool)
    regions = []  # flat pixel indices of each 8-connected region
    for i in range(masks.shape[0]):
        lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        offset = i * masks[i].size
        regions += [offset + np.flatnonzero(lab == k) for k in range(1, n + 1)]
    normal = ~masks.ravel()
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:  # descending: every distinct score is a threshold
        pred = maps.ravel() >= t
        fprs.append(np.sum(pred & normal) / np.sum(normal))
        pros.append(np.mean([np.mean(pred[r]) for r in regions]))
    return fprs, pros


def ref_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Slow AUPRO: the area of ref_pro_curve up to fpr_limit, divided by fpr_limit."""
    return ref_trapezoid(*ref_pro_curve(masks, maps), fpr_limit) / fpr_limit


def random_blob_data(seed: int, n: int = 6, size: int = 20, levels: int | None = None):
    """Random masks with several blobs per image (some images without any) and noisy maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        if i % 3 == 0:
            continue  # a good image
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            ry, rx = rng.uniform(0.8, size / 5, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        masks[i, rng.integers(0, size), rng.integers(0, size)] = True  # often a lone pixel region
    maps = rng.normal(size=masks.shape) + 1.5 * masks * rng.uniform(0, 1.5, size=masks.shape)
    if levels is not None:  # many ties, within and across images
        maps = np.round(maps * levels / 4) / levels
    return masks, maps


# ----------------------------------------------------------------------------- AUROC
@pytest.mark.parametrize("seed", range(4))
def test_image_auroc_matches_sklearn_with_ties(seed, sklearn_metrics):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200) + labels * rng.integers(0, 3, 200)  # heavy ties
    assert image_auroc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_pixel_auroc_matches_sklearn_with_ties(sklearn_metrics):
    masks, maps = random_blob_data(0, n=5, size=32, levels=8)
    expected = sklearn_metrics.roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    maps32 = maps.astype(np.float32)
    expected32 = sklearn_metrics.roc_auc_score(masks.ravel(), maps32.ravel())
    assert pixel_auroc(masks.astype(np.uint8), maps32) == pytest.approx(expected32, abs=1e-12)


def test_auroc_perfect_inverted_and_one_class():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.5])
    assert image_auroc(labels, scores) == 1.0
    assert image_auroc(labels, -scores) == 0.0
    assert image_auroc(labels, np.zeros(5)) == 0.5
    with pytest.raises(ValueError, match="only anomalous"):
        image_auroc(np.ones(3), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only normal"):
        pixel_auroc(np.zeros((2, 4, 4)), np.random.rand(2, 4, 4))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="binary"):
        image_auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="entries"):
        image_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="do not match"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    masks, maps = random_blob_data(1)
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(masks, maps, fpr_limit=0.0)


# ----------------------------------------------------------------------------- F1-max
@pytest.mark.parametrize("seed", range(5))
def test_f1_max_matches_slow_loop_and_sklearn(seed, sklearn_metrics):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    labels[0] = 1
    scores = np.round(rng.normal(size=60) + labels, 1)  # ties
    f1, thr = f1_max_threshold(labels, scores)
    ref_f1, ref_thr = ref_f1_max(labels, scores)
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    assert thr == ref_thr
    assert f1_max(labels, scores) == f1
    p, r, _ = sklearn_metrics.precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        assert f1 == pytest.approx(np.nanmax(2 * p * r / (p + r)), abs=1e-12)


def test_f1_max_analytic():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    # thresholds 0.8: F1 2/3, 0.4: 1/2, 0.35: 4/5, 0.1: 2/3
    assert f1_max_threshold(labels, scores) == (pytest.approx(0.8), 0.35)
    assert f1_max([0, 1, 1], [0.0, 1.0, 1.0]) == 1.0
    assert f1_max([1, 1], [0.3, 0.2]) == 1.0  # no normal sample: still defined
    with pytest.raises(ValueError, match="no anomalous"):
        f1_max([0, 0], [0.3, 0.2])


# ----------------------------------------------------------------------------- AUPRO
@pytest.mark.parametrize("seed,levels", [(0, None), (1, None), (2, 6), (3, 3), (4, 12)])
def test_aupro_matches_slow_reference(seed, levels):
    masks, maps = random_blob_data(seed, levels=levels)
    assert masks.any() and 0 in masks.reshape(len(masks), -1).sum(1)  # some good images
    fprs, pros = ref_pro_curve(masks, maps)
    for limit in (0.3, 0.05, 1.0):
        assert aupro(masks, maps, limit) == pytest.approx(ref_trapezoid(fprs, pros, limit) / limit, abs=1e-6)


def test_aupro_perfect_constant_and_inverted():
    masks, _ = random_blob_data(5)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-12)
    # all scores tied: the curve is the single segment (0,0)-(1,1), area limit^2/2 / limit
    assert aupro(masks, np.ones(masks.shape)) == pytest.approx(0.15, abs=1e-12)
    assert aupro(masks, np.zeros(masks.shape), fpr_limit=0.5) == pytest.approx(0.25, abs=1e-12)
    assert aupro(masks, -masks.astype(float)) == pytest.approx(0.0, abs=1e-12)


def test_aupro_one_of_two_regions_detected():
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 1:3, 1:3] = True  # small region (4 px), found
    masks[1, 2:12, 2:12] = True  # large region (100 px), missed
    maps = np.zeros(masks.shape)
    maps[0, 1:3, 1:3] = 1.0
    # regions weigh the same: (0,0) -> (0,0.5) -> (1,1); area up to 0.3 = 0.3*(0.5+0.65)/2
    assert aupro(masks, maps) == pytest.approx(0.575, abs=1e-12)
    assert aupro(masks, maps) == pytest.approx(ref_aupro(masks, maps), abs=1e-12)


def test_aupro_uses_8_connectivity():
    masks = np.zeros((1, 16, 16), dtype=bool)
    masks[0, 2, 2] = masks[0, 3, 3] = True  # diagonal neighbours: one region
    masks[0, 10, 10] = True
    maps = np.zeros(masks.shape)
    maps[0, 10, 10] = 1.0
    assert aupro(masks, maps) == pytest.approx(0.575, abs=1e-12)  # 4-connectivity would give 0.5


def test_aupro_ties_across_images():
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 4:6, 4:6] = True
    n_normal = masks.size - 4
    for n_tied, expected in ((64, 1 - 64 / (n_normal * 0.6)), (200, 0.15 * n_normal / 200)):
        maps = np.zeros(masks.shape)
        maps[0][masks[0]] = 0.5
        maps[1].reshape(-1)[:n_tied] = 0.5  # normal pixels of another image tied with the region
        # threshold 0.5 takes the region and the tied normal pixels together: (0,0) -> (n_tied/n_normal, 1)
        assert aupro(masks, maps) == pytest.approx(expected, abs=1e-12)
        assert aupro(masks, maps) == pytest.approx(ref_aupro(masks, maps), abs=1e-12)


def test_aupro_degenerate_cases():
    with pytest.raises(ValueError, match="no anomalous region"):
        aupro(np.zeros((3, 8, 8)), np.random.rand(3, 8, 8))
    with pytest.raises(ValueError, match="no normal pixel"):
        aupro(np.ones((1, 8, 8)), np.random.rand(1, 8, 8))


# ----------------------------------------------------------------------------- shapes, torch, dict
def test_channel_dim_and_torch_inputs():
    torch = pytest.importorskip("torch")
    masks, maps = random_blob_data(6, levels=5)
    expected = (pixel_auroc(masks, maps), aupro(masks, maps))
    m4, s4 = masks[:, None], maps[:, None]
    assert (pixel_auroc(m4, s4), aupro(m4, s4)) == expected
    assert (pixel_auroc(masks, s4), aupro(m4, maps)) == expected
    tm, ts = torch.from_numpy(m4), torch.from_numpy(s4)
    assert (pixel_auroc(tm, ts), aupro(tm.float(), ts)) == expected
    half = torch.from_numpy(maps).half()
    assert aupro(masks, half) == pytest.approx(aupro(masks, half.float().numpy()), abs=1e-12)
    labels = torch.tensor([0, 1, 1, 0])
    scores = torch.tensor([0.2, 0.9, 0.4, 0.5])
    assert image_auroc(labels, scores) == 0.75
    assert f1_max(labels, scores) == pytest.approx(0.8)


def test_compute_metrics():
    masks, maps = random_blob_data(7)
    labels = masks.reshape(len(masks), -1).any(1).astype(int)
    scores = maps.reshape(len(maps), -1).max(1)
    out = compute_metrics(labels, scores, masks, maps)
    assert set(out) == {"image_auroc", "image_f1_max", "pixel_auroc", "aupro", "aupro_005", "seg_f1_max",
                        "seg_f1_max_threshold"}
    assert out["image_auroc"] == image_auroc(labels, scores)
    assert out["image_f1_max"] == f1_max(labels, scores)
    assert out["pixel_auroc"] == pixel_auroc(masks, maps)
    assert out["aupro"] == aupro(masks, maps)
    assert out["aupro_005"] == pytest.approx(aupro(masks, maps, fpr_limit=0.05), abs=1e-12)
    assert (out["seg_f1_max"], out["seg_f1_max_threshold"]) == f1_max_threshold(masks.ravel(), maps.ravel())
    assert all(isinstance(v, float) for v in out.values())
    assert set(compute_metrics(labels, scores)) == {"image_auroc", "image_f1_max"}


def test_compute_metrics_without_anomalous_pixels_gives_nan():
    rng = np.random.default_rng(8)
    out = compute_metrics([0, 1, 1], [0.1, 0.5, 0.4], np.zeros((3, 8, 8)), rng.random((3, 8, 8)))
    assert out["image_auroc"] == 1.0
    assert math.isnan(out["pixel_auroc"]) and math.isnan(out["aupro"]) and math.isnan(out["aupro_005"])
    assert math.isnan(out["seg_f1_max"]) and math.isnan(out["seg_f1_max_threshold"])
    out = compute_metrics([0, 0], [0.1, 0.5])
    assert math.isnan(out["image_auroc"]) and math.isnan(out["image_f1_max"])
    with pytest.raises(DataError, match="both masks and maps"):
        compute_metrics([0, 1], [0.1, 0.5], masks=np.zeros((2, 4, 4)))


def test_decision_metrics_at_a_threshold_by_hand():
    # labels 0 0 0 1 1 ; scores >= 0.5 flag images 2, 3 (one false positive, one true positive, one missed)
    m = decision_metrics([0, 0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9, 0.3], 0.5)
    assert m == {"threshold_accuracy": 3 / 5, "threshold_precision": 1 / 2, "threshold_tpr": 1 / 2,
                 "threshold_fpr": 1 / 3}
    m = decision_metrics([0, 0], [0.1, 0.2], 0.5)  # nothing flagged, nothing defective: undefined ratios are nan
    assert m["threshold_accuracy"] == 1.0 and m["threshold_fpr"] == 0.0
    assert math.isnan(m["threshold_precision"]) and math.isnan(m["threshold_tpr"])


def test_mask_metrics_by_hand():
    masks = np.zeros((2, 2, 2), bool)
    masks[0, 0] = True  # 2 anomalous pixels
    maps = np.array([[[0.9, 0.2], [0.1, 0.1]], [[0.8, 0.1], [0.1, 0.7]]])  # flagged at 0.5: 3 pixels, 1 right
    assert mask_metrics(masks, maps, 0.5) == {"mask_precision": 1 / 3, "mask_recall": 1 / 2, "seg_f1": 2 / 5}
    assert mask_metrics(masks[:, None], maps[:, None], 0.95)["mask_recall"] == 0.0
    assert math.isnan(mask_metrics(masks, maps, 0.95)["mask_precision"])


# ----------------------------------------------------------------------------- AUPRO@0.05, SegF1, per defect type
@pytest.mark.parametrize("seed,levels", [(10, None), (11, 4)])
def test_aupro_005_in_compute_metrics_matches_slow_reference(seed, levels):
    masks, maps = random_blob_data(seed, n=7, levels=levels)
    labels = masks.reshape(len(masks), -1).any(1)
    out = compute_metrics(labels, maps.reshape(len(maps), -1).max(1), masks, maps)
    assert out["aupro_005"] == pytest.approx(ref_aupro(masks, maps, 0.05), abs=1e-9)
    assert out["aupro"] == pytest.approx(ref_aupro(masks, maps, 0.3), abs=1e-9)
    fpr, pro = pro_curve(masks, maps)
    assert fpr[0] == pro[0] == 0.0 and fpr[-1] == 1.0 and pro[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fpr) >= 0)


@pytest.mark.parametrize("seed", range(3))
def test_seg_f1_matches_sklearn_at_the_threshold_and_at_its_best(seed, sklearn_metrics):
    masks, maps = random_blob_data(seed, n=5, size=24, levels=6)
    for thr in (0.0, 0.5, 1.25):
        expected = sklearn_metrics.f1_score(masks.ravel(), maps.ravel() >= thr)
        assert mask_metrics(masks, maps, thr)["seg_f1"] == pytest.approx(expected, abs=1e-12)
    out = compute_metrics(masks.reshape(len(masks), -1).any(1), maps.reshape(len(maps), -1).max(1), masks, maps)
    best = max(sklearn_metrics.f1_score(masks.ravel(), maps.ravel() >= t) for t in np.unique(maps))
    assert out["seg_f1_max"] == pytest.approx(best, abs=1e-12)
    at_best = sklearn_metrics.f1_score(masks.ravel(), maps.ravel() >= out["seg_f1_max_threshold"])
    assert at_best == pytest.approx(best, abs=1e-12)


def test_seg_f1_nothing_flagged_nothing_anomalous_is_nan():
    assert math.isnan(mask_metrics(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), 0.5)["seg_f1"])
    assert mask_metrics(np.ones((1, 4, 4)), np.zeros((1, 4, 4)), 0.5)["seg_f1"] == 0.0


def _typed_blob_data(seed: int):
    """random_blob_data with good images (no region) and two defect types over the others."""
    masks, maps = random_blob_data(seed, n=9, size=20)
    labels = masks.reshape(len(masks), -1).any(1)
    defects = np.where(~labels, "good", np.where(np.arange(len(labels)) % 2 == 0, "crack", "hole"))
    return labels, maps.reshape(len(maps), -1).max(1), defects, masks, maps


@pytest.mark.parametrize("seed", range(3))
def test_per_defect_metrics_match_direct_computations(seed, sklearn_metrics):
    labels, scores, defects, masks, maps = _typed_blob_data(seed)
    thr = float(np.median(scores))
    out = per_defect_metrics(labels, scores, list(defects), thr, masks, maps)
    assert list(out) == sorted(set(defects[labels]))
    for name, row in out.items():
        of_type, good = defects == name, ~labels
        keep = of_type | good
        assert row["count"] == int(of_type.sum())
        assert row["image_auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels[keep], scores[keep]),
                                                   abs=1e-12)
        assert row["recall"] == pytest.approx(sklearn_metrics.recall_score(labels[keep], scores[keep] >= thr),
                                              abs=1e-12)
        assert row["aupro"] == pytest.approx(ref_aupro(masks[keep], maps[keep]), abs=1e-9)


def test_per_defect_metrics_without_threshold_masks_or_good_images():
    out = per_defect_metrics([0, 1, 1], [0.1, 0.5, 0.05], ["good", "dent", "dent"])
    assert out == {"dent": {"count": 2, "image_auroc": 0.5}}
    out = per_defect_metrics([1, 1], [0.5, 0.6], ["a", "b"], image_threshold=0.55)
    assert math.isnan(out["a"]["image_auroc"]) and out["a"]["recall"] == 0.0 and out["b"]["recall"] == 1.0
    assert per_defect_metrics([0, 0], [0.1, 0.2], ["good", "good"]) == {}
    with pytest.raises(DataError, match="defects has 1 entries"):
        per_defect_metrics([0, 1], [0.1, 0.2], ["good"])
    with pytest.raises(DataError, match="both masks and maps"):
        per_defect_metrics([0, 1], [0.1, 0.2], ["good", "x"], masks=np.zeros((2, 4, 4)))
