"""RD vs RD + variance loss (``rd_var``, Song, Buayai & Mao) on MVTec AD bottle and Magnetic Tile.

Parts (``--part``):
- ``main``: rd and rd_var (paper defaults: λ = 1, block D1, cosine), same budget (epochs, batch,
  image size, teacher), ``--seeds`` seeds each → mean ± std of I-AUROC, P-AUROC, AUPRO and
  s/epoch, the paired (same-seed) difference with its 95 % CI, and the training-step overhead
  measured fairly (``timing``, below).
- ``timing``: time of one training step of rd and rd_var in the same process, interleaved
  (order alternating), median of ``--timing-repeats``, plus the cost of L_var alone.
- ``ablations``: paper Tables III–V on bottle, 1 seed: distance (cosine/l1/l2), batch size
  (4/8/16/32), block (D1/D2/D3/all).
- ``lambda``: λ ∈ ``--lambdas`` (rd_var's ``variance_weight``; λ = 0 trains exactly as rd) on
  bottle, 1 seed; λ is *chosen on validation good images only* by the library's
  ``distillad.tune`` (= ``distillad tune --grid variance_weight=...``; the held-out 10 % of
  train/good that api.train calibrates on): criterion = mean of image and pixel AUROC on those
  images vs. the same images with DRAEM-style synthetic defects (``draem`` preset: Perlin mask,
  DTD texture at ≥ 50 % opacity; fixed seed, identical for every λ). AUROC is rank-based, so it
  is comparable although λ changes the scale of the scores. Ties go to the lower validation RD
  loss L_model (``tie_loss="loss_rd"``: the cosine loss without L_var, also reported: it alone
  would favour small λ, being what λ = 0 optimises). Test metrics are computed afterwards for
  every λ, play no part in the choice, and the chosen one is marked.

Runs go to ``--runs`` (gitignored); finished runs are skipped (api.train(resume=True) returns
early), interrupted ones continue. Tables: ``--out``/results.md (+ results.json; parts run
separately accumulate). ``--quick``: 64 px, 2 epochs, 1 seed, a 24-image bottle subset, every
part, into ``benchmarks/runs/rd_var-quick`` (a check that the script works, not a result).

Full run (from the repository root), 28 trainings of 10 epochs; ≈ 2.5–3 h with one thread
(bottle 256 px ≈ 6.5 min a run, Magnetic Tile 128 px ≈ 4 min; measured with other jobs on the
2 cores: there, one torch thread is several times faster than two, which spin-wait):
    PYTHONPATH=src .venv/bin/python benchmarks/bench_rd_var.py --part all --mt-image-size 128 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillad import api
from distillad.data import AnomalyDataset, find_data_root, load_samples, train_val_split
from distillad.engine import resolve_device, seed_everything
from distillad.losses import variance_loss
from distillad.registry import create_model
from distillad.tune import tune

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # also when loaded by path (tests/test_tune.py)
from _common import command_line  # noqa: E402

VAR = {"variance_weight": 1.0, "variance_block": "D1", "variance_distance": "cosine"}  # rd_var defaults
DATASETS = {"bottle": ("mvtec_ad", "bottle"), "magnetic_tile": ("magnetic_tile", None)}
# Song, Buayai & Mao: Table I (bottle; MVTec mean) and Tables III–V (MVTec means, I-AUROC / P-AUROC)
PAPER = {"bottle": {"rd": (100.0, 98.7), "rd_var": (100.0, 98.9)}, "mvtec_mean": {"rd": (98.5, 97.8), "rd_var": (99.2, 98.0)},
         "distance": {"cosine": (99.19, 97.98), "l1": (56.44, 63.63), "l2": (52.93, 61.62)},
         "batch_size": {4: (97.87, 97.21), 8: (99.14, 97.98), 16: (99.19, 97.98), 32: (99.03, 97.91)},
         "block": {"D1": (99.19, 97.98), "D2": (99.0, 97.78), "D3": (99.08, 97.98), "all": (98.63, 97.71)}}
METRICS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO"))


# ----------------------------------------------------------------------------- runs

def data_of(args: argparse.Namespace, name: str) -> tuple[Path, str | None, int]:
    folder, category = DATASETS.get(name, ("mvtec_ad", name))
    size = args.mt_image_size if name == "magnetic_tile" and args.mt_image_size else args.image_size
    return args.data_root / folder, category, size


def run_one(args: argparse.Namespace, dataset: str, model: str, kw: dict[str, Any], seed: int,
            batch_size: int = 16) -> dict[str, Any]:
    """Train (or skip/resume) and test one configuration; returns its metrics and s/epoch."""
    path, category, size = data_of(args, dataset)
    kw = {"teacher": args.teacher, **kw} if args.teacher else kw
    tag = "-".join(f"{v}" for v in kw.values()) or "base"
    out = args.runs / dataset / f"{model}-{tag}-bs{batch_size}-e{args.epochs}-px{size}-s{seed}"
    t0 = time.perf_counter()
    api.train(model, path, out, category=category, epochs=args.epochs, batch_size=batch_size,
              image_size=size, seed=seed, device=args.device, resume=True, progress=False, **kw)
    metrics, s_per_epoch = tested(args, out)
    row = {"dataset": dataset, "model": model, **kw, "batch_size": batch_size, "image_size": size, "seed": seed, "run": str(out),
           "s_per_epoch": s_per_epoch, **{k: 100 * metrics[k] for k, _ in METRICS}}
    print(f"  {out.name}: " + " ".join(f"{n} {row[k]:.2f}" for k, n in METRICS)
          + f" | {row['s_per_epoch']:.1f} s/epoch | {time.perf_counter() - t0:.0f} s", flush=True)
    return row


def tested(args: argparse.Namespace, out: Path) -> tuple[dict[str, float], float]:
    """(test metrics, mean s/epoch) of a finished run; its test is cached in metrics.json."""
    metrics_file = out / "metrics.json"  # a finished run folder is never retrained, so its test stands
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())["metrics"]
    else:
        metrics = api.test(out, device=args.device, progress=False, n_overlays=0)["metrics"]
    secs = [h["seconds"] for h in json.loads((out / "run.json").read_text()).get("history", [])]
    return metrics, statistics.mean(secs) if secs else math.nan


# ----------------------------------------------------------------------------- timing

def step_timing(args: argparse.Namespace, dataset: str, batch_size: int = 16) -> dict[str, Any]:
    """Median time of one optimiser step of rd and rd_var, same process, same batch, interleaved."""
    path, category, size = data_of(args, dataset)
    train, _ = train_val_split(load_samples(path, "train", category), 0.1, 0)
    ds = AnomalyDataset(train[:batch_size], image_size=size)
    dev = resolve_device(args.device)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))]).to(dev)
    models = {}
    for name, kw in (("rd", {}), ("rd_var", VAR)):
        seed_everything(0)
        m = create_model(name, **({"teacher": args.teacher, **kw} if args.teacher else kw)).to(dev).train()
        models[name] = (m, m.build_optimizer(m.trainable_parameters()))

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(name: str) -> float:
        m, opt = models[name]
        sync()
        t0 = time.perf_counter()
        loss = m.loss({"image": x})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t0

    for name in models:  # warm-up
        step(name)
    times: dict[str, list[float]] = {"rd": [], "rd_var": []}
    ratios = []
    for r in range(args.timing_repeats):
        for name in (("rd", "rd_var") if r % 2 == 0 else ("rd_var", "rd")):
            times[name].append(step(name))
        ratios.append(times["rd_var"][-1] / times["rd"][-1])
    _, s = models["rd_var"][0](x)  # L_var alone, forward + backward on the D1 features
    f = s[0].detach().requires_grad_(True)
    lv = []
    for _ in range(max(5, args.timing_repeats)):
        sync()
        t0 = time.perf_counter()
        variance_loss(f).backward()
        sync()
        lv.append(time.perf_counter() - t0)
    q = np.percentile(ratios, [25, 75])
    out = {"dataset": dataset, "image_size": size, "batch_size": len(x), "repeats": args.timing_repeats,
           "rd_step_s": statistics.median(times["rd"]), "rd_var_step_s": statistics.median(times["rd_var"]),
           "overhead_pct": 100 * (statistics.median(ratios) - 1), "overhead_iqr_pct": [100 * (q[0] - 1), 100 * (q[1] - 1)],
           "lvar_ms": 1000 * statistics.median(lv)}
    out["lvar_share_pct"] = 100 * out["lvar_ms"] / 1000 / out["rd_step_s"]
    print(f"  timing {dataset}: rd {out['rd_step_s']:.3f} s, rd_var {out['rd_var_step_s']:.3f} s/step, "
          f"overhead {out['overhead_pct']:+.2f} % (IQR {q[0] * 100 - 100:+.2f}..{q[1] * 100 - 100:+.2f}), "
          f"L_var alone {out['lvar_ms']:.2f} ms", flush=True)
    return out


# ----------------------------------------------------------------------------- parts

def part_main(args: argparse.Namespace) -> dict[str, Any]:
    rows = [run_one(args, d, m, kw, seed) for d in args.datasets for seed in args.seed_list
            for m, kw in (("rd", {}), ("rd_var", VAR))]
    return {"rows": rows, "timing": part_timing(args)["timing"]}


def part_timing(args: argparse.Namespace) -> dict[str, Any]:
    return {"timing": [step_timing(args, d) for d in args.datasets]}


def part_ablations(args: argparse.Namespace) -> dict[str, Any]:
    d, s = args.ablation_dataset, 0
    rows = {"rd": [run_one(args, d, "rd", {}, s)],
            "distance": [run_one(args, d, "rd_var", {**VAR, "variance_distance": x}, s) for x in ("cosine", "l1", "l2")],
            "batch_size": [run_one(args, d, "rd_var", VAR, s, bs) for bs in (4, 8, 16, 32)],
            "block": [run_one(args, d, "rd_var", {**VAR, "variance_block": x}, s) for x in ("D1", "D2", "D3", "all")]}
    return {"dataset": d, "seed": s, "rows": rows}


def part_lambda(args: argparse.Namespace) -> dict[str, Any]:
    """λ chosen by ``distillad.tune`` on validation images only; then every λ's run is tested."""
    d = args.ablation_dataset
    path, category, size = data_of(args, d)
    dtd = args.data_root / "dtd" / "images"  # textures of the validation defects
    kw = {"teacher": args.teacher} if args.teacher else {}
    res = tune("rd_var", path, args.runs / d / f"lambda-tune-bs16-e{args.epochs}-px{size}",
               grid={"variance_weight": args.lambdas}, seeds=range(args.lambda_seeds), synthesis="draem",
               tie_loss="loss_rd", progress=False, category=category, epochs=args.epochs, batch_size=16,
               image_size=size, device=args.device, textures=dtd if dtd.is_dir() else None, **kw)
    return lambda_part(args, d, res)


def lambda_part(args: argparse.Namespace, dataset: str, res: dict[str, Any]) -> dict[str, Any]:
    """The λ part's rows from a tune result: validation numbers in %, and each run's test metrics."""
    rows = []
    for r in res["rows"]:
        for run in r["runs"]:
            metrics, s_per_epoch = tested(args, Path(run["run"]))
            rows.append({"dataset": dataset, "model": "rd_var", "lambda": r["values"]["variance_weight"],
                         "seed": run["seed"], "run": run["run"], "s_per_epoch": s_per_epoch,
                         **{k: 100 * metrics[k] for k, _ in METRICS}, "val_l_model": run["val_loss_rd"],
                         "val_syn_iauroc": 100 * run["image_auroc"], "val_syn_pauroc": 100 * run["pixel_auroc"],
                         "val_criterion": 100 * run["criterion"]})
    by_loss = min(res["rows"], key=lambda r: r["val_loss_rd"])["values"]["variance_weight"]
    return {"dataset": dataset, "rows": rows, "chosen": res["chosen"]["variance_weight"],
            "chosen_by_val_l_model_alone": by_loss}


# ----------------------------------------------------------------------------- tables

def ms(xs: list[float], digits: int = 2) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "–"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else f"{xs[0]:.{digits}f}"


def paired(rows: list[dict], dataset: str, key: str) -> tuple[float, float, float, int]:
    """Mean rd_var − rd difference over seeds, half-width of its 95 % t interval, p-value, n."""
    from paired import paired_stats  # benchmarks/paired.py

    a = {r["seed"]: r[key] for r in rows if r["dataset"] == dataset and r["model"] == "rd"}
    b = {r["seed"]: r[key] for r in rows if r["dataset"] == dataset and r["model"] == "rd_var"}
    st = paired_stats(a, b)
    return st["diff"], st["half"], st["p"], int(st["n"])


def render(res: dict[str, Any], meta: dict[str, Any]) -> str:
    L = ["# RD vs RD + variance loss (rd_var)\n", f"Generated by `{meta['command']}` on {meta['date']}",
         f"({meta['machine']}; torch {torch.__version__}, {torch.get_num_threads()} threads). Teacher: "
         f"{meta['teacher']}; Adam lr 0.005; {meta['epochs']} epochs (the papers: 200), batch 16 unless said; "
         "metrics in %, last-epoch model. rd_var: λ = 1, block D1, cosine (see models/rd_var.py).\n"]
    if "main" in res:
        rows = res["main"]["rows"]
        L += ["## Main: RD vs RD + L_var (mean ± std over seeds)\n",
              "| dataset | px | model | seeds | I-AUROC | P-AUROC | AUPRO | s/epoch (run logs) | vs rd |",
              "|---|---|---|---|---|---|---|---|---|"]
        for d in dict.fromkeys(r["dataset"] for r in rows):
            ref = statistics.mean(r["s_per_epoch"] for r in rows if r["dataset"] == d and r["model"] == "rd")
            for m in ("rd", "rd_var"):
                rs = [r for r in rows if r["dataset"] == d and r["model"] == m]
                rel = 100 * (statistics.mean(r["s_per_epoch"] for r in rs) / ref - 1)
                L.append(f"| {d} | {rs[0]['image_size']} | {m} | {len(rs)} | " + " | ".join(ms([r[k] for r in rs]) for k, _ in METRICS)
                         + f" | {ms([r['s_per_epoch'] for r in rs], 1)} | {rel:+.1f} % |")
        L += ["", "Paired difference rd_var − rd (same seed = same initialisation and data order), "
              "mean with 95 % t-interval, two-sided paired t-test:\n",
              "| dataset | metric | Δ (points) | 95 % CI | p | verdict |", "|---|---|---|---|---|---|"]
        for d in dict.fromkeys(r["dataset"] for r in rows):
            for k, n in METRICS + (("s_per_epoch", "s/epoch"),):
                m, h, p, cnt = paired(rows, d, k)
                vals = [r[k] for r in rows if r["dataset"] == d]
                verdict = ("n < 2" if cnt < 2 else "both at 100 (ceiling)" if k != "s_per_epoch" and min(vals) == 100
                           else "beyond seed noise" if p < 0.05 else "within seed noise")
                L.append(f"| {d} | {n} | {m:+.2f} | ±{h:.2f} | {p:.3f} | {verdict} |")
        L += ["", "Paper (Table I; WideResNet50-2 teacher, 225 px, epochs not stated): bottle RD 100 / 98.7 → RD+L_var 100 / 98.9 (I / P-AUROC); "
              "MVTec mean 98.5 / 97.8 → 99.2 / 98.0. Magnetic Tile is not in the paper.\n"]
    if "timing" in res or "main" in res:
        timing = res.get("timing", res.get("main", {})).get("timing", [])
        L += ["## Training-time overhead (same process, interleaved, median)\n",
              "| dataset | px | batch | repeats | rd s/step | rd_var s/step | overhead (median of paired ratios) | IQR | L_var fwd+bwd | L_var / rd step |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for t in timing:
            L.append(f"| {t['dataset']} | {t['image_size']} | {t['batch_size']} | {t['repeats']} | {t['rd_step_s']:.3f} | "
                     f"{t['rd_var_step_s']:.3f} | {t['overhead_pct']:+.2f} % | {t['overhead_iqr_pct'][0]:+.2f} .. "
                     f"{t['overhead_iqr_pct'][1]:+.2f} % | {t['lvar_ms']:.2f} ms | {t['lvar_share_pct']:.3f} % |")
        L += ["", "Target ≤ 4 % (paper Table II: 1.5 %). The step ratio on a shared CPU is noisy; the cost of L_var "
              "itself (last column) is the noise-free part of the overhead.\n"]
    if "ablations" in res:
        a = res["ablations"]
        L += [f"## Ablations on {a['dataset']} (1 seed: seed {a['seed']}; differences smaller than the main table's "
              "seed std are not meaningful)\n", "Paper columns: MVTec means (15 categories), I / P-AUROC.\n"]
        rd = a["rows"]["rd"][0]
        main_rows = [r for r in res.get("main", {}).get("rows", []) if r["dataset"] == a["dataset"] and r["model"] == "rd_var"]
        if len(main_rows) > 1:
            L.append("Seed noise yardstick (main table, rd_var on this dataset, std over seeds): "
                     + ", ".join(f"{n} {statistics.stdev(r[k] for r in main_rows):.2f}" for k, n in METRICS) + ".\n")
        for key, col in (("distance", "variance_distance"), ("batch_size", "batch_size"), ("block", "variance_block")):
            L += [f"### {key.replace('_', ' ')}\n", f"| {key} | I-AUROC | P-AUROC | AUPRO | s/epoch | paper I / P |",
                  "|---|---|---|---|---|---|",
                  f"| rd (no L_var, batch 16) | {rd['image_auroc']:.2f} | {rd['pixel_auroc']:.2f} | {rd['aupro']:.2f} | "
                  f"{rd['s_per_epoch']:.1f} | 98.5 / 97.8 |"]
            for r in a["rows"][key]:
                pi, pp = PAPER[key][r[col]]
                L.append(f"| {r[col]} | {r['image_auroc']:.2f} | {r['pixel_auroc']:.2f} | {r['aupro']:.2f} | "
                         f"{r['s_per_epoch']:.1f} | {pi} / {pp} |")
            L.append("")
    if "lambda" in res:
        lam = res["lambda"]
        L += [f"## λ sweep on {lam['dataset']} (λ = 0 trains as rd), chosen on validation good images only "
              "(`distillad tune`)\n",
              "Criterion: mean of image and pixel AUROC on the validation good images vs. the same images with "
              "synthetic defects (higher is better; ties → lower val L_model). Test metrics are reported for every "
              "λ but play no part in the choice.\n",
              "| λ | val criterion | val syn I / P-AUROC | val L_model | test I-AUROC | test P-AUROC | test AUPRO | |",
              "|---|---|---|---|---|---|---|---|"]
        for v in dict.fromkeys(r["lambda"] for r in lam["rows"]):
            rs = [r for r in lam["rows"] if r["lambda"] == v]
            mark = "**chosen**" if v == lam["chosen"] else ""
            L.append(f"| {v:g} | {ms([r['val_criterion'] for r in rs])} | {ms([r['val_syn_iauroc'] for r in rs])} / "
                     f"{ms([r['val_syn_pauroc'] for r in rs])} | {ms([r['val_l_model'] for r in rs], 4)} | "
                     + " | ".join(ms([r[k] for r in rs]) for k, _ in METRICS) + f" | {mark} |")
        L += ["", f"Chosen λ = {lam['chosen']:g}; val L_model alone would choose λ = {lam['chosen_by_val_l_model_alone']:g}.\n"]
    return "\n".join(L)


# ----------------------------------------------------------------------------- main

def quick_subset(root: Path, dst: Path) -> Path:
    """A 24-train / 10-test symlinked copy of bottle (MVTec layout) for --quick."""
    src, cat = root / "mvtec_ad" / "bottle", dst / "mvtec_ad" / "bottle"
    if not (cat / "train").is_dir():
        for sub, n in [("train/good", 24), ("test/good", 4)] + [(f"test/{d.name}", 2) for d in sorted((src / "test").iterdir())
                                                                 if d.name != "good"]:
            (cat / sub).mkdir(parents=True, exist_ok=True)
            for f in sorted((src / sub).iterdir())[:n]:
                (cat / sub / f.name).symlink_to(f.resolve())
                if sub.startswith("test/") and sub != "test/good":
                    gt = Path("ground_truth") / sub[5:] / f"{f.stem}_mask.png"
                    (cat / gt).parent.mkdir(parents=True, exist_ok=True)
                    (cat / gt).symlink_to((src / gt).resolve())
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=None, help="default: distillad.data.find_data_root()")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--datasets", default="bottle,magnetic_tile")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--mt-image-size", type=int, default=None, help="Magnetic Tile image size (default: --image-size)")
    ap.add_argument("--part", choices=("main", "timing", "ablations", "lambda", "all"), default="all")
    ap.add_argument("--lambdas", default="0,0.1,0.5,1,2,5,20,100",
                    help="0 = no L_var (trains as rd); 1.0 is rd_var's default; 20 and 100 because L_var is ~1e-5 after epoch 1")
    ap.add_argument("--lambda-seeds", type=int, default=1)
    ap.add_argument("--ablation-dataset", default="bottle")
    ap.add_argument("--teacher", default=None, help="teacher for both models (default: the library's)")
    ap.add_argument("--timing-repeats", type=int, default=9)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's); 1 is faster when other jobs share the cores")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "rd_var")
    ap.add_argument("--runs", type=Path, default=HERE / "runs" / "rd_var")
    ap.add_argument("--quick", action="store_true", help="64 px, 2 epochs, 1 seed, bottle subset: checks the script")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.data_root = find_data_root(args.data_root)
    if args.data_root is None:
        ap.error("no data root: pass --data-root or set DISTILLAD_DATA")
    if args.quick:
        qroot = HERE / "runs" / "rd_var-quick"
        quick_subset(args.data_root, qroot / "data")
        if not (qroot / "data" / "dtd").exists() and (args.data_root / "dtd").exists():  # textures for the λ criterion
            (qroot / "data" / "dtd").symlink_to((args.data_root / "dtd").resolve())
        args.data_root, args.runs, args.out = qroot / "data", qroot / "runs", qroot / "results"
        args.epochs, args.seeds, args.datasets, args.image_size, args.timing_repeats = 2, 1, "bottle", 64, 3
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.seed_list = list(range(args.seeds))
    args.lambdas = [float(x) for x in args.lambdas.split(",")]
    parts = ("main", "ablations", "lambda") if args.part == "all" else (args.part,)
    args.out.mkdir(parents=True, exist_ok=True)
    res_file = args.out / "results.json"
    res = json.loads(res_file.read_text()) if res_file.is_file() else {}
    t0 = time.perf_counter()
    for p in parts:
        print(f"== {p}", flush=True)
        res[p] = {"main": part_main, "timing": part_timing, "ablations": part_ablations, "lambda": part_lambda}[p](args)
        res_file.write_text(json.dumps(res, indent=2))
    meta = {"command": command_line(sys.argv, "python"),
            "date": time.strftime("%Y-%m-%d %H:%M"), "epochs": args.epochs,
            "teacher": args.teacher or "efficientnet_lite0 (the library's default)",
            "machine": f"{platform.machine()}, {resolve_device(args.device)}"}
    (args.out / "results.md").write_text(render(res, meta))
    print(f"wrote {args.out / 'results.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
