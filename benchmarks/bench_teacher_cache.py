"""Training throughput of ``engine.fit`` with the frozen teacher's features cached once
(``distillad.teacher_cache``) against the path that recomputes them every epoch, in the same process,
alternating the two (and the order) repeat by repeat, so machine noise hits both alike.

    PYTHONPATH=src python benchmarks/bench_teacher_cache.py --data ../shared/data/mvtec_ad/bottle \\
        --model rd --image-size 256 --epochs 3 --repeats 3 --md benchmarks/results/teacher_cache.md

The cached path's time includes building the cache (one teacher pass over the images), so the ratio is
what a user's whole run gains; images/s counts training images × epochs. Target (issue "Beat a memory
bank"): >= 1.6x for rd at 256 px on 2 cores. The final weights of both paths are compared too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from distillad.data import AnomalyDataset, load_samples
from distillad.engine import TrainConfig, fit, seed_everything
from distillad.errors import ConfigError
from distillad.precision import check_precision
from distillad.registry import create_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402


def one(model: str, data: AnomalyDataset, size: int, epochs: int, batch: int, cache: bool,
        precision: str = "fp32") -> tuple[float, dict]:
    """Seconds of a whole ``fit`` (cache on or off) and the final student weights."""
    os.environ["DISTILLAD_TEACHER_CACHE_MB"] = "4096" if cache else "0"
    seed_everything(0)
    net = create_model(model)
    t0 = time.perf_counter()
    fit(net, data, TrainConfig(epochs=epochs, batch_size=batch, image_size=size, precision=precision), progress=False)
    return time.perf_counter() - t0, net.student_state_dict()


def _native_bf16() -> bool:
    try:
        check_precision("bf16", "cpu")
        return True
    except ConfigError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="rd")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--md", default=None)
    a = ap.parse_args()
    samples = load_samples(a.data, "train")
    samples = samples[: a.limit] if a.limit else samples
    data = AnomalyDataset(samples, image_size=a.image_size)
    times: dict[bool, list[float]] = {False: [], True: []}
    weights = {}
    for r in range(a.repeats):
        for cache in ((False, True) if r % 2 == 0 else (True, False)):
            t, w = one(a.model, data, a.image_size, a.epochs, a.batch_size, cache)
            times[cache].append(t)
            weights[cache] = w
            print(f"repeat {r + 1}: cache {'on ' if cache else 'off'} {t:7.2f} s", flush=True)
    bf16 = []
    if _native_bf16():  # the option beside the default, where the CPU runs bf16 natively
        bf16 = [one(a.model, data, a.image_size, a.epochs, a.batch_size, True, "bf16")[0] for _ in range(a.repeats)]
    n = len(data) * a.epochs
    off, on = statistics.median(times[False]), statistics.median(times[True])
    same = all(torch.equal(weights[False][k], weights[True][k]) for k in weights[False])
    diff = max(float((weights[False][k].float() - weights[True][k].float()).abs().max()) for k in weights[False])
    lines = [f"# Teacher feature cache: {a.model}, {a.image_size} px, {len(data)} images × {a.epochs} epochs, "
             f"batch {a.batch_size}, {torch.get_num_threads()} threads",
             "", "| path | median s (of " + str(a.repeats) + ") | images/s | ratio |", "|---|---|---|---|",
             f"| recomputed (before) | {off:.2f} | {n / off:.1f} | 1.00 |",
             f"| cached (build included) | {on:.2f} | {n / on:.1f} | **{off / on:.2f}×** |",
             *([f"| cached + `--precision bf16` (option, not default) | {statistics.median(bf16):.2f} | "
                f"{n / statistics.median(bf16):.1f} | {off / statistics.median(bf16):.2f}× |"] if bf16 else []), "",
             f"Final weights identical bit for bit: {same} (max |Δ| {diff:.2e}). Target >= 1.6×."]
    write_md(a.md, lines, sys.argv)


if __name__ == "__main__":
    main()
