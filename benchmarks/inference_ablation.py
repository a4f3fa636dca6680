"""Inference-only ablations on finished runs: the same trained weights, one attribute of the model changed
per variant (DTSNet's map subsets ``maps=all,M1,M2,M3,M23``, Table VI), scored on the test split.
An ablation for reporting, not a selection (the defaults stay the papers').

    .venv/bin/python benchmarks/inference_ablation.py RUN [RUN ...] --attr maps=all,M1,M2,M3,M23 \\
        > benchmarks/results/dtsnet_ablation_maps.md

``--validation``: the run's validation split instead (its held-out good images and the ``distillad tune``
synthetic defects made from them, preset draem): the numbers a choice may use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from distillad.api import _test_set  # noqa: E402
from distillad.checkpoint import load_run  # noqa: E402
from distillad.data.resize import crop_to_images  # noqa: E402
from distillad.engine import infer  # noqa: E402
from distillad.metrics import compute_metrics  # noqa: E402
from distillad.validation import validation_sets  # noqa: E402

KEYS = ("image_auroc", "pixel_auroc", "aupro")


def score(model: torch.nn.Module, spec: dict[str, Any], validation: bool) -> dict[str, float]:
    """I-AUROC, P-AUROC and AUPRO of ``model`` as it is now, on the run's test (or validation) images."""
    if validation:
        good, defective, _ = validation_sets(spec)
        sets = [good, defective]
    else:
        sets = [_test_set(spec, None, None, None, 1)]
    parts = [infer(model, ds, 16, "cpu", False) for ds in sets]
    res = {k: torch.cat([r[k] for r in parts]) for k in ("labels", "scores", "maps", "masks")}
    maps, masks = (res["maps"], res["masks"]) if validation else crop_to_images(res["maps"], res["masks"], sets[0])
    return compute_metrics(res["labels"].numpy(), res["scores"].numpy(), masks[:, 0].numpy() > 0.5, maps[:, 0].numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--attr", required=True, help="ATTRIBUTE=V1,V2,... (string values)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validation", action="store_true", help="validation images + synthetic defects, not test")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    attr, values = args.attr.split("=", 1)
    got: dict[str, list[dict[str, float]]] = {v: [] for v in values.split(",")}
    print(f"| run | {attr} | I-AUROC | P-AUROC | AUPRO@0.3 |\n|---|---|---|---|---|")
    for run in args.runs:
        model, spec = load_run(run, torch.device("cpu"))
        for v in got:
            setattr(model, attr, v)
            m = score(model, spec, args.validation)
            got[v].append(m)
            print(f"| {run} | {v} | " + " | ".join(f"{100 * m[k]:.1f}" for k in KEYS) + " |", flush=True)
    print(f"\nMean ± sample std over the {len(args.runs)} runs:\n\n| {attr} | I-AUROC | P-AUROC | AUPRO@0.3 |\n|---|---|---|---|")
    for v, ms in got.items():
        cells = [100 * statistics.fmean(m[k] for m in ms) for k in KEYS]
        sds = [100 * statistics.stdev([m[k] for m in ms]) if len(ms) > 1 else 0.0 for k in KEYS]
        print(f"| {v} | " + " | ".join(f"{c:.1f} ± {s:.1f}" for c, s in zip(cells, sds)) + " |")


if __name__ == "__main__":
    main()
