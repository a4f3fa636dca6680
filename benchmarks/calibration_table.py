"""Decision metrics of every calibration method on trained runs: which threshold should a user trust?

For each run folder (trained; tested or not: its metrics.json is not read), the model scores once
- the run's validation good images (the split recorded in run.json),
- synthetic defects made from them (``distillad.validation``, the preset of ``--synthesis``; only
  the ``synthetic`` method uses them),
- the run's test images;
then every method's thresholds are fitted **on the validation numbers only**, in memory
(``calibration.fit_thresholds``; the run folder is never written), and applied to the test scores:
decision accuracy, precision, recall and FPR at the image threshold, pixel precision and recall of
the masks at the pixel threshold (``metrics.decision_metrics`` / ``mask_metrics``). The run's own
stored calibration is reported too (row "stored").

Table: one row per category and method, mean ± sample std over the runs of that category (seeds),
then the mean over categories. Figures in %.

    PYTHONPATH=src .venv/bin/python benchmarks/calibration_table.py RUN [RUN ...] \
        --md benchmarks/results/calibration.md [--json calibration.json] [--quantile 0.995] [--k-sigma 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from distillad.calibration import CalibrationSettings, fit_thresholds, score_validation, validation_good
from distillad.checkpoint import atomic_write_bytes, load_run
from distillad.data import AnomalyDataset, load_samples
from distillad.data.resize import crop_to_images, run_geometry
from distillad.engine import infer, resolve_device
from distillad.metrics import decision_metrics, mask_metrics
from distillad.precision import prepare_for_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by path (tests/benchmarks)
from _common import command_line, md_table  # noqa: E402

METHODS = ("sigma", "quantile", "gamma", "synthetic")
#: (key, column title)
COLUMNS = (("threshold_accuracy", "accuracy"), ("threshold_precision", "precision"), ("threshold_tpr", "recall"),
           ("threshold_fpr", "FPR"), ("mask_precision", "mask precision"), ("mask_recall", "mask recall"))


def _category(spec: dict[str, Any]) -> str:
    d = spec["data"]
    return d.get("category") or Path(d["path"]).name


def evaluate_run(run: str | Path, methods: Sequence[str] = METHODS, k_sigma: float = 3.0, quantile: float = 0.995,
                 synthesis: str = "draem", device: str = "auto", batch_size: int = 16,
                 textures: str | None = None) -> list[dict[str, Any]]:
    """One record per method (and "stored"): the thresholds fitted on the run's validation split and the
    test decision metrics they give. Nothing is written into the run."""
    dev = resolve_device(device)
    model, spec = load_run(run, dev)
    good = validation_good(spec)
    if good is None:
        raise SystemExit(f"{run}: no validation images (val_fraction {spec['data'].get('val_fraction')}): "
                         "nothing to calibrate on")
    model = prepare_for_inference(model, dev)  # folded once for the three infer calls
    # the validation scores and maps (cropped to the images' pixels) as training's calibration sees them
    val = score_validation(model, good, CalibrationSettings("synthetic" if "synthetic" in methods else "sigma",
                                                            synthesis=synthesis),
                           batch_size, str(dev), False, textures or spec["data"].get("textures"))
    d = spec["data"]
    hw, mode = run_geometry(spec)
    test_set = AnomalyDataset(load_samples(d["path"], "test", d.get("category"), d.get("layout")),
                              image_size=hw, resize=mode)
    test = infer(model, test_set, batch_size, str(dev), progress=False)
    labels, scores = test["labels"].numpy(), test["scores"].numpy()
    test_maps, test_masks = crop_to_images(test["maps"], test["masks"], test_set)
    masks = test_masks[:, 0].numpy() > 0.5
    has_masks = bool(masks.any())
    maps = test_maps[:, 0].numpy()
    stored = dict(spec.get("calibration") or {})
    fits = {f"stored ({stored.get('method', 'sigma')})": stored}
    for m in methods:
        s = CalibrationSettings(m, k_sigma=k_sigma, quantile=quantile, synthesis=synthesis)
        extra = {k: val[k] for k in ("defect_scores", "defect_maps", "defect_masks")} if m == "synthetic" else {}
        try:
            fits[m] = fit_thresholds(s, val["scores"], val["maps"], **extra)
        except Exception as e:  # noqa: BLE001 - a method that cannot fit here (gamma on non-positive maps) is a row too
            fits[m] = {"error": str(e)}
    out = []
    for m, cal in fits.items():
        row: dict[str, Any] = {"run": str(run), "category": _category(spec), "model": spec["method"], "method": m,
                               "calibration": cal, "n_val": len(good), "n_test": int(len(labels))}
        if "image_threshold" in cal:
            row.update(decision_metrics(labels, scores, cal["image_threshold"]))
        if has_masks and "pixel_threshold" in cal:
            row.update(mask_metrics(masks, maps, cal["pixel_threshold"]))
        out.append(row)
    return out


def _stat(values: list[float]) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "–"
    s = f"{100 * statistics.fmean(v):.1f}"
    return s if len(v) < 2 else f"{s} ± {100 * statistics.stdev(v):.1f}"


def render(rows: list[dict[str, Any]], command: str) -> str:
    """Markdown: per category × method mean ± std over runs, then the mean over categories per method."""
    cats = list(dict.fromkeys(r["category"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    models = ", ".join(sorted({r["model"] for r in rows}))
    titles = [t for _, t in COLUMNS]
    lines = ["# Calibration methods: decisions on test images at thresholds fitted on validation images", "",
             f"Command: `{command}` ({time.strftime('%Y-%m-%d')}).", "",
             f"Runs: {len({r['run'] for r in rows})} ({models}). Every threshold is fitted on the run's validation "
             "good images only (synthetic: also their synthetic defects); test images are only scored. "
             "stored = the thresholds in run.json. Figures in %: mean ± sample std over the runs of a category. "
             "recall = TPR; mask precision/recall: pixels at the pixel threshold.", ""]
    per_method = []
    for c in cats:
        for m in methods:
            rs = [r for r in rows if r["category"] == c and r["method"] == m]
            errs = {r["calibration"]["error"] for r in rs if "error" in r["calibration"]}
            cells = [_stat([r.get(k) for r in rs]) for k, _ in COLUMNS]
            note = f" (failed: {'; '.join(sorted(errs))})" if errs else ""
            per_method.append([c, f"{m}{note}", len(rs), *cells])
    lines += [*md_table(["category", "method", "runs", *titles], per_method), "",
              "Mean over categories (each category's mean over its runs):", ""]
    overall = []
    for m in methods:
        cells = []
        for k, _ in COLUMNS:
            per_cat = [statistics.fmean(v) for c in cats
                       if (v := [r[k] for r in rows if r["category"] == c and r["method"] == m
                                 and r.get(k) is not None and math.isfinite(r[k])])]
            cells.append(_stat(per_cat).split(" ±")[0] if per_cat else "–")
        overall.append(["all", m, len(cats), *cells])
    return "\n".join([*lines, *md_table(["—", "method", "categories", *titles], overall)]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="trained run folders")
    ap.add_argument("--md", help="write the markdown table here (default: print it)")
    ap.add_argument("--json", help="also write every run's records (thresholds, metrics) as JSON here")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default: {','.join(METHODS)})")
    ap.add_argument("--k-sigma", type=float, default=3.0)
    ap.add_argument("--quantile", type=float, default=0.995)
    ap.add_argument("--synthesis", default="draem")
    ap.add_argument("--textures", help="texture folder of the synthetic defects, e.g. DTD (default: the run's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"--methods: {bad[0]!r} is not one of {', '.join(METHODS)} (fixed needs a number: use distillad test)")
    rows = []
    for run in args.runs:
        rows += evaluate_run(run, methods, args.k_sigma, args.quantile, args.synthesis, args.device, args.batch_size,
                             args.textures)
        print(f"{run}: done", file=sys.stderr)
    command = command_line([__file__, *(argv if argv is not None else sys.argv[1:])], "PYTHONPATH=src .venv/bin/python")
    text = render(rows, command)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(rows, indent=2, default=float) + "\n").encode())
    if args.md:
        atomic_write_bytes(args.md, text.encode())
        print(f"written: {args.md}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
