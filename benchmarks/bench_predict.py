"""End-to-end ``predict`` on a folder: this distillad vs. the previous one (a git commit) vs. anomalib's
``Engine.predict``, each a fresh process timed from start to exit (its last file written), in the same run.

    python benchmarks/bench_predict.py --run RUN --data ../shared/data/mvtec_ad/bottle/test \
        --anomalib-python /path/to/venv/bin/python --md benchmarks/results/predict.md

The previous distillad (``--reference-commit``) did not search subfolders, so it is given the
category's defect folders one by one; the outputs of both are compared (scores and overlay pixels).
anomalib: ``ReverseDistillation(backbone="resnet18")`` with ``Engine.predict(data_path=...)`` (its
defaults: batch 1, visualisations written); weights are not loaded (no download), which changes no
timing. The three are interleaved per repeat, so load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

ANOMALIB_CHILD = """
import sys
from anomalib.engine import Engine
from anomalib.models import ReverseDistillation
model = ReverseDistillation(backbone="resnet18", pre_trained=False)
engine = Engine(default_root_dir=sys.argv[2], accelerator="cpu", devices=1, logger=False)
preds = engine.predict(model=model, data_path=sys.argv[1])
print("predicted", sum(len(p.pred_score) for p in preds))
"""


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return dt


def _reference_src(commit: str, into: Path) -> Path:
    """``src/`` of ``commit`` extracted from this repository (git archive)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def _compare(old: Path, new: Path) -> dict[str, float]:
    """Largest score difference and number of differing overlay pixels, old vs new, matched by input path."""
    import cv2
    o = list(csv.DictReader(open(old / "predictions.csv")))
    n = {r["path"]: r for r in csv.DictReader(open(new / "predictions.csv"))}
    diff, pixels = 0.0, 0
    for i, r in enumerate(o):
        m = n[r["path"]]
        diff = max(diff, abs(float(r["score"]) - float(m["score"])))
        a = cv2.imread(str(old / (r.get("overlay") or f"{i:04d}_{Path(r['path']).stem}_overlay.png")))
        b = cv2.imread(str(new / m["overlay"]))
        pixels += int((a != b).any(axis=2).sum()) if a.shape == b.shape else a.size
    return {"max_score_diff": diff, "differing_overlay_pixels": pixels, "n": len(o)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a trained distillad run (e.g. RD on bottle)")
    ap.add_argument("--data", required=True, help="folder of images with subfolders (a category's test/)")
    ap.add_argument("--reference-commit", default="7f660c8", help="distillad commit to compare with")
    ap.add_argument("--anomalib-python", help="python of an environment with anomalib (skipped when not given)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--anomalib-repeats", type=int, default=1)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--md", help="write the table as markdown here")
    args = ap.parse_args()
    data = Path(args.data)
    subdirs = sorted(str(p) for p in data.iterdir() if p.is_dir())
    n_images = sum(1 for p in data.rglob("*.png"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    ref_src = _reference_src(args.reference_commit, tmp)
    env = dict(os.environ, DISTILLAD_PROGRESS="0")
    one = {"OMP_NUM_THREADS": "1"}
    py, old = sys.executable, f"distillad {args.reference_commit}"

    def distillad_old(out: Path, extra: dict[str, str]) -> float:
        return _timed([py, "-m", "distillad", "predict", "--run", args.run, *subdirs, "--out", str(out), "--device",
                       "cpu", "--batch-size", str(args.batch_size)], dict(env, PYTHONPATH=str(ref_src), **extra))

    def distillad_new(out: Path, extra: dict[str, str]) -> float:
        return _timed([py, "-m", "distillad", "predict", "--run", args.run, str(data), "--out", str(out), "--device",
                       "cpu", "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers)],
                      dict(env, PYTHONPATH=str(ROOT / "src"), **extra))

    def anomalib(out: Path, extra: dict[str, str]) -> float:
        return _timed([args.anomalib_python, "-c", ANOMALIB_CHILD, str(data), str(out)], dict(env, **extra))

    # name -> (function, extra environment, repeats)
    plan = {f"{old} (torch default threads)": (distillad_old, {}, args.repeats),
            f"{old}, OMP_NUM_THREADS=1": (distillad_old, one, args.repeats),
            "distillad (this, defaults)": (distillad_new, {}, args.repeats)}
    if args.anomalib_python:
        plan["anomalib 2.7 Engine.predict (torch default threads)"] = (anomalib, {}, args.anomalib_repeats)
        plan["anomalib 2.7 Engine.predict, OMP_NUM_THREADS=1"] = (anomalib, one, args.anomalib_repeats)
    times: dict[str, list[float]] = {n: [] for n in plan}
    for k in range(max(r for _, _, r in plan.values())):
        for i, (name, (fn, extra, reps)) in enumerate(plan.items()):
            if k < reps:
                times[name].append(fn(tmp / f"out{i}_{k}", extra))
        print(f"repeat {k + 1}: " + ", ".join(f"{n} {v[-1]:.1f} s" for n, v in times.items() if len(v) > k), flush=True)
    same = _compare(tmp / "out1_0", tmp / "out2_0")  # the reference on one torch thread vs this one's defaults
    refs = [n for n in times if n.startswith("anomalib")] or [n for n in times if n.startswith(old)]
    ref = min(refs, key=lambda n: statistics.median(times[n]))  # the faster setting of the reference
    ref_rate = n_images / statistics.median(times[ref])
    lines = [f"{n_images} images of `{data}`, run `{args.run}`, CPU, {os.cpu_count()} cores, "
             f"median of interleaved repeats; the machine was shared with other sessions "
             f"(load average {os.getloadavg()[0]:.1f} at the end).", "",
             f"| pipeline | seconds (process start to exit) | images/s | × {ref} |", "|---|---|---|---|"]
    for name, ts in times.items():
        rate = n_images / statistics.median(ts)
        lines.append(f"| {name} | {statistics.median(ts):.1f} ({', '.join(f'{t:.1f}' for t in ts)}) | "
                     f"{rate:.2f} | {rate / ref_rate:.2f} |")
    lines += ["", f"Same outputs, this (defaults) vs {args.reference_commit} (one torch thread) on {same['n']} images: "
              "largest score difference "
              f"{same['max_score_diff']:.3g}, differing overlay pixels {same['differing_overlay_pixels']}."]
    write_md(args.md, ["# Folder predict, end to end", "", *lines], sys.argv, python="python")


if __name__ == "__main__":
    main()
