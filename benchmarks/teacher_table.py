"""rd with each efficientnet_lite teacher, category by category, from ``distillad benchmark`` results.json files
(trains nothing): the test metrics, training s/epoch, inference img/s and the networks' GFLOP per image.

    PYTHONPATH=src python benchmarks/teacher_table.py OUT_LITE0/results.json OUT_LITE1/results.json ...

Cost is given two ways. GFLOP per image (``torch.utils.flop_counter``, at the run's image size) holds on any
machine. s/epoch and img/s hold only between runs measured under the same load: say which ran together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from distillad.registry import create_model
from paired import paired_stats  # benchmarks/ is on sys.path when this script runs

METRICS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"))


def gflop(teacher: str, size: int) -> float:
    """Forward GFLOP per image of rd (teacher + student, random weights) at ``size`` px."""
    net = create_model("rd", teacher=teacher, teacher_weights="random").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.rand(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--paired", help="also: each other teacher minus this one, paired by seed (mean, n, p)")
    args = ap.parse_args()
    runs = [r for f in args.results for r in json.loads(f.read_text())["runs"] if r["model"] == "rd"]
    teachers = sorted({r["teacher"]["name"] for r in runs})
    cats = sorted({r["category"] for r in runs})
    flops: dict[tuple[str, int], float] = {}
    head = "| category | teacher | seed | " + " | ".join(n for _, n in METRICS) + \
        " | GFLOP/img | train s/epoch | img/s b1 |"
    lines = [head, "|" + "---|" * head[1:].count("|")]
    for c in cats:
        for t in teachers:
            for r in sorted((r for r in runs if r["category"] == c and r["teacher"]["name"] == t), key=lambda r: r["seed"]):
                size = int(r["request"]["image_size"])
                if (t, size) not in flops:
                    flops[t, size] = gflop(t, size)
                m, tm = r["metrics"], r["timing"]
                lines.append(f"| {c} | {t} | {r['seed']} | " + " | ".join(f"{100 * m[k]:.1f}" for k, _ in METRICS) +
                             f" | {flops[t, size]:.2f} | {tm['seconds_per_epoch']:.1f} | {tm['images_per_s_b1']:.1f} |")
    print("\n".join(lines))
    if args.paired:
        print(f"\n| category | teacher − {args.paired} | " + " | ".join(n for _, n in METRICS) + " |")
        print("|---|---|" + "---|" * len(METRICS))
        by: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
        for r in runs:
            by.setdefault((r["category"], r["teacher"]["name"]), {})[r["seed"]] = r["metrics"]
        for c in cats:
            base = by.get((c, args.paired))
            for t in teachers:
                if t == args.paired or base is None or (c, t) not in by:
                    continue
                cells = []
                for k, _ in METRICS:
                    st = paired_stats({s: 100 * m[k] for s, m in base.items()},
                                      {s: 100 * m[k] for s, m in by[c, t].items()})
                    cells.append(f"{st['diff']:+.1f} (n={st['n']}" + (f", p={st['p']:.3f})" if st["n"] > 1 else ")"))
                print(f"| {c} | {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
