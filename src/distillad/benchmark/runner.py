"""Running a benchmark: one run (train or resume with ``api.train``, evaluate with ``api.test``,
measure the costs of the model ``checkpoint.load_run`` rebuilds), and the loop over every
(category, model, seed) of a ``BenchmarkConfig`` that writes results.json, results.md and plots.

Scale out: ``shard=(i, n)`` runs a disjoint part of the grid (``shard_plan``), so n workers (a SLURM
array, a Kubernetes indexed Job) share one ``out``: each run writes only inside its own folder, its
``bench.json`` last (atomically), so a worker that dies leaves no run that looks finished, and a
rerun of the shard reuses finished runs and resumes the interrupted one; ``report_only`` merges."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .. import __version__, api
from ..checkpoint import atomic_write_json, load_run, read_json, read_run_spec, versions
from ..engine import resolve_device
from ..errors import CheckpointError, ConfigError
from ..outputs import ensure_folder
from ..progress import bar as progress_bar
from .categories import category_table, resolve_data
from .config import BenchmarkConfig
from .measure import MEMORY_METHOD, TIMING_METHOD, machine_info, measure_peak_memory, measure_throughput, same_machine
from .plots import plot_results
from .report import write_markdown
from .schema import METRICS, RESULTS_SCHEMA, SCHEMA_VERSION, validate
from .summary import compare_with_papers, summarize

__all__ = ["run_benchmark", "shard_plan"]


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → None, tuples → lists, numpy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _request(cfg: BenchmarkConfig, model: str, cat: dict[str, Any], seed: int) -> dict[str, Any]:
    """What the benchmark asks of one run (its identity for reuse): model, the requested keywords
    (not the full set run.json records), data, epochs, image size, seed and batch size."""
    req = {"model": model, "model_kwargs": cfg.keywords_for(model), "data": cat["path"], "epochs": cfg.epochs,
           "image_size": cat["image_size"], "seed": seed, "batch_size": cfg.batch_size}
    if cfg.textures_for(model) is not None:  # absent otherwise: a method without synthesis is reused
        req["textures"] = cfg.textures_for(model)
    return json.loads(json.dumps(_clean(req), sort_keys=True))


def _reusable(run_dir: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    """The run's bench.json when it records this request and the weights now in the folder."""
    if not ((run_dir / "bench.json").is_file() and (run_dir / "model.safetensors").is_file()):
        return None
    try:
        old = read_json(run_dir / "bench.json")
    except CheckpointError:
        return None
    sha = read_run_spec(run_dir).get("weights", {}).get("sha256")
    return old if old.get("request") == want and old.get("weights_sha256") == sha else None


def _train_and_test(cfg: BenchmarkConfig, model: str, cat: dict[str, Any], seed: int, run_dir: Path,
                    dev: torch.device) -> tuple[dict[str, Any], float | None]:
    """Train (or resume) with ``api.train``, evaluate with ``api.test`` unless metrics.json is newer
    than the weights; returns (metrics, training peak CUDA MB when training ran here)."""

    trained = not (read_run_spec(run_dir).get("finished") if (run_dir / "run.json").is_file() else False)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        api.train(model, cat["path"], run_dir, epochs=cfg.epochs, batch_size=cfg.batch_size,
                  image_size=cat["image_size"], seed=seed, device=str(dev), resume=True, progress=cfg.progress,
                  textures=cfg.textures_for(model), **cfg.keywords_for(model))
    except CheckpointError as e:
        raise CheckpointError(f"{e}\n(benchmark: {cfg.out} holds runs made with other settings; "
                              "choose another --out for these settings)") from None
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if trained and dev.type == "cuda" else None
    metrics_path = run_dir / "metrics.json"
    # weights or thresholds (``distillad calibrate`` rewrites run.json) newer than the metrics: test again
    newest = max((run_dir / n).stat().st_mtime for n in ("model.safetensors", "run.json"))
    if not metrics_path.is_file() or metrics_path.stat().st_mtime < newest:
        api.test(run_dir, device=str(dev), progress=cfg.progress)
    # a test split without masks (CIFAR-10 one-class) has no pixel metrics: blank (null), not missing
    return {**{k: None for k, _ in METRICS}, **read_json(metrics_path)["metrics"]}, peak


def _run_one(cfg: BenchmarkConfig, model: str, cat: dict[str, Any], seed: int, dev: torch.device,
             machine: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Train (or resume), test and measure one run; returns (bench record, whether anything was computed).
    A run whose bench.json matches the request is reused; measured on another machine, only its costs
    are measured again."""

    rel = Path("runs") / cat["slug"] / model / f"seed{seed}"
    run_dir = Path(cfg.out) / rel
    want = _request(cfg, model, cat, seed)
    old = _reusable(run_dir, want)
    if old is not None and same_machine(old.get("machine", {}), machine):
        return old, False
    metrics, train_peak = (old["metrics"], None) if old is not None else _train_and_test(cfg, model, cat, seed, run_dir, dev)

    net, spec = load_run(run_dir, dev)
    size = int(spec["image_size"])
    warm, reps1, reps16 = cfg.timing  # type: ignore[misc]
    ips1 = measure_throughput(net, size, 1, dev, warm, reps1)
    ips16 = measure_throughput(net, size, 16, dev, 1, reps16)
    memory = measure_peak_memory(net, size, 16, dev)
    if train_peak is not None:  # training (from where it resumed) ran in this process
        memory["train_peak_memory_mb"] = train_peak
    del net
    history = spec.get("history", [])
    secs = [float(h["seconds"]) for h in history if "seconds" in h]
    record = _clean({
        "category": cat["name"], "model": model, "seed": seed, "run_dir": str(rel), "request": want,
        "config": {**want, "batch_size": int(spec["train"]["batch_size"]), "epochs": int(spec["train"]["epochs"]),
                   "device": str(dev), "val_fraction": spec["data"].get("val_fraction")},
        "teacher": {"name": spec["teacher"]["name"], "weights_sha256": spec["teacher"]["weights_sha256"]},
        "weights_sha256": spec["weights"]["sha256"], "versions": spec.get("versions", {}),
        "calibration": spec.get("calibration", {}), "metrics": metrics,
        "timing": {"epochs": len(history), "train_seconds_total": sum(secs) if secs else None,
                   "seconds_per_epoch": statistics.fmean(secs) if secs else None,
                   "images_per_s_b1": ips1, "images_per_s_b16": ips16,
                   "warmup": warm, "repeats": reps1, "repeats_b16": reps16, "method": TIMING_METHOD},
        "memory": memory, "machine": machine, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    atomic_write_json(run_dir / "bench.json", record)
    return record, True


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _results(cfg: BenchmarkConfig, cats: list[dict[str, Any]], runs: list[dict[str, Any]], root: Path,
             dev: torch.device, machine: dict[str, Any]) -> dict[str, Any]:
    """The results.json content, checked against ``RESULTS_SCHEMA``."""

    models, seeds = list(cfg.models), list(cfg.seeds)  # type: ignore[arg-type]
    teachers = sorted({(r["teacher"]["name"], r["teacher"]["weights_sha256"]) for r in runs})
    summary = summarize(runs, [c["name"] for c in cats], models, seeds)
    results = _clean({
        "schema_version": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "library": {**versions(), "distillad": __version__}, "machine": machine,
        "protocol": {
            "models": models, "categories": cats, "seeds": seeds, "epochs": cfg.epochs,
            "batch_size": {m: next(r["config"]["batch_size"] for r in runs if r["model"] == m)
                           for m in models if any(r["model"] == m for r in runs)},
            "batch_size_requested": cfg.batch_size,
            "teachers": [{"name": n, "weights_sha256": h} for n, h in teachers],
            "model_kwargs": {m: cfg.keywords_for(m) for m in models}, "quick": bool(cfg.quick),
            "device": str(dev), "data_root": str(root), "textures": cfg.textures,
            "thresholds": "from the validation split of good training images (val_fraction 0.1); "
                          "last-epoch model; test images used only for the final metrics",
            "timing": TIMING_METHOD, "memory": MEMORY_METHOD,
        },
        "runs": runs, "summary": summary, "paper_comparison": compare_with_papers(summary, cats, models),
    })
    errors = validate(results, RESULTS_SCHEMA)
    if errors:  # a bug here, not the user's
        raise RuntimeError("results.json does not match RESULTS_SCHEMA:\n" + "\n".join(errors[:20]))
    return results


def shard_plan(plan: list[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Part ``i`` of ``n`` of the grid: every n-th run from the i-th, so the n parts are disjoint, cover
    the grid, and mix models and categories (balanced cost); the same for every worker given the same flags."""
    if shard is None:
        return list(plan)
    i, n = shard
    return [p for k, p in enumerate(plan) if k % n == i]


def _finished(cfg: BenchmarkConfig, plan: list[Any], say: Any) -> list[dict[str, Any]]:
    """--report-only: the bench.json of every run of ``plan`` that finished with this request (never re-measured)."""
    runs = []
    for c, m, s in plan:
        rec = _reusable(Path(cfg.out) / "runs" / c["slug"] / m / f"seed{s}", _request(cfg, m, c, s))
        if rec is None:
            say(f"report only: {c['name']} {m} seed{s} not finished, left out")
        else:
            runs.append(rec)
    if not runs:
        raise ConfigError(f"{cfg.out}: no finished runs to report")
    return runs


def _write_shard(cfg: BenchmarkConfig, runs: list[dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    """A shard's own summary file, written last: its presence means the whole shard finished."""
    i, n = cfg.shard  # type: ignore[misc]
    path = Path(cfg.out) / "shards" / f"shard-{i}-of-{n}.json"
    atomic_write_json(path, {"shard": [i, n], "runs": [r["run_dir"] for r in runs], "machine": machine,
                             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return {"shard": [i, n], "runs": runs, "file": str(path)}


def _run(cfg: BenchmarkConfig) -> dict[str, Any]:
    from tqdm.auto import tqdm


    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    disable = (not cfg.progress) if cfg.progress is not None else os.environ.get("DISTILLAD_PROGRESS", "1") == "0"
    say = (lambda msg: None) if cfg.progress is False else tqdm.write  # noqa: E731
    root, specs = resolve_data(cfg.data, cfg.quick, out, cfg.categories, say)
    cats = category_table(root, specs, int(cfg.image_size), cfg.image_size_for)  # type: ignore[arg-type]
    dev = resolve_device(cfg.device)
    machine = machine_info(dev)

    plan = [(c, m, s) for c in cats for m in cfg.models for s in cfg.seeds]  # type: ignore[union-attr]
    if cfg.report_only:
        return _report(cfg, cats, _finished(cfg, plan, say), root, dev, machine)
    # each run writes only inside its own folder, so shards given disjoint parts never write the same file
    return _run_plan(cfg, cats, shard_plan(plan, cfg.shard), root, dev, machine, disable)


@contextlib.contextmanager
def _shard_lock(out: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """One worker per shard: a second worker given the same ``--shard I/N`` and ``--out`` is refused at
    once (``filelock``: an OS lock, released when its process dies, so a killed worker's shard can rerun)."""
    if shard is None:
        yield
        return
    from filelock import FileLock, Timeout

    i, n = shard
    ensure_folder(out / "shards")  # a read-only or full disk: one clear error
    lock = FileLock(str(out / "shards" / f"shard-{i}-of-{n}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"{out}: shard {i}/{n} is already running in another process (it holds "
                          f"shards/shard-{i}-of-{n}.lock); give each worker its own --shard I/N") from None
    try:
        yield
    finally:
        lock.release()


def _run_plan(cfg: BenchmarkConfig, cats: list[dict[str, Any]], plan: list[Any], root: Path, dev: torch.device,
              machine: dict[str, Any], disable: bool) -> dict[str, Any]:
    """Run ``plan`` (this worker's part of the grid) with a progress bar and ETA; report or write the shard file."""
    bar = progress_bar(total=len(plan), desc="benchmark", unit="run", dynamic_ncols=True, disable=disable, position=0,
                       bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs [{elapsed}{postfix}]")
    runs, spent, computed = [], 0.0, 0
    for i, (c, m, s) in enumerate(plan):
        bar.set_postfix_str(f"{c['name']} {m} seed{s}, ETA " +
                            (_hms(spent / computed * (len(plan) - i)) if computed else "?"))
        t0 = time.perf_counter()
        rec, did = _run_one(cfg, m, c, s, dev, machine)
        if did:
            spent += time.perf_counter() - t0
            computed += 1
        runs.append(rec)
        bar.update(1)
    bar.set_postfix_str("done")
    bar.close()
    if cfg.shard is not None:  # results.json is every shard's: --report-only writes it
        return _write_shard(cfg, runs, machine)
    return _report(cfg, cats, runs, root, dev, machine)


def _report(cfg: BenchmarkConfig, cats: list[dict[str, Any]], runs: list[dict[str, Any]], root: Path,
            dev: torch.device, machine: dict[str, Any]) -> dict[str, Any]:
    """Write results.json, results.md and the plots of ``runs``; return the results.json content."""
    out = Path(cfg.out)
    results = _results(cfg, cats, runs, root, dev, machine)
    atomic_write_json(out / "results.json", results)
    write_markdown(results, out / "results.md")
    if cfg.plots:
        plot_results(results, out, device=str(dev))
    return results


def run_benchmark(config: BenchmarkConfig | None = None, /, **fields: Any) -> dict[str, Any]:
    """Train, test and measure every (category, model, seed) of ``config`` (or of a
    ``BenchmarkConfig(**fields)``; with both, ``fields`` replace the config's); write results.json,
    results.md and plots into its ``out``; return the results.json content. With ``shard=(i, n)`` only
    part i of the grid runs and only ``shards/shard-i-of-n.json`` is written: {"shard", "runs", "file"}."""
    cfg = dataclasses.replace(config, **fields) if config is not None else BenchmarkConfig(**fields)
    cfg = cfg.resolved()
    with _torch_threads(cfg.threads), _shard_lock(Path(cfg.out), cfg.shard):  # report_only has no shard
        return _run(cfg)
