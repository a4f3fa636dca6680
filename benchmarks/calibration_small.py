"""Which threshold rule survives a 5-image validation split? Chosen on validation images only.

Issue 30: with 5 validation images, mean + 3σ put the image threshold above every defective test
image (0 % caught at I-AUROC 98.5). This study simulates small validation splits from trained runs
whose validation split is large (val_fraction 0.3: 63–228 good images):

1. each run's model scores its validation good images and synthetic defects made from them
   (``validation.synthetic_defects``, the draem preset, the fixed seed) once;
2. ``--draws`` times, ``--n`` good images are drawn (with their synthetic defects); every rule fits its
   image threshold on them alone (``calibration.fit_thresholds``, scores only), and is judged on the
   *held-out rest*: false-alarm rate (FPR) on the other good validation images, recall on the other
   images' synthetic defects;
3. the default is the rule with the highest mean recall among those whose mean held-out FPR over the
   categories is <= ``--max-fpr`` (n = 5). Test images play no part in steps 1–3.

Only then are the test images scored, to *report* the chosen rule's decisions (accuracy, FPR,
recall at the image threshold; I-AUROC) next to the old default's, fitted on ``--n`` drawn validation
images (mean over the draws) and on the whole validation split.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibration_small.py \
        /tmp/cal_runs/transistor /tmp/cal_runs/bottle /tmp/cal_runs/tire /tmp/cal_runs/magnetic_tile \
        --md benchmarks/results/calibration_small.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_md  # noqa: E402

from distillad.calibration import CalibrationSettings, fit_thresholds, score_validation, validation_good  # noqa: E402
from distillad.checkpoint import load_run  # noqa: E402
from distillad.data import AnomalyDataset, load_samples  # noqa: E402
from distillad.data.resize import run_geometry  # noqa: E402
from distillad.engine import infer  # noqa: E402
from distillad.metrics import image_auroc  # noqa: E402

#: rule name → settings (all fitted by the library's own ``fit_thresholds``)
RULES: dict[str, CalibrationSettings] = {
    "sigma k=3 (old default)": CalibrationSettings("sigma"),
    "quantile 0.995": CalibrationSettings("quantile"),
    "gamma 0.995": CalibrationSettings("gamma"),
    "synthetic F1": CalibrationSettings("synthetic"),
    "fpr F=0.01": CalibrationSettings("fpr", target_fpr=0.01),
    "fpr F=0.02": CalibrationSettings("fpr", target_fpr=0.02),
    "fpr F=0.05": CalibrationSettings("fpr", target_fpr=0.05),
}


def score_run(run: Path) -> dict[str, Any]:
    """Validation good / synthetic-defect scores and test scores + labels of one run (cached beside it)."""
    cache = run / "calibration_small_scores.npz"
    if cache.exists():
        z = np.load(cache)
        return {k: z[k] for k in z.files} | {"category": run.name}
    model, spec = load_run(run, "cpu")
    good = validation_good(spec)
    val = score_validation(model, good, CalibrationSettings("synthetic"), 16, "cpu", False,
                           spec["data"].get("textures"))
    d = spec["data"]
    hw, mode = run_geometry(spec)
    test_set = AnomalyDataset(load_samples(d["path"], "test", d.get("category"), d.get("layout")), image_size=hw,
                              resize=mode)
    test = infer(model, test_set, 16, "cpu", progress=False, keep_maps=False)
    out = {"good": val["scores"].double().numpy(), "defect": val["defect_scores"].double().numpy(),
           "test_scores": test["scores"].double().numpy(), "test_labels": test["labels"].numpy()}
    np.savez(cache, **out)
    return out | {"category": run.name}


def threshold(rule: CalibrationSettings, good: np.ndarray, defect: np.ndarray) -> float:
    extra = {"defect_scores": defect} if rule.method == "synthetic" else {}
    return float(fit_thresholds(rule, good, **extra)["image_threshold"])


def simulate(r: dict[str, Any], n: int, draws: int, seed: int) -> dict[str, tuple[float, float]]:
    """rule → (mean held-out FPR, mean held-out synthetic recall) over ``draws`` draws of ``n`` images."""
    rng = np.random.default_rng(seed)
    g, d = r["good"], r["defect"]
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in RULES}
    for _ in range(draws):
        pick = rng.permutation(g.size)
        fit, rest = pick[:n], pick[n:]
        for name, rule in RULES.items():
            t = threshold(rule, g[fit], d[fit])
            res[name].append((float((g[rest] >= t).mean()), float((d[rest] >= t).mean())))
    return {k: (statistics.fmean(a for a, _ in v), statistics.fmean(b for _, b in v)) for k, v in res.items()}


def test_decisions(r: dict[str, Any], rule: CalibrationSettings, n: int, draws: int, seed: int) -> dict[str, float]:
    """Report only: test accuracy / FPR / recall at the rule's threshold, fitted on n drawn validation images
    (mean over draws) and on all of them."""
    s, y = r["test_scores"], r["test_labels"].astype(bool)

    def dec(t: float) -> tuple[float, float, float]:
        p = s >= t
        return float((p == y).mean()), float(p[~y].mean()), float(p[y].mean())

    rng = np.random.default_rng(seed)
    small = [dec(threshold(rule, r["good"][i], r["defect"][i]))
             for i in (rng.permutation(r["good"].size)[:n] for _ in range(draws))]
    full = dec(threshold(rule, r["good"], r["defect"]))
    return {"auroc": image_auroc(y, s), **{f"{k}_small": statistics.fmean(x[j] for x in small)
                                          for j, k in enumerate(("acc", "fpr", "tpr"))},
            **{f"{k}_full": full[j] for j, k in enumerate(("acc", "fpr", "tpr"))}}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--n-large", type=int, default=20)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--max-fpr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--md")
    a = ap.parse_args(argv[1:])
    runs = [score_run(Path(p)) for p in a.runs]
    sims = {n: {r["category"]: simulate(r, n, a.draws, a.seed) for r in runs} for n in (a.n, a.n_large)}
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    cats = [r["category"] for r in runs]
    lines = [f"# Thresholds from {a.n} validation images: held-out false alarms and synthetic recall", "",
             "Runs: rd, 3 epochs, 128 px, val_fraction 0.3 ("
             + ", ".join(f"{r['category']} {r['good'].size}" for r in runs) +
             f" validation good images). {a.draws} draws of n good validation images (with their synthetic "
             "defects, draem preset); each rule fits on them, and is judged on the held-out rest of the validation "
             "split: FPR on its good images, recall on its synthetic defects. Figures in %, mean over draws. "
             "No test image is used in this table.", "",
             "The runs (about 1 CPU-minute in all, one thread; scoring them here about 30 CPU-seconds, cached "
             "in each run folder as calibration_small_scores.npz: delete it to score anew):", "",
             "    for c in mvtec_ad/transistor mvtec_ad/bottle mvtec3d/tire magnetic_tile; do",
             "      OMP_NUM_THREADS=1 .venv/bin/distillad train --model rd --data /work/shared/data/$c --epochs 3 \\",
             "        --image-size 128 --val-fraction 0.3 --device cpu --out /tmp/cal_runs/$(basename $c); done", ""]
    chosen = None
    for n in (a.n, a.n_large):
        means = {}
        for k in RULES:
            f = statistics.fmean(sims[n][c][k][0] for c in cats)
            rc = statistics.fmean(sims[n][c][k][1] for c in cats)
            means[k] = (f, rc)
        lines += [f"## n = {n}", "",
                  *md_table(["rule", *(f"{c} FPR / recall" for c in cats), "mean FPR", "mean recall"],
                            ([k, *(f"{pct(sims[n][c][k][0])} / {pct(sims[n][c][k][1])}" for c in cats),
                              pct(f), pct(rc)] for k, (f, rc) in means.items())), ""]
        if n == a.n:
            ok = [k for k in RULES if means[k][0] <= a.max_fpr]
            chosen = max(ok, key=lambda k: means[k][1]) if ok else min(RULES, key=lambda k: means[k][0])
    assert chosen is not None
    lines += [f"**Chosen** (highest mean recall with mean held-out FPR <= {pct(a.max_fpr)} % at n = {a.n}): "
              f"**{chosen}**." + (" The default (`DEFAULT_METHOD = \"sigma\"`, k = 3) stays: no rule here has a "
                                  "higher synthetic recall at a held-out FPR this low from 5 images. The rules that "
                                  "read n (fpr) reach their nominal rate only with about 1/F − 1 images; below that "
                                  "they extrapolate a normal fit, and these scores' upper tail is heavier than "
                                  "normal (fpr F=0.05 at n = 5: held-out FPR above 5 %)."
                                  if chosen.startswith("sigma") else ""), "",
              "## Reported on test images after the choice (never used to choose)", "",
              f"Decision accuracy / FPR / recall at the image threshold; 'n = {a.n}': mean over {a.draws} draws of "
              f"{a.n} validation images; 'all': the whole validation split. fpr F=0.05 is shown as the rule a user "
              "sets with `--target-fpr 0.05`, not as a choice.", ""]
    rows = []
    for r in runs:
        for k in dict.fromkeys(["sigma k=3 (old default)", chosen, "fpr F=0.05"]):
            t = test_decisions(r, RULES[k], a.n, a.draws, a.seed)
            cells = [t[f"{m}_{w}"] for w in ("small", "full") for m in ("acc", "fpr", "tpr")]
            rows.append([r["category"], pct(t["auroc"]), k, *(pct(c) for c in cells)])
    lines += md_table(["category", "I-AUROC", "rule", f"accuracy n = {a.n}", f"FPR n = {a.n}", f"recall n = {a.n}",
                       "accuracy all", "FPR all", "recall all"], rows)
    write_md(a.md, lines, argv)


if __name__ == "__main__":
    main(sys.argv)
