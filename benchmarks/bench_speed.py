"""Inference roofline: FLOPs per image, images/s and achieved GFLOP/s of every registered model against
the machine's fp32 / bf16 ``torch.mm`` peak measured in the same run, the time split teacher / student /
map stage, before (reference path) / after (fused map stage, BatchNorm folded, inference_mode, channels_last,
TF-"same" convolutions without a padding copy, CPU batches in chunks of ``CPU_CHUNK``), and
anomalib 2.7's RD resnet18 torch model side by side when anomalib is importable.

    PYTHONPATH=src /work/venv_anomalib/bin/python benchmarks/bench_speed.py --md benchmarks/results/speed.md
    PYTHONPATH=src python benchmarks/bench_speed.py --quick          # rd only, fewer repeats

Every timing is the median of repeats taken round-robin over all variants of one row (reference,
optimised fp32, bf16, teacher alone, forward alone, anomalib), so a load from other processes hits
them alike and the ratios hold on a shared machine; absolute images/s do not. Random weights, 256 px.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from distillad.errors import DistilladError
from distillad.layers import fold_batchnorm
from distillad.maps import combine_maps, gaussian_blur, smooth_combined
from distillad.models._base import DistillationModel
from distillad.precision import CPU_CHUNK, check_precision, cpu_flags, predict_batch, prepare_for_inference
from distillad.registry import create_model, list_models
from distillad.teachers import faithful

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402


def mm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n×n @ n×n ``torch.mm`` in ``dtype``: the best of ``repeats`` (a peak, not a median)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call (convolutions, matmuls: 2 per multiply-add), from torch's FlopCounterMode."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each variant, timed round-robin (one call of each per round)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(warmup + repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def anomalib_rd(size: int) -> torch.nn.Module | None:
    """anomalib 2.7's ReverseDistillationModel (resnet18, its default 'add' map), or None when not importable."""
    try:
        from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel
    except ImportError:
        return None
    return ReverseDistillationModel(backbone="resnet18", input_size=(size, size), layers=["layer1", "layer2", "layer3"],
                                    anomaly_map_mode="add", pre_trained=False).eval()


def build(name: str, teacher: str | None) -> DistillationModel | None:
    kw = {"teacher_weights": "random"}
    if teacher is not None:
        kw["teacher"] = teacher
    try:
        return create_model(name, **kw)  # type: ignore[return-value]
    except (DistilladError, TypeError) as e:
        print(f"skip {name} teacher={teacher}: {e}", file=sys.stderr)
        return None


def mm_call(dtype: torch.dtype, n: int = 1024) -> Callable[[], object]:
    """One n×n @ n×n ``torch.mm``: timed among a row's variants, so the peak is measured under the same load."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return lambda: torch.mm(a, b)


MM_N = 1024


def row(name: str, teacher: str | None, batch: int, size: int, repeats: int, bf16: bool,
        previous: bool, anomalib: torch.nn.Module | None) -> dict[str, object] | None:
    """One table row: FLOPs, the interleaved timings and the map stage alone, before and after."""
    torch.manual_seed(0)
    base = build(name, teacher)
    if base is None:
        return None
    base.eval()
    fast = prepare_for_inference(base, torch.device("cpu"))
    x = torch.rand(batch, 3, size, size)
    xf = x
    x1 = xf[:1]
    with torch.inference_mode():
        fast.predict(x1)  # fills the map stage's operator cache: its one-off construction is not per-image work
        f_teacher = flops(lambda: fast.teacher(x1))
        f_forward = flops(lambda: fast(x1))
        f_predict = flops(lambda: fast.predict(x1))

    def ref() -> object:
        with torch.no_grad(), faithful():  # the teacher's registered body, as before
            return base.predict_reference(x)

    def inf(fn: Callable[[], object]) -> Callable[[], object]:
        def go() -> object:
            with torch.inference_mode():
                return fn()
        return go

    variants: dict[str, Callable[[], object]] = {
        "reference": ref, "fp32": lambda: predict_batch(fast, xf, "fp32"),
        "teacher": inf(as_predict(fast.teacher, xf)), "forward": inf(as_predict(fast, xf)),
        "mm fp32": mm_call(torch.float32)}
    if previous:  # the previous optimised path: BatchNorm folded, but NCHW, F.pad "same" and the whole batch at once
        prev = previous_path(base)
        variants["fp32 previous"] = inf(lambda: _faithful(prev.predict, xf))
    if bf16:
        variants["bf16"] = lambda: predict_batch(fast, xf, "bf16")
        variants["bf16 forward"] = inf(as_predict(torch.autocast("cpu", torch.bfloat16)(fast.forward), xf))
        variants["mm bf16"] = mm_call(torch.bfloat16)
    if anomalib is not None:
        variants["anomalib"] = inf(lambda: anomalib(x))
    t = interleaved(variants, repeats)
    out: dict[str, object] = {"model": name, "teacher": base.teacher.name,
                              "batch": batch, "gflop_net": f_forward / 1e9, "gflop_teacher": f_teacher / 1e9,
                              "gflop_map": (f_predict - f_forward) / 1e9, **{f"t_{k}": v / batch for k, v in t.items()},
                              **{f"peak_{k[3:]}": 2 * MM_N ** 3 / v / 1e9 for k, v in t.items() if k.startswith("mm ")}}
    if type(base).map_parts is not DistillationModel.map_parts:  # the map stage alone, reference vs fused
        with torch.inference_mode():
            parts, mode = fast.map_parts(xf)
            m = interleaved({"ref": lambda: gaussian_blur(combine_maps(parts, (size, size), mode), base.sigma),
                             "fused": lambda: smooth_combined(parts, (size, size), mode, base.sigma)}, 3 * repeats)
            diff = (gaussian_blur(combine_maps(parts, (size, size), mode), base.sigma)
                    - smooth_combined(parts, (size, size), mode, base.sigma)).abs().max()
        out.update(map_ref=m["ref"] / batch, map_fused=m["fused"] / batch, map_diff=float(diff))
    with torch.inference_mode():
        a, _ = predict_batch(fast, xf, "fp32")
        b, _ = ref()
        out["fold_diff"] = float((a - b).abs().max())
        if bf16:
            c, _ = predict_batch(fast, xf, "bf16")
            out["bf16_diff"], out["range"] = float((a - c).abs().max()), float(b.max() - b.min())
    return out


def _faithful(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> object:
    with faithful():  # the teacher as it ran before ``Teacher.runner``
        return fn(x)


def previous_path(base: torch.nn.Module) -> torch.nn.Module:
    """The inference copy as it was before channels_last, ``SamePaddedConv`` and chunks: BatchNorm folded only."""
    prev = copy.deepcopy(base).eval()
    with faithful():
        fold_batchnorm(prev, torch.rand(1, 3, 64, 64), prev.predict)
    return prev


def as_predict(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], object]:
    """``fn`` over ``x`` the way ``predict_batch`` feeds the model: channels_last, ``CPU_CHUNK`` images at a time."""
    return lambda: [fn(part.contiguous(memory_format=torch.channels_last)) for part in x.split(CPU_CHUNK)]


def batch_effect(size: int, repeats: int) -> dict[str, tuple[float, float]]:
    """rd's seconds per image at batch 1 and 16, reference and optimised, interleaved in one loop."""
    torch.manual_seed(0)
    base = build("rd", None).eval()  # type: ignore[union-attr]
    fast = prepare_for_inference(base, torch.device("cpu"))
    x16 = torch.rand(16, 3, size, size)
    x1 = x16[:1].clone()

    def ref(x: torch.Tensor) -> Callable[[], object]:
        def go() -> object:
            with torch.no_grad(), faithful():
                return base.predict_reference(x)
        return go

    t = interleaved({"ref1": ref(x1), "ref16": ref(x16), "fast1": lambda: predict_batch(fast, x1),
                     "fast16": lambda: predict_batch(fast, x16)}, repeats)
    return {"reference": (t["ref1"], t["ref16"] / 16), "optimised": (t["fast1"], t["fast16"] / 16)}


CHUNKS = (1, 2, 4, 8, 16)


def chunk_effect(size: int, repeats: int) -> dict[str, float]:
    """rd's seconds per image at batch 16 by chunk size (channels_last), and the previous path (NCHW, whole
    batch), interleaved: why ``predict_batch`` runs a CPU batch ``CPU_CHUNK`` images at a time."""
    torch.manual_seed(0)
    base = build("rd", None).eval()  # type: ignore[union-attr]
    fast, prev = prepare_for_inference(base, torch.device("cpu")), previous_path(base)
    x = torch.rand(16, 3, size, size)

    def inf(fn: Callable[[], object]) -> Callable[[], object]:
        def go() -> object:
            with torch.inference_mode():
                return fn()
        return go

    variants = {"NCHW whole batch": inf(lambda: _faithful(prev.predict, x)),
                **{f"NCHW chunk {c}": inf(lambda c=c: [_faithful(prev.predict, p) for p in x.split(c)]) for c in (1, 4)},
                **{f"channels_last chunk {c}": (lambda c=c: predict_batch(fast, x, chunk=c)) for c in CHUNKS}}
    return {k: v / 16 for k, v in interleaved(variants, repeats).items()}


def fmt_rows(rows: list[dict], peak16: bool) -> list[str]:
    head = ("| model | teacher | batch | GFLOP/img net (map) | img/s reference | img/s fp32 (× ref) | net GFLOP/s fp32 "
            "(% of fp32 mm in the same rounds) | teacher / student / map ms/img (map %) | map stage ms/img ref → fused "
            "(max diff) |")
    if any("t_fp32 previous" in r for r in rows):
        head += " fp32 × previous (folded, NCHW, whole batch) |"
    if peak16:
        head += " img/s bf16 (× fp32) | net GFLOP/s bf16 (% of bf16 mm) | bf16 max map diff (map range) |"
    if any("t_anomalib" in r for r in rows):
        head += " × anomalib RD r18 (fp32; bf16) | × anomalib if every net FLOP ran at the fp32 mm rate |"
    lines = [head, "|" + "---|" * head[1:].count("|")]
    for r in rows:
        net_s = r["t_forward"]
        student = max(r["t_forward"] - r["t_teacher"], 0.0)
        mapt = max(r["t_fp32"] - r["t_forward"], 0.0)
        s = (f"| {r['model']} | {r['teacher']} | {r['batch']} | {r['gflop_net']:.2f} ({r['gflop_map']:.3f}) | "
             f"{1 / r['t_reference']:.2f} | {1 / r['t_fp32']:.2f} ({r['t_reference'] / r['t_fp32']:.2f}×) | "
             f"{r['gflop_net'] / net_s:.1f} ({100 * r['gflop_net'] / net_s / r['peak_fp32']:.0f} % of "
             f"{r['peak_fp32']:.0f}) | "
             f"{1e3 * r['t_teacher']:.1f} / {1e3 * student:.1f} / {1e3 * mapt:.1f} ({100 * mapt / r['t_fp32']:.0f} %) | ")
        s += (f"{1e3 * r['map_ref']:.2f} → {1e3 * r['map_fused']:.2f} ({r['map_diff']:.1e}) |" if "map_ref" in r
              else "not a per-stage combination |")
        if any("t_fp32 previous" in q for q in rows):
            s += f" {r['t_fp32 previous'] / r['t_fp32']:.2f}× |" if "t_fp32 previous" in r else " |"
        if peak16:
            s += (f" {1 / r['t_bf16']:.2f} ({r['t_fp32'] / r['t_bf16']:.2f}×) | "
                  f"{r['gflop_net'] / r['t_bf16 forward']:.1f} ({100 * r['gflop_net'] / r['t_bf16 forward'] / r['peak_bf16']:.0f}"
                  f" % of {r['peak_bf16']:.0f}) | {r['bf16_diff']:.2g} ({r['range']:.2g}) |")
        if "t_anomalib" in r:
            bound = r["gflop_net"] / r["peak_fp32"]  # s/img with the networks at the same-round mm rate, no map
            s += f" {r['t_anomalib'] / r['t_fp32']:.2f}×" + (f"; {r['t_anomalib'] / r['t_bf16']:.2f}×" if peak16 else "")
            s += f" | {r['t_anomalib'] / bound:.2f}× |"
        elif any("t_anomalib" in q for q in rows):
            s += " | |"
        lines.append(s)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="rd only, 2 repeats (for iterating)")
    ap.add_argument("--models", nargs="*", help="default: every registered model (--quick: rd)")
    ap.add_argument("--resnet18", nargs="*", help="models also timed with a resnet18 teacher (default: all of --models)")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--batch1", nargs="*", help="models timed at batch 1 too (default: all of --models)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, help="timed rounds per row (default 3, --quick 2)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], nargs="*", default=None,
                    help="precisions to time (default: fp32, and bf16 where this CPU runs it natively)")
    ap.add_argument("--previous", nargs="*", default=["rd"],
                    help="models also timed on the previous path (folded, NCHW, whole batch; default: rd)")
    ap.add_argument("--md", help="write the table as markdown here")
    args = ap.parse_args()
    models = args.models or (["rd"] if args.quick else list_models())
    repeats = args.repeats or (2 if args.quick else 3)
    want16 = args.precision is None or "bf16" in (args.precision or [])
    try:
        bf16 = want16 and bool(check_precision("bf16", "cpu"))
    except DistilladError as e:
        if args.precision:
            raise SystemExit(str(e))
        print(f"bf16 not timed: {e}", file=sys.stderr)
        bf16 = False
    peak32 = mm_peak(torch.float32)
    peak16 = mm_peak(torch.bfloat16) if bf16 else None
    anomalib = anomalib_rd(args.size)
    rows = []
    for name in models:
        for teacher in (None, "resnet18") if args.resnet18 is None or name in args.resnet18 else (None,):
            for b in args.batches:
                if b == 1 and args.batch1 is not None and name not in args.batch1:
                    continue
                r = row(name, teacher, b, args.size, repeats, bf16, name in args.previous,
                        anomalib if name == "rd" else None)
                if r is not None:
                    rows.append(r)
                    print(fmt_rows([r], bool(peak16))[-1], flush=True)
    per_image = batch_effect(args.size, max(2, repeats)) if "rd" in models else None
    chunks = chunk_effect(args.size, max(2, repeats)) if "rd" in models else None
    peak32_end = mm_peak(torch.float32)
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "avx512f", "avx2"})
    info = [f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, flags "
            f"{', '.join(flags) or 'unknown'}; load average {os.getloadavg()[0]:.1f} at the end (the machine is "
            "shared with other sessions: absolute numbers are noisy, ratios within a row are interleaved).",
            f"Peak: best of five 2048² torch.mm on an idle moment: fp32 {peak32:.0f} GFLOP/s at the start, "
            f"{peak32_end:.0f} at the end" + (f"; bf16 {peak16:.0f} GFLOP/s" if peak16 else "; bf16 not timed")
            + f". The share of peak in the table is against a {MM_N}² torch.mm timed in the same interleaved rounds "
            "as the row (median), so both see the same load.",
            f"{args.size} px, random weights, median of {repeats} interleaved rounds after one warm-up round; "
            "anomalib: " + ("2.7 ReverseDistillationModel(resnet18, 'add'), eval forward (map + score)"
                            if anomalib is not None else "not importable in this interpreter") + "."]
    if per_image is not None:
        info.append("Batch 16 vs batch 1, rd (default teacher), interleaved: ms per image at batch 1 / 16 = "
                    + "; ".join(f"{k} {1e3 * a:.1f} / {1e3 * b:.1f} ({a / b:.2f}× per image at 16)"
                                for k, (a, b) in per_image.items()) + ".")
    text = "\n".join(info) + "\n\n" + "\n".join(fmt_rows(rows, bool(peak16)))
    if chunks is not None:
        best = min(chunks.values())
        text += ("\n\nrd (default teacher), batch 16, ms per image by layout and images per forward pass "
                 f"(interleaved; `predict_batch` uses chunk {CPU_CHUNK}):\n\n| path | ms/img | × fastest |\n|---|---|---|\n"
                 + "\n".join(f"| {k} | {1e3 * v:.1f} | {v / best:.2f} |" for k, v in chunks.items()))
    write_md(args.md, ["# Inference speed: roofline", "", text], sys.argv)
    if args.md:
        Path(args.md).with_suffix(".json").write_text(json.dumps({"info": info, "rows": rows, "chunks": chunks},
                                                                  indent=1))


if __name__ == "__main__":
    main()
