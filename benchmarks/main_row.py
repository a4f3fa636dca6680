"""One row of the main benchmark through ``api`` (bottle, 256 px, 10 epochs, seed 0, efficientnet_lite0,
one torch thread, the same ``api.train`` call as ``distillad benchmark``), for reproducing its numbers.

    python benchmarks/main_row.py MODEL OUT_DIR [--data ../shared/data/mvtec_ad/bottle]

Prints one JSON line: metrics, the weights' SHA-256 and the minutes taken. Run it with another
checkout's code first on PYTHONPATH (``PYTHONPATH=OTHER/src python benchmarks/main_row.py ...``) to
compare two versions on the same machine: equal SHA-256 = bit-identical training.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from distillad import api
from distillad.checkpoint import read_json

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("model")
ap.add_argument("out")
ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
ap.add_argument("--image-size", type=int, default=256)
ap.add_argument("--epochs", type=int, default=10)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
torch.set_num_threads(1)
t0 = time.time()
api.train(args.model, args.data, args.out, epochs=args.epochs, image_size=args.image_size, seed=args.seed,
          device="cpu", resume=True, progress=False, teacher="efficientnet_lite0")
m = api.test(args.out, device="cpu", progress=False)["metrics"]
spec = read_json(f"{args.out}/run.json")
print(json.dumps({"model": args.model, "minutes": round((time.time() - t0) / 60, 1),
                  "weights_sha256": spec["weights"]["sha256"],
                  **{k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")}}))
