"""Choose a method's keywords on validation images only, never on test images: ``distillad tune``.

For a small grid of keyword values (their cartesian product, the last keyword varying fastest),
every candidate is trained once per seed with ``api.train`` into ``out/runs/<slug>/``: on the good
training images minus the validation split, which api.train holds out. Each run is then scored on
that split's good images against synthetic defects made from those same images
(``SyntheticAnomalyDataset``, seed ``SYNTHESIS_SEED``: every candidate sees the same defects;
``distillad.validation`` builds both).

Criterion (higher is better): the mean of image AUROC (good validation images vs. their defective
versions) and pixel AUROC (on the synthetic masks), averaged over seeds. AUROC is rank-based, so
candidates compare fairly although a keyword may change the scale of the scores. Ties (within
``TIE_TOL``) go to the lower mean validation loss term ``tie_loss``: the method's first phase's loss
in eval mode on the validation images (``loss`` is the total; for a keyword that weights a loss
term compare the unweighted term, e.g. ``loss_rd`` for rd_var's λ, as the total grows with the
weight), then to the method's default value, then to the earlier place in the grid.

Validation defects (``SYNTHESIS_PRESETS``): ``draem`` (default, as in DRAEM): a full-image Perlin
mask filled with a texture (the run's ``textures`` folder, e.g. DTD; without one the library's
fallback noise) at 50–85 % opacity, so that the defects are visible; or a paper's training preset
(``dtsnet``, ``dmdd``, ``dskd``; ``synthesis.presets``). The validation split is small (10 % of
train/good by default), so a difference of a point or two may be noise: use several seeds for a
choice that matters.

Resumable: a finished candidate's run is reused (``api.train(resume=True)`` returns it), an
interrupted one continues, and each run's scores are cached in it (``tune_val.json``).
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from . import api
from .checkpoint import atomic_write_bytes, atomic_write_json, load_run
from .config import Param, config_from_args, flag_paths, model_params
from .engine import resolve_device
from .errors import ConfigError
from .precision import prepare_for_inference
from .progress import bar as progress_bar
from .registry import create_model
from .settings import split_kwargs
from .validation import SYNTHESIS_PRESETS, SYNTHESIS_SEED, score_images, synthesis_settings, validation_sets

__all__ = ["tune", "grid_params", "candidates", "slug", "validation_sets", "score_run", "choose", "render",
           "SYNTHESIS_PRESETS", "SYNTHESIS_SEED", "TIE_TOL", "TIE_RULE"]

TIE_TOL = 1e-6  # criterion in [0, 1]: only equal AUROCs (up to float noise) tie
TIE_RULE = (f"ties (criterion within {TIE_TOL:g}) go to the lower mean validation loss term, then to the method's "
            "default value, then to the earlier grid order")
SCORE_FILE = "tune_val.json"


# ----------------------------------------------------------------------------- the grid
def grid_params(model: str, keys: Sequence[str]) -> dict[str, Param]:
    """The ``Param`` (kind, hint) of each grid keyword; a ``ConfigError`` names one ``model`` lacks."""
    params = {p.name: p for p in model_params(model)}
    for k in keys:
        if k in flag_paths() and k not in params:
            raise ConfigError(f"tune grid: {k!r} is a train setting, not a keyword of model {model!r}; "
                              f"give it as --{k.replace('_', '-')} (the grid varies method keywords)")
        if k not in params:
            near = difflib.get_close_matches(k, list(params), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"its keywords: {', '.join(params)}"
            raise ConfigError(f"tune grid: model {model!r} has no keyword {k!r} ({hint})")
    return {k: params[k] for k in keys}


def candidates(model: str, grid: Mapping[str, Sequence[Any]],
               fixed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The grid's cartesian product, each candidate checked against the method's hints together with
    the ``fixed`` method keywords (values come back in their hinted types); errors name the keyword."""
    if not grid:
        raise ConfigError("tune: the grid is empty; give at least one keyword and its values")
    grid_params(model, list(grid))
    fixed, lists = dict(fixed or {}), {}
    for k, values in grid.items():
        if k in fixed:
            raise ConfigError(f"tune grid: {k!r} is also given as a fixed keyword; give it in one place")
        lists[k] = [] if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") else list(values)
        if not lists[k]:
            raise ConfigError(f"tune grid: {k!r} needs a list of one or more values, got {values!r}")
        dup = [v for i, v in enumerate(lists[k]) if v in lists[k][:i]]
        if dup:
            raise ConfigError(f"tune grid: {k!r} lists the value {dup[0]!r} twice")
    out = []
    for combo in itertools.product(*lists.values()):
        cand = dict(zip(lists, combo))
        cfg = config_from_args(model, {"data": "-", "out": "-"}, {**fixed, **cand}, source="tune grid")
        out.append({k: cfg["model_kwargs"][k] for k in grid})
    names = [slug(c, 0) for c in out]
    if len(set(names)) < len(names):
        raise ConfigError("tune grid: two candidates get the same folder name; use plainer values")
    return out


def _word(v: Any, fmt: Any = str) -> str:
    """A value as one word: tuple items joined by ':', None as 'none', floats by ``fmt``."""
    if isinstance(v, (tuple, list)):
        return ":".join(_word(x, fmt) for x in v)
    return "none" if v is None else fmt(v) if isinstance(v, float) else str(v)


def slug(candidate: Mapping[str, Any], seed: int) -> str:
    """Run folder name of one candidate and seed, e.g. ``variance_weight=0.5__seed=0`` (exact values)."""
    words = [f"{k}={_word(v)}" for k, v in candidate.items()] + [f"seed={seed}"]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", "__".join(words))


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def _val_losses(model: Any, good: Dataset, triplets: list[dict[str, Any]], batch_size: int,
                device: str) -> dict[str, float]:
    """Mean of each loss term of the method's first phase (eval mode, no gradient) over the validation
    images: the good ones, or their synthetic triplets for a phase that trains on synthetic data."""
    phase = model.phases()[0]
    data = triplets if phase.data == "synthetic" else good
    dev = resolve_device(device)
    model.to(dev).eval()
    sums: dict[str, float] = {}
    for batch in DataLoader(data, batch_size=batch_size):  # type: ignore[arg-type]
        batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
        for k, v in getattr(model, phase.loss)(batch).items():
            if v.dim() > 0:  # a statistics phase's collected rows, not a loss
                continue
            sums[k] = sums.get(k, 0.0) + float(v) * len(batch["image"])
    return {f"val_{k}": v / len(data) for k, v in sums.items()}


def score_run(run: str | Path, sets: tuple[Dataset, list, list], device: str = "auto",
              batch_size: int = 16) -> dict[str, float]:
    """Validation numbers of one trained run: image and pixel AUROC (and AUPRO) of the good vs. the
    synthetic-defect validation images, the criterion (mean of the two AUROCs), the mean loss terms."""
    good, defective, triplets = sets
    model, _ = load_run(run, resolve_device(device))
    net = prepare_for_inference(model, resolve_device(device))  # folded once; the losses below use ``model``
    m = score_images(net, [good, defective], batch_size, device)
    out = {"image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"], "aupro": m["aupro"]}
    out["criterion"] = (out["image_auroc"] + out["pixel_auroc"]) / 2
    return {**out, **_val_losses(model, good, triplets, batch_size, device), "n_val": len(good)}


def _cached_score(run: Path, sets: tuple[Dataset, list, list], synthesis: dict[str, Any], device: str,
                  batch_size: int) -> dict[str, float]:
    """``score_run``, cached in the run folder for these validation defects (resuming skips it)."""
    key = json.loads(json.dumps({"synthesis": synthesis, "seed": SYNTHESIS_SEED}, default=str))
    cache = run / SCORE_FILE
    if cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("key") == key:
            return old["scores"]
    scores = score_run(run, sets, device, batch_size)
    atomic_write_json(cache, {"key": key, "scores": scores})
    return scores


# ----------------------------------------------------------------------------- choice and table
def _num(x: Any, bad: float) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else bad


def choose(rows: Sequence[Mapping[str, Any]], tie_loss: str = "loss", tol: float = TIE_TOL) -> int:
    """Index of the chosen row: the highest ``criterion`` (nan counts as worst); see ``TIE_RULE``."""
    crit = [_num(r.get("criterion"), -math.inf) for r in rows]
    tied = [i for i, c in enumerate(crit) if c >= max(crit) - tol]
    return min(tied, key=lambda i: (_num(rows[i].get(f"val_{tie_loss}"), math.inf), not rows[i].get("default"), i))


def _summary(cand: dict[str, Any], runs: list[dict[str, Any]], defaults: dict[str, Any]) -> dict[str, Any]:
    """One table row: a candidate's numbers averaged over its seeds (per-seed numbers under ``runs``)."""
    keys = [k for k in runs[0]
            if k not in ("seed", "run", "n_val") and all(isinstance(r.get(k), (int, float)) for r in runs)]
    return {"values": cand, "default": all(defaults[k] == v for k, v in cand.items()),
            **{k: statistics.fmean(r[k] for r in runs) for k in keys}, "runs": runs}


def render(res: Mapping[str, Any]) -> str:
    """The result as markdown: what was compared, one row per candidate, the choice."""
    keys, loss = list(res["grid"]), f"val_{res['tie_loss']}"
    g = lambda x: f"{x:g}"  # noqa: E731
    f4 = lambda x: "–" if not isinstance(x, (int, float)) or math.isnan(x) else f"{x:.4f}"  # noqa: E731
    data = res["data"] + (f" / {res['category']}" if res.get("category") else "")
    lines = [f"# distillad tune: {res['method']}\n",
             f"Data {data}: {res['n_val']} validation good images (test images are never read) vs. the same "
             f"images with synthetic defects ({res['synthesis']['preset']} preset, seed {res['synthesis_seed']}); "
             f"seeds {', '.join(map(str, res['seeds']))}. Criterion: mean of image and pixel AUROC, mean over seeds "
             f"(higher is better); {TIE_RULE} (loss term: {res['tie_loss']}).\n",
             "| " + " | ".join([*keys, "criterion", "image AUROC", "pixel AUROC", f"val {res['tie_loss']}", ""]) + " |",
             "|" + "---|" * (len(keys) + 5)]
    for i, r in enumerate(res["rows"]):
        vals = [_word(r["values"][k], g) + (" (default)" if r["values"][k] == res["defaults"][k] else "") for k in keys]
        nums = [f4(r.get(k)) for k in ("criterion", "image_auroc", "pixel_auroc", loss)]
        lines.append("| " + " | ".join([*vals, *nums, "**chosen**" if i == res["chosen_index"] else ""]) + " |")
    chosen = ", ".join(f"{k}={_word(v, g)}" for k, v in res["chosen"].items())
    lines += ["", f"Chosen: {chosen} (run{'s' if len(res['chosen_runs']) > 1 else ''}: "
                  f"{', '.join(res['chosen_runs'])})"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the job
def tune(model: str, data: str | Path, out: str | Path, grid: Mapping[str, Sequence[Any]],
         seeds: Sequence[int] = (0,), synthesis: str | Mapping[str, Any] = "draem", tie_loss: str = "loss",
         progress: bool | None = None, **kwargs: Any) -> dict[str, Any]:
    """Train and score every candidate of ``grid`` × ``seeds`` into ``out/runs/``; write ``tune.json`` and
    ``tune.md`` in ``out`` and return the result (``rows``, ``chosen`` values, ``chosen_runs``).

    ``kwargs``: ``api.train``'s settings (category, epochs, image_size, device, textures ...) and fixed
    method keywords, exactly as ``api.train`` takes them. ``synthesis``: a ``SYNTHESIS_PRESETS`` name or
    ``SyntheticAnomalyDataset`` keywords. ``tie_loss``: the loss term that breaks ties (module docstring).
    """
    out, seeds = Path(out), [int(s) for s in seeds]
    if not seeds or "seed" in kwargs:
        raise ConfigError("tune: give the seeds as seeds=[...] (one or more), not seed=")
    own, rest = split_kwargs(kwargs)  # the run settings, checked, and the method's keywords
    if not own["val_fraction"] > 0:
        raise ConfigError("tune: val_fraction must be > 0: candidates are scored on the validation split")
    fixed = {k: v for k, v in rest.items() if k not in inspect.signature(api.train).parameters}
    cands = candidates(model, grid, fixed)
    for cand in cands:  # a value the constructor rejects fails now, not after the earlier candidates trained
        create_model(model, **fixed, **cand)
    typed: dict[str, list[Any]] = {k: [] for k in grid}  # the grid in its hinted types, for the record
    for c in cands:
        for k, v in c.items():
            typed[k] += [] if v in typed[k] else [v]
    syn = synthesis_settings(synthesis)
    defaults = {p.name: p.default for p in model_params(model)}
    disable = (not progress) if progress is not None else os.environ.get("DISTILLAD_PROGRESS", "1") == "0"
    bar = progress_bar(total=len(cands) * len(seeds), desc=f"tune {model}", unit="run", dynamic_ncols=True, disable=disable)
    sets: dict[str, tuple[Dataset, list, list]] = {}
    rows = []
    for cand in cands:
        runs = []
        for seed in seeds:
            run = out / "runs" / slug(cand, seed)
            bar.set_postfix_str(run.name)
            spec = api.train(model, data, run, seed=seed, resume=True, progress=progress, **kwargs, **cand)
            key = json.dumps([spec["data"], spec["image_size"]], sort_keys=True)
            if key not in sets:
                sets[key] = validation_sets(spec, synthesis)
            scores = _cached_score(run, sets[key], syn, kwargs.get("device", "auto"), spec["train"]["batch_size"])
            if f"val_{tie_loss}" not in scores:
                terms = ", ".join(k[4:] for k in scores if k.startswith("val_"))
                raise ConfigError(f"tie_loss {tie_loss!r}: model {model!r}'s loss has no such term "
                                  f"(its terms: {terms})")
            secs = sum(h.get("seconds", 0.0) for h in spec.get("history", []))
            runs.append({"seed": seed, "run": str(run), **scores, "train_seconds": secs})
            bar.update(1)
        rows.append(_summary(cand, runs, defaults))
    bar.close()
    best = choose(rows, tie_loss)
    res = {"method": model, "data": str(data), "category": kwargs.get("category"), "grid": typed,
           "defaults": {k: defaults[k] for k in grid}, "seeds": seeds, "synthesis": syn,
           "synthesis_seed": SYNTHESIS_SEED, "n_val": rows[0]["runs"][0]["n_val"], "tie_loss": tie_loss,
           "criterion": "mean of image and pixel AUROC (validation good vs. synthetic defects), mean over seeds",
           "tie_rule": TIE_RULE, "settings": kwargs, "rows": rows, "chosen_index": best,
           "chosen": rows[best]["values"], "chosen_runs": [r["run"] for r in rows[best]["runs"]]}
    atomic_write_bytes(out / "tune.json", (json.dumps(res, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out / "tune.md", render(res).encode())
    return res
