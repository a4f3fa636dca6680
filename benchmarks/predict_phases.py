"""Where a folder ``predict`` spends its time, part by part: interpreter start + imports, the interpreter's
teardown (what ``os._exit`` skips), decoding every image, the overlay + mask PNGs, and the model alone.

    PYTHONPATH=src python benchmarks/predict_phases.py --run RUN --data ../shared/data/mvtec_ad/bottle/test

Each part is timed alone (sequentially, one thread for the decode / PNG parts as ``predict`` uses them, the
model with torch's default threads), so the parts add up to more than an overlapped ``predict`` takes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _seconds(code: str, repeats: int) -> float:
    """Median wall time of a fresh interpreter running ``code``."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    imp = "import distillad.cli, distillad.predict"
    t_exit = _seconds(imp, args.repeats)
    t_noexit = _seconds(imp + "; import os; os._exit(0)", args.repeats)

    import numpy as np
    import torch

    from distillad.checkpoint import load_run
    from distillad.data.resize import run_geometry
    from distillad.precision import predict_batch, prepare_for_inference
    from distillad.predict import _Decode, collect_inputs
    from distillad.visualize import overlay, png_bytes

    images = collect_inputs([args.data])
    t0 = time.perf_counter()
    model, spec = load_run(args.run, torch.device("cpu"))
    model = prepare_for_inference(model, torch.device("cpu"))
    t_load = time.perf_counter() - t0
    hw, mode = run_geometry(spec)
    dec = _Decode(images, hw, True, mode)
    t0 = time.perf_counter()
    items = [dec[i] for i in range(len(dec))]
    t_decode = time.perf_counter() - t0
    x = torch.stack([it["image"] for it in items])
    with torch.inference_mode():
        predict_batch(model, x[:8])
        t0 = time.perf_counter()
        maps = torch.cat([predict_batch(model, part)[0] for part in x.split(8)])[:, 0].numpy()
        t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    for it, m in zip(items, maps):
        png_bytes(overlay(it["original"].numpy(), m, float(maps.min()), float(maps.max()), threshold=None))
        png_bytes(((m >= np.median(m)) * 255).astype(np.uint8))
    t_png = time.perf_counter() - t0
    n = len(images)
    print(f"{n} images of `{args.data}`, run `{args.run}`, torch {torch.get_num_threads()} threads\n")
    print("| part | seconds | ms per image |\n|---|---|---|")
    for name, t, per in [("interpreter start + `import distillad.cli, distillad.predict`", t_noexit, False),
                         ("interpreter teardown after those imports (skipped by `os._exit`)", t_exit - t_noexit, False),
                         ("load + fold the model", t_load, False), ("decode every image (one thread)", t_decode, True),
                         ("the model, batches of 8", t_model, True), ("overlay + mask PNGs (one thread)", t_png, True)]:
        print(f"| {name} | {t:.2f} | {1e3 * t / n:.1f} |" if per else f"| {name} | {t:.2f} | |")


if __name__ == "__main__":
    main()
