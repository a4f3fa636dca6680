"""Inference-only ablations on finished runs: the same trained weights, one attribute of the model changed
per variant, scored on the test split. An ablation for reporting, not a selection (the defaults stay the papers').

Variants, one of:
- ``--attr ATTRIBUTE=V1,V2,...``: the attribute set to each (string) value in turn, e.g. DTSNet's map
  subsets (Table VI)::

    .venv/bin/python benchmarks/inference_ablation.py RUN [RUN ...] --attr maps=all,M1,M2,M3,M23 \\
        > benchmarks/results/dtsnet_ablation_maps.md

- ``--variants NAME``: a named set of variants from ``VARIANTS``; ``fusion`` is DSKD-fusion's map
  combinations (Tables 4–5: learned, manual 1:3, forward only, reverse only), where only ``fusion_mode``
  (and ``manual_weights``) changes: the same trained students::

    .venv/bin/python benchmarks/inference_ablation.py RUN [RUN ...] --variants fusion --no-mean \\
        > benchmarks/results/dskd_fusion_modes.md

Prints a table with one row per run and variant, then (unless ``--no-mean``) the mean ± sample std of each
variant over the runs. ``--validation``: the run's validation split instead (its held-out good images and the
``distillad tune`` synthetic defects made from them, preset draem): the numbers a choice may use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_row, md_table  # noqa: E402

from distillad.api import _test_set  # noqa: E402
from distillad.checkpoint import load_run  # noqa: E402
from distillad.data.resize import crop_to_images  # noqa: E402
from distillad.engine import infer  # noqa: E402
from distillad.metrics import compute_metrics  # noqa: E402
from distillad.validation import validation_sets  # noqa: E402

KEYS = ("image_auroc", "pixel_auroc", "aupro")
TITLES = ("I-AUROC", "P-AUROC", "AUPRO@0.3")

#: name → (column title, {row label: {attribute: value}}); a variant sets its attributes on the loaded model, in order
VARIANTS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    # DSKD-fusion, Tables 4–5. One student alone = "manual" with the other's weight 0: fusion_mode "forward" /
    # "reverse" on a jointly trained model would sum all six maps (those modes build one student).
    "fusion": ("fusion", {"learned": {"fusion_mode": "learned"},
                          "manual 1:3": {"fusion_mode": "manual", "manual_weights": (1.0, 3.0)},
                          "forward only": {"fusion_mode": "manual", "manual_weights": (1.0, 0.0)},
                          "reverse only": {"fusion_mode": "manual", "manual_weights": (0.0, 1.0)}}),
}


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


def variants(args: argparse.Namespace) -> tuple[str, dict[str, dict[str, Any]]]:
    """(column title, {row label: {attribute: value}}) of ``--variants`` or ``--attr``."""
    if args.variants:
        return VARIANTS[args.variants]
    attr, values = args.attr.split("=", 1)
    return attr, {v: {attr: v} for v in values.split(",")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--attr", help="ATTRIBUTE=V1,V2,... (string values)")
    what.add_argument("--variants", choices=sorted(VARIANTS), help="a named set of variants (fusion: DSKD-fusion's "
                      "learned / manual 1:3 / forward only / reverse only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validation", action="store_true", help="validation images + synthetic defects, not test")
    ap.add_argument("--no-mean", dest="mean", action="store_false", help="no table of means over the runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    title, settings = variants(args)
    got: dict[str, list[dict[str, float]]] = {v: [] for v in settings}
    print("\n".join(md_table(["run", title, *TITLES])))
    for run in args.runs:
        model, spec = load_run(run, torch.device("cpu"))
        for v, attrs in settings.items():
            for name, value in attrs.items():
                setattr(model, name, value)
            m = score(model, spec, args.validation)
            got[v].append(m)
            print(md_row([run, v, *(f"{100 * m[k]:.1f}" for k in KEYS)]), flush=True)
    if not args.mean:
        return
    rows = []
    for v, ms in got.items():
        cells = [100 * statistics.fmean(m[k] for m in ms) for k in KEYS]
        sds = [100 * statistics.stdev([m[k] for m in ms]) if len(ms) > 1 else 0.0 for k in KEYS]
        rows.append([v, *(f"{c:.1f} ± {s:.1f}" for c, s in zip(cells, sds))])
    print(f"\nMean ± sample std over the {len(args.runs)} runs:\n\n" + "\n".join(md_table([title, *TITLES], rows)))


if __name__ == "__main__":
    main()
