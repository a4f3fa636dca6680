"""The flags of ``distillad benchmark`` and the command itself."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .config import DEFAULT_TEACHER, BenchmarkConfig
from .report import OVERALL, table
from .runner import run_benchmark

__all__ = ["add_arguments", "run_from_args", "config_from_args"]


def _parse_set(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        model, dot, name = key.partition(".")
        if not eq or not dot or not model or not name:
            raise ConfigError(f"--set {item!r}: expected MODEL.keyword=value (e.g. rd.lr=0.001; '*' for every model)")
        try:
            val: Any = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            val = value
        out.setdefault(model, {})[name.replace("-", "_")] = val
    return out


def _parse_sizes(items: Sequence[str] | None) -> dict[str, int]:
    out = {}
    for item in items or []:
        cat, eq, size = item.rpartition("=")
        if not eq or not cat or not size.isdigit() or int(size) < 1:
            raise ConfigError(f"--image-size-for {item!r}: expected CATEGORY=SIZE (e.g. magnetic_tile=128)")
        out[cat] = int(size)
    return out


def _shard(text: str) -> tuple[int, int]:
    """``I/N`` → (I, N); argparse reports the ValueError as an invalid --shard value."""
    i, sep, n = text.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        raise ValueError(text)
    return int(i), int(n)


_shard.__name__ = "I/N"


def _csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(p: Any) -> None:
    """Flags of ``distillad benchmark``."""
    p.description = ("Train and evaluate every (model, category, seed) under one protocol; write results.json, "
                     "results.md and plots. Finished runs in --out are reused, interrupted ones resumed.")
    p.add_argument("--models", default="rd,stfpm,patchcore",
                   help="comma list of methods (default: rd,stfpm,patchcore: the two baselines beside the memory-bank "
                        "reference on the same teacher; see `distillad models`)")
    p.add_argument("--data", help="data root (default: DISTILLAD_DATA or ../shared/data)")
    p.add_argument("--categories", "--datasets", dest="categories",
                   help="comma list of category folders relative to --data, e.g. mvtec_ad/bottle,magnetic_tile; "
                        "a CIFAR-10 class as cifar10/airplane, cifar10 for all ten "
                        "(default: every category found under --data)")
    p.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default 3; --quick 1)")
    p.add_argument("--epochs", help="epochs for every method, or auto (early stopping on validation; "
                                    "required unless --quick, which uses 1)")
    p.add_argument("--image-size", type=int, help="image size for every method (default 256; --quick 64)")
    p.add_argument("--image-size-for", action="append", metavar="CATEGORY=SIZE",
                   help="image size for one category (repeatable), e.g. magnetic_tile=128")
    p.add_argument("--batch-size", type=int, help="default: each method's paper setting (--quick: 8)")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"teacher of every method (default {DEFAULT_TEACHER})")
    p.add_argument("--teacher-weights", help="teacher weights file (default: the genuine ImageNet weights)")
    p.add_argument("--textures", metavar="DIR",
                   help="texture folder for the methods that train on synthetic defects (dtsnet, dmdd, dskd_fusion), "
                        "e.g. ../shared/data/dtd/images (default: procedural noise textures)")
    p.add_argument("--set", action="append", metavar="MODEL.KEY=VALUE", dest="set_",
                   help="a method's own keyword (repeatable), value as a Python literal, e.g. rd.lr=0.001, stfpm.combine='sum'")
    p.add_argument("--out", default="runs/benchmark", help="benchmark folder (default runs/benchmark)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--quick", action="store_true",
                   help="CI budget: 1 epoch, 1 seed, 64 px; generated demo data when no data is found")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: aggregate the finished runs in --out (e.g. made by parallel benchmarks)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default; fewer when other "
                   "jobs share the CPU, or the timings measure the contention)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--shard", metavar="I/N", type=_shard,
                   help="run only part I of N (0 <= I < N) of the (category, model, seed) grid, e.g. "
                        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; N workers share one --out, and "
                        "--report-only merges them afterwards (rerun a shard to resume it)")


def config_from_args(args: Any) -> BenchmarkConfig:
    """The ``BenchmarkConfig`` of parsed ``distillad benchmark`` flags."""
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    return BenchmarkConfig(
        models=_csv(args.models) or [], data=args.data, categories=_csv(args.categories), seeds=args.seeds,
        epochs=args.epochs, out=args.out, image_size=args.image_size, batch_size=args.batch_size,
        model_kwargs=_parse_set(args.set_), quick=args.quick, device=args.device, teacher=args.teacher,
        teacher_weights=args.teacher_weights, image_size_for=_parse_sizes(args.image_size_for),
        plots=not args.no_plots, threads=args.threads, report_only=args.report_only,
        shard=getattr(args, "shard", None), textures=getattr(args, "textures", None))


def run_from_args(args: Any) -> dict[str, Any]:
    """``distillad benchmark``: run it and print the overall table (from the results, not results.md)."""
    results = run_benchmark(config_from_args(args))
    out = Path(args.out)
    if "shard" in results:
        i, n = results["shard"]
        print(f"shard {i}/{n}: {len(results['runs'])} runs finished in {out / 'runs'} (summary {results['file']}); "
              f"when every shard is done: distillad benchmark ... --out {out} --report-only")
        return results
    print(f"{OVERALL}:\n" + "\n".join(table(results["summary"]["overall"])))
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'plots'}/ "
          f"({len(list((out / 'plots').glob('*.png')))} PNG); {len(results['runs'])} runs in {out / 'runs'}")
    return results
