"""Budget curves from ``budget_curve.py`` JSON files: benchmarks/results/budget.md and one picture per
category (test I-AUROC, P-AUROC and AUPRO against training CPU-minutes, PatchCore's fit as a marker,
the validation criterion that ``--epochs auto`` sees as a dashed line).

    PYTHONPATH=src python benchmarks/budget_plot.py benchmarks/results/budget/*.json --md benchmarks/results/budget.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402

METRICS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def plot(res: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    xs = [p["cpu_minutes"] for p in res["points"]]
    for (k, name), c in zip(METRICS, ("C0", "C1", "C2")):
        ax.plot(xs, [100 * p["test"][k] for p in res["points"]], "-o", color=c, ms=3, label=f"{res['model']} {name}")
        ax.plot([res["patchcore"]["cpu_minutes"]], [100 * res["patchcore"]["test"][k]], "*", color=c, ms=12,
                label=f"PatchCore {name}")
    crit = [50 * (p["validation"]["image_auroc"] + p["validation"]["pixel_auroc"]) for p in res["points"]]
    ax.plot(xs, crit, "--", color="grey", label="validation criterion (auto)")
    ax.set_xlabel("training CPU-minutes")
    ax.set_ylabel("%")
    ax.set_title(f"{res['category']}: {res['model']} (seed {res['seed']}, {res['image_size']} px) vs PatchCore, test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--md", default=None)
    a = ap.parse_args()
    lines = ["# Budget curves: accuracy against training CPU-minutes, with PatchCore's point", "",
             "One run per row group (`budget_curve.py`): the student's weights every 5 epochs, scored on the "
             "validation split (good images vs. synthetic defects made from them: the `--epochs auto` criterion is "
             "the mean of its two AUROCs) and on the test split (reported, never used to choose). CPU-minutes: "
             "training seconds × threads on a shared 2-core machine (inflated alike for every point).", ""]
    for f in a.files:
        res = json.loads(Path(f).read_text())
        png = Path(a.md).parent / f"budget_{res['category']}_{res['model']}.png" if a.md else Path(f).with_suffix(".png")
        plot(res, png)
        lines += [f"## {res['category']} ({res['model']}, {res['image_size']} px, seed {res['seed']})", "",
                  f"![budget curve]({png.name})", "",
                  "| model | epochs | CPU-min | val criterion | test I-AUROC | test P-AUROC | test AUPRO@0.3 |",
                  "|---|---|---|---|---|---|---|"]
        pc = res["patchcore"]
        lines.append(f"| **patchcore** | fit | {pc['cpu_minutes']:.1f} | "
                     f"{50 * (pc['validation']['image_auroc'] + pc['validation']['pixel_auroc']):.1f} | "
                     + " | ".join(_pct(pc["test"][k]) for k, _ in METRICS) + " |")
        for p in res["points"]:
            crit = 50 * (p["validation"]["image_auroc"] + p["validation"]["pixel_auroc"])
            lines.append(f"| {res['model']} | {p['epoch']} | {p['cpu_minutes']:.1f} | {crit:.1f} | "
                         + " | ".join(_pct(p["test"][k]) for k, _ in METRICS) + " |")
        lines += ["", f"Run: `PYTHONPATH=src python benchmarks/{res['command'].split('benchmarks/', 1)[-1]}`", ""]
    write_md(a.md, lines, sys.argv)


if __name__ == "__main__":
    main()
