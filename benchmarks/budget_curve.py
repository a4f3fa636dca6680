"""Budget curve: accuracy against training CPU-minutes from ONE run per (method, category, seed).

The run trains for ``--epochs`` epochs; every ``--every`` epochs a snapshot of the student weights is
kept (in memory). Afterwards each snapshot is scored on the validation split (good images vs. synthetic
defects made from them: what ``--epochs auto`` sees) and on the test split (reported only: nothing
here is chosen on test images). PatchCore's point (one fit) is measured in the same process.

    PYTHONPATH=src python benchmarks/budget_curve.py --data ../shared/data/mvtec_ad/transistor \\
        --model rd --epochs 60 --every 5 --out benchmarks/runs/budget --json benchmarks/results/budget/transistor_rd.json

``budget_plot.py`` turns the JSON files into benchmarks/results/budget.md and one picture per category.
CPU-minutes = training seconds × torch threads / 60 (a shared machine inflates them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from distillad import api
from distillad.checkpoint import load_run
from distillad.data import AnomalyDataset, load_samples
from distillad.data.resize import run_geometry
from distillad.validation import score_images, validation_sets


def _metrics(model: torch.nn.Module, sets: list) -> dict[str, float]:
    m = score_images(model, sets)
    return {k: float(m[k]) for k in ("image_auroc", "pixel_auroc", "aupro")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="rd")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--textures", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/runs/budget")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    name = Path(a.data).name
    root = Path(a.out) / f"{name}_{a.model}_s{a.seed}"
    snaps: dict[int, dict[str, torch.Tensor]] = {}

    def keep(step, model):  # noqa: ANN001 - engine hook
        if step.phase.schedule == "joint" and ((step.epoch + 1) % a.every == 0 or step.epoch + 1 == step.total):
            snaps[step.epoch + 1] = {k: v.detach().clone() for k, v in model.student_state_dict().items()}

    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    spec = api.train(a.model, a.data, root / "student", epochs=a.epochs, image_size=a.image_size, seed=a.seed,
                     textures=a.textures, on_step_end=keep, progress=False)
    wall = time.perf_counter() - t0
    secs = [h["seconds"] for h in spec["history"]]
    model, spec = load_run(root / "student")
    hw, mode = run_geometry(spec)
    good, defective, _ = validation_sets(spec)
    d = spec["data"]
    test = AnomalyDataset(load_samples(d["path"], "test", d.get("category"), d.get("layout")), image_size=hw,
                          resize=mode)
    points = []
    for epoch, state in sorted(snaps.items()):
        model.load_state_dict(state, strict=False)
        val, tst = _metrics(model, [good, defective]), _metrics(model, [test])
        minutes = sum(secs[:epoch]) * a.threads / 60
        points.append({"epoch": epoch, "cpu_minutes": minutes, "validation": val, "test": tst})
        print(f"epoch {epoch:3d} {minutes:5.1f} CPU-min  val {val}  test {tst}", flush=True)
    t1 = time.perf_counter()
    api.train("patchcore", a.data, root / "patchcore", image_size=a.image_size, seed=a.seed, progress=False)
    pc_minutes = (time.perf_counter() - t1) * a.threads / 60
    pc_model, _ = load_run(root / "patchcore")
    ref = {"cpu_minutes": pc_minutes, "validation": _metrics(pc_model, [good, defective]),
           "test": _metrics(pc_model, [test])}
    out = {"category": name, "data": a.data, "model": a.model, "seed": a.seed, "image_size": a.image_size,
           "threads": a.threads, "epochs": a.epochs, "train_wall_s": wall, "points": points, "patchcore": ref,
           "command": " ".join(sys.argv)}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(ref))


if __name__ == "__main__":
    main()
