"""DSKD-fusion's map combinations (Tables 4–5: forward only, reverse only, manual 1:3, learned) on one
finished run's test split, without retraining: the same trained students, only ``fusion_mode`` changes.
An ablation on test images for reporting, not a selection (the default stays the paper's "learned").

    .venv/bin/python benchmarks/dskd_fusion_modes.py RUN [RUN ...] > benchmarks/results/dskd_fusion_modes.md

``--validation``: the same on the run's validation split instead (its held-out good images and the
``distillad tune`` synthetic defects made from them, preset draem): the numbers a choice may use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from distillad.checkpoint import load_run  # noqa: E402
from inference_ablation import KEYS, score  # noqa: E402

# (fusion_mode, manual_weights (w_f, w_r)); one student alone = manual with the other's weight 0
MODES = {"learned": ("learned", None), "manual 1:3": ("manual", (1.0, 3.0)),
         "forward only": ("manual", (1.0, 0.0)), "reverse only": ("manual", (0.0, 1.0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validation", action="store_true", help="validation images + synthetic defects, not test")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| run | fusion | I-AUROC | P-AUROC | AUPRO@0.3 |\n|---|---|---|---|---|")
    for run in args.runs:
        model, spec = load_run(run, torch.device("cpu"))
        for name, (mode, weights) in MODES.items():
            model.fusion_mode = mode
            if weights is not None:
                model.manual_weights = weights
            m = score(model, spec, args.validation)
            print(f"| {run} | {name} | " + " | ".join(f"{100 * m[k]:.1f}" for k in KEYS)
                  + " |", flush=True)


if __name__ == "__main__":
    main()
