"""Methods beside RD from one or more ``distillad benchmark`` results.json files (trains nothing).

Runs are matched by (category, model, seed); the first file that has a run wins. Runs from different
files are compared only when their requests agree on what decides the numbers (teacher and its
weights, epochs, image size); otherwise the script stops and says which. Quality: mean ± sample std
over seeds, and Δ vs RD paired by seed (same seed → same validation split, data order, initialisation)
with the number of shared seeds; cost (whole training in minutes, img/s at batch 1) as a ratio to RD only where both
come from the same file, i.e. were measured under the same conditions.

    .venv/bin/python benchmarks/synth_table.py NEW/results.json benchmarks/results/main/results.json \
        --models dtsnet,dmdd,dskd_fusion > benchmarks/results/synth_main.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from _common import md_table  # benchmarks/ is on sys.path when this script runs
from paired import paired_stats

METRICS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"))


def load(files: list[Path]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """{(category, model, seed): run record + its source file}, first file first."""
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for i, f in enumerate(files):
        for r in json.loads(f.read_text())["runs"]:
            runs.setdefault((r["category"], r["model"], r["seed"]), {**r, "_file": i})
    return runs


def _identity(r: dict[str, Any]) -> tuple:
    req = r["request"]
    return (r["teacher"]["name"], r["teacher"]["weights_sha256"], req["epochs"], req["image_size"])


def _ms(v: list[float]) -> str:
    if not v:
        return "–"
    return f"{v[0]:.1f}" if len(v) == 1 else f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}"


def _delta(a: dict[int, float], b: dict[int, float]) -> str:
    """Mean paired difference b − a over the shared seeds, n, and the paired t-test p (``paired.py``) where n >= 2."""
    st = paired_stats(a, b)
    if st["n"] == 0:
        return "–"
    p = f", p={st['p']:.3f}" if st["n"] >= 2 and math.isfinite(st["p"]) else ""
    return f"{st['diff']:+.1f} (n={st['n']}{p})"


def render(runs: dict[tuple[str, str, int], dict[str, Any]], files: list[Path], models: list[str],
           base: str = "rd", cost_seeds: set[int] | None = None) -> str:
    cats = sorted({c for c, _, _ in runs})
    head = ["category", "model", "seeds", *(n for _, n in METRICS), *(f"Δ{n} vs {base}" for _, n in METRICS),
            f"train min (× {base})", f"img/s b1 (× {base})", "file"]
    rows: list[list[str]] = []
    for c in cats:
        ref = {s: r for (cc, m, s), r in runs.items() if cc == c and m == base}
        for m in [base, *models]:
            mine = {s: r for (cc, mm, s), r in runs.items() if cc == c and mm == m}
            if not mine:
                continue
            ids = {_identity(r) for r in [*mine.values(), *ref.values()]}
            if len(ids) > 1:
                sys.exit(f"{c}: the {base} and {m} runs differ in teacher, epochs or image size: {sorted(ids)}")
            seeds = sorted(mine)
            cells = [_ms([100 * mine[s]["metrics"][k] for s in seeds]) for k, _ in METRICS]
            shared = sorted(set(seeds) & set(ref))
            if m == base:
                deltas = ["" for _ in METRICS]
            else:
                deltas = [_delta({s: 100 * ref[s]["metrics"][k] for s in shared},
                                 {s: 100 * mine[s]["metrics"][k] for s in shared}) for k, _ in METRICS]
            same_file = [s for s in shared if mine[s]["_file"] == ref[s]["_file"]]
            timed = [q for q in seeds if cost_seeds is None or q in cost_seeds] or seeds
            same_file = [q for q in same_file if cost_seeds is None or q in cost_seeds]
            cost = []
            for key in ("train_seconds_total", "images_per_s_b1"):  # whole training: a method's phases differ
                scale = 1 / 60 if key == "train_seconds_total" else 1.0
                mean = statistics.mean(mine[s]["timing"][key] for s in timed) * scale
                ratio = (statistics.mean(mine[s]["timing"][key] for s in same_file)
                         / statistics.mean(ref[s]["timing"][key] for s in same_file)) if same_file else None
                cost.append(f"{mean:.1f}" + (f" ({ratio:.2f}×)" if ratio is not None and m != base else ""))
            src = ",".join(sorted({str(mine[s]["_file"]) for s in seeds}))
            rows.append([c, m, ",".join(map(str, seeds)), *cells, *deltas, cost[0], cost[1], src])
    legend = "; ".join(f"file {i}: `{f}`" for i, f in enumerate(files))
    return "\n".join(md_table(head, rows)) + (f"\n\nMetrics in %. Δ: mean of the per-seed differences (n shared seeds; "
                                              f"p: two-sided paired t-test, shown where n ≥ 2). {legend}.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--models", default="dtsnet,dmdd,dskd_fusion")
    ap.add_argument("--base", default="rd")
    ap.add_argument("--cost-seeds", help="comma-separated seeds whose timings make the cost columns (default: all); "
                                         "for runs made by code of different speeds")
    args = ap.parse_args()
    cost = {int(x) for x in args.cost_seeds.split(",")} if args.cost_seeds else None
    print(render(load(args.results), args.results, args.models.split(","), args.base, cost), end="")


if __name__ == "__main__":
    main()
