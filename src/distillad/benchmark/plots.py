"""Pictures of a benchmark: a bar chart per metric and measure, and heat-map overlay strips on the
same test images for every model (``visualize.overlay_strip_for_run``, coloured by each run's
validation statistics)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..checkpoint import load_run
from ..data import AnomalyDataset, load_samples
from ..data.resize import run_geometry
from ..errors import DataError
from ..visualize import overlay_strip_for_run, save_png, strip_indices
from .schema import MEASURES, RANKING_METRICS

__all__ = ["plot_results"]

log = logging.getLogger("distillad")


def _bar_chart(path: Path, results: dict[str, Any], key: str, title: str, percent: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["protocol"]["models"]
    groups = [*results["summary"]["categories"].items(), ("overall", results["summary"]["overall"])]
    scale = 100.0 if percent else 1.0
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(groups) * max(1, len(models)) ** 0.5), 3.4))
    x = np.arange(len(groups))
    for j, m in enumerate(models):
        means = [g[m][key]["mean"] for _, g in groups]
        stds = [g[m][key]["std"] for _, g in groups]
        h = [np.nan if v is None else v * scale for v in means]
        err = [0.0 if s is None else s * scale for s in stds]
        bars = ax.bar(x + (j - (len(models) - 1) / 2) * width, np.nan_to_num(h), width, label=m,
                      yerr=err if any(s is not None for s in stds) else None, capsize=3)
        for b, v in zip(bars, h):
            ax.annotate("n/a" if np.isnan(v) else f"{v:.1f}" if percent or v >= 10 else f"{v:.2g}",
                        (b.get_x() + b.get_width() / 2, 0 if np.isnan(v) else v), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [n for n, _ in groups], fontsize=8)
    ax.set_ylabel(title + (" (%)" if percent else ""))
    if percent:
        ax.set_ylim(0, 105)
    n_seeds = len(results["protocol"]["seeds"])
    ax.set_title(f"{title}: mean over {n_seeds} seed(s), error bars ±1 std", fontsize=9)
    ax.legend(fontsize=8, loc="lower right" if percent else "best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def _overlay_strip(run_dir: Path, samples: Sequence[Any], device: torch.device) -> np.ndarray:
    """A trained run's strip on ``samples`` (the model loaded by ``checkpoint.load_run``)."""


    net, spec = load_run(run_dir, device)
    hw, mode = run_geometry(spec)
    ds = AnomalyDataset(samples, image_size=hw, resize=mode)
    items = [ds[i] for i in range(len(ds))]
    maps, scores = net.predict(torch.stack([it["image"] for it in items]).to(device))
    return overlay_strip_for_run(items, maps.float().cpu(), scores.float().cpu().tolist(), spec.get("calibration", {}))


def _label_band(text: str, width: int) -> np.ndarray:
    import cv2
    band = np.full((22, width, 3), 235, np.uint8)
    cv2.putText(band, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def _category_overlays(results: dict[str, Any], out_dir: Path, cat: dict[str, Any], dev: torch.device) -> list[Path]:
    """One strip per model on the category's test images (each model's lowest seed), and the strips stacked."""

    try:
        test = load_samples(cat["path"], "test")
    except DataError as e:
        log.warning("no overlays for %s: %s", cat["name"], e)
        return []
    samples = [test[i] for i in strip_indices(test, 8)]
    seed0 = min(results["protocol"]["seeds"])
    written, strips = [], []
    for m in results["protocol"]["models"]:
        run = next((r for r in results["runs"] if r["category"] == cat["name"] and r["model"] == m
                    and r["seed"] == seed0), None)
        if run is None:
            continue
        strip = _overlay_strip(out_dir / run["run_dir"], samples, dev)
        header = _label_band(f"{m} on {cat['name']} (seed {seed0}); caption: defect, score (0.5 = threshold); "
                             "green: ground truth, white: map >= threshold", strip.shape[1])
        strips.append(np.concatenate([header, strip], 0))
        written.append(out_dir / "plots" / f"overlays_{cat['slug']}_{m}.png")
        save_png(written[-1], strips[-1])
    if len(strips) > 1:
        written.append(out_dir / "plots" / f"overlays_{cat['slug']}.png")
        save_png(written[-1], np.concatenate(strips, 0))
    return written


def plot_results(results: dict[str, Any], out_dir: str | Path, device: str | None = None) -> list[Path]:
    """Bar charts (``out_dir/plots/<metric>.png``) and heat-map overlay strips on the same test images
    for every model (from each model's lowest seed); returns the files written."""
    out_dir = Path(out_dir)
    written = []
    for key, title, percent in [*((k, t, True) for k, t in RANKING_METRICS), *((k, t, False) for k, t, _ in MEASURES)]:
        written.append(out_dir / "plots" / f"{key}.png")
        _bar_chart(written[-1], results, key, title, percent=percent)
    dev = torch.device(device or results["protocol"].get("device", "cpu"))
    for cat in results["protocol"]["categories"]:
        written += _category_overlays(results, out_dir, cat, dev)
    return written
