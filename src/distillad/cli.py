"""Command line: ``distillad train | tune | test | calibrate | predict | demo | benchmark | synth-preview | export |
serve``.

Flags map 1:1 to keywords: ``--epochs`` is ``train(epochs=)``; a method's own keywords
(``--teacher``, ``--lr``, ``--sigma`` ...) are read from its constructor's signature and typed
from its hints after ``--model`` is known, so ``distillad train --model rd --help`` lists them:
bool → ``--x/--no-x``, Literal → choices, ``tuple[float, float]`` → two values, ``tuple[int, ...]``
→ one or more; where the hint allows None the value ``none`` means None (``--dfe-blocks none``).
``train --print-config`` writes the whole run as YAML; ``train --config FILE`` runs such a file,
flags given with it overriding it (``distillad.config``). Unknown flags are errors. Bad input
ends with one line naming the flag or file and the problem, no stack trace.

``tune`` takes train's flags plus ``--grid KEY=V1,V2`` (repeatable: a cartesian product) and
trains and scores every candidate on validation images only (``distillad.tune``).

Exit codes: 0 done; 2 bad input, one line on stderr; 3 ``predict`` predicted some images but not all
(see ``predict -h``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__, api, distributed
from .benchmark import add_arguments, run_from_args
from .calibration import calibrate_run, calibration_warnings, describe
from .cli_flags import (
    Parser,
    add_calibrate_command,
    add_calibration_flags,
    add_model_flags,
    add_precision_flag,
    add_run_flags,
    add_tile_flag,
    calibration_settings,
    parse_grid,
    positive_int,
    tuple_value,
)
from .cli_print import print_metrics, print_per_defect
from .config import config_from_args, dump_config, flag_paths, load_config, peek_model, train_kwargs
from .demo import run_demo
from .distributed import is_main
from .errors import ConfigError, DistilladError
from .export import export
from .registry import list_models
from .synthesis import synth_preview_from_data
from .synthesis.foreground import FOREGROUND_METHODS
from .synthesis.presets import SYNTHESIS_PRESETS
from .tune import render, tune

__all__ = ["main", "build_parser", "parse_args", "parse_train_config"]

#: set by ``predict`` once its arguments parsed: ``entry`` then ends the process without the teardown
_EXIT_AT_ONCE = False


_TUNE_HELP = ("Train one run per candidate of --grid (train's flags fix the rest) and score it on the validation "
              "good images vs. their synthetic defects: criterion = mean of image and pixel AUROC; ties go to "
              "the lower validation --tie-loss, then the method's default, then grid order. Test images are "
              "never read. Finished candidates are reused: rerun the same command to resume.")


def _announce(pre: Any) -> None:
    """``train``'s preamble as the CLI prints its messages: the block on stdout, each warning a stderr line."""
    print("\n".join(pre.lines), flush=True)
    for w in pre.warnings:
        print(f"distillad: warning: {w}", file=sys.stderr, flush=True)


def build_parser(model: str | None = None) -> argparse.ArgumentParser:
    ap = Parser(prog="distillad", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=_version())
    ap.add_argument("-v", "--verbose", action="store_true", help="log details and show stack traces")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a method on good images into a run folder", allow_abbrev=False,
                       description="Flags override --config; unset ones are the method's paper settings.")
    add_run_flags(t, "run folder to create (or continue with --resume)")
    t.add_argument("--print-config", action="store_true",
                   help="print the full configuration as YAML and exit without training")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--overwrite", action="store_true",
                   help="start over in --out: remove the run files found there first (nothing else)")

    u = sub.add_parser("tune", help="choose method keywords on validation images (good + synthetic defects)",
                       allow_abbrev=False, description=_TUNE_HELP)
    add_run_flags(u, "folder for tune.json, tune.md and runs/<candidate>/ (rerun to resume)")
    u.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a method keyword and its values (typed like its flag; tuple items joined by ':'); "
                        "repeat for a cartesian product")
    u.add_argument("--seeds", type=int, nargs="+", default=None, help="train every candidate with each seed "
                   "(instead of --seed); the criterion is averaged over them")
    u.add_argument("--synthesis", choices=sorted(SYNTHESIS_PRESETS), default="draem",
                   help="synthetic defects of the validation images (default: draem)")
    u.add_argument("--tie-loss", default="loss", metavar="KEY",
                   help="validation loss term that breaks criterion ties (default: loss, the total)")
    for parser in (t, u):
        parser.set_defaults(_parser=parser, _model_params={})
        if model is not None:
            parser.set_defaults(_model_params=add_model_flags(parser, model))

    e = sub.add_parser("test", help="evaluate a run on its dataset's test split")
    e.add_argument("--run", required=True)
    e.add_argument("--data", help="another dataset to test on (default: the run's)")
    e.add_argument("--category")
    e.add_argument("--layout")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=16)
    add_tile_flag(e)
    add_calibration_flags(e, "--threshold-method", required=False)
    add_precision_flag(e)

    add_calibrate_command(sub)

    p = sub.add_parser("predict", help="score new images with a trained run", epilog=_PREDICT_EPILOG)
    p.add_argument("--run", required=True)
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="folder for predictions.csv and overlays (new, empty, or an "
                   "earlier prediction with --overwrite); never inside an input folder or the run")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0,
                   help="processes decoding images while the model runs (default 0: one thread of this process)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads while predicting (default: cores minus --num-workers, at least 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier prediction in --out (only the files its predictions.csv lists)")
    p.add_argument("--no-overlays", action="store_true")
    add_tile_flag(p)
    add_precision_flag(p)

    d = sub.add_parser("demo", help="generate the embedded demo data, train RD, evaluate, draw overlays")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, default=None, help="default: the demo's short budget")
    d.add_argument("--device", default="auto")

    s = sub.add_parser("synth-preview", help="grid of the synthetic anomalies training would see")
    s.add_argument("--data", required=True)
    s.add_argument("--category")
    s.add_argument("--layout")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--n", type=positive_int, default=8, help="number of samples (default: 8)")
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--textures", help="folder of texture images (e.g. DTD); default: no external data")
    s.add_argument("--foreground", default="grabcut", choices=FOREGROUND_METHODS)
    s.add_argument("--seed", type=int, default=0)

    m = sub.add_parser("models", help="list the methods")
    m.set_defaults()

    x = sub.add_parser("export", help="export a trained run to ONNX or OpenVINO (maps and scores)",
                       description="Needs the export extra: pip install 'distillad[export]' "
                                   "(and 'distillad[openvino]' for --format openvino).")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True, help="file to write: .onnx (--format onnx) or .xml (+ .bin, "
                   "--format openvino); never inside the run folder")
    x.add_argument("--batch-size", type=int, default=1, help="batch of the check against PyTorch (the "
                   "exported batch size is dynamic; default: 1)")
    x.add_argument("--format", choices=("onnx", "openvino"), default="onnx", dest="fmt")
    x.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8: onnxruntime static quantisation calibrated on the run's validation good images")
    x.add_argument("--fp16", action="store_true", help="float16 weights and compute (inputs/outputs stay float32)")
    x.add_argument("--calibration-images", type=int, default=None, metavar="N",
                   help="with --quantize: use at most N validation images (default: all)")

    v = sub.add_parser("serve", help="serve a trained run over HTTP: JSON API, web page at /, docs at /docs",
                       description="Micro-batched HTTP service over a run (needs the serve extra: "
                                   "pip install 'distillad[serve]'). Binds to 127.0.0.1 unless --host says otherwise.")
    v.add_argument("--run", required=True)
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    v.add_argument("--port", type=int, default=8000, help="default: 8000")
    v.add_argument("--backend", choices=("torch", "onnx", "openvino"), default="torch",
                   help="torch: the run's model (default); onnx / openvino: the file of `distillad export` "
                        "(--format onnx / openvino) on onnxruntime / OpenVINO")
    v.add_argument("--model-file", "--onnx", dest="onnx",
                   help="exported file for --backend onnx|openvino (default: RUN/model.onnx or RUN/model.xml)")
    v.add_argument("--device", default="auto")
    add_precision_flag(v)
    v.add_argument("--max-batch", type=int, default=16, help="most images in one forward pass (default: 16)")
    v.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests once it has one (default: 5)")
    v.add_argument("--max-queue", type=int, default=64,
                   help="requests in flight beyond which the answer is 503 + Retry-After (default: 64)")
    v.add_argument("--timeout-s", type=float, default=30.0, help="answer 504 after this long (default: 30)")
    v.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="larger request bodies are refused with 413 before being read (default: 20)")
    v.add_argument("--max-files", type=int, default=16, help="most images in one /v1/predict/batch (default: 16)")
    v.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    v.add_argument("--token-file", help="file holding a bearer token that /v1/ requests must send (default: none)")
    v.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; default: CORS off)")

    b = sub.add_parser("benchmark", help="compare methods on real data (see `distillad benchmark -h`)")
    add_arguments(b)
    return ap


def _version() -> str:
    return f"distillad {__version__}"


def _scan(argv: Sequence[str]) -> tuple[str | None, str | None, str | None]:
    """(verb, --model, --config) of a command line, before argparse knows the method's flags.

    Global flags (-v, --verbose, --version, -h) take no value, so the verb is the first word
    that is not a flag; ``--model X`` and ``--model=X`` after it count, the last one winning.
    """
    i = next((j for j, a in enumerate(argv) if not a.startswith("-")), len(argv))
    if i == len(argv):
        return None, None, None
    found: dict[str, str] = {}
    rest = list(argv[i + 1:])
    for j, a in enumerate(rest):
        if a == "--":
            break
        for name in ("--model", "--config"):
            if a == name and j + 1 < len(rest):
                found[name] = rest[j + 1]
            elif a.startswith(name + "="):
                found[name] = a.split("=", 1)[1]
    return argv[i], found.get("--model"), found.get("--config")


def _train_config(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed train flags (+ ``--config`` file) → the full config (see ``distillad.config``)."""
    parser: argparse.ArgumentParser = args._parser
    given = {k: v for k, v in vars(args).items() if k in flag_paths()}
    model_kwargs: dict[str, Any] = {}
    for dest, p in args._model_params.items():
        if hasattr(args, dest):
            v = getattr(args, dest)
            if p.kind == "tuple":
                try:
                    v = tuple_value(p, v)
                except ValueError as e:
                    parser.error(f"argument --{p.name.replace('_', '-')}: {e}")
            model_kwargs[p.name] = v
    base: dict[str, Any] = {}
    template = getattr(args, "print_config", False)  # a template needs only the method: paths left null
    if args.config:
        base = load_config(args.config, given.get("model"))
    else:
        missing = [f"--{k}" for k in ("model", "data", "out") if k not in given and not (template and k != "model")]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)} (or give --config FILE)")
    model = given.pop("model", None) or base.get("model")
    source = f"{args.config} + command line" if args.config else "command line"
    return config_from_args(model, given, model_kwargs, base, source=source, template=template)


_RUN_VERBS = ("train", "tune")  # verbs that take a method's own flags


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """argv → namespace, with the flags of the method that ``--model`` (or the ``--config`` file) names."""
    argv = list(argv)
    verb, model, config_file = _scan(argv)
    if verb in _RUN_VERBS and model is None and config_file:
        model = peek_model(config_file)
    return build_parser(model if verb in _RUN_VERBS else None).parse_args(argv)


def parse_train_config(argv: Sequence[str]) -> dict[str, Any]:
    """The full config a ``train ...`` command line means, without training (tests, --print-config)."""
    args = parse_args(argv)
    if args.command != "train":
        raise ValueError(f"not a train command line: {list(argv)}")
    return _train_config(args)


def run(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command == "train":
        cfg = _train_config(args)
        if args.print_config:
            sys.stdout.write(dump_config(cfg))
            return 0
        spec = api.train(**train_kwargs(cfg), resume=args.resume, overwrite=args.overwrite, announce=_announce)
        if not distributed.is_main():  # under torchrun rank 0 reports
            return 0
        cal = spec.get("calibration", {})
        epochs = spec.get("train", {}).get("epochs", len(spec.get("history", [])))
        thr = (f"{cal.get('method', 'sigma')} threshold {cal['image_threshold']:.4g} from {cal['n_val']} validation "
               "images" if "image_threshold" in cal else "no threshold: no validation images")
        print(f"trained {spec['method']} for {epochs} epochs ({len(spec.get('history', []))} phase passes) → "
              f"{cfg['out']} ({thr})")
        _warn_calibration(cal)
        return 0
    if args.command == "tune":
        return _tune(args)
    if args.command == "test":
        settings = calibration_settings(args)
        out = api.test(args.run, args.data, args.category, args.layout, args.device, args.batch_size,
                       calibration=settings, tile=args.tile, precision=args.precision)
        if settings is not None:
            _warn_calibration(out["calibration"])
        print_metrics(out["metrics"])
        print_per_defect(out.get("per_defect", {}), out["metrics"])
        print(f"written: {Path(args.run) / 'metrics.json'}, scores.csv, scores.png, overlays.png, report.html")
    elif args.command == "calibrate":
        return _calibrate(args)
    elif args.command == "predict":
        global _EXIT_AT_ONCE
        _EXIT_AT_ONCE = True
        return _predict(args)
    elif args.command == "demo":
        run_demo(args.out, epochs=args.epochs, device=args.device)
    elif args.command == "models":
        print("\n".join(list_models()))
    elif args.command == "synth-preview":
        synth_preview_from_data(args.data, args.out, category=args.category, layout=args.layout, n=args.n,
                                image_size=args.image_size, textures=args.textures, foreground=args.foreground,
                                seed=args.seed)
        print(f"written: {args.out}")
    elif args.command == "export":
        info = export(args.run, args.out, batch_size=args.batch_size, fmt=args.fmt, quantize=args.quantize,
                      fp16=args.fp16, calibration_images=args.calibration_images)
        print(json.dumps(info, indent=2))
    elif args.command == "serve":
        from .serve import ServeConfig, read_token, serve  # its optional dependencies (fastapi) load only here
        cfg = ServeConfig(args.run, backend=args.backend, onnx=args.onnx, device=args.device,
                          precision=args.precision, max_batch=args.max_batch,
                          max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, timeout_s=args.timeout_s,
                          max_upload_mb=args.max_upload_mb, max_files=args.max_files,
                          token=None if args.token_file is None else read_token(args.token_file),
                          cors_origins=args.cors_origin, threads=args.threads)
        serve(cfg, args.host, args.port, log_level="info" if args.verbose else "warning")
    elif args.command == "benchmark":
        run_from_args(args)
    return 0


PREDICT_FAILED = 3  # exit code: some images could not be predicted (listed in predictions.csv and on stderr)
_PREDICT_EPILOG = (f"Exit codes: 0 every image predicted; {PREDICT_FAILED} some images failed (unreadable file, "
                   "non-finite score): the others are predicted and written, the failed ones are listed in "
                   "predictions.csv with their error and named on stderr; 2 nothing done (bad input or output).")


def _predict(args: argparse.Namespace) -> int:
    """``distillad predict``; exit code ``PREDICT_FAILED`` when some images failed."""
    rows = api.predict(args.run, args.inputs, args.out, args.device, args.batch_size, not args.no_overlays,
                       num_workers=args.num_workers, overwrite=args.overwrite, threads=args.threads, tile=args.tile,
                       precision=args.precision)
    failed = [r for r in rows if r["error"]]
    if not is_main():  # under torchrun every rank holds the merged rows; rank 0 reports them
        return PREDICT_FAILED if failed else 0
    n_bad = sum(r["decision"] == "defective" for r in rows)
    n_good = sum(r["decision"] == "good" for r in rows)
    for r in failed:
        print(f"distillad: error: {r['error']}", file=sys.stderr)
    print(f"{len(rows)} images: {n_bad} defective, {n_good} good, {len(failed)} failed "
          f"→ {Path(args.out) / 'predictions.csv'}")
    return PREDICT_FAILED if failed else 0


def _tune(args: argparse.Namespace) -> int:
    """``distillad tune``: the fixed run settings as for train, the grid's keywords left to the grid."""
    given = {p.name for dest, p in args._model_params.items() if hasattr(args, dest)}
    cfg = _train_config(args)
    grid = parse_grid(cfg["model"], args.grid)
    both = sorted(given & set(grid))
    if both:
        raise ConfigError(f"--grid {both[0]}: also given as --{both[0].replace('_', '-')}; give it in one place")
    if args.seeds is not None and hasattr(args, "seed"):
        raise ConfigError("tune: give --seed or --seeds, not both")
    kw = train_kwargs(cfg)
    seed = kw.pop("seed")
    fixed = {k: v for k, v in kw.items() if k not in grid}
    res = tune(grid=grid, seeds=args.seeds or [seed], synthesis=args.synthesis, tie_loss=args.tie_loss, **fixed)
    print(render(res))
    print(f"written: {Path(cfg['out']) / 'tune.json'}, tune.md, runs/")
    return 0


def _warn_calibration(calib: dict[str, Any]) -> None:
    for w in calibration_warnings(calib):
        print(f"distillad: warning: {w}", file=sys.stderr)


def _calibrate(args: argparse.Namespace) -> int:
    """``distillad calibrate``: re-fit, rewrite run.json, print the old and the new thresholds."""
    old, new = calibrate_run(args.run, calibration_settings(args), args.device, args.batch_size, good=args.good)
    print(f"old: {describe(old)}")
    print(f"new: {describe(new)}")
    if args.good is not None:
        print(f"added as good: {len(new['feedback'][-1]['images'])} image(s) from {args.good} "
              f"({new['n_feedback']} added in all, recorded in run.json's calibration.feedback)")
    print(f"written: {Path(args.run) / 'run.json'} (rerun `distillad test --run {args.run}` for the decisions "
          "at the new thresholds)")
    _warn_calibration(new)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return run(argv)
    except DistilladError as e:
        if "-v" in argv or "--verbose" in argv:
            raise
        print(f"distillad: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distillad: interrupted (a run folder can be continued with --resume)", file=sys.stderr)
        return 130
    except OSError as e:  # a file the library did not anticipate (it names its own): still one line
        if "-v" in argv or "--verbose" in argv:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"distillad: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The console script: ``main``; after ``predict`` (its files are written and moved into place by then)
    the streams are flushed and the process ends without the interpreter's teardown of torch, timm and
    torchvision's modules (benchmarks/predict_phases.py times it; benchmarks/results/predict.md)."""
    rc = main()
    if _EXIT_AT_ONCE:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (``| head``) or stream: nothing left to tell it
                pass
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
