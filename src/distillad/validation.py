"""A run's validation split, rebuilt from its run.json, and synthetic defects made from it.

``api.train`` holds out ``data.val_fraction`` of the good training images (``train_val_split`` with
``data.split_seed``); the same call on the same data gives the same images, so ``distillad tune``,
``distillad calibrate`` and int8 export all see exactly the images the run was calibrated on. Test
images are never listed here. Synthetic defects (``SyntheticAnomalyDataset``) are made with a fixed
seed (``SYNTHESIS_SEED``), so every candidate (tune) and every calibration method sees the same ones.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from .data import AnomalyDataset, load_samples, train_val_split
from .data.resize import run_geometry
from .engine import infer
from .errors import ConfigError, DataError
from .metrics import compute_metrics
from .settings import DataSettings
from .synthesis import SyntheticAnomalyDataset
from .synthesis.presets import SYNTHESIS_PRESETS, SYNTHESIS_SEED

__all__ = ["SYNTHESIS_PRESETS", "SYNTHESIS_SEED", "synthesis_settings", "validation_samples", "synthetic_defects",
           "validation_sets", "score_images"]

_DATA = DataSettings()  # what a run.json from before a data setting existed used



def synthesis_settings(synthesis: str | Mapping[str, Any]) -> dict[str, Any]:
    """A preset name or ``SyntheticAnomalyDataset`` keywords → {"preset": name or "custom", **keywords}."""
    if isinstance(synthesis, str):
        if synthesis not in SYNTHESIS_PRESETS:
            raise ConfigError(f"synthesis must be one of {', '.join(SYNTHESIS_PRESETS)}, got {synthesis!r}")
        return {"preset": synthesis, **SYNTHESIS_PRESETS[synthesis]}
    return {"preset": "custom", **synthesis}


def validation_samples(spec: Mapping[str, Any]) -> list[Any]:
    """The good training images that ``api.train`` held out for this run (possibly none)."""
    d = spec["data"]
    _, val = train_val_split(load_samples(d["path"], "train", d.get("category"), d.get("layout")),
                             d.get("val_fraction", _DATA.val_fraction), d.get("split_seed", _DATA.split_seed))
    return val


def synthetic_defects(good: Dataset, textures: Any = None, synthesis: str | Mapping[str, Any] = "draem",
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(defective, triplets) of good images ``good``: their synthetic-defect versions as ``infer`` items
    (label 1, the synthetic mask), and the (image, anomalous, mask) triplets themselves."""
    kw = {k: v for k, v in synthesis_settings(synthesis).items() if k != "preset"}
    syn = SyntheticAnomalyDataset(good, textures=textures, seed=SYNTHESIS_SEED, **kw)
    triplets = [syn[i] for i in range(len(syn))]  # made once: every consumer scores the same defects
    defective = [{"image": t["anomalous"], "mask": t["mask"], "label": 1, "path": t["path"]} for t in triplets]
    return defective, triplets


def validation_sets(spec: Mapping[str, Any], synthesis: str | Mapping[str, Any] = "draem",
                    ) -> tuple[Dataset, list[dict[str, Any]], list[dict[str, Any]]]:
    """(good, defective, triplets) of a run's validation split, from its run.json: the good images that
    api.train held out (same data, fraction and split seed; test images are never listed), their
    synthetic-defect versions (``synthetic_defects``) and the triplets themselves."""
    d = spec["data"]
    val: Sequence[Any] = validation_samples(spec)
    if not val:
        raise DataError(f"{d['path']}: no validation images (val_fraction {d['val_fraction']})")
    hw, mode = run_geometry(spec)
    good = AnomalyDataset(list(val), image_size=hw, resize=mode)
    defective, triplets = synthetic_defects(good, d.get("textures"), synthesis)
    return good, defective, triplets


def score_images(model: Any, datasets: Sequence[Any], batch_size: int = 16, device: str = "cpu") -> dict[str, float]:
    """``metrics.compute_metrics`` of ``model`` over the concatenated ``datasets`` (items with image, label, mask),
    e.g. (good, defective) of ``validation_sets``: what ``tune``, ``--epochs auto`` and the budget curves score."""
    res = [infer(model, ds, batch_size, device, progress=False) for ds in datasets]
    cat = lambda k: torch.cat([r[k] for r in res])  # noqa: E731
    return compute_metrics(cat("labels").numpy(), cat("scores").numpy(), cat("masks")[:, 0].numpy() > 0.5,
                           cat("maps")[:, 0].numpy())
