"""The library's jobs as functions (the CLI, the demo and the benchmark call these):
``train`` a run folder, ``test`` it on the dataset's test split, ``predict`` new images.

Protocol: the last epoch's model is used; thresholds come from the validation split of
good training images; test images are only touched by ``test`` for the final metrics.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import json
import logging
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import distributed
from .calibration import CalibrationSettings, normalize_scores, refit
from .calibration import fit as fit_calibration
from .checkpoint import (
    RUN_FILES,
    TEST_OUTPUTS,
    atomic_write_bytes,
    atomic_write_json,
    busy_error,
    finish_run,
    load_run,
    lock_is_held,
    read_run_spec,
    remove_temporaries,
    run_lock,
    write_run_spec,
)
from .data import AnomalyDataset, load_samples, train_val_split
from .data.resize import crop_to_images, derive_input_size, run_geometry
from .early_stopping import DEFAULT_MIN_DELTA, DEFAULT_PATIENCE, EarlyStopping
from .engine import TrainConfig, fit, infer, resolve_device, seed_everything
from .errors import CheckpointError, ConfigError, DataError
from .metrics import compute_metrics, decision_metrics, mask_metrics, per_defect_metrics, pro_curve
from .outputs import check_writable, is_within
from .preamble import describe_run, image_sizes, time_one_batch
from .precision import prepare_for_inference
from .predict import predict_images
from .registry import create_model
from .report import REPORT_FILE, write_test_report
from .settings import AUTO, added_train_defaults, api_parameters, run_record, sections, split_kwargs
from .tiling import TiledModel, check_tile, tiled_size
from .tracking import make_logger
from .validation import synthetic_defects
from .visualize import overlay_strip, overlay_strip_for_run, plot_scores, save_png, strip_indices

__all__ = ["train", "test", "predict", "build_train_sets"]


def build_train_sets(model: Any, samples: Sequence[Any], image_size: int | tuple[int, int], seed: int,
                     textures: Any = None, foreground: str | None = None,
                     resize: str = "squash") -> dict[str, torch.utils.data.Dataset]:
    """The data the model's phases train on: ``normal`` good images, and ``synthetic`` (normal, anomalous,
    mask) triplets made from them when a phase asks for it. ``textures``/``foreground``/``resize``: data
    settings; ``image_size``: the model input, an int or (H, W)."""
    normal = AnomalyDataset(samples, image_size=image_size, resize=resize)
    sets: dict[str, torch.utils.data.Dataset] = {"normal": normal}
    if model.needs_synthesis:
        sets["synthetic"] = model.synthetic_train_set(normal, textures=textures, foreground=foreground, seed=seed)
    return sets


def train(model: str, data: str | Path, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, on_step_end: Callable[[Any, Any], None] | None = None,
          announce: Callable[[Any], None] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Train ``model`` on the good training images at ``data`` into run folder ``out``; returns run.json.

    ``kwargs``: the run settings (``distillad.settings``: category, layout, val_fraction, split_seed,
    textures, foreground, resize; epochs, batch_size, image_size, seed, device, num_workers, precision,
    logger; threshold_method, k_sigma, quantile, threshold, pixel_threshold, target_fpr; the signature
    lists them with their defaults) and the method's own keywords. ``textures`` (a folder, e.g. DTD) and
    ``foreground`` feed the synthesis of methods that train on synthetic defects; with ``resize`` and the
    model input it gives they are stored in run.json's ``data``. The thresholds are fitted on the validation
    split after training (``distillad.calibration``; ``distillad calibrate`` re-fits them later).
    ``epochs="auto"``: up to the method's paper epochs, stopping once validation (held-out good images vs.
    synthetic defects made from them) stops improving, with the best epoch's weights (``early_stopping``).
    Once the run folder is ours and before training, what was found and an estimate of the time go to
    ``announce(preamble)`` (a ``distillad.preamble.Preamble``: ``lines``, ``warnings``; ``str()`` is the
    block, so ``announce=print`` works); without it, the lines are logged (logger ``distillad``, INFO; the time
    is measured only when someone reads it) and its warnings are ``UserWarning``s.
    ``on_step_end(step, model)`` runs after every training step (a phase's pass over its data).
    ``resume`` continues the unfinished run in ``out``; ``overwrite`` first removes the run files found
    there (and nothing else). One process at a time trains into a folder (a lock).
    Under torchrun the ranks train data-parallel (``distillad.distributed``; ``batch_size`` is the global
    batch); rank 0 writes ``out``, the other ranks return run.json as it was when training started."""
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: continue the run, or start over")
    flat, model_kwargs = split_kwargs({"data": str(data), **kwargs})  # every setting checked, defaults filled in
    d, t, calibration = sections(flat)  # calibration: its rules between settings (one message per flag)
    _refuse_inside(out, data, "the data folder")
    if d.textures is not None:
        _refuse_inside(out, d.textures, "the texture folder")
        if not Path(d.textures).is_dir():
            raise DataError(f"{d.textures}: texture folder not found")
    distributed.init(resolve_device(t.device))  # a bad device fails before anything is written; joins torchrun's group
    seed_everything(t.seed)
    net = create_model(model, **model_kwargs)
    auto = t.epochs == AUTO
    if auto and not any(ph.schedule == "joint" for ph in net.phases()):
        auto = False  # a fit without epochs (PatchCore): nothing to stop
    cfg = replace(t, epochs=None if t.epochs == AUTO else t.epochs).resolved(net)
    cfg.check_precision(resolve_device(t.device))  # before anything is written
    distributed.check_batch_sizes({ph.name: ph.batch_size or cfg.batch_size for ph in net.phases()})  # before writing
    record = run_record(d, cfg, calibration)
    data_spec, train_cfg = record["data"], record["train"]
    train_cfg["early_stopping"] = {"patience": DEFAULT_PATIENCE, "min_delta": DEFAULT_MIN_DELTA} if auto else None
    samples = load_samples(data, "train", d.category, d.layout)
    train_s, val_s = train_val_split(samples, d.val_fraction, d.split_seed)
    if not train_s:
        raise DataError(f"{data}: no training images left after the validation split")
    sizes = image_sizes(train_s)
    input_size = derive_input_size(d.resize, cfg.image_size, sizes)  # type: ignore[arg-type]
    data_spec.update(input_size=list(input_size))
    # every image is decoded before the run folder is touched: a corrupt file fails with nothing written
    sets = build_train_sets(net, train_s, input_size, t.seed, d.textures, d.foreground, d.resize)
    val_set = AnomalyDataset(val_s, image_size=input_size, resize=d.resize) if val_s else None
    main = distributed.is_main()
    # before the lock file is made, so a refusal leaves no trace; every rank refuses alike (rank 0 probes the lock)
    _refuse_foreign_files(out, resume, overwrite, locked_by_us=not main)
    distributed.barrier()
    with run_lock(out) if main else contextlib.nullcontext():  # under torchrun: rank 0 owns the folder
        spec = _open_run_folder(out, net, model, train_cfg, data_spec, resume, overwrite) if main else None
        if spec is not None and not spec.get("finished"):  # the folder is ours and training starts: say what
            _announce(announce, net, data, d.category, d.layout, len(train_s), len(val_s), sizes, input_size,
                      d.resize, cfg, sets)
        distributed.barrier()  # rank 0 has checked or written run.json
        if spec is None:
            spec = read_run_spec(out)
        if spec.get("finished"):
            return spec
        stopper = _stopper(spec, out, val_set, cfg, t.device)  # --epochs auto (early_stopping); None otherwise
        return _train_in(out, net, cfg, spec["run_id"], sets, val_set, t.logger, t.device, resume, progress,
                         on_step_end, calibration, data_spec["textures"], stopper)


_FIXED = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("model", "data", "out")]
train.__signature__ = inspect.signature(train).replace(parameters=[  # type: ignore[attr-defined]
    *_FIXED, *[p for p in inspect.signature(train).parameters.values() if p.kind == p.KEYWORD_ONLY],
    *api_parameters(), inspect.Parameter("model_kwargs", inspect.Parameter.VAR_KEYWORD)])


def _announce(announce: Callable[[Any], None] | None, net: Any, data: Any, category: str | None, layout: str | None,
              n_train: int, n_val: int, sizes: list[tuple[int, int]], input_size: tuple[int, int], resize: str,
              cfg: TrainConfig, sets: dict[str, Any]) -> None:
    """The preamble (``distillad.preamble``): to ``announce``, else logged, its warnings as ``UserWarning``."""
    sizes_per_phase = {ph.name: ph.batch_size or cfg.batch_size for ph in net.phases()}
    dev = distributed.local_device(resolve_device(cfg.device))
    log = logging.getLogger("distillad")
    # one process measures (under torchrun the ranks would time each other's contention), and only when
    # someone reads the estimate
    wanted = announce is not None or log.isEnabledFor(logging.INFO)
    per_batch = time_one_batch(net, sets, sizes_per_phase, dev) if wanted and distributed.world_size() == 1 else None
    pre = describe_run(net, data, category, layout, n_train, n_val, sizes, input_size, resize, cfg.epochs,  # type: ignore[arg-type]
                       sizes_per_phase, {k: len(v) for k, v in sets.items()}, per_batch, str(dev))
    if announce is not None:
        announce(pre)
        return
    for line in pre.lines:
        log.info(line)
    for w in pre.warnings:
        warnings.warn(w, UserWarning, stacklevel=3)


def _refuse_inside(out: Path, folder: str | Path, what: str) -> None:
    """No run is written into (or below) one of its inputs: its files would be read back as data."""
    if is_within(out, folder):
        raise ConfigError(f"--out {out}: inside {what} {folder}; write the run somewhere else "
                          "(its files would mix with the input images)")


def _refuse_foreign_files(out: Path, resume: bool, overwrite: bool, locked_by_us: bool = False) -> None:
    """Another run's files in ``out`` without ``--resume``/``--overwrite``: refused, naming them (checked again
    under the lock by ``_open_run_folder``)."""
    if overwrite or not out.is_dir():
        return
    if (out / "run.json").exists():
        if not locked_by_us and lock_is_held(out):
            raise busy_error(out)
        if not resume:
            try:
                finished = bool(read_run_spec(out).get("finished"))
            except CheckpointError as e:
                raise CheckpointError(f"{e} (train --overwrite starts over in this folder)") from None
            state = "a finished run" if finished else "an unfinished run (--resume continues it)"
            raise CheckpointError(f"{out}: {state} is here; pass --overwrite to start over (its files are "
                                  "removed) or choose another --out; nothing was changed")
        return
    stale = [n for n in (*RUN_FILES, *TEST_OUTPUTS) if (out / n).exists()]
    if stale:
        raise CheckpointError(f"{out}: holds {', '.join(stale)} of an earlier run but no run.json; pass "
                              "--overwrite to start over here (removing them) or choose another --out")


def _open_run_folder(out: Path, net: Any, model: str, train_cfg: dict[str, Any], data_spec: dict[str, Any],
                     resume: bool, overwrite: bool) -> dict[str, Any]:
    """The run.json to train under: a new one, or the existing one for ``resume``; refuses a folder
    holding another run's files unless ``overwrite`` (then only those files are removed)."""
    if overwrite:
        for name in (*RUN_FILES, *TEST_OUTPUTS):
            (out / name).unlink(missing_ok=True)
        for sub in ("tensorboard", "mlruns"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
    _refuse_foreign_files(out, resume, overwrite=False, locked_by_us=True)  # again, now that the folder is ours
    remove_temporaries(out)
    if not (out / "run.json").exists():
        return write_run_spec(out, net, train_cfg, data_spec)
    old = read_run_spec(out)
    mine = json.loads(json.dumps({"method": model, "model_kwargs": net.model_kwargs, "train": train_cfg,
                                  "data": data_spec}, default=str))
    theirs = {k: old.get(k) for k in mine}
    if isinstance(theirs["train"], dict):  # settings newer than the run: absent means what it was calibrated with
        theirs["train"] = {**added_train_defaults(), "early_stopping": None, **theirs["train"]}
    if mine != theirs:
        diff = sorted(f"{k}.{j}" for k in mine for j in set(mine[k] or {}) | set(theirs[k] or {})
                      if isinstance(mine[k], dict) and (mine[k] or {}).get(j) != (theirs[k] or {}).get(j))
        raise CheckpointError(f"{out}: --resume with different settings than the run was started with "
                              f"(differs: {', '.join(diff) or 'method'})")
    return old





def _train_in(out: Path, net: Any, cfg: TrainConfig, run_id: str, sets: dict[str, Any], val_set: Any,
              logger: str | None, device: str, resume: bool, progress: bool | None,
              on_step_end: Callable[[Any, Any], None] | None, calibration: CalibrationSettings,
              textures: str | None, stopper: Any = None) -> dict[str, Any]:
    """Fit, calibrate on the validation good images and finish the run folder ``out``."""
    track = None
    if logger is not None and distributed.is_main():
        track = make_logger(logger, out)
    hook = on_step_end
    if track is not None and val_set is not None:
        hook = _log_validation_overlays(track, val_set, device, on_step_end)
    try:
        history = fit(net, sets, cfg, out, resume=resume, progress=progress, logger=track, on_step_end=hook, stopper=stopper,
                      run_id=run_id)
    finally:
        if track is not None:
            track.close()
    if not distributed.is_main():  # rank 0 calibrates and finishes the run; no collective follows, so no wait
        return {**read_run_spec(out), "history": history, "rank": distributed.rank()}
    try:
        calib = fit_calibration(net, val_set, calibration, cfg.batch_size, device, progress, textures)  # type: ignore[arg-type]
    except (ConfigError, DataError) as e:  # the method cannot fit these scores: keep the trained model all the same
        finish_run(out, net, {"method": calibration.method, "n_val": len(val_set) if val_set is not None else 0},
                   history)
        raise type(e)(f"{e}. The run is trained and saved in {out} without thresholds: set them with "
                      f"`distillad calibrate --run {out} --method M`") from None
    return finish_run(out, net, calib, history)


def _stopper(spec: dict[str, Any], out: Path, val_set: Any, cfg: TrainConfig, device: str) -> Any:
    """The run's ``EarlyStopping`` when its run.json asks for one (``train.early_stopping``), else None; its
    validation defects are made from the validation good images only (DRAEM-style, fixed seed)."""
    es = (spec.get("train") or {}).get("early_stopping")
    if not es:
        return None
    if val_set is None or len(val_set) < 2:
        raise DataError("--epochs auto needs validation images (at least 2 good images held out: raise "
                        "--val-fraction or give a number of epochs)")
    textures = (spec.get("data") or {}).get("textures")
    defective, _ = synthetic_defects(val_set, textures)
    return EarlyStopping(val_set, defective, out if distributed.is_main() else None, es["patience"], es["min_delta"],
                         cfg.batch_size or 16, device)  # type: ignore[arg-type]


def _log_validation_overlays(track: Any, val_set: AnomalyDataset, device: str,
                             then: Callable[[Any, Any], None] | None, n: int = 4) -> Callable[[Any, Any], None]:
    """Hook logging heat maps of the first ``n`` validation (good) images after every step, scaled by their own maps."""
    dev = resolve_device(device)
    items = [val_set[i] for i in range(min(n, len(val_set)))]  # the same images after every step
    batch = torch.stack([it["image"] for it in items])

    def hook(step: Any, model: Any) -> None:
        with torch.no_grad():
            maps, _ = model.eval().predict(batch.to(dev))
        maps = maps[:, 0].float().cpu().numpy()
        vmin, vmax = float(maps.min()), float(maps.max())
        strip = overlay_strip([it["image"].numpy() for it in items], list(maps), vmin, vmax,
                              titles=[Path(it["path"]).name for it in items])
        track.log_image(f"{step.phase.name}/validation_overlays", strip, step.index + 1)
        if then is not None:
            then(step, model)
    return hook


def _test_set(spec: dict[str, Any], data: str | Path | None, category: str | None, layout: str | None,
              tile: int = 1) -> AnomalyDataset:
    """The test images fitted as the run fits its inputs (its resize mode; ``tile``: ``tiled_size``)."""
    d = spec["data"]
    path = data if data is not None else d["path"]
    cat = category if data is not None else d.get("category")
    lay = layout if data is not None else d.get("layout")
    samples = load_samples(path, "test", cat, lay)
    if not samples:
        raise DataError(f"{path}: no test images")
    hw, mode = run_geometry(spec)
    return AnomalyDataset(samples, image_size=tiled_size(hw, tile), resize=mode)


def test(run: str | Path, data: str | Path | None = None, category: str | None = None, layout: str | None = None,
         device: str = "auto", batch_size: int = 16, n_overlays: int = 8, progress: bool | None = None,
         fpr_limit: float = 0.3, calibration: CalibrationSettings | None = None, tile: int = 1, precision: str = "fp32") -> dict[str, Any]:
    """Evaluate a run on its dataset's test split; writes metrics.json (with ``per_defect``: results per
    defect type, ``metrics.per_defect_metrics``), scores.csv, scores.png, overlays.png and report.html
    (``distillad.report``: tables, curves and the worst misses in one self-contained page).

    Images are fitted as the run's ``data.resize`` says; ``tile`` > 1 predicts tile by tile
    (``distillad.tiling``). Pixel metrics cover the images' own pixels (no padding).
    Decisions use the run's stored thresholds, or with ``calibration`` thresholds fitted anew on the
    run's validation split for this evaluation only (run.json is not changed: ``distillad calibrate``
    does that). metrics.json records the calibration used. ``precision``: the networks' (fp32 | bf16 |
    fp16, ``distillad.precision``); maps are fp32."""
    run = Path(run)
    check_tile(tile)
    model, spec = load_run(run, resolve_device(device))
    check_writable(run, flag="--run")  # its outputs go into the run folder: fail before the work, not after
    ds = _test_set(spec, data, category, layout, tile)
    hw, _ = run_geometry(spec)
    net = model if tile == 1 else TiledModel(prepare_for_inference(model, resolve_device(device)), hw, batch_size)
    res = infer(net, ds, batch_size, device, progress, precision=precision)
    maps, masks = crop_to_images(res["maps"], res["masks"], ds)  # res keeps the inputs' frame (the strip's)
    labels, scores = res["labels"].numpy(), res["scores"].numpy()
    if not np.isfinite(scores).all():
        bad = [p for p, v in zip(res["paths"], scores) if not np.isfinite(v)]
        raise DataError(f"{bad[0]}: the model scored it {scores[res['paths'].index(bad[0])]} "
                        f"({len(bad)} non-finite scores in all); no metric or decision is computed from them")
    has_masks = bool(masks.sum() > 0)
    pix_masks = masks[:, 0].numpy() > 0.5 if has_masks else None
    pix_maps = maps[:, 0].numpy() if has_masks else None
    metrics = compute_metrics(labels, scores, pix_masks, pix_maps, fpr_limit=fpr_limit)
    calib = spec.get("calibration", {}) if calibration is None else refit(model, spec, calibration, run, batch_size,
                                                                          device, progress)
    thr = calib.get("image_threshold")
    if thr is not None:
        metrics.update(decision_metrics(labels, scores, thr))
    if has_masks and calib.get("pixel_threshold") is not None:
        metrics.update(mask_metrics(pix_masks, pix_maps, calib["pixel_threshold"]))
    per_defect = per_defect_metrics(labels, scores, res["defects"], thr, pix_masks, pix_maps, fpr_limit)
    metrics.update(n_test=int(len(labels)), n_defective=int(labels.sum()),
                   infer_images_per_s=float(len(labels) / res["seconds"]))
    out = {"metrics": metrics, "run": str(run), "method": spec["method"], "data": str(data or spec["data"]["path"]),
           "calibration": calib, "calibration_source": "run.json" if calibration is None else "re-fitted for this test",
           "tile": tile, "per_defect": per_defect}
    atomic_write_json(run / "metrics.json", out)
    _write_scores_csv(run / "scores.csv", res["paths"], res["defects"], labels, scores, calib)
    plot_scores(run / "scores.png", labels, scores, thr, title=f"{spec['method']} — {Path(spec['data']['path']).name}")
    _save_overlay_strip(run / "overlays.png", ds, res, calib, n_overlays)
    write_test_report(run / REPORT_FILE, out, per_defect, ds, res, _pro_or_none(pix_masks, pix_maps), fpr_limit)
    return out


def _pro_or_none(masks: np.ndarray | None, maps: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The PRO curve for report.html, None without masks or without a normal pixel to measure the FPR on."""
    if masks is None:
        return None
    try:
        return pro_curve(masks, maps)
    except DataError:
        return None


def _write_scores_csv(path: Path, paths: Sequence[str], defects: Sequence[str], labels: np.ndarray | None,
                      scores: np.ndarray, calib: dict[str, Any]) -> None:
    thr = calib.get("image_threshold")
    norm = normalize_scores(torch.as_tensor(scores), calib).numpy() if thr is not None else [float("nan")] * len(scores)
    rows = [["path", "defect", "label", "score", "normalized_score", "decision"]]
    for i, p in enumerate(paths):
        decision = "" if thr is None or not np.isfinite(scores[i]) else ("defective" if scores[i] >= thr else "good")
        rows.append([p, defects[i] if defects else "", "" if labels is None else int(labels[i]),
                     f"{scores[i]:.6g}", f"{norm[i]:.4f}", decision])
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _save_overlay_strip(path: Path, ds: AnomalyDataset, res: dict[str, Any], calib: dict[str, Any], n: int) -> None:
    """Strip of the same test images for every method (``visualize.strip_indices``: chosen by label,
    defect type and path), coloured by the run's validation statistics, never by the test maps
    (``visualize.overlay_strip_for_run``, the function the benchmark's strips use too)."""

    idx = strip_indices(ds.samples, n)
    if not idx:
        return
    strip = overlay_strip_for_run([ds[i] for i in idx], [res["maps"][i] for i in idx],
                                  [float(res["scores"][i]) for i in idx], calib)
    save_png(path, strip)


def predict(run: str | Path, inputs: Sequence[str | Path], out: str | Path, device: str = "auto",
            batch_size: int = 8, overlays: bool = True, progress: bool | None = None, num_workers: int = 0,
            overwrite: bool = False, threads: int | None = None, tile: int = 1,
            precision: str = "fp32") -> list[dict[str, Any]]:
    """Score new images (files, or folders searched recursively) with a trained run into folder ``out``:
    predictions.csv (score, good/defective at the run's threshold, or the file's error), heat-map
    overlay and defect-mask PNGs named by each input's relative path. Inputs and ``out`` are checked
    before the model loads; ``overwrite`` replaces an earlier prediction in ``out``. Rows: one dict per
    image, ``error`` None where it worked (``distillad.predict`` has the details). ``tile`` > 1: tile by tile."""
    return predict_images(run, inputs, out, device, batch_size, overlays, progress, num_workers, overwrite, threads,
                          tile, precision)
