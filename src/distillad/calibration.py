"""Fitting the thresholds of a model on its run's validation split, and re-fitting a trained run folder.

The threshold math (methods sigma, quantile, gamma, synthetic, fpr, fixed) is ``distillad.thresholds``;
the settings are ``settings.CalibrationSettings``. Here: the model's scores of the validation good
images (``distillad.validation``; test images never choose anything), and ``calibrate_run``, which
rewrites a finished run's thresholds in its run.json (``distillad calibrate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from torch.utils.data import Dataset

from .checkpoint import RUN_FILE, atomic_write_json, load_run, read_run_spec, run_lock
from .data import AnomalyDataset
from .data.resize import crop_to_images, run_geometry
from .engine import infer, resolve_device
from .errors import CheckpointError, ConfigError, DataError
from .feedback import feedback_samples, history_entry, read_good_folder
from .outputs import check_writable
from .precision import prepare_for_inference
from .run_schema import seal
from .thresholds import (
    METHODS,
    CalibrationSettings,
    calibration_warnings,
    describe,
    fit_thresholds,
    normalize_scores,
    stored_settings,
)
from .validation import synthetic_defects, validation_samples

__all__ = ["METHODS", "CalibrationSettings", "score_validation", "fit", "validation_good", "refit", "calibrate_run",
           "calibration_warnings", "describe", "normalize_scores", "stored_settings", "fit_thresholds"]


def score_validation(model: Any, good: Dataset, settings: CalibrationSettings, batch_size: int = 16,
                     device: str = "auto", progress: bool | None = None, textures: Any = None) -> dict[str, Any]:
    """``fit_thresholds``' keywords for ``settings``: the model's scores and maps of the validation good
    images ``good``, and for ``synthetic`` those of their synthetic defects (their masks too)."""
    model = prepare_for_inference(model, resolve_device(device))  # folded once for both infer calls
    res = infer(model, good, batch_size, device, progress)
    # pixel values of the images' own pixels only (``pad`` adds padding that no threshold should see)
    out: dict[str, Any] = {"scores": res["scores"], "maps": crop_to_images(res["maps"], res["masks"], good)[0]}
    if settings.method == "synthetic":
        defective, _ = synthetic_defects(good, textures, settings.synthesis)
        syn = infer(model, defective, batch_size, device, progress)  # type: ignore[arg-type]
        maps, masks = crop_to_images(syn["maps"], syn["masks"], good)  # made from ``good``: the same regions
        out.update(defect_scores=syn["scores"], defect_maps=maps, defect_masks=masks)
    return out


def fit(model: Any, good: Dataset | None, settings: CalibrationSettings, batch_size: int = 16,
        device: str = "auto", progress: bool | None = None, textures: Any = None) -> dict[str, Any]:
    """The ``calibration`` record of ``model`` on validation good images ``good`` (None or empty: only
    ``fixed`` sets thresholds; the other methods record that there was nothing to fit on)."""
    if good is None or len(good) == 0:
        return fit_thresholds(settings, []) if settings.method == "fixed" else {"method": settings.method, "n_val": 0}
    textures = settings.textures if settings.textures is not None else textures
    out = fit_thresholds(settings, **score_validation(model, good, settings, batch_size, device, progress, textures))
    if settings.method == "synthetic" and textures is not None:
        out["textures"] = str(Path(textures).resolve())
    return out


def validation_good(spec: Mapping[str, Any], extra: Sequence[Any] = ()) -> Dataset | None:
    """The run's validation good images as a dataset (None when it has none), with the images a user
    added as good (``extra`` samples, ``distillad.feedback``) after them."""
    val = validation_samples(spec)
    hw, mode = run_geometry(spec)
    return AnomalyDataset([*val, *extra], image_size=hw, resize=mode) if val else None


def refit(model: Any, spec: Mapping[str, Any], settings: CalibrationSettings, run: str | Path, batch_size: int = 16,
          device: str = "auto", progress: bool | None = None) -> dict[str, Any]:
    """A finished run's calibration fitted anew with ``settings`` on its validation good images and the
    images a user added as good (their history is kept in the record; nothing is written)."""
    stored = spec.get("calibration") or {}
    good = validation_good(spec, feedback_samples(stored))
    if good is None and settings.method != "fixed":
        raise DataError(f"{run}: the run has no validation images (val_fraction {spec['data'].get('val_fraction')}); "
                        f"threshold method {settings.method} fits on them: give a number with --method fixed "
                        "--threshold X, or retrain with --val-fraction > 0")
    out = fit(model, good, settings, batch_size, device, progress, spec["data"].get("textures"))
    if stored.get("feedback"):
        out.update(n_feedback=sum(len(e["images"]) for e in stored["feedback"]), feedback=list(stored["feedback"]))
    return out


def calibrate_run(run: str | Path, settings: CalibrationSettings | None, device: str = "auto", batch_size: int = 16,
                  progress: bool | None = None, good: str | Path | None = None,
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Re-fit a trained run's thresholds on its validation split and rewrite its run.json (atomically, a
    new integrity seal, under the run's lock: no training may write the folder meanwhile); returns
    (old, new) calibration. The weights are not touched; ``test`` afterwards reports the new decisions.
    ``good``: a folder of images confirmed good, added to the calibration set first (``distillad.feedback``;
    ``settings`` None: the stored method). Every check comes before any write: bad input changes nothing."""
    if settings is None and good is None:
        raise ConfigError("calibrate: give --method (or --target-fpr) to re-fit, or --good DIR to add good images")
    run = Path(run)
    spec = read_run_spec(run)  # a folder without a valid, sealed run.json is refused before any lock file is made
    if not spec.get("finished"):
        raise CheckpointError(f"{run}: training did not finish; there is nothing to calibrate yet")
    old = dict(spec.get("calibration") or {})
    settings = stored_settings(old) if settings is None else settings
    added = None
    if good is not None:
        if not spec["data"].get("val_fraction") or not old.get("n_val"):
            raise DataError(f"{run}: the run has no validation scores to add good images to (val_fraction "
                            f"{spec['data'].get('val_fraction')}); retrain with --val-fraction > 0")
        added = read_good_folder(good, old)
    check_writable(run, flag="--run")
    with run_lock(run):
        model, spec = load_run(run, resolve_device(device))  # weights and teacher hashes checked
        old_integrity = spec.get("integrity")
        if added is not None:  # the new images join the history, so refit reads them with the earlier ones
            spec = {**spec, "calibration": {**old, "feedback": [*old.get("feedback", []),
                                                                history_entry(good, added, old, {})]}}
        new = refit(model, spec, settings, run, batch_size, device, progress)
        if added is not None:
            new["feedback"][-1] = history_entry(good, added, old, new)
        again = read_run_spec(run)
        if again.get("integrity") != old_integrity:
            raise CheckpointError(f"{run}: run.json changed while calibrating; nothing was written")
        spec["calibration"] = new
        atomic_write_json(run / RUN_FILE, seal(spec))
    return old, new
