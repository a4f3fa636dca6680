"""Threshold math: the good/defective and defect-mask thresholds from validation numbers (no model, no files).

Every method sets two thresholds: the image threshold (an image is *defective* when its score is
``>= image_threshold``) and the pixel threshold (a pixel belongs to the defect mask when its map value
is ``>= pixel_threshold``). Both come from the run's validation split of good training images
(``distillad.validation``); test images never choose anything.

- ``sigma``: mean + k·std (sample std, ``k_sigma``, default 3) of the validation scores; pixels alike.
- ``quantile``: ``numpy.quantile(values, q)`` (its default "linear" rule: position (n − 1)·q of the
  sorted values, interpolated), default q = 0.995, of the validation scores; pixels alike.
- ``gamma``: a Gamma distribution fitted by maximum likelihood (``scipy.stats.gamma.fit``) to the
  validation scores, threshold at its q-quantile (upper tail probability 1 − q, the DSKD-fusion
  paper's automatic threshold); pixels alike. **loc is fixed at 0** (two parameters, shape and scale,
  are fitted): the scores and maps are distances (1 − cos, L2), whose natural origin is 0, and with
  a free loc the three-parameter likelihood is unbounded as loc → min(values) when the shape is < 1,
  so its fit on the ~20 values of a validation split is unstable. It needs positive values.
- ``synthetic``: the F1-best threshold (``metrics.f1_max_threshold``) separating the validation good
  images from synthetic defects made from those same images (``validation.synthetic_defects``, fixed
  seed; textures: ``textures``, else the run's ``data.textures``, else procedural noise); the pixel
  threshold is the F1-best over pixels of the synthetic masks (good images' pixels count as normal).
- ``fpr``: the threshold whose expected false-alarm rate on good images is ``target_fpr`` F (default 0.05),
  from the n validation scores (``fpr_threshold``): the split-conformal order statistic, the
  k = ⌈(n+1)(1−F)⌉-th smallest score, whose expected FPR is (n+1−k)/(n+1) ≤ F for exchangeable good
  images; when k > n (n < 1/F − 1, e.g. 5 images at F = 0.05) no order statistic reaches F, and the
  threshold is the normal prediction bound mean + t(1−F, n−1)·sd·√(1 + 1/n), never below the largest
  score (an extrapolation: a warning says so). The pixel threshold is the same rule on each validation
  image's largest map value: a good image shows any defect pixel with rate about F.
- ``fixed``: the user's numbers (``threshold``, optionally ``pixel_threshold``; without one the pixel
  threshold is ``sigma``'s, recorded as ``pixel_method``).

The run's ``calibration`` (run.json) records the method, its parameters, the thresholds and the
validation statistics: ``normalize_scores`` maps the validation mean to 0 and the image threshold to
0.5 for every method. The settings are ``settings.CalibrationSettings``; fitting them on a model and a run
folder is ``distillad.calibration``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from .errors import ConfigError, DataError, TrainingError
from .metrics import f1_max_threshold
from .settings import DEFAULT_TARGET_FPR, THRESHOLD_METHODS, CalibrationSettings
from .synthesis.presets import SYNTHESIS_SEED

__all__ = ["METHODS", "DEFAULT_METHOD", "DEFAULT_K_SIGMA", "DEFAULT_QUANTILE", "DEFAULT_TARGET_FPR", "MIN_VALIDATION",
           "CalibrationSettings", "fpr_threshold", "fit_thresholds", "stored_settings", "normalize_scores",
           "calibration_warnings", "describe"]

METHODS = THRESHOLD_METHODS
_DEFAULTS = CalibrationSettings()
DEFAULT_METHOD, DEFAULT_K_SIGMA, DEFAULT_QUANTILE = _DEFAULTS.method, _DEFAULTS.k_sigma, _DEFAULTS.quantile
MIN_VALIDATION = 20  # fewer validation images than this: thresholds are rough (a warning says so)


# ----------------------------------------------------------------------------- one threshold
def _gamma(values: np.ndarray, q: float, what: str) -> tuple[float, dict[str, float]]:
    """q-quantile of a Gamma(shape, scale) fitted with loc fixed at 0 (see the module docstring)."""
    from scipy import stats  # heavy: only when a Gamma is fitted
    if values.size < 2 or values.min() == values.max():
        raise DataError(f"gamma calibration needs at least two different validation {what}, got "
                        f"{np.unique(values).size} distinct value(s); use --threshold-method quantile or sigma")
    if values.min() <= 0:
        raise ConfigError(f"gamma calibration needs positive {what} (a Gamma lives on (0, ∞)); "
                          f"{int((values <= 0).sum())} validation {what} are <= 0: use --threshold-method quantile")
    shape, _, scale = stats.gamma.fit(values, floc=0)
    return float(stats.gamma.ppf(q, shape, loc=0, scale=scale)), {"gamma_shape": float(shape),
                                                                   "gamma_scale": float(scale)}


def fpr_threshold(values: np.ndarray, target_fpr: float) -> tuple[float, dict[str, Any]]:
    """(threshold, record) at which a new good image's score is ``>=`` it with probability about
    ``target_fpr`` F, from n good ``values``: the ⌈(n+1)(1−F)⌉-th smallest (exact for exchangeable
    scores), else the normal prediction bound, at least the largest value (see the module docstring)."""
    n = values.size
    k = math.ceil((n + 1) * (1 - target_fpr) - 1e-9)  # the tolerance keeps (n+1)(1−F) = 19.0 from rounding up
    if k <= n:
        return float(np.sort(values)[k - 1]), {"fpr_rank": k, "expected_fpr": (n + 1 - k) / (n + 1)}
    from scipy import stats  # heavy: only for the normal bound
    if n < 2:
        raise DataError(f"fpr calibration needs at least 2 validation images, got {n}")
    bound = float(values.mean() + stats.t.ppf(1 - target_fpr, n - 1) * values.std(ddof=1) * math.sqrt(1 + 1 / n))
    return max(bound, float(values.max())), {"fpr_rank": 0, "expected_fpr": target_fpr,
                                             "fpr_min_images": math.ceil(1 / target_fpr - 1)}


def _one(settings: CalibrationSettings, method: str, values: np.ndarray, what: str,
         pos: np.ndarray | None = None, neg_extra: np.ndarray | None = None) -> tuple[float, dict[str, Any]]:
    """(threshold, extra record) of one method over good ``values`` (float64, flat); ``pos``: the
    synthetic defects' values (synthetic only), ``neg_extra``: more normal values (their clean pixels)."""
    if method == "sigma":
        sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
        return float(values.mean()) + settings.k_sigma * sd, {}
    if method == "quantile":
        return float(np.quantile(values, settings.quantile)), {}
    if method == "gamma":
        return _gamma(values, settings.quantile, what)
    if method == "fpr":
        return fpr_threshold(values, settings.fpr)
    if method == "synthetic":
        if pos is None or pos.size == 0:
            raise DataError(f"synthetic calibration: no synthetic defect {what} to separate from the good ones")
        neg = values if neg_extra is None else np.concatenate([values, neg_extra])
        labels = np.concatenate([np.zeros(neg.size, bool), np.ones(pos.size, bool)])
        f1, thr = f1_max_threshold(labels, np.concatenate([neg, pos]))
        return thr, {"synthetic_f1": f1}
    raise ConfigError(f"unknown threshold method {method!r}")


def _flat(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    a = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    return a.reshape(-1)


def fit_thresholds(settings: CalibrationSettings, scores: Any, maps: Any = None, defect_scores: Any = None,
                   defect_maps: Any = None, defect_masks: Any = None) -> dict[str, Any]:
    """The ``calibration`` record from validation numbers: good ``scores`` (N,) and ``maps`` (N,1,H,W) or
    None; for ``synthetic`` also the synthetic defects' ``defect_scores`` (M,), ``defect_maps`` and
    ``defect_masks`` (M,1,H,W). Holds method, parameters, thresholds and the validation statistics."""
    s, p = _flat(scores), _flat(maps)
    s = np.zeros(0) if s is None else s
    m = settings.method
    if m != "fixed" and s.size == 0:
        raise DataError(f"threshold method {m} fits on validation images, and there are none")
    if not np.isfinite(s).all():
        raise TrainingError(f"{int((~np.isfinite(s)).sum())} of {s.size} validation scores are not finite: "
                            "the model outputs NaN/inf (diverged training?); no threshold can be set")
    out: dict[str, Any] = {"method": m, "n_val": int(s.size)}
    if s.size:
        out.update(score_mean=float(s.mean()), score_std=float(s.std(ddof=1)) if s.size > 1 else 0.0,
                   score_max=float(s.max()))
    if p is not None and s.size:
        out.update(pixel_mean=float(p.mean()), pixel_std=float(p.std(ddof=1)) if p.size > 1 else 0.0)
    if m in ("sigma", "fixed"):
        out["k_sigma"] = settings.k_sigma
    if m in ("quantile", "gamma"):
        out["quantile"] = settings.quantile
    if m == "fpr":
        out["target_fpr"] = settings.fpr
        if p is not None and s.size:  # per image: its largest map value (see the module docstring)
            p = p.reshape(s.size, -1).max(axis=1)
    pos_s = pos_p = neg_p = None
    if m == "synthetic":
        pos_s = _flat(defect_scores)
        out.update(synthesis=settings.synthesis, synthesis_seed=SYNTHESIS_SEED,
                   n_synthetic=0 if pos_s is None else int(pos_s.size))
        if defect_maps is not None and defect_masks is not None:
            dm, mk = _flat(defect_maps), _flat(defect_masks) > 0.5  # type: ignore[operator]
            pos_p, neg_p = dm[mk], dm[~mk]  # type: ignore[index]
    if m == "fixed":
        out["image_threshold"] = float(settings.threshold)  # type: ignore[arg-type]
    else:
        thr, extra = _one(settings, m, s, "scores", pos_s)
        out.update(image_threshold=thr, **extra)
    if m == "fixed" and settings.pixel_threshold is not None:
        out["pixel_threshold"] = float(settings.pixel_threshold)
    elif p is not None and s.size:
        pm = "sigma" if m == "fixed" else m
        if pm != m:
            out["pixel_method"] = pm
        thr, extra = _one(settings, pm, p, "pixel values", pos_p, neg_p)
        out.update(pixel_threshold=thr, **{f"pixel_{k}": v for k, v in extra.items()})
    bad = [k for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ConfigError(f"threshold method {m} makes the {bad[0].replace('_', ' ')} {out[bad[0]]}: not a usable "
                          "threshold" + ("; choose a smaller k_sigma" if m == "sigma" else ""))
    return out


def stored_settings(calib: Mapping[str, Any]) -> CalibrationSettings:
    """The settings a stored calibration was fitted with (``calibrate --good`` without ``--method``)."""
    m = calib.get("method", "sigma")
    if m == "fixed":
        raise ConfigError("the run's thresholds are fixed numbers: good images change nothing there; give --method "
                          "(or --target-fpr) to fit thresholds on them")
    return CalibrationSettings(m, calib.get("k_sigma", DEFAULT_K_SIGMA), calib.get("quantile", DEFAULT_QUANTILE),
                               synthesis=calib.get("synthesis", "draem"), target_fpr=calib.get("target_fpr"),
                               textures=calib.get("textures") if m == "synthetic" else None)



# ----------------------------------------------------------------------------- using it
def normalize_scores(scores: torch.Tensor, calib: Mapping[str, Any]) -> torch.Tensor:
    """Scores mapped so that the validation mean is 0 and the image threshold 0.5 (DSKD eq. 1's
    "normalise, threshold at 0.5"), for every method; not clipped, so ranking is unchanged. A fixed
    threshold without validation images has no mean: 0 is the reference then."""
    mean = float(calib.get("score_mean", 0.0))
    span = max(float(calib["image_threshold"]) - mean, 1e-12)
    return 0.5 * (scores - mean) / span


def calibration_warnings(calib: Mapping[str, Any]) -> list[str]:
    """One-line warnings about a calibration a user should know of (the CLI prints them on stderr)."""
    n, out = int(calib.get("n_val", 0)), []
    if "image_threshold" not in calib:
        out.append("without validation images there is no good/defective decision; keep some good images out of "
                   "training (--val-fraction, more images)")
    elif 0 < n < MIN_VALIDATION and (calib.get("method") != "fixed" or calib.get("pixel_method")):
        out.append(f"the thresholds were fitted on only {n} validation image{'s' if n > 1 else ''} (fewer than "
                   f"{MIN_VALIDATION}): decisions may be unreliable; hold out more good images (--val-fraction)")
    if calib.get("method") == "fpr" and calib.get("fpr_rank") == 0 and "image_threshold" in calib:
        out.append(f"{n} validation images cannot show a false-alarm rate of {calib['target_fpr']:g} (that needs "
                   f"{calib['fpr_min_images']}): the threshold extrapolates a normal fit beyond the largest score")
    if "score_mean" in calib and calib.get("image_threshold", math.inf) <= calib["score_mean"]:
        out.append(f"the image threshold {calib['image_threshold']:.4g} is not above the validation mean "
                   f"{calib['score_mean']:.4g}: most good images will be called defective")
    return out


def describe(calib: Mapping[str, Any]) -> str:
    """One line: method, parameters and thresholds of a calibration."""
    method = calib.get("method", "sigma")
    params = [f"{k}={calib[k]:g}" if isinstance(calib[k], float) else f"{k}={calib[k]}"
              for k in ("k_sigma", "quantile", "target_fpr", "synthesis") if k in calib and method != "fixed"]
    if calib.get("pixel_method"):
        params.append(f"pixel: {calib['pixel_method']} k_sigma={calib.get('k_sigma', DEFAULT_K_SIGMA):g}")
    thr = lambda k: f"{calib[k]:.6g}" if k in calib else "none"  # noqa: E731
    return (f"{method}{' (' + ', '.join(params) + ')' if params else ''}: image threshold {thr('image_threshold')}, "
            f"pixel threshold {thr('pixel_threshold')}, {calib.get('n_val', 0)} validation images")
