"""What the fast inference paths do to the metrics of a trained run: the reference path (full-resolution
maps, conv blur, BatchNorm unfolded, the teacher's faithful body) vs the fast fp32 path (fused maps,
folded, channels_last, chunks) vs bf16, on the run's test split, interleaved
per batch. Reads the run's weights directly (safetensors), so a run of an older format works too.

    PYTHONPATH=src python benchmarks/speed_bottle_check.py --run /work/runs_shared/rd_bottle --md OUT.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distillad.checkpoint import load_weights
from distillad.data import AnomalyDataset, load_samples
from distillad.metrics import compute_metrics
from distillad.precision import PRECISIONS, check_precision, predict_batch, prepare_for_inference
from distillad.registry import rebuild_model
from distillad.teachers import faithful

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--md")
    args = ap.parse_args()
    spec = json.loads((Path(args.run) / "run.json").read_text())
    model = rebuild_model(spec["method"], spec["model_kwargs"])
    model.load_state_dict(load_weights(Path(args.run) / spec["weights"]["file"], spec["weights"]["sha256"]), strict=False)
    model.eval()
    fast = prepare_for_inference(model, torch.device("cpu"))
    ds = AnomalyDataset(load_samples(spec["data"]["path"], "test", spec["data"].get("category"),
                                     spec["data"].get("layout")), image_size=spec["image_size"])

    def reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with faithful():  # the teacher's registered body, not its folded channels_last runner
            return model.predict_reference(x)

    ways = {"reference": reference, "fp32": lambda x: predict_batch(fast, x, "fp32")}
    for p in PRECISIONS[1:]:
        try:
            check_precision(p, "cpu")
            ways[p] = lambda x, p=p: predict_batch(fast, x, p)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            print(f"{p}: {e}")
    out = {k: {"maps": [], "scores": [], "s": 0.0} for k in ways}
    labels, masks = [], []
    with torch.inference_mode():
        for batch in DataLoader(ds, batch_size=args.batch_size):
            for k, fn in ways.items():
                t0 = time.perf_counter()
                m, s = fn(batch["image"])
                out[k]["s"] += time.perf_counter() - t0
                out[k]["maps"].append(m[:, 0])
                out[k]["scores"].append(s)
            labels.append(batch["label"])
            masks.append(batch["mask"][:, 0])
    y, gt = torch.cat(labels).numpy(), torch.cat(masks).numpy().astype(bool)
    ref = torch.cat(out["reference"]["maps"])
    lines = [f"Run `{args.run}` ({spec['method']}, {spec['teacher']['name']}, {spec['image_size']} px), "
             f"{len(ds)} test images, batch {args.batch_size}, CPU {torch.get_num_threads()} threads, the three paths "
             "interleaved per batch on a machine shared with other sessions.", "",
             "| path | I-AUROC | P-AUROC | AUPRO@0.3 | max abs map diff vs reference (map range) | seconds (× reference) |",
             "|---|---|---|---|---|---|"]
    for k, v in out.items():
        maps = torch.cat(v["maps"])
        met = compute_metrics(y, torch.cat(v["scores"]).numpy(), gt, maps.numpy())
        lines.append(f"| {k} | {100 * met['image_auroc']:.2f} | {100 * met['pixel_auroc']:.2f} | "
                     f"{100 * met['aupro']:.2f} | {float((maps - ref).abs().max()):.3g} ({float(ref.max() - ref.min()):.3g}) | "
                     f"{v['s']:.1f} ({out['reference']['s'] / v['s']:.2f}×) |")
    write_md(args.md, lines, sys.argv)


if __name__ == "__main__":
    main()
