"""``distillad demo``: the main job end to end on the embedded, procedurally generated data.

Generates the demo dataset (see ``demo_data``), trains RD with the default genuine teacher
for a short budget, evaluates on the test split, scores a few images like a user would
with ``predict``, and writes a summary with pictures. About 2–3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from . import api
from .demo_data import make_demo_dataset
from .errors import ConfigError

__all__ = ["run_demo", "DEMO_BUDGET"]

#: the demo's training budget (RD defaults otherwise: Adam lr 0.005, betas (0.5, 0.999))
DEMO_BUDGET = {"epochs": 8, "batch_size": 8, "image_size": 192}


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None, device: str = "auto",
             progress: bool | None = None) -> dict:
    """Generate data, train, test, predict; returns the test metrics. Overwrites ``out``."""
    out = Path(out)
    if out.exists():
        if not (out / "summary.md").exists() and any(out.iterdir()):
            raise ConfigError(f"{out}: exists and is not a demo folder; choose another --out (nothing was removed)")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    data = make_demo_dataset(out / "data")
    print(f"demo data: {data} (60 good training images, 12 good + 18 defective test images)")
    budget = dict(DEMO_BUDGET, epochs=epochs or DEMO_BUDGET["epochs"])
    run = out / "run"
    api.train("rd", data, run, device=device, progress=progress, **budget)
    res = api.test(run, device=device, progress=progress)
    preds = api.predict(run, [data / "test" / "crack", data / "test" / "good"], out / "predictions",
                        device=device, progress=progress, overwrite=True)
    m = res["metrics"]
    n_bad = sum(p["decision"] == "defective" for p in preds)
    lines = [
        "# distillad demo", "",
        f"RD (Reverse Distillation) with the efficientnet_lite0 ImageNet teacher, {budget['epochs']} epochs at "
        f"{budget['image_size']} px on 60 generated good images; {time.perf_counter() - t0:.0f} s in all.", "",
        "| metric | value |", "|---|---|",
        *(f"| {k} | {m[k]:.4f} |" for k in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max",
                                           "threshold_accuracy") if k in m), "",
        f"predict on test/crack + test/good: {n_bad} of {len(preds)} flagged defective "
        "(threshold from validation good images).", "",
        "Pictures: `run/overlays.png` (heat maps; green = ground truth, white = predicted defect),",
        "`run/scores.png` (score histogram and ROC), `predictions/{crack,good}/*_overlay.png`.",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:11]))
    print(f"summary: {out / 'summary.md'}")
    return m
