"""Training in bf16 (``train --precision bf16``) against fp32: s/epoch and the test metrics, seed by seed.

    PYTHONPATH=src python benchmarks/bench_train_precision.py --data ../shared/data/mvtec_ad/bottle \\
        --out /tmp/prec_runs --md benchmarks/results/train_precision.md

Each (precision, seed) is a ``distillad train`` + ``distillad test`` (fp32 inference for both: the question
is what bf16 *training* does) in a fresh process with one torch thread; ``--jobs`` of them run at a time,
paired so that the two precisions of a seed run side by side and see the same load. Finished runs in
``--out`` are reused. Refused in one line on a CPU without native bf16 (the CLI's own check).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402

METRICS = [("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3")]


def _job(args: argparse.Namespace, precision: str, seed: int) -> dict[str, object]:
    run = Path(args.out) / f"{precision}_seed{seed}"
    env = dict(os.environ, OMP_NUM_THREADS="1", DISTILLAD_PROGRESS="0")
    cli = [sys.executable, "-m", "distillad"]
    if not (run / "metrics.json").is_file():
        subprocess.run([*cli, "train", "--model", args.model, "--data", args.data, "--out", str(run), "--epochs",
                        str(args.epochs), "--seed", str(seed), "--precision", precision, "--overwrite"],
                       env=env, check=True, capture_output=True)
        subprocess.run([*cli, "test", "--run", str(run)], env=env, check=True, capture_output=True)
    m = json.loads((run / "metrics.json").read_text())["metrics"]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return {"precision": precision, "seed": seed, "s_epoch": statistics.median(r["seconds"] for r in log),
            "last_loss": log[-1]["loss"], **{k: 100 * m[k] for k, _ in METRICS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a category folder, e.g. ../shared/data/mvtec_ad/bottle")
    ap.add_argument("--out", required=True, help="folder for the runs (reused when rerun)")
    ap.add_argument("--model", default="rd")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--md", help="write the table as markdown here")
    args = ap.parse_args()
    plan = [(p, s) for s in range(args.seeds) for p in ("fp32", "bf16")]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda ps: _job(args, *ps), plan))
    by = {(r["precision"], r["seed"]): r for r in rows}
    seeds = range(args.seeds)
    lines = [f"`{args.model}` on `{args.data}`, {args.epochs} epochs, seeds 0–{args.seeds - 1}, one torch thread per run, "
             f"{args.jobs} runs at a time (each seed's fp32 and bf16 side by side); test in fp32.", "",
             "| metric | fp32, per seed | bf16, per seed | bf16 − fp32, per seed | mean difference |",
             "|---|---|---|---|---|"]
    for key, name in [*METRICS, ("s_epoch", "s/epoch"), ("last_loss", "last epoch's loss")]:
        a = [by["fp32", s][key] for s in seeds]
        b = [by["bf16", s][key] for s in seeds]
        d = [y - x for x, y in zip(a, b)]
        fmt = (lambda v: f"{v:.4f}") if key == "last_loss" else (lambda v: f"{v:.2f}")
        lines.append(f"| {name} | {' / '.join(map(fmt, a))} | {' / '.join(map(fmt, b))} | "
                     f"{' / '.join(f'{v:+.2f}' if key != 'last_loss' else f'{v:+.4f}' for v in d)} | "
                     f"{statistics.mean(d):+.3f} |")
    spread = {k: max(by["fp32", s][k] for s in seeds) - min(by["fp32", s][k] for s in seeds) for k, _ in METRICS}
    lines += ["", "Seed spread of fp32 (max − min): " + ", ".join(f"{n} {spread[k]:.2f}" for k, n in METRICS) + "."]
    write_md(args.md, ["# Training precision: bf16 vs fp32", "", *lines], sys.argv)


if __name__ == "__main__":
    main()
