"""DSKD (Yao, dual-student KD) against RD4AD: model complexity (paper's Table 6), quality on MVTec AD
bottle and Magnetic Tile (paper's Tables 1, 2, 5) and the structure / DFE / map ablations (Tables 7–9).

Parts (``--part``):
- ``complexity``: DSKD and RD, teachers resnet18 (the paper's) and efficientnet_lite0 (the library's
  default). Random weights: parameter counts, FLOPs and latency do not depend on weight values.
  Parameters (total, trainable); FLOPs of the inference path (``anomaly_map``: T + S_e + DFE + S_d
  for DSKD) at 256×256 with ``torch.utils.flop_counter.FlopCounterMode`` (convs and matmuls; MACs =
  FLOPs / 2, what thop, and so likely the paper, calls "FLOPs"); CPU latency per image of
  ``predict`` (map + blur + max) at batch 1, ``torch.set_num_threads(2)`` (and 1), median of
  ``--latency-reps`` after 5 warm-up calls; peak memory: in a fresh subprocess, the process's peak
  RSS (VmHWM, reset after the imports) while building the model and running 3 ``predict`` calls,
  minus its RSS after importing torch (weights + activations + allocator, as a process needs them).
  Writes ``benchmarks/results/dskd_complexity.md``.
- ``main``: DSKD vs RD, same teacher, epochs, batch size 16 and image size (MVTec AD bottle at 256 px,
  Magnetic Tile at 128 px, the paper's setting), paired over seeds, from the main benchmark's
  ``benchmarks/results/main/results.json`` (``benchmarks/run_main.sh`` trains every method under one
  protocol; this part trains nothing). Writes ``benchmarks/results/dskd_main.md``.
- ``ablation``: on bottle, ``--seeds`` seeds (default 1: seed 0): structures DS / T-E / T-D / E-D (Table 7), DFE on/off
  (Table 8), and maps M1 / M2 / M3 / all (Table 9; inference only, from the DS run). The paper's
  ablation numbers are MVTec AD means over 15 categories, ours are bottle only. Writes
  ``benchmarks/results/dskd_ablation.md``.
``--quick``: 1 seed, 1 epoch, 64 px, 3 latency repeats; results go to ``benchmarks/runs/dskd-quick/``
(nothing under results/ is touched) — a smoke test of the whole pipeline, not a measurement.

Run from the repository root. The committed 10-epoch ablation (2 seeds) takes its DS rows from the main
benchmark's DSKD runs (benchmarks/run_main.sh) and trained the other settings in parallel processes of
one thread each (about 1 h on the 2-core CPU), then a last pass that reuses every finished run and
writes the table:
    B="PYTHONPATH=src .venv/bin/python benchmarks/bench_dskd.py --part ablation --epochs 10 --seeds 2"
    $B --configs=-TE,-TD &  $B --configs=-ED &  $B --configs=-nodfe &  wait
    $B --threads 2 --ds-runs benchmarks/runs/main/runs/mvtec_ad_bottle/dskd
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from distillad import api, create_model
from distillad.data import find_data_root

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PAPER_TABLE6 = {"latency_s": 0.217, "gflops": 6.17, "params_m": 39.3, "memory_mb": 105}
# Yao, Tables 1, 2, 5 (ResNet18 teacher, 200 epochs): I-AUROC, P-AUROC, PRO in %
PAPER_QUALITY = {"bottle": (100.0, 98.7, 96.4), "magnetic_tile": (96.2, 83.3, 70.3)}
# Tables 7–9: MVTec AD means over 15 categories
PAPER_ABLATION = {"DS": (98.5, 97.6, 93.5), "T-E": (95.3, 96.1, 89.4), "T-D": (97.8, 97.1, 93.1),
                  "E-D": (93.2, 94.6, 87.7), "DS, no DFE": (75.6, 89.6, 76.5), "maps M1": (96.0, 95.9, 88.0),
                  "maps M2": (96.5, 96.4, 91.0), "maps M3": (92.7, 94.2, 88.7), "maps all": (98.5, 97.5, 93.5)}
METRICS = ("image_auroc", "pixel_auroc", "aupro")
LATENCY_THREADS = [2, 1]  # 2 as for Table 6; 1 as well, steadier on a shared CPU (--latency-threads)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load}; "
            f"torch {torch.__version__}; {dt.date.today()}")


# --------------------------------------------------------------------------- complexity

def _rss_kb(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, from /proc, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _mem_probe(method: str, teacher: str, size: int) -> None:
    """Child process: print the peak-RSS rise (MB) from building ``method`` and 3 predict calls.

    Importing torch leaves a high-water mark above what a small model needs, so the peak is reset
    after the imports (``echo 5 > /proc/self/clear_refs``, Linux ≥ 4.0) and measured as VmHWM − VmRSS
    at that point; where that is not possible, ``ru_maxrss`` minus the RSS after the imports.
    """
    torch.set_num_threads(2)
    base = _rss_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        peak = lambda: _rss_kb("VmHWM")  # noqa: E731
    except OSError:
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    model = create_model(method, teacher=teacher, teacher_weights="random").eval()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        for _ in range(3):
            model.predict(x)
    print(json.dumps({"peak_mb": (peak() - base) / 1024}))


def measure(method: str, teacher: str, size: int, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(method, teacher=teacher, teacher_weights="random").eval()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    x = torch.rand(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.anomaly_map(x)
    threads, latency = torch.get_num_threads(), {}
    with torch.no_grad():
        for n in LATENCY_THREADS:
            torch.set_num_threads(n)
            times = []
            for i in range(5 + reps):
                t0 = time.perf_counter()
                model.predict(x)
                if i >= 5:
                    times.append(time.perf_counter() - t0)
            latency[n] = 1e3 * statistics.median(times)
    torch.set_num_threads(threads)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    probe = subprocess.run([sys.executable, __file__, "--mem-probe", method, teacher, str(size)],
                           capture_output=True, text=True, check=True, env=env)
    return {"params_m": total / 1e6, "trainable_m": trainable / 1e6, "gflops": fc.get_total_flops() / 1e9,
            "gmacs": fc.get_total_flops() / 2e9, "latency_ms": latency,
            "memory_mb": json.loads(probe.stdout.strip().splitlines()[-1])["peak_mb"]}


def part_complexity(args: argparse.Namespace, out: Path) -> str:
    size, reps = 256, (3 if args.quick else args.latency_reps)
    lat = " | ".join(f"CPU ms/img b1, {n} thr" for n in LATENCY_THREADS)
    rows = [f"| teacher | method | params (M) | trainable (M) | GFLOPs | GMACs | {lat} | peak RSS rise (MB) |",
            "|---|---|---|---|---|---|" + "---|" * len(LATENCY_THREADS) + "---|"]
    ratios = []
    for teacher in ("efficientnet_lite0",) if args.quick else ("resnet18", "efficientnet_lite0"):
        r = {m: measure(m, teacher, size, reps) for m in ("dskd", "rd")}
        for m, v in r.items():
            ms = " | ".join(f"{v['latency_ms'][n]:.0f}" for n in LATENCY_THREADS)
            rows.append(f"| {teacher} | {m} | {v['params_m']:.2f} | {v['trainable_m']:.2f} | {v['gflops']:.2f} | "
                        f"{v['gmacs']:.2f} | {ms} | {v['memory_mb']:.0f} |")
            print(rows[-1], flush=True)
        d, b = r["dskd"], r["rd"]
        ms = " | ".join(f"{d['latency_ms'][n] / b['latency_ms'][n]:.2f}" for n in LATENCY_THREADS)
        ratios.append(f"| {teacher} | {d['params_m'] / b['params_m']:.2f} | {d['gflops'] / b['gflops']:.2f} | "
                      f"{ms} | {d['memory_mb'] / max(b['memory_mb'], 1e-9):.2f} |")
    p = PAPER_TABLE6
    text = "\n".join([
        "# DSKD model complexity (benchmarks/bench_dskd.py --part complexity)", "",
        f"Machine: {machine()}.", "",
        f"Input {size}×{size}, random weights (counts and costs do not depend on weight values). "
        "params: teacher included; trainable: students (+ DFE / OCBE). FLOPs of the inference path "
        "(`anomaly_map`; DSKD: T + S_e + DFE + S_d) by `torch.utils.flop_counter.FlopCounterMode` (convs, "
        "matmuls); GMACs = GFLOPs / 2. Latency: `predict` (map + Gaussian blur + max) at batch 1, "
        f"`torch.set_num_threads(n)` for n = {', '.join(map(str, LATENCY_THREADS))}, median of {reps} calls after "
        "5 warm-up calls, on a 2-core CPU shared with other jobs (see the load average: absolute times are "
        "inflated and noisy, ratios measured back to back are steadier). Peak RSS rise: in a fresh "
        "subprocess, the peak resident memory (VmHWM, reset after the imports) while building the model and "
        "running 3 `predict` calls, minus the resident memory after importing torch and distillad: weights + "
        "activations + allocator, as a process needs them.", "",
        *rows, "",
        *([f"**Caution**: the load average ({os.getloadavg()[0]:.1f}) exceeds the {os.cpu_count()} cores: with "
           "more threads than free cores, OpenMP workers wait on each other and the multi-thread columns "
           "measure contention (times vary 5–20× from call to call), not the model; use the 1-thread column, "
           "or rerun `--part complexity` on an idle machine.", ""]
          if os.getloadavg()[0] > 0.75 * (os.cpu_count() or 1) else []),
        "DSKD / RD ratios:", "",
        f"| teacher | params | FLOPs | {' | '.join(f'latency {n} thr' for n in LATENCY_THREADS)} | memory |",
        "|---|---|---|" + "---|" * len(LATENCY_THREADS) + "---|", *ratios, "",
        f"Paper's Table 6 (DSKD, ResNet18, 256 px, Intel i7 @ 2.3 GHz): {p['latency_s'] * 1e3:.0f} ms, "
        f"{p['gflops']} G FLOPs, {p['params_m']} M parameters, {p['memory_mb']} MB.", "",
        "Reconciliation with the paper: its 6.17 G are MACs (thop's convention) of this inference path "
        "with a two-BasicBlock DFE residual stage (our 6.16 GMACs); its 39.3 M parameters are what RD4AD's "
        "reference code holds, which builds full ResNet18s (with the unused layer4 and fc, 8.91 M each) for T "
        "and S_e and an unused 1×1 `conv4` + BN (0.53 M) in the bottleneck: 20.95 + 2 × 8.91 + 0.53 = 39.29 M. "
        "We build only the stages used (see tests/models/test_dskd.py::test_parameters_and_flops_match_table6).",
    ]) + "\n"
    (out / "dskd_complexity.md").write_text(text)
    return text


# --------------------------------------------------------------------------- training runs

def _size(args: argparse.Namespace) -> int:
    """The ablation's image size: bottle at 256 px (64 px with --quick)."""
    return 64 if args.quick else 256


def run_one(args: argparse.Namespace, runs: Path, seed: int, tag: str = "", **kw: Any) -> dict[str, float]:
    """Train (or resume / reuse) and test one DSKD setting on bottle; returns its metrics and training seconds."""
    run = runs / "bottle" / f"dskd{tag}" / f"seed{seed}"
    metrics_file = run / "metrics.json"
    t0 = time.perf_counter()
    spec = api.train("dskd", args.data / "mvtec_ad", run, category="bottle", epochs=args.epochs, batch_size=16,
                     image_size=_size(args), seed=seed, device=args.device, resume=True, progress=False,
                     teacher=args.teacher, **kw)  # resume=True: a finished run returns at once
    if not metrics_file.exists() or metrics_file.stat().st_mtime < (run / "run.json").stat().st_mtime:
        api.test(run, device=args.device, progress=False, n_overlays=4)
    m = json.loads(metrics_file.read_text())["metrics"]
    m["train_s"] = sum(h["seconds"] for h in spec["history"])
    print(f"bottle dskd{tag:8s} seed {seed}: I {m['image_auroc']:.3f} P {m['pixel_auroc']:.3f} "
          f"PRO {m['aupro']:.3f} (train {m['train_s']:.0f} s; wall {time.perf_counter() - t0:.0f} s)", flush=True)
    return m


def _stat(values: list[float]) -> str:
    v = [100 * x for x in values]
    return f"{v[0]:.1f}" if len(v) == 1 else f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}"


def _header(args: argparse.Namespace, what: str) -> list[str]:
    return [f"# {what} (benchmarks/bench_dskd.py)", "", f"Machine: {machine()}; torch threads {args.threads}.", "",
            f"Protocol: teacher {args.teacher} (ImageNet weights), {args.epochs} epochs, batch 16, last-epoch model, "
            "DSKD's paper optimiser (Adam lr 0.001, betas (0.5, 0.999)); MVTec AD bottle at "
            f"{_size(args)} px; thresholds from the validation split of good training images; metrics in %: "
            "I-AUROC, P-AUROC, AUPRO (FPR ≤ 0.3)."
            + (" **--quick: 1 epoch, 64 px, a smoke test only.**" if args.quick else ""),
            ""]


def part_main(args: argparse.Namespace, runs: Path, out: Path) -> str:
    """DSKD vs RD, paired over seeds, from the main benchmark (benchmarks/run_main.sh), which trains every
    method under one protocol; this part trains nothing and adds the paper's figures."""
    import paired

    src = ROOT / "results" / "main" / "results.json"
    if not src.exists():
        sys.exit(f"{src}: missing; run benchmarks/run_main.sh first")
    results = json.loads(src.read_text())
    text = paired.render(results, "rd", "dskd", "DSKD vs RD", "benchmarks/results/main/results.json")
    rows = ["", "The paper's figures (ResNet18 teacher, 200 epochs; not our protocol, so not a reproduction check):", "",
            "| dataset | I-AUROC | P-AUROC | PRO |", "|---|---|---|---|"]
    rows += [f"| {d} | {i} | {p} | {pro} |" for d, (i, p, pro) in PAPER_QUALITY.items()]
    text += "\n".join(rows) + "\n"
    (out / "dskd_main.md").write_text(text)
    return text


def reuse_run(args: argparse.Namespace, run: Path, seed: int) -> Path:
    """Check that a finished run made elsewhere (the main benchmark's DSKD runs) follows this protocol:
    same method, default settings but the teacher, epochs, batch 16, bottle at 256 px, same seed."""
    spec = json.loads((run / "run.json").read_text())
    d = spec["data"]
    folder = Path(d["path"]) / (d.get("category") or "")
    want_folder = (args.data / "mvtec_ad" / "bottle").resolve()
    got = (spec["method"], spec["model_kwargs"], spec["train"]["epochs"], spec["train"]["batch_size"],
           spec["train"]["image_size"], spec["train"]["seed"], folder.resolve(), spec.get("finished"))
    want = ("dskd", {"teacher": args.teacher}, args.epochs, 16, _size(args), seed, want_folder, True)
    if got != want or not (run / "metrics.json").exists():
        sys.exit(f"--ds-runs: {run} is not a finished, tested run of this protocol (run: {got}; wanted: {want})")
    print(f"DS seed {seed}: reusing {run} (same protocol)", flush=True)
    return run


def part_ablation(args: argparse.Namespace, runs: Path, out: Path) -> str:
    from distillad.checkpoint import load_run
    from distillad.data import AnomalyDataset, load_samples
    from distillad.engine import infer, resolve_device
    from distillad.metrics import compute_metrics

    seeds = list(range(1 if args.quick else args.seeds))
    configs = [("DS", "", {}), ("T-E", "-TE", {"structure": "T-E"}), ("T-D", "-TD", {"structure": "T-D"}),
               ("E-D", "-ED", {"structure": "E-D"}), ("DS, no DFE", "-nodfe", {"dfe": False})]
    if args.configs:
        wanted = set(args.configs.split(","))
        unknown = wanted - {tag or "DS" for _, tag, _ in configs}
        if unknown:
            sys.exit(f"--configs: unknown {sorted(unknown)}; choose from DS,-TE,-TD,-ED,-nodfe")
        configs = [c for c in configs if (c[1] or "DS") in wanted]
    ds_runs = {s: runs / "bottle" / "dskd" / f"seed{s}" for s in seeds}
    res: dict[str, dict[int, dict[str, float]]] = {}
    for name, tag, kw in configs:
        res[name] = {}
        for s in seeds:
            if not tag and args.ds_runs is not None:
                ds_runs[s] = reuse_run(args, args.ds_runs / f"seed{s}", s)
                res[name][s] = json.loads((ds_runs[s] / "metrics.json").read_text())["metrics"]
            else:
                res[name][s] = run_one(args, runs, s, tag, **kw)
    if args.configs:  # a partial pass (parallel training): the last, full pass writes the table
        return f"trained {', '.join(c[0] for c in configs)}"
    # Table 9: the DS runs with fewer stages in the map (inference only)
    map_sets = ("M1", "M2", "M3", "all")
    res.update({f"maps {maps}": {} for maps in map_sets})
    for s in seeds:
        model, spec = load_run(ds_runs[s], resolve_device(args.device))
        d = spec["data"]
        ds = AnomalyDataset(load_samples(d["path"], "test", d.get("category"), d.get("layout")),
                            image_size=spec["image_size"])
        for maps in map_sets:
            model.maps = maps
            r = infer(model, ds, 16, str(next(model.parameters()).device), progress=False)
            res[f"maps {maps}"][s] = compute_metrics(r["labels"].numpy(), r["scores"].numpy(),
                                                     r["masks"][:, 0].numpy().astype(bool), r["maps"][:, 0].numpy())
    rows = ["| setting | I-AUROC | P-AUROC | PRO | Δ vs DS (I / P / PRO, mean over seeds) "
            "| paper's (MVTec AD mean, ResNet18, 200 ep) |", "|---|---|---|---|---|---|"]
    for name, by_seed in res.items():
        cells = " | ".join(_stat([by_seed[s][k] for s in seeds]) for k in METRICS)
        delta = " / ".join(f"{100 * statistics.mean(by_seed[s][k] - res['DS'][s][k] for s in seeds):+.1f}"
                           for k in METRICS)
        rows.append(f"| {name}{' (DS runs)' if name.startswith('maps') else ''} | {cells} | "
                    f"{'–' if name in ('DS', 'maps all') else delta} | {' / '.join(map(str, PAPER_ABLATION[name]))} |")
    text = "\n".join([*_header(args, "DSKD ablations on MVTec AD bottle"),
                      f"Seeds {', '.join(map(str, seeds))}: mean ± sample std over seeds (one value with one seed); "
                      "differences smaller than the seed std are not meaningful. Structures: "
                      "T-E = T and S_e only (map T–S_e); T-D = T → DFE → S_d (map T–S_d); E-D = T teaches S_e, "
                      "S_e teaches S_d (map S_e–S_d); see models/dskd.py. The paper's columns are MVTec AD means "
                      "over 15 categories (Tables 7–9), not bottle. Training ran in separate --configs passes "
                      "(one torch thread each; commands in the docstring of benchmarks/bench_dskd.py), this pass "
                      "only reads the finished runs and scores the map variants.", "", *rows]) + "\n"
    (out / "dskd_ablation.md").write_text(text)
    return text


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--mem-probe":
        _mem_probe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("complexity", "main", "ablation", "all"), default="all")
    ap.add_argument("--quick", action="store_true",
                    help="1 seed, 1 epoch, 64 px; outputs under benchmarks/runs/dskd-quick")
    ap.add_argument("--seeds", type=int, default=1, help="ablation: seeds 0..N-1 of every setting")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--teacher", default="efficientnet_lite0")
    ap.add_argument("--data", type=Path, default=None, help="data root (default: DISTILLAD_DATA or ../shared/data)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for training and testing (default 1: on a shared CPU, waiting OpenMP "
                         "workers slow small convolutions down many times; use 2+ on an idle machine)")
    ap.add_argument("--configs", default=None,
                    help="ablation: train only these (comma list of DS,-TE,-TD,-ED,-nodfe) and write no table, so "
                         "that several processes can train in parallel; a last pass without it writes the table")
    ap.add_argument("--ds-runs", type=Path, default=None,
                    help="ablation: take the DS rows from the finished runs DIR/seed<N> (e.g. the main benchmark's "
                         "benchmarks/runs/main/runs/mvtec_ad_bottle/dskd) instead of training them again; "
                         "their protocol is checked")
    ap.add_argument("--latency-reps", type=int, default=30)
    ap.add_argument("--latency-threads", default="2,1", help="comma list of torch thread counts for latency")
    args = ap.parse_args()
    if args.quick:
        args.epochs = 1
    LATENCY_THREADS[:] = [int(n) for n in args.latency_threads.split(",")]
    torch.set_num_threads(args.threads)
    # one folder per teacher and budget, so that changing either never meets an incompatible run
    runs = ROOT / "runs" / ("dskd-quick" if args.quick else "dskd") / f"{args.teacher}-e{args.epochs}"
    out = runs if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    if args.part in ("complexity", "all"):
        print(part_complexity(args, out))
    if args.part in ("main", "ablation", "all"):
        args.data = args.data or find_data_root()
        if args.data is None:
            sys.exit("no data: set DISTILLAD_DATA or pass --data")
        if args.part in ("main", "all"):
            print(part_main(args, runs, out))
        if args.part in ("ablation", "all"):
            print(part_ablation(args, runs, out))


if __name__ == "__main__":
    main()
