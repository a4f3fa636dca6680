"""Typed command-line flags from method signatures, shared by ``train``, ``tune`` and ``--grid``.

A method's keywords become flags typed from their hints (bool → ``--x/--no-x``, Literal → choices,
tuples → several values, ``none`` for None where the hint allows it); ``--grid KEY=V1,V2`` values are
typed the same way. Usage errors are one line (``Parser``).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from .errors import ConfigError
from .params import Param, model_params
from .precision import PRECISIONS
from .settings import THRESHOLD_METHODS, CalibrationSettings, Setting, settings_of
from .tune import grid_params

__all__ = ["Parser", "add_model_flags", "add_run_flags", "add_calibration_flags", "tuple_value", "positive_int",
           "parse_grid"]

_NONE = "none"



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


def _setting_flag(parser: Any, st: Setting, default: Any, dest: str | None = None) -> None:
    """One run setting (``distillad.settings``) as a flag, typed from its hint like a method keyword."""
    p = st.param
    kw: dict[str, Any] = {"default": default, "help": st.help, "dest": dest or st.name}
    if st.parse is not None:
        def parse(text: str, _parse: Callable[[Any], Any] = st.parse) -> Any:
            try:
                return _parse(text)
            except ConfigError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        parse.__name__ = st.name
        kw["type"] = parse
    elif p.kind == "choice":
        kw["choices"] = [c for c in p.choices if c is not None]
    elif p.kind in ("int", "float"):
        kw.update(type={"int": int, "float": float}[p.kind], metavar=p.kind.upper())
    parser.add_argument(st.flag, **kw)


def add_run_flags(t: argparse.ArgumentParser, out_help: str) -> None:
    """The flags of one training run, shared by ``train`` and ``tune``: one per run setting
    (``distillad.settings``); unset ones stay unset, so a ``--config`` file's values show through."""
    S = argparse.SUPPRESS
    t.add_argument("--config", help="YAML file of a run (see train --print-config); flags given here override it")
    t.add_argument("--model", default=S, help="method name (see `distillad models`)")
    t.add_argument("--out", default=S, help=out_help)
    for st in settings_of():
        _setting_flag(t, st, S)


def add_calibration_flags(p: argparse.ArgumentParser, method_flag: str, required: bool) -> None:
    """The calibration flags of ``test`` (``--threshold-method``, optional) and ``calibrate`` (``--method``):
    the calibration settings (``settings.CalibrationSettings``), unset = None."""
    for st in settings_of("calibration", run_only=False):
        if st.key == "method":
            p.add_argument(method_flag, choices=THRESHOLD_METHODS, required=required, default=None,
                           dest="threshold_method",
                           help="how the thresholds are fitted on the run's validation split: " +
                                ", ".join(THRESHOLD_METHODS) +
                                ("" if required else " (default: the thresholds stored in the run)"))
        else:
            _setting_flag(p, st, None, dest=st.key)


def calibration_settings(args: argparse.Namespace) -> CalibrationSettings | None:
    """``CalibrationSettings`` of parsed calibration flags (None for ``test`` without --threshold-method)."""
    keys = [st.key for st in settings_of("calibration", run_only=False) if st.key != "method"]
    given = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.threshold_method is None:
        if "target_fpr" in given:  # --target-fpr alone: the method it is the parameter of
            return CalibrationSettings(method="fpr", **given)
        if given:
            raise ConfigError(f"--{next(iter(given)).replace('_', '-')} needs --threshold-method (without it the "
                              "run's stored thresholds are used)")
        return None
    if "synthesis" in given and args.threshold_method != "synthetic":
        raise ConfigError("--synthesis chooses the defects of --threshold-method synthetic")
    return CalibrationSettings(method=args.threshold_method, **given)


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
