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
from _common import md_table  # benchmarks/ is on sys.path when this script runs
from paired import paired_stats

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
    rows = []
    for c in cats:
        for t in teachers:
            for r in sorted((r for r in runs if r["category"] == c and r["teacher"]["name"] == t), key=lambda r: r["seed"]):
                size = int(r["request"]["image_size"])
                if (t, size) not in flops:
                    flops[t, size] = gflop(t, size)
                m, tm = r["metrics"], r["timing"]
                rows.append([c, t, r["seed"], *(f"{100 * m[k]:.1f}" for k, _ in METRICS), f"{flops[t, size]:.2f}",
                             f"{tm['seconds_per_epoch']:.1f}", f"{tm['images_per_s_b1']:.1f}"])
    print("\n".join(md_table(["category", "teacher", "seed", *(n for _, n in METRICS), "GFLOP/img", "train s/epoch",
                               "img/s b1"], rows)))
    if args.paired:
        diffs = []
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
                diffs.append([c, t, *cells])
        print("\n" + "\n".join(md_table(["category", f"teacher − {args.paired}", *(n for _, n in METRICS)], diffs)))


if __name__ == "__main__":
    main()
