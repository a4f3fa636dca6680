"""Training speed: seconds per epoch with the teacher's folded runner (``Teacher.runner``: BatchNorm folded,
TF-"same" padding without a copy, channels_last) against the faithful ``body`` (``teachers.faithful()``),
interleaved batch by batch in one process, and the data loader alone, so that "is loading the
bottleneck?" is answered by a ratio measured in the same run.

    PYTHONPATH=src python benchmarks/bench_train_speed.py --data ../shared/data/mvtec_ad/bottle \\
        --md benchmarks/results/train_speed.md

Two copies of each model start from the same weights and see the same batches; the faithful copy goes first
in even batches, the runner copy in odd ones. Methods that train on synthetic defects also time their
synthetic loader (Perlin masks, textures, foregrounds), the part of their data that costs CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import time
from pathlib import Path

import torch

from distillad import distributed
from distillad.data import AnomalyDataset, load_samples
from distillad.registry import create_model
from distillad.teachers import faithful

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402


def loader_rate(data: torch.utils.data.Dataset, batch: int, workers: int, limit: int) -> float:
    """Images per second of the training loader alone (first ``limit`` batches, one epoch at most)."""
    loader = distributed.train_loader(data, batch, torch.Generator().manual_seed(0), workers)
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(loader):
        n += len(b["image"])
        if i + 1 >= limit:
            break
    return n / (time.perf_counter() - t0)


def steps(name: str, sets: dict, batch: int, limit: int) -> dict[str, float]:
    """Seconds per image of a training step (loss, backward, Adam) for both teacher paths, interleaved."""
    torch.manual_seed(0)
    fast = create_model(name).train()
    slow = copy.deepcopy(fast)
    phase = fast.phases()[0]
    opts = {k: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4)
            for k, m in (("runner", fast), ("faithful", slow))}
    loader = distributed.train_loader(sets[phase.data], batch, torch.Generator().manual_seed(0), 0)
    t = {"runner": 0.0, "faithful": 0.0}
    last = {}
    n = 0
    for i, b in enumerate(loader):
        order = [("faithful", slow), ("runner", fast)][:: 1 if i % 2 == 0 else -1]
        for k, m in order:
            t0 = time.perf_counter()
            with faithful() if k == "faithful" else contextlib.nullcontext():
                loss = getattr(m, phase.loss)(b)["loss"]
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
            if i > 0:  # the first batch warms both up
                t[k] += time.perf_counter() - t0
            last[k] = float(loss)
        n += len(b["image"]) if i > 0 else 0
        if i + 1 >= limit:
            break
    return {"runner": t["runner"] / n, "faithful": t["faithful"] / n, "images": n,
            "loss_runner": last["runner"], "loss_faithful": last["faithful"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a category folder (train/good)")
    ap.add_argument("--models", nargs="*", default=["rd", "stfpm", "dskd", "dtsnet"])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8, help="timed batches per model (after one warm-up)")
    ap.add_argument("--textures", help="DTD images for the synthesizing methods (default: procedural noise)")
    ap.add_argument("--md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    normal = AnomalyDataset(load_samples(args.data, "train"), image_size=args.image_size)
    decode = time.perf_counter() - t0
    rows = []
    for name in args.models:
        model = create_model(name)
        sets = {"normal": normal}
        if model.needs_synthesis:
            sets["synthetic"] = model.synthetic_train_set(normal, textures=args.textures, seed=0)
        data = sets[model.phases()[0].data]
        load = loader_rate(data, args.batch_size, 0, args.batches)
        s = steps(name, sets, args.batch_size, args.batches + 1)
        rows.append({"model": name, "data": model.phases()[0].data, "loader": load, **s})
        r = rows[-1]
        print(f"{name}: loader {load:.1f} img/s, step runner {1e3 * r['runner']:.1f} / faithful "
              f"{1e3 * r['faithful']:.1f} ms/img", flush=True)
    lines = [f"{len(normal)} training images of `{args.data}` at {args.image_size} px (decoded once into memory in "
             f"{decode:.1f} s), batch {args.batch_size}, {args.batches} timed batches per model after one warm-up, "
             f"CPU {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average "
             f"{os.getloadavg()[0]:.1f} at the end (other processes share the machine: ratios hold, absolute times "
             "do not).", "",
             "| model | first phase's data | loader alone img/s (num_workers 0) | step ms/img, faithful teacher | "
             "step ms/img, runner | × faster | loader share of a runner step | last loss faithful / runner |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['data']} | {r['loader']:.1f} | {1e3 * r['faithful']:.1f} | "
                     f"{1e3 * r['runner']:.1f} | {r['faithful'] / r['runner']:.2f} | "
                     f"{100 / r['loader'] / r['runner']:.0f} % | {r['loss_faithful']:.4f} / {r['loss_runner']:.4f} |")
    write_md(args.md, ["# Training speed: teacher runner vs faithful body, and the loader", "", *lines], sys.argv)


if __name__ == "__main__":
    main()
