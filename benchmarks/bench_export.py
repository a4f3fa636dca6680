"""Exported runs vs. PyTorch fp32: latency at batch 1 and 16, and the change of image AUROC, pixel AUROC
and AUPRO on the run's test split, for ONNX fp32 / int8 / fp16 and OpenVINO fp32 / fp16 / int8.

    python benchmarks/bench_export.py --run RUN --md benchmarks/results/export.md

Every variant is written by ``distillad.export.export`` (int8: calibrated on the run's validation good
images) and timed in this process on the same random batches, variants interleaved per repeat;
torch, onnxruntime and OpenVINO are each given ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from distillad.api import _test_set
from distillad.checkpoint import load_run
from distillad.export import export
from distillad.metrics import compute_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _ort(path: Path, threads: int) -> Runner:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting between calls
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: tuple(sess.run(None, {"images": x}))  # type: ignore[return-value]


def _openvino(path: Path, threads: int) -> Runner:
    import openvino as ov
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    return lambda x: (lambda r: (np.asarray(r[0]), np.asarray(r[1])))(compiled(x))


def _torch(model: torch.nn.Module) -> Runner:
    @torch.no_grad()
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = model.predict(torch.from_numpy(x))
        return m.numpy(), s.numpy()
    return run


def _latency(run: Runner, x: np.ndarray, n: int) -> float:
    run(x)  # warm-up
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        run(x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000


def _metrics(run: Runner, images: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    maps, scores = zip(*(run(images[i:i + 16]) for i in range(0, len(images), 16)))
    m = compute_metrics(labels, np.concatenate(scores), masks, np.concatenate(maps)[:, 0])
    return {k: 100 * m[k] for k in ("image_auroc", "pixel_auroc", "aupro")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per variant and batch size")
    ap.add_argument("--md", help="write the table as markdown here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, spec = load_run(args.run, "cpu")
    size = spec["image_size"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    variants: dict[str, Runner] = {"torch fp32": _torch(model)}
    info: dict[str, dict[str, Any]] = {}
    plan = [("onnx fp32", "onnx", {}), ("onnx int8", "onnx", {"quantize": "int8"}), ("onnx fp16", "onnx", {"fp16": True})]
    if importlib.util.find_spec("openvino") is not None:
        plan += [("openvino fp32", "openvino", {}), ("openvino fp16", "openvino", {"fp16": True}),
                 ("openvino int8", "openvino", {"quantize": "int8"})]
    for name, fmt, kw in plan:
        path = tmp / (name.replace(" ", "_") + (".xml" if fmt == "openvino" else ".onnx"))
        t0 = time.perf_counter()
        info[name] = export(args.run, path, fmt=fmt, **kw)
        info[name]["export_s"] = time.perf_counter() - t0
        variants[name] = (_openvino if fmt == "openvino" else _ort)(path, args.threads)
        print(f"exported {name} in {info[name]['export_s']:.0f} s", flush=True)
    gen = np.random.default_rng(0)
    lat: dict[str, dict[int, list[float]]] = {n: {1: [], 16: []} for n in variants}
    for b in (1, 16):
        x = gen.random((b, 3, size, size), dtype=np.float32)
        for _ in range(2):  # two rounds, variants interleaved
            for name, run in variants.items():
                lat[name][b].append(_latency(run, x, max(1, args.repeats // (4 if b == 16 else 1))))
    ds = _test_set(spec, None, None, None)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items]).numpy()
    labels = np.array([int(it["label"]) for it in items])
    masks = torch.stack([it["mask"][0] for it in items]).numpy().astype(bool)
    met = {name: _metrics(run, images, labels, masks) for name, run in variants.items()}
    ref = met["torch fp32"]
    rows = ["| variant | ms / batch of 1 | ms / batch of 16 | × torch (b16) | I-AUROC | Δ | P-AUROC | Δ | AUPRO | Δ | file MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    t16 = statistics.median(lat["torch fp32"][16])
    for name in variants:
        m = met[name]
        l1, l16 = statistics.median(lat[name][1]), statistics.median(lat[name][16])
        path = Path(info[name]["out"]) if name in info else None
        mb = (path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)) / 1e6 \
            if path else float("nan")
        rows.append(f"| {name} | {l1:.0f} | {l16:.0f} | {t16 / l16:.2f} | {m['image_auroc']:.2f} | "
                    f"{m['image_auroc'] - ref['image_auroc']:+.2f} | {m['pixel_auroc']:.2f} | "
                    f"{m['pixel_auroc'] - ref['pixel_auroc']:+.2f} | {m['aupro']:.2f} | {m['aupro'] - ref['aupro']:+.2f} | "
                    f"{mb:.1f} |")
    n_cal = info.get("onnx int8", {}).get("calibration_images")
    head = (f"Run `{args.run}` ({spec['method']}, teacher {spec['teacher']['name']}, {size} px), test split of "
            f"`{spec['data']['path']}` ({len(labels)} images); int8 calibrated on {n_cal} validation good images. "
            f"CPU, {args.threads} threads per runtime, median latency of interleaved repeats; the machine was "
            f"shared with other sessions (load average {os.getloadavg()[0]:.1f} at the end), so latencies are "
            "comparable within this table only. Metrics in points (×100), Δ against torch fp32.")
    write_md(args.md, ["# Export: latency and metric change", "", head, "", *rows], sys.argv, python="python")


if __name__ == "__main__":
    main()
