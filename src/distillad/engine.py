"""One training loop and one inference loop for every method: plain loops over a method's
declared phases (``distillad.phases``), a progress bar, a per-pass log, resumable, deterministic
on CPU for a given seed.

Determinism: the model is built after ``seed_everything(seed)``, and every step (one pass of one
phase over its data) reseeds its own shuffling and synthesis from ``(seed, step index)``, so a
run resumed after step k continues exactly as an uninterrupted one would. For a single-phase
method the step index is the epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import distributed, teacher_cache
from .checkpoint import append_jsonl, atomic_write_bytes, load_training_state, remove_temporaries, save_training_state
from .errors import ConfigError, TrainingError
from .hints import check_int
from .models._base import DistillationModel
from .phases import Phase, Step, param_groups, plan, validate_phases
from .precision import autocast, check_precision, predict_batch, prepare_for_inference
from .progress import bar as progress_bar
from .settings import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, TRAIN_PRECISIONS, TrainSettings

#: the training settings of a run (``distillad.settings``): None means the method's paper default
TrainConfig = TrainSettings

__all__ = ["TrainConfig", "MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE", "TRAIN_PRECISIONS", "seed_everything", "resolve_device",
           "fit", "infer"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; a bad or unavailable device is a ``ConfigError``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a device name (examples: auto, cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
    return dev


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _progress(total: int, desc: str, enabled: bool | None) -> tqdm:
    disable = (not enabled) if enabled is not None else os.environ.get("DISTILLAD_PROGRESS", "1") == "0"
    return progress_bar(total=total, desc=desc, unit="batch", dynamic_ncols=True, disable=disable, leave=True)


def _datasets(model: DistillationModel, data: Dataset | Mapping[str, Dataset],
              phases: list[Phase]) -> dict[str, Dataset]:
    sets = dict(data) if isinstance(data, Mapping) else {"normal": data}
    for ph in phases:
        if ph.data not in sets:
            raise ConfigError(f"phase {ph.name!r} of {type(model).__name__} trains on {ph.data!r} data, "
                              f"but fit() was given only {sorted(sets)}")
    return sets


def _enter_phase(model: nn.Module, phase: Phase, trainable: Mapping[int, bool]) -> None:
    """Train ``phase.modules``; freeze everything else: no gradient, eval mode (BatchNorm statistics fixed)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None  # no stale gradient from an earlier phase
    for m in phase.modules:
        mod = model.get_submodule(m)
        mod.train()
        for p in mod.parameters():
            p.requires_grad_(trainable[id(p)])
    model.training = True  # the model itself is "training" (a method may test self.training); its frozen parts are not


def fit(model: DistillationModel, data: Dataset | Mapping[str, Dataset], cfg: TrainConfig,
        run_dir: str | Path | None = None, resume: bool = False, progress: bool | None = None,
        logger: Any = None, on_step_end: Callable[[Step, DistillationModel], None] | None = None,
        run_id: str | None = None, stopper: Any = None) -> list[dict[str, Any]]:
    """Train ``model`` through its declared phases for ``cfg.epochs``; returns the per-step log.

    ``data``: the normal training set, or {"normal": ..., "synthetic": ...} for methods with synthetic
    phases. With ``run_dir`` the state (weights, every phase's optimiser, the step reached) is saved
    atomically after every step and the log appended to ``train_log.jsonl``; ``resume`` continues
    from the last finished step. ``logger`` (``distillad.tracking``) receives every step's losses;
    ``on_step_end(step, model)`` runs after each step's state is saved. ``run_id`` (the run.json's) is
    recorded in the trainer state, and a state of another run is refused on resume.
    ``stopper`` (``early_stopping.EarlyStopping``, ``--epochs auto``): its ``after_step(step, model)`` runs after
    each step; once it returns True the remaining joint steps are skipped (phases scheduled ``after`` still run).
    """
    cfg = cfg.resolved(model)
    device = distributed.local_device(resolve_device(cfg.device))  # under torchrun: this rank's GPU
    cfg.check_precision(device)
    model.to(device)
    main = distributed.is_main()  # under torchrun only rank 0 writes files and shows progress
    phases = model.phases()
    validate_phases(model, phases)
    sets = _datasets(model, data, phases)
    steps = plan(phases, cfg.epochs)  # type: ignore[arg-type]
    if distributed.active() and any(not ph.gradient for ph in phases):
        raise ConfigError(f"{model.model_name or type(model).__name__} fits by statistics in one process; "
                          "run it without torchrun")
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    optimizers = {ph.name: (ph.optimizer or model.build_optimizer)(param_groups(model, ph, trainable))
                  for ph in phases if ph.gradient}
    history: list[dict[str, Any]] = []
    start = 0
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_temporaries(run_dir)  # what a kill during an atomic write left
        if resume:
            state = load_training_state(run_dir, model, optimizers, run_id)
            if state is not None:
                start, history = state["step"], state["history"]
                # the log is rewritten from the saved state, so it holds each finished step exactly once
                if main:
                    atomic_write_bytes(run_dir / "train_log.jsonl",
                                       "".join(json.dumps(r) + "\n" for r in history).encode())
            distributed.same_on_all_ranks(start, "the step to resume from")
    sizes = {ph.name: ph.batch_size or cfg.batch_size for ph in phases}
    distributed.check_batch_sizes(sizes)
    per_step = [distributed.n_global_batches(len(sets[s.phase.data]), sizes[s.phase.name],  # type: ignore[arg-type]
                                             distributed.world_size()) for s in steps]
    offsets = np.cumsum([0] + per_step).tolist()  # global batch index of each step's first batch (logger x-axis)
    bar = _progress(sum(per_step[start:]), f"train {model.model_name or type(model).__name__}",
                    progress if main else False)
    unsync = distributed.sync_batchnorm(model, device)  # trained BatchNorm synchronised across ranks (no-op for one)
    if stopper is not None:
        stopper.resume(model)
    # decided on the whole plan, not the steps left, so a resumed run uses the features the uninterrupted one used
    cached = _with_teacher_cache(model, sets, steps, sizes, cfg, device) if start < len(steps) else {}
    try:
        for step in steps[start:]:
            if stopper is not None and stopper.stopped and step.phase.schedule != "after":
                continue
            row = _run_step(model, step, cached.get(step.phase.name, sets[step.phase.data]), sizes[step.phase.name],
                            optimizers.get(step.phase.name),
                            trainable, cfg, device, bar, logger, len(steps) > cfg.epochs,
                            offsets[step.index])  # type: ignore[operator]
            history.append(row)
            if run_dir is not None and main:  # state first: a kill between the two loses a log line, never a step
                save_training_state(run_dir, model, optimizers, step, history, run_id)
                append_jsonl(run_dir / "train_log.jsonl", row)
            if stopper is not None and stopper.after_step(step, model) and run_dir is not None and main:
                save_training_state(run_dir, model, optimizers, step, history, run_id)  # the best weights, restored
            if on_step_end is not None:
                on_step_end(step, model)
    finally:
        bar.close()
        unsync()
        for p in model.parameters():
            p.requires_grad_(trainable[id(p)])
        model.eval()
    return history


def _with_teacher_cache(model: DistillationModel, sets: Mapping[str, Dataset], steps: list[Step],
                        sizes: Mapping[str, int], cfg: TrainConfig, device: torch.device) -> dict[str, Dataset]:
    """{phase name: the normal set with its teacher features} for the trained phases on plain good images that
    run several passes (``distillad.teacher_cache``); empty when off or over its memory limit."""
    passes: dict[str, int] = {}
    for s in steps:
        if s.phase.gradient and s.phase.data == "normal":
            passes[s.phase.name] = passes.get(s.phase.name, 0) + 1
    names = [n for n, k in passes.items() if k > 1]
    teacher = getattr(model, "teacher", None)
    if not names or not callable(getattr(teacher, "serve", None)):
        return {}
    data = teacher_cache.build(teacher, sets["normal"], max(sizes[n] for n in names), device,  # type: ignore[arg-type]
                               lambda: autocast(cfg.precision, device))
    return {} if data is None else {n: data for n in names}


def _run_step(model: DistillationModel, step: Step, data: Dataset, batch_size: int,
              optimizer: torch.optim.Optimizer | None, trainable: Mapping[int, bool], cfg: TrainConfig,
              device: torch.device, bar: tqdm, logger: Any, show_phase: bool, first_batch: int) -> dict[str, Any]:
    """One pass of ``step.phase`` over ``data``, reseeded from (seed, step index); returns its log row.
    A phase with ``gradient=False`` runs its method without gradients and hands the pass's concatenated
    non-scalar outputs to its ``finish`` method (``distillad.phases``)."""
    ph = step.phase
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step.index)
    torch.manual_seed(cfg.seed * 1_000_003 + step.index + 1)
    if hasattr(data, "set_epoch"):
        data.set_epoch(step.index)  # type: ignore[attr-defined]
    loader = distributed.train_loader(data, batch_size, gen, cfg.num_workers)  # under DDP: this rank's share
    _enter_phase(model, ph, trainable)
    loss_fn = distributed.phase_loss(model, ph.loss, device) if ph.gradient else getattr(model, ph.loss)
    sums: dict[str, float] = {}
    outputs: dict[str, list[torch.Tensor]] = {}
    count = 0
    label = f"{ph.name} {step.epoch + 1}/{step.total}" if show_phase else f"epoch {step.epoch + 1}/{step.total}"
    for i, batch in enumerate(loader):
        feats = teacher_cache.batch_features(data, batch)
        batch = _to(batch, device)
        if feats is not None:
            feats = [f.to(device, non_blocking=True) for f in feats]
        served = model.teacher.serve(batch["image"], feats) if feats is not None else contextlib.nullcontext()
        with autocast(cfg.precision, device), served, torch.set_grad_enabled(ph.gradient):  # backward outside autocast, as torch.amp recommends
            losses = loss_fn(batch)
        if not ph.gradient:
            for k in [k for k, v in losses.items() if v.dim() > 0]:
                outputs.setdefault(k, []).append(losses.pop(k).detach())
        values, n = distributed.batch_means(losses, len(batch["image"]))  # the global batch's (all ranks agree)
        if not math.isfinite(values["loss"]):
            raise TrainingError(f"phase {ph.name!r}: the loss became {values['loss']} at epoch "
                                f"{step.epoch + 1} (learning rate too high?); the run folder keeps the last "
                                "finished step: fix the settings and start over with --overwrite")
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            scale = distributed.loss_scale(len(batch["image"]), n)  # 1 but for an unevenly split last batch
            (losses["loss"] * scale if scale != 1 else losses["loss"]).backward()
            optimizer.step()
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
        if logger is not None:
            logger.log_scalars(values, step=first_batch + i, prefix=f"{ph.name}/")
        bar.set_description(label)
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        bar.update(1)
    if ph.finish is not None:
        with torch.no_grad():
            getattr(model, ph.finish)({k: torch.cat(v) for k, v in outputs.items()})
    return {"phase": ph.name, "epoch": step.epoch + 1, "step": step.index + 1,
            **{k: v / max(count, 1) for k, v in sums.items()}, "seconds": time.perf_counter() - t0}


def infer(model: DistillationModel, dataset: Dataset, batch_size: int = 16, device: str = "auto",
          progress: bool | None = None, keep_maps: bool = True, precision: str = "fp32") -> dict[str, Any]:
    """Run ``model.predict`` over a dataset → dict(scores (N,), maps (N,1,H,W) or None,
    labels (N,), masks (N,1,H,W), paths, defects, seconds).

    Runs on an inference copy of ``model`` (BatchNorm folded, ``precision.prepare_for_inference``)
    under ``torch.inference_mode`` and ``precision``'s autocast; maps and scores are fp32."""
    check_int("batch size", batch_size)
    dev = resolve_device(device)
    check_precision(precision, dev)
    model = prepare_for_inference(model, dev)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    scores, maps, labels, masks, paths, defects = [], [], [], [], [], []
    bar = _progress(len(loader), "infer", progress)
    t0 = time.perf_counter()
    for batch in loader:
        m, s = predict_batch(model, batch["image"].to(dev), precision)
        scores.append(s.float().cpu())
        if keep_maps:
            maps.append(m.float().cpu())
        labels.append(batch["label"])
        masks.append(batch["mask"])
        paths += list(batch["path"])
        defects += list(batch.get("defect", [""] * len(batch["path"])))
        bar.update(1)
    bar.close()
    cat = lambda xs: torch.cat(xs) if xs else None  # noqa: E731
    return {"scores": cat(scores), "maps": cat(maps), "labels": cat(labels), "masks": cat(masks),
            "paths": paths, "defects": defects, "seconds": time.perf_counter() - t0}
