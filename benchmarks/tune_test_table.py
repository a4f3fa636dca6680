"""After ``distillad tune``: the test figures of every candidate it trained, beside its validation criterion.

``tune`` chooses on validation images only (good validation images vs. synthetic defects made from
them); this script then runs ``distillad test`` on each of the tune's runs (the test split, touched
only here, after the choice) and writes one markdown table: per category and candidate, the
validation criterion and the test metrics, mean ± sample std over the tune's seeds, the chosen and
the default candidate marked. A run already tested (its metrics.json newer than its weights) is
not tested again.

    python benchmarks/tune_test_table.py TUNE_DIR [TUNE_DIR ...] --md benchmarks/results/defaults.md \
        [--title "rd: decoder_relu"] [--note "..."]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from distillad import api

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, md_table  # noqa: E402

# (metrics.json key, column title, scale): the decision keys come from the run's stored calibration
COLUMNS = [("image_auroc", "I-AUROC", 100), ("pixel_auroc", "P-AUROC", 100), ("aupro", "AUPRO@0.3", 100),
           ("threshold_accuracy", "decision acc.", 100), ("threshold_tpr", "recall", 100),
           ("threshold_fpr", "FPR", 100)]


def tested(run: Path) -> dict[str, Any]:
    """``distillad test`` metrics of ``run`` (cached in its metrics.json)."""
    m, w = run / "metrics.json", run / "last.safetensors"
    if not (m.is_file() and w.is_file() and m.stat().st_mtime > w.stat().st_mtime):
        api.test(run, progress=False)
    return json.loads(m.read_text())["metrics"]


def cell(xs: list[float], scale: float) -> str:
    xs = [x * scale for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "–"
    return f"{statistics.fmean(xs):.1f}" + (f" ± {statistics.stdev(xs):.1f}" if len(xs) > 1 else "")


def table(tune_dir: Path) -> list[str]:
    res = json.loads((tune_dir / "tune.json").read_text())
    name = Path(res["data"]).name if not res.get("category") else res["category"]
    head = ["candidate", "val criterion", *[c[1] for c in COLUMNS], "seeds"]
    rows = []
    for i, row in enumerate(res["rows"]):
        mets = [tested(Path(r["run"])) for r in row["runs"]]
        label = ", ".join(f"{k}={v}" for k, v in row["values"].items())
        label += " (default)" if row.get("default") else ""
        label = f"**{label}** (chosen)" if i == res["chosen_index"] else label
        crit = cell([r["criterion"] for r in row["runs"]], 100)
        cols = [cell([m.get(k) for m in mets], s) for k, _, s in COLUMNS]
        rows.append([label, crit, *cols, len(mets)])
    return [f"### {name}", "", f"`{tune_dir}`: {res['n_val']} validation good images; "
            f"image size {res['settings'].get('image_size', '?')}, {res['settings'].get('epochs', '?')} epochs", "",
            *md_table(head, rows), ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tune_dirs", nargs="+", type=Path)
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--title", default="distillad tune, then test")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    out = [f"# {args.title}", "", args.note, "",
           "Choice: `distillad tune` on validation only (criterion = mean of image and pixel AUROC, good "
           "validation images vs. synthetic defects made from them, in %). Test columns: `distillad test` on "
           "each of the tune's runs afterwards, mean ± sample std over seeds, in %; decision columns at the "
           "run's calibrated threshold (mean + 3σ of validation good scores unless the run says otherwise).",
           "", f"Command: `{command_line([__file__, *(sys.argv[1:] if argv is None else argv)], 'python')}`", ""]
    for d in args.tune_dirs:
        out += table(d)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text("\n".join(out))
    print(args.md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
