"""Pictures of results: heat-map overlays, overlay strips, score histograms and ROC plots."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from .calibration import normalize_scores
from .checkpoint import atomic_write_bytes

__all__ = ["overlay", "save_png", "png_bytes", "overlay_strip", "plot_scores", "calibrated_colour_scale", "strip_indices",
           "overlay_strip_for_run"]


def _to_uint8_image(image: np.ndarray) -> np.ndarray:
    """(3,H,W) or (H,W,3), float in [0,1] or uint8 → (H,W,3) uint8."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5,
            threshold: float | None = None, gt_mask: np.ndarray | None = None) -> np.ndarray:
    """Jet heat map of ``amap`` (H,W) scaled to [vmin, vmax] blended over the image → (H,W,3) uint8.

    The predicted defect region (map ≥ threshold) is outlined in white, the ground truth in green.
    """
    img = _to_uint8_image(image)
    a = np.asarray(amap, dtype=np.float32).squeeze()
    if a.shape != img.shape[:2]:
        a = cv2.resize(a, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    norm = np.clip((a - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    heat = cv2.cvtColor(cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(img, 1 - alpha, heat, alpha, 0)  # uint8 in, rounded uint8 out, vectorised
    if gt_mask is not None and np.any(gt_mask):
        cs, _ = cv2.findContours(np.asarray(gt_mask).squeeze().astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cs, -1, (0, 255, 0), 1)
    if threshold is not None:
        pred = (a >= threshold).astype(np.uint8)
        cs, _ = cv2.findContours(pred, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cs, -1, (255, 255, 255), 1)
    return out


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 RGB (H,W,3) or grey (H,W) picture as PNG, atomically (``checkpoint.atomic_write_bytes``)."""
    try:
        data = png_bytes(image)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    atomic_write_bytes(path, data)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG file content of a uint8 RGB (H,W,3) or grey (H,W) picture (an HTTP answer, say)."""
    a = np.ascontiguousarray(np.asarray(image))
    ok, buf = cv2.imencode(".png", a[..., ::-1] if a.ndim == 3 else a)
    if not ok:
        raise ValueError(f"cannot encode a {a.shape} {a.dtype} array as PNG")
    return buf.tobytes()


def overlay_strip(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], vmin: float, vmax: float,
                  titles: Sequence[str] | None = None, threshold: float | None = None,
                  gt_masks: Sequence[np.ndarray | None] | None = None, tile: int = 160) -> np.ndarray:
    """Two rows (images, overlays) of ``tile``-pixel tiles, with an optional caption per column."""
    cols = []
    for i, (im, m) in enumerate(zip(images, maps)):
        gt = gt_masks[i] if gt_masks is not None else None
        ov = overlay(im, m, vmin, vmax, threshold=threshold, gt_mask=gt)
        top = cv2.resize(_to_uint8_image(im), (tile, tile), interpolation=cv2.INTER_AREA)
        bot = cv2.resize(ov, (tile, tile), interpolation=cv2.INTER_AREA)
        col = np.concatenate([top, bot], 0)
        if titles is not None:
            cap = np.full((18, tile, 3), 255, np.uint8)
            cv2.putText(cap, str(titles[i])[:24], (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
            col = np.concatenate([cap, col], 0)
        cols.append(col)
        cols.append(np.full((col.shape[0], 2, 3), 255, np.uint8))
    return np.concatenate(cols[:-1], 1) if cols else np.zeros((tile, tile, 3), np.uint8)


def calibrated_colour_scale(calibration: Mapping[str, Any]) -> tuple[float, float]:
    """(vmin, vmax) of a run's heat maps, fixed by its validation good images (run.json "calibration"):
    vmin = pixel_mean (blue), vmax = pixel_threshold + (pixel_threshold − pixel_mean) (red), so the
    pixel threshold (mean + kσ of validation pixels) is the middle of the colour bar (green) for every
    image. Without pixel statistics (a run calibrated without validation images) the fixed range
    [0, 1] of the map's own units. Test images never choose the scale."""
    if "pixel_mean" in calibration and "pixel_threshold" in calibration:
        vmin = float(calibration["pixel_mean"])
        return vmin, 2 * float(calibration["pixel_threshold"]) - vmin
    return 0.0, 1.0


def strip_indices(samples: Sequence[Any], n: int = 8) -> list[int]:
    """Indices of the test images of an overlay strip, the same for every method on a dataset:
    ``max(1, n // 4)`` good images and the rest defective ones shared round-robin over the defect
    types, evenly spaced within each list sorted by path. Chosen from ``label``, ``defect`` and
    ``image`` (path) of the samples only, never from a model's output."""
    if n <= 0:
        return []

    def spread(idx: list[int], k: int) -> list[int]:
        idx = sorted(idx, key=lambda i: str(samples[i].image))
        if k >= len(idx):
            return idx
        return [idx[int(j)] for j in np.linspace(0, len(idx) - 1, k).round().astype(int)]

    n_good = max(1, n // 4)
    good = spread([i for i, s in enumerate(samples) if s.label == 0], n_good)
    by_type: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.label == 1:
            by_type.setdefault(s.defect, []).append(i)
    types = sorted(by_type)
    counts = dict.fromkeys(types, 0)
    left = n - n_good
    while left > 0 and any(counts[t] < len(by_type[t]) for t in types):
        for t in types:
            if left > 0 and counts[t] < len(by_type[t]):
                counts[t] += 1
                left -= 1
    return good + [i for t in types for i in spread(by_type[t], counts[t])]


def overlay_strip_for_run(items: Sequence[Mapping[str, Any]], maps: Sequence[Any], scores: Sequence[float],
                          calibration: Mapping[str, Any], tile: int = 160) -> np.ndarray:
    """The overlay strip of a run (``api.test``'s overlays.png, the benchmark's strips): dataset items
    (``image`` (3,H,W), ``mask`` (1,H,W), ``defect``) with their anomaly maps and image scores.

    Colours: ``calibrated_colour_scale(calibration)``; white outline: map ≥ pixel threshold, green:
    ground truth. Captions: defect type and the score normalised by the validation statistics
    (0.5 = image threshold), or the raw score when the calibration cannot normalise (fewer than two
    validation images)."""

    vmin, vmax = calibrated_colour_scale(calibration)
    s = np.asarray([float(v) for v in scores], dtype=np.float64)
    if calibration.get("image_threshold", 0.0) - calibration.get("score_mean", 0.0) > 1e-9:
        import torch
        norm = normalize_scores(torch.from_numpy(s), dict(calibration)).numpy()
        titles = [f"{it['defect']} {v:.2f}" for it, v in zip(items, norm)]
    else:
        titles = [f"{it['defect']} raw {v:.3g}" for it, v in zip(items, s)]
    return overlay_strip([np.asarray(it["image"]) for it in items], [np.asarray(m).squeeze() for m in maps],
                         vmin, vmax, titles=titles, threshold=calibration.get("pixel_threshold"),
                         gt_masks=[np.asarray(it["mask"]).squeeze() for it in items], tile=tile)


def plot_scores(path: str | Path, labels: np.ndarray, scores: np.ndarray, threshold: float | None = None,
                title: str = "") -> None:
    """Histogram of image scores (good vs defective) with the threshold, and the ROC curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    bins = np.linspace(scores.min(), scores.max(), 30)
    ax1.hist(scores[~labels], bins=bins, alpha=0.6, label=f"good ({(~labels).sum()})", color="tab:green")
    ax1.hist(scores[labels], bins=bins, alpha=0.6, label=f"defective ({labels.sum()})", color="tab:red")
    if threshold is not None:
        ax1.axvline(threshold, color="k", ls="--", label="threshold (val)")
    ax1.set_xlabel("image score")
    ax1.legend(fontsize=8)
    order = np.argsort(-scores, kind="stable")
    tp = np.concatenate([[0], np.cumsum(labels[order])]) / max(labels.sum(), 1)
    fp = np.concatenate([[0], np.cumsum(~labels[order])]) / max((~labels).sum(), 1)
    ax2.plot(fp, tp, color="tab:blue")
    ax2.plot([0, 1], [0, 1], color="0.7", ls=":")
    ax2.set_xlabel("false positive rate")
    ax2.set_ylabel("true positive rate")
    ax2.set_title("image ROC")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
