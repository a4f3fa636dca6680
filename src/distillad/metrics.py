"""Evaluation metrics for anomaly detection and localisation: arrays in, numbers out.

Every function is stateless, accepts numpy arrays or torch tensors, and is exact
(no threshold grid, no binning):

* ``image_auroc`` / ``pixel_auroc``: area under the ROC curve, identical to
  ``sklearn.metrics.roc_auc_score`` including ties (a tied positive/negative pair counts
  1/2, i.e. the Mann-Whitney U statistic). Computed from two ``np.sort`` calls and a
  ``np.searchsorted``, so 5M pixels take well under a second.
* ``f1_max`` / ``f1_max_threshold``: the largest F1 over every distinct score threshold
  (a sample is predicted anomalous when ``score >= threshold``), identical to taking
  ``max(2PR / (P + R))`` over ``sklearn.metrics.precision_recall_curve``.
* ``aupro``: the normalised area under the per-region-overlap (PRO) curve of MVTec AD
  (Bergmann et al., IJCV 2021). Each connected component of the ground truth (8-connectivity,
  i.e. diagonal neighbours touch, as in MVTec's official ``generic_util.compute_pro``
  and anomalib 2.7's ``cv2.connectedComponents``) of each image is one region, and all
  regions of the dataset weigh the same. For a threshold ``t`` the PRO is the mean over
  regions of the fraction of the region's pixels scored ``>= t``, and the FPR is the
  fraction of all normal pixels (mask == 0) of all images scored ``>= t``. Every distinct
  score is a threshold (equal scores enter together), the curve is the polyline through
  all (FPR, PRO) points starting at (0, 0), its value at ``fpr_limit`` is interpolated
  linearly, and the trapezoidal area up to ``fpr_limit`` is divided by ``fpr_limit``.

  This is the exact integral that MVTec's official evaluation script computes. Sampled
  versions differ: anomalib up to 1.x computed one ROC curve per region, averaged the curves
  after resampling them onto a common index grid and optionally binned the scores into
  ``num_thresholds`` levels; other code evaluates a fixed grid (e.g. 200 thresholds between
  min and max score); their error depends on the grid and the data. anomalib 2.7's
  ``AUPRO`` is exact as well (global sort and cumulative sums, 8-connected regions) but
  accumulates in float32; it agreed with this module to 4e-8 in ``benchmarks/bench_aupro.py``.
  Here a single ``np.sort`` of the normal pixels and a small ``argsort`` of the anomalous
  pixels replace a global argsort: between two distinct anomalous scores the curve is
  horizontal, so only the points around each anomalous score need to be evaluated, which
  gives the same polyline (collinear points dropped) and the same area.

* ``decision_metrics`` / ``mask_metrics``: what a user acts on, at the run's calibrated thresholds
  (``distillad.calibration``): decision accuracy, precision, recall (TPR) and FPR of ``score >=
  image_threshold``, and pixel precision, recall and F1 (SegF1) of the masks ``map >= pixel_threshold``.
  ``compute_metrics`` adds the best pixel F1 over every threshold (``seg_f1_max``, ``f1_max_threshold``
  on the pixels) and AUPRO up to FPR 0.05 beside the one up to ``fpr_limit`` (one PRO curve for both).
* ``per_defect_metrics``: image AUROC, recall at the image threshold and AUPRO per defect type, each type
  against all good images.

Images without any anomalous pixel only contribute normal pixels to the FPR. Metrics that
are undefined because a class is missing raise :class:`~distillad.errors.DataError` (a
``ValueError``); :func:`compute_metrics` turns those cases into ``float('nan')``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from distillad.errors import ConfigError, DataError

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "f1_max",
    "f1_max_threshold",
    "aupro",
    "compute_metrics",
    "decision_metrics",
    "mask_metrics",
    "per_defect_metrics",
    "pro_curve",
]

#: the stricter AUPRO reported beside the MVTec one (0.3): the false-alarm range a production line tolerates
STRICT_FPR_LIMIT = 0.05

ArrayLike = Any  # numpy array, torch tensor, or anything np.asarray understands


class _MissingClassError(DataError):
    """A metric is undefined because the data lack normal or anomalous samples."""


# ----------------------------------------------------------------------------- helpers
def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a numpy array, moving torch tensors to CPU (half/bfloat16 become float32)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    """Return scores as a flat finite float array, keeping float32/float64 precision as given."""
    a = _to_numpy(x).reshape(-1)
    if a.dtype == np.float16 or a.dtype.kind in "biu":
        a = a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64)
    elif a.dtype.kind != "f":
        raise DataError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return a


def _binary(x: ArrayLike, name: str) -> np.ndarray:
    """Return a boolean array of the same shape, refusing values other than 0/1 (or bool)."""
    a = _to_numpy(x)
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "biuf":
        raise DataError(f"{name} must be bool or 0/1 numbers, got dtype {a.dtype}")
    pos = a == 1
    if not (pos | (a == 0)).all():
        raise DataError(
            f"{name} must be binary (bool or 0/1); found other values "
            f"(range [{a.min()}, {a.max()}]). Scale 0/255 masks to 0/1 first."
        )
    return pos


def _image_arrays(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate image-level inputs: labels (N,) -> bool, scores (N,) -> float."""
    y = _binary(labels, "labels").reshape(-1)
    s = _scores(scores, "scores")
    if y.size != s.size:
        raise DataError(f"labels has {y.size} entries but scores has {s.size}")
    return y, s


def _pixel_arrays(masks: ArrayLike, maps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate pixel inputs: masks/maps (N,H,W) or (N,1,H,W) -> bool (N,H,W), float (N,H,W)."""
    m = _to_numpy(masks)
    a = _to_numpy(maps)
    for name, arr in (("masks", m), ("maps", a)):
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[1] != 1):
            raise DataError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {tuple(arr.shape)}")
    if m.ndim == 4:
        m = m[:, 0]
    if a.ndim == 4:
        a = a[:, 0]
    if m.shape != a.shape:
        raise DataError(f"masks {tuple(m.shape)} and maps {tuple(a.shape)} do not match in (N, H, W)")
    m = _binary(m, "masks")
    s = _scores(a, "maps").reshape(a.shape)
    return m, s


def _auroc(pos: np.ndarray, neg: np.ndarray, what: str) -> float:
    """Exact ROC AUC = P(pos > neg) + P(pos == neg) / 2 from sorted negatives and searchsorted."""
    n1, n0 = pos.size, neg.size
    if n1 == 0 or n0 == 0:
        present = "anomalous" if n1 else "normal"
        raise _MissingClassError(f"{what} AUROC is undefined: only {present} samples are present (need 0 and 1)")
    neg, pos = np.sort(neg), np.sort(pos)  # sorted queries make searchsorted cache-friendly
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    upto = np.searchsorted(neg, pos, side="right")  # ... plus those tied with it
    twice_u = int(below.sum(dtype=np.int64)) + int(upto.sum(dtype=np.int64))  # 2 * Mann-Whitney U
    return twice_u / (2.0 * n1 * n0)


# ----------------------------------------------------------------------------- image level
def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Image-level ROC AUC of scores (N,) against labels (N,) in {0,1}; equals sklearn's roc_auc_score.

    Raises ``DataError`` (a ``ValueError``) when only one class is present.
    """
    y, s = _image_arrays(labels, scores)
    return _auroc(s[y], s[~y], "image")


def f1_max_threshold(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (anomalous iff score >= threshold).

    labels (N,) in {0,1}, scores (N,); the lowest such threshold is returned on ties (sklearn's argmax).
    """
    y, s = _image_arrays(labels, scores)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if pos.size == 0:
        raise _MissingClassError("F1 is undefined: no anomalous sample (label 1) is present")
    # F1 can only peak at a threshold equal to an anomalous score: lowering the threshold to a
    # score held only by normal samples adds false positives but no true positives.
    thr = np.unique(pos)
    tp = pos.size - np.searchsorted(pos, thr, side="left")
    fp = neg.size - np.searchsorted(neg, thr, side="left")
    f1 = 2.0 * tp / (tp + fp + pos.size)  # == 2PR / (P + R)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thr[best])


def f1_max(labels: ArrayLike, scores: ArrayLike) -> float:
    """Image-level F1-max of scores (N,) against labels (N,) in {0,1}, exact over every threshold."""
    return f1_max_threshold(labels, scores)[0]


# ----------------------------------------------------------------------------- pixel level
def pixel_auroc(masks: ArrayLike, maps: ArrayLike) -> float:
    """Pixel-level ROC AUC over all pixels of masks/maps (N,H,W) or (N,1,H,W); equals sklearn's.

    Raises ``DataError`` (a ``ValueError``) when the masks hold only one class.
    """
    m, s = _pixel_arrays(masks, maps)
    return _auroc(s[m], s[~m], "pixel")


def _components(m: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 8-connected regions of each mask (N,H,W) with ids unique across images (0 = background)."""
    comp = np.zeros(m.shape, dtype=np.int32)
    offset = 0
    for i in np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1)):
        n, lab = cv2.connectedComponents(m[i].astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        lab[lab > 0] += offset
        comp[i] = lab
        offset += n - 1
    return comp, offset


def _pro_curve(m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All vertices (FPR, PRO) of the exact PRO curve, FPR non-decreasing, from (0,0) to (1,1)."""
    comp, n_regions = _components(m)
    if n_regions == 0:
        raise _MissingClassError("AUPRO is undefined: the masks contain no anomalous region")
    neg = np.sort(s[~m])
    if neg.size == 0:
        raise _MissingClassError("AUPRO is undefined: the masks contain no normal pixel to measure the FPR on")
    ids = comp[m]
    a = s[m]
    sizes = np.bincount(ids, minlength=n_regions + 1)
    sizes[0] = 1  # background: never indexed, avoids 1/0
    inv_size = 1.0 / sizes
    order = np.argsort(a)[::-1]  # anomalous pixels by decreasing score
    a = a[order]
    pro = np.cumsum(inv_size[ids[order]]) / n_regions
    last = np.flatnonzero(np.append(a[1:] != a[:-1], True))  # last pixel of each group of equal scores
    u, pro = a[last], np.minimum(pro[last], 1.0)
    n0 = neg.size
    u_up = u[::-1]  # ascending queries keep searchsorted cache-friendly
    fpr_ge = (n0 - np.searchsorted(neg, u_up, side="left")[::-1]) / n0  # normals >= u: vertex at threshold u
    fpr_gt = (n0 - np.searchsorted(neg, u_up, side="right")[::-1]) / n0  # normals > u: the vertex just before
    pro_before = np.concatenate(([0.0], pro[:-1]))
    fpr = np.concatenate(([0.0], np.column_stack((fpr_gt, fpr_ge)).ravel(), [1.0]))
    pro = np.concatenate(([0.0], np.column_stack((pro_before, pro)).ravel(), [pro[-1]]))
    return fpr, pro


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under the polyline (x, y), x non-decreasing, cut at x_max with linear interpolation."""
    ins = int(np.searchsorted(x, x_max, side="right"))  # x[:ins] <= x_max
    xs, ys = x[:ins], y[:ins]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if xs[-1] < x_max:  # x_max falls inside the segment (x[ins-1], x[ins])
        x0, x1, y0, y1 = x[ins - 1], x[ins], y[ins - 1], y[ins]
        y_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_max) * (x_max - x0)
    return area


def aupro(masks: ArrayLike, maps: ArrayLike, fpr_limit: float = 0.3) -> float:
    """MVTec AD's normalised area under the PRO curve up to ``fpr_limit``, exact (see module docstring).

    masks/maps (N,H,W) or (N,1,H,W); regions are 8-connected; raises ``DataError`` without any region.
    """
    if not 0.0 < float(fpr_limit) <= 1.0:
        raise ConfigError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    m, s = _pixel_arrays(masks, maps)
    fpr, pro = _pro_curve(m, s)
    return _area_up_to(fpr, pro, float(fpr_limit)) / float(fpr_limit)


def pro_curve(masks: ArrayLike, maps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve whose area ``aupro`` integrates: FPR (K,) non-decreasing and PRO (K,), from (0,0)
    to (1,1), two vertices per distinct anomalous score (thin it before plotting millions of them).

    masks/maps (N,H,W) or (N,1,H,W); raises ``DataError`` without any region or normal pixel.
    """
    return _pro_curve(*_pixel_arrays(masks, maps))


# ----------------------------------------------------------------------------- decisions at a threshold
def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def decision_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Good/defective decisions ``score >= threshold`` against labels (N,) in {0,1}: accuracy, precision,
    recall (= TPR) and FPR. A ratio with nothing to count (no defective image, nothing flagged) is nan."""
    y, s = _image_arrays(labels, scores)
    pred = s >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    return {"threshold_accuracy": _ratio(int((pred == y).sum()), y.size), "threshold_precision": _ratio(tp, tp + fp),
            "threshold_tpr": _ratio(tp, int(y.sum())), "threshold_fpr": _ratio(fp, int((~y).sum()))}


def mask_metrics(masks: ArrayLike, maps: ArrayLike, threshold: float) -> dict[str, float]:
    """Pixel precision, recall and F1 (``seg_f1``, sklearn's ``f1_score`` of the flat pixels) of the masks
    ``map >= threshold`` against ground-truth masks, over all pixels of masks/maps (N,H,W) or (N,1,H,W);
    nan where nothing is flagged or no pixel is anomalous (F1: where neither)."""
    m, a = _pixel_arrays(masks, maps)
    pred = a >= threshold
    tp, flagged, n_pos = int(np.count_nonzero(pred & m)), int(np.count_nonzero(pred)), int(np.count_nonzero(m))
    return {"mask_precision": _ratio(tp, flagged), "mask_recall": _ratio(tp, n_pos),
            "seg_f1": _ratio(2 * tp, flagged + n_pos)}  # 2PR / (P + R) without dividing by zero twice


# ----------------------------------------------------------------------------- all at once
def compute_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    masks: ArrayLike | None = None,
    maps: ArrayLike | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """All metrics in one dict: image_auroc, image_f1_max, and with masks/maps pixel_auroc, aupro (up to
    ``fpr_limit``), aupro_005 (up to FPR 0.05), seg_f1_max (best pixel F1 over every threshold) and
    seg_f1_max_threshold (the map value reaching it).

    labels/scores (N,); masks/maps (N,H,W) or (N,1,H,W). A metric that a missing class makes undefined
    (e.g. no anomalous pixel) is ``nan`` instead of an error.
    """
    if (masks is None) != (maps is None):
        raise DataError("pass both masks and maps for pixel metrics, or neither")
    y, s = _image_arrays(labels, scores)
    out = {
        "image_auroc": _or_nan(image_auroc, y, s),
        "image_f1_max": _or_nan(f1_max, y, s),
    }
    if masks is not None:
        m, a = _pixel_arrays(masks, maps)
        out["pixel_auroc"] = _or_nan(pixel_auroc, m, a)
        out.update(_aupros(m, a, fpr_limit))
        try:
            out["seg_f1_max"], out["seg_f1_max_threshold"] = f1_max_threshold(m.reshape(-1), a.reshape(-1))
        except _MissingClassError:
            out["seg_f1_max"] = out["seg_f1_max_threshold"] = float("nan")
    return out


def _aupros(m: np.ndarray, a: np.ndarray, fpr_limit: float) -> dict[str, float]:
    """``aupro`` up to ``fpr_limit`` and ``aupro_005`` up to 0.05 from one PRO curve (nan without a region)."""
    if not 0.0 < float(fpr_limit) <= 1.0:
        raise ConfigError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    try:
        fpr, pro = _pro_curve(m, a)
    except _MissingClassError:
        return {"aupro": float("nan"), "aupro_005": float("nan")}
    return {"aupro": _area_up_to(fpr, pro, float(fpr_limit)) / float(fpr_limit),
            "aupro_005": _area_up_to(fpr, pro, STRICT_FPR_LIMIT) / STRICT_FPR_LIMIT}


def per_defect_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    defects: Any,
    image_threshold: float | None = None,
    masks: ArrayLike | None = None,
    maps: ArrayLike | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, dict[str, float]]:
    """Results per defect type, each type judged against all good images (label 0), which a mean over the
    whole test set hides: one type the model misses drowns among the others.

    labels/scores (N,), defects (N,) the type names (``Sample.defect``; those of good images are ignored),
    masks/maps (N,H,W) or (N,1,H,W). Returns ``{type: {"count", "image_auroc", "recall", "aupro"}}`` sorted by
    type: ``count`` images of the type, ``image_auroc`` of the type vs the good images, ``recall`` the
    fraction of the type's images with ``score >= image_threshold`` (only with a threshold), ``aupro`` up to
    ``fpr_limit`` over the type's images and the good ones (only with masks/maps). Undefined values
    (no good image, no region) are nan.
    """
    y, s = _image_arrays(labels, scores)
    d = np.asarray([str(v) for v in defects], dtype=object)
    if d.size != y.size:
        raise DataError(f"defects has {d.size} entries but labels has {y.size}")
    pixels = None
    if masks is not None or maps is not None:
        if masks is None or maps is None:
            raise DataError("pass both masks and maps for per-type AUPRO, or neither")
        pixels = _pixel_arrays(masks, maps)
        if pixels[0].shape[0] != y.size:
            raise DataError(f"masks hold {pixels[0].shape[0]} images but labels has {y.size}")
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(d[y])):
        of_type = y & (d == name)
        row = {"count": int(of_type.sum()), "image_auroc": _or_nan(_auroc, s[of_type], s[~y], "image")}
        if image_threshold is not None:
            row["recall"] = float(np.mean(s[of_type] >= image_threshold))
        if pixels is not None:
            keep = of_type | ~y
            row["aupro"] = _or_nan(aupro, pixels[0][keep], pixels[1][keep], fpr_limit)
        out[str(name)] = row
    return out


def _or_nan(fn: Any, *args: Any) -> float:
    """Call a metric, returning nan when it is undefined because a class is missing."""
    try:
        return float(fn(*args))
    except _MissingClassError:
        return float("nan")
