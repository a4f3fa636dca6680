"""Typed command-line flags from method signatures, shared by ``train``, ``tune`` and ``--grid``.

A method's keywords become flags typed from their hints (bool → ``--x/--no-x``, Literal → choices,
tuples → several values, ``none`` for None where the hint allows it); ``--grid KEY=V1,V2`` values are
typed the same way. Usage errors are one line (``Parser``).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from .config import FOREGROUNDS, LOGGERS, RESIZE_MODES, Param, model_params
from .errors import ConfigError

__all__ = ["Parser", "add_model_flags", "add_run_flags", "add_calibration_flags", "tuple_value", "positive_int",
           "parse_grid"]

_NONE = "none"



def _epochs(text: str) -> int | str:
    """``--epochs``: a positive integer or ``auto`` (``early_stopping``)."""
    from .early_stopping import parse_epochs
    from .errors import ConfigError
    try:
        return parse_epochs(text.strip().lower())  # type: ignore[return-value]
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None

def _convert(kind: str, nullable: bool, choices: tuple[Any, ...] = ()) -> Callable[[str], Any]:
    """argparse ``type=`` for one value of ``kind``; ``none`` means None where the hint allows None
    (unless "none" is itself one of the choices). Its ``__name__`` shows in argparse's messages."""
    base = {"int": int, "float": float, "str": str}.get(kind)

    def conv(s: str) -> Any:
        if nullable and s.lower() == _NONE and _NONE not in [str(c) for c in choices]:
            return None
        if kind == "choice":
            for c in choices:
                if str(c) == s:
                    return c
            raise argparse.ArgumentTypeError(f"invalid choice: {s!r} (choose from {', '.join(map(str, choices))})")
        if kind == "bool":
            if s.lower() in ("true", "yes", "1"):
                return True
            if s.lower() in ("false", "no", "0"):
                return False
            raise ValueError(s)
        return base(s)  # type: ignore[misc]

    conv.__name__ = kind + (" or none" if nullable else "")
    return conv


def _metavar(p: Param) -> str | None:
    extra = [_NONE] if p.nullable and _NONE not in [str(c) for c in p.choices] else []
    if p.kind == "choice":
        return "{" + ",".join([*map(str, p.choices), *extra]) + "}"
    if p.kind == "tuple":
        return None
    return p.kind.upper() + ("|none" if p.nullable else "")


def add_model_flags(parser: argparse.ArgumentParser, name: str) -> dict[str, Param]:
    """One flag per constructor keyword of model ``name``, typed from its hints; returns dest → Param.

    bool → ``--x/--no-x``; Literal → choices; tuple[float, float] → 2 values; tuple[int, ...] and
    Sequence[int] → 1 or more; a hint that allows None also accepts the value ``none``.
    """
    group = parser.add_argument_group(f"{name} options (defaults: the paper's)")
    out: dict[str, Param] = {}
    for p in model_params(name):
        if p.kind == "any":  # not expressible on a command line (a class, a dict ...): config file only
            continue
        dest = f"model__{p.name}"
        kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": f"default: {p.default!r}"}
        if p.kind == "bool" and not p.nullable:
            kw["action"] = argparse.BooleanOptionalAction
        elif p.kind == "tuple":
            n = len(p.items)
            kw.update(nargs="+" if p.variadic or p.nullable else n, type=str,
                      metavar=tuple(k.upper() for k in p.items) if not (p.variadic or p.nullable) else
                      p.items[0].upper() if p.variadic else "VALUE")
            kw["help"] += (f"; {n} values" if not p.variadic else "; 1 or more values") + \
                ("; or none" if p.nullable else "")
        else:
            kw.update(type=_convert(p.kind, p.nullable, p.choices), metavar=_metavar(p))
        group.add_argument("--" + p.name.replace("_", "-"), **kw)
        out[dest] = p
    return out


def tuple_value(p: Param, values: list[str]) -> tuple[Any, ...] | None:
    """nargs strings → the hinted tuple (None for a lone ``none``); ValueError says what is wrong."""
    if p.nullable and [v.lower() for v in values] == [_NONE]:
        return None
    if not p.variadic and len(values) != len(p.items):
        raise ValueError(f"expected {len(p.items)} values, got {len(values)}")
    kinds = p.items * len(values) if p.variadic else p.items
    out = []
    for v, k in zip(values, kinds):
        try:
            out.append(_convert(k, False)(v))
        except (ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"invalid {k} value: {v!r}") from None
    return tuple(out)


def add_run_flags(t: argparse.ArgumentParser, out_help: str) -> None:
    """The flags of one training run, shared by ``train`` and ``tune``; unset ones stay unset, so a
    ``--config`` file's values show through."""
    S = argparse.SUPPRESS
    t.add_argument("--config", help="YAML file of a run (see train --print-config); flags given here override it")
    t.add_argument("--model", default=S, help="method name (see `distillad models`)")
    t.add_argument("--data", default=S, help="dataset root or category folder")
    t.add_argument("--category", default=S, help="category inside the dataset root (MVTec AD, VisA, ...; a class of CIFAR-10)")
    t.add_argument("--layout", default=S,
                   help="force the layout: mvtec, mpdd, mvtec3d, btad, visa, magnetic_tile, cifar10, folder")
    t.add_argument("--out", default=S, help=out_help)
    t.add_argument("--epochs", type=_epochs, default=S,
                   help="a number, or auto: up to the method's paper epochs, stopping when validation (held-out good "
                        "images vs. synthetic defects made from them) stops improving, keeping the best epoch "
                        "(default: the method's paper setting)")
    t.add_argument("--batch-size", type=int, default=S,
                   help="default: the method's paper setting; under torchrun the global batch, split over the ranks")
    t.add_argument("--image-size", type=int, default=S, help="default: the method's paper setting")
    t.add_argument("--resize", choices=RESIZE_MODES, default=S,
                   help="how images become the model input: squash (stretch to a square, the papers'; default), "
                        "pad (keep the aspect, pad to a square with black) or long-side (long side = --image-size, "
                        "the short side from the images' median aspect, a multiple of 32)")
    t.add_argument("--seed", type=int, default=S, help="default: 0")
    t.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:1 ...")
    t.add_argument("--val-fraction", type=float, default=S,
                   help="good training images held out for thresholds (default: 0.1)")
    from .calibration import METHODS
    t.add_argument("--threshold-method", choices=METHODS, default=S,
                   help="how the thresholds are fitted on the validation split after training (default: sigma; "
                        "`distillad calibrate` re-fits them)")
    t.add_argument("--split-seed", type=int, default=S, help="seed of the train/validation split (default: 0)")
    _threshold_flags(t, S, train=True)
    t.add_argument("--num-workers", type=int, default=S, help="default: 0")
    t.add_argument("--precision", choices=("fp32", "bf16"), default=S,
                   help="training precision: bf16 autocast (weights and optimiser stay fp32) needs a GPU or a CPU "
                        "with AVX512-BF16/AMX; bottle metrics fp32 vs bf16: benchmarks/results/train_speed.md "
                        "(default: fp32)")
    t.add_argument("--textures", default=S,
                   help="folder of texture images (e.g. DTD) for synthetic anomalies; default: none")
    t.add_argument("--foreground", choices=FOREGROUNDS, default=S,
                   help="foreground masks for synthetic anomalies; default: the method's paper preset")
    t.add_argument("--logger", choices=LOGGERS, default=S,
                   help="log losses and validation overlays into the run folder (default: off)")


def _threshold_flags(p: argparse.ArgumentParser, default: Any, train: bool) -> None:
    """--k-sigma, --quantile, --threshold, --pixel-threshold: the parameters of the calibration methods."""
    p.add_argument("--k-sigma", type=float, default=default,
                   help="sigma: threshold = mean + k·std of validation scores (default: 3.0)")
    p.add_argument("--quantile", type=float, default=default, metavar="Q",
                   help="quantile: the Q-quantile of validation scores; gamma: the Q-quantile of a Gamma fitted "
                        "to them (default: 0.995)")
    p.add_argument("--threshold", type=float, default=default, metavar="X",
                   help="fixed: the image threshold (a score >= X is defective)")
    p.add_argument("--pixel-threshold", type=float, default=default, metavar="X",
                   help="fixed: the pixel threshold of the defect masks (default: sigma's on validation pixels)")
    p.add_argument("--target-fpr", type=float, default=default, metavar="F",
                   help="fpr: the image threshold at which a fraction F of good images is expected to be called "
                        "defective, from the validation scores (the ⌈(n+1)(1−F)⌉-th smallest; with fewer than "
                        "1/F − 1 images a normal extrapolation, with a warning); alone it chooses method fpr "
                        "(default F: 0.05)")
    if not train:
        from .validation import SYNTHESIS_PRESETS
        p.add_argument("--synthesis", choices=sorted(SYNTHESIS_PRESETS), default=None,
                       help="synthetic: the validation defects (default: draem, as distillad tune)")
        p.add_argument("--textures", default=None, metavar="DIR",
                       help="synthetic: texture images of the defects, e.g. DTD (default: the run's --textures, "
                            "else procedural noise)")


def add_calibration_flags(p: argparse.ArgumentParser, method_flag: str, required: bool) -> None:
    """The calibration flags of ``test`` (``--threshold-method``, optional) and ``calibrate`` (``--method``)."""
    from .calibration import METHODS
    p.add_argument(method_flag, choices=METHODS, required=required, default=None, dest="threshold_method",
                   help="how the thresholds are fitted on the run's validation split: " + ", ".join(METHODS) +
                        ("" if required else " (default: the thresholds stored in the run)"))
    _threshold_flags(p, None, train=False)


def calibration_settings(args: argparse.Namespace) -> Any:
    """``CalibrationSettings`` of parsed calibration flags (None for ``test`` without --threshold-method)."""
    from .calibration import DEFAULT_K_SIGMA, DEFAULT_QUANTILE, CalibrationSettings
    if args.threshold_method is None:
        if args.target_fpr is not None:  # --target-fpr alone: the method it is the parameter of
            args.threshold_method = "fpr"
            return calibration_settings(args)
        given = [f for f in ("k_sigma", "quantile", "threshold", "pixel_threshold", "synthesis", "textures")
                 if getattr(args, f) is not None]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} needs --threshold-method (without it the run's "
                              "stored thresholds are used)")
        return None
    if args.synthesis is not None and args.threshold_method != "synthetic":
        raise ConfigError("--synthesis chooses the defects of --threshold-method synthetic")
    return CalibrationSettings(args.threshold_method,
                               DEFAULT_K_SIGMA if args.k_sigma is None else args.k_sigma,
                               DEFAULT_QUANTILE if args.quantile is None else args.quantile,
                               args.threshold, args.pixel_threshold, args.synthesis or "draem", args.textures,
                               args.target_fpr)


def positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the flag and the value) plus where help is."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} -h`)\n")


def parse_grid(model: str, items: Sequence[str]) -> dict[str, list[Any]]:
    """``--grid KEY=V1,V2,...`` strings → {keyword: values}, each value typed from the constructor's hint
    exactly as the keyword's own flag would type it (``none`` for None; tuple items joined by ``:``)."""
    from .tune import grid_params
    if not items:
        raise ConfigError("tune: give at least one --grid KEY=V1,V2,... (a keyword of the method and its values)")
    pairs = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... (for example variance_weight=0,1,2)")
        pairs.append((key, values))
    params = grid_params(model, [k for k, _ in pairs])
    grid: dict[str, list[Any]] = {}
    for key, values in pairs:
        p = params[key]
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        if p.kind == "any":
            raise ConfigError(f"--grid {key}: model {model!r}'s keyword {key!r} has no command-line form "
                              "(use distillad.tune.tune from Python)")
        words = [v.strip() for v in values.split(",")] if values.strip() else []
        if not words or "" in words:
            raise ConfigError(f"--grid {key}: {'an empty value' if words else 'no values'} in {values!r}")
        grid[key] = []
        for w in words:
            try:
                grid[key].append(tuple_value(p, w.split(":")) if p.kind == "tuple" else
                                 _convert(p.kind, p.nullable, p.choices)(w))
            except argparse.ArgumentTypeError as e:  # a choice: the message lists them
                raise ConfigError(f"--grid {key}: {e}") from None
            except ValueError as e:
                msg = str(e) if p.kind == "tuple" else f"invalid {p.kind} value: {w!r}"
                raise ConfigError(f"--grid {key}: {msg}") from None
    return grid


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of test / predict / serve (``distillad.precision``)."""
    from .precision import PRECISIONS
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="the networks' precision (maps stay fp32): bf16 needs a CPU with AVX512-BF16/AMX or a "
                             "GPU, fp16 a GPU or a CPU with AVX512-FP16; refused where it would be emulated "
                             "(default: fp32; speeds: benchmarks/results/speed.md)")


def add_tile_flag(parser: argparse.ArgumentParser) -> None:
    """``--tile N`` of test / predict (``distillad.tiling``)."""
    parser.add_argument("--tile", type=int, default=1, metavar="N",
                        help="predict tile by tile: the image at about N times the run's input size per side, tiles "
                             "of the input size overlapping by half, maps averaged where they overlap (default: 1, "
                             "untiled)")


def add_calibrate_command(sub: Any) -> None:
    """The ``calibrate`` subcommand: re-fit a trained run's thresholds (``calibration.calibrate_run``)."""
    c = sub.add_parser("calibrate", help="re-fit a trained run's thresholds on its validation split (no retraining)",
                       description="Fits the image and pixel thresholds anew on the run's validation good images "
                                   "(the split recorded in run.json; test images are never read) and rewrites "
                                   "run.json (atomically, sealed, under the run's lock). Prints the old and new "
                                   "thresholds. `distillad test` then reports decisions at the new ones. Give "
                                   "--method, --target-fpr or --good. Method fpr (--target-fpr F) sets the "
                                   "threshold at a false-alarm rate the user chooses. Training's default stays "
                                   "sigma (k = 3): chosen on validation images from 5-image splits, "
                                   "benchmarks/results/calibration_small.md.")
    c.add_argument("--run", required=True)
    add_calibration_flags(c, "--method", required=False)
    c.add_argument("--good", metavar="DIR",
                   help="a folder of images confirmed good (e.g. false alarms from the line): added to the "
                        "calibration set for good, then the thresholds are re-fitted (with --method, or the run's "
                        "stored method); run.json keeps what was added (paths, SHA-256), when, and the thresholds "
                        "before and after")
    c.add_argument("--device", default="auto")
    c.add_argument("--batch-size", type=int, default=16)
