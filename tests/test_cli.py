"""The command line end to end on a tiny generated dataset, and its errors on bad input."""

from __future__ import annotations

import collections.abc
import csv
import inspect
import json
import os
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pytest
from PIL import Image

from distillad import api
from distillad.cli import main, parse_train_config
from distillad.registry import bind_model_kwargs, list_models, model_class, model_signature, model_type_hints

TRAIN = ["--model", "rd", "--epochs", "1", "--batch-size", "4", "--image-size", "64", "--teacher-weights", "random"]


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TRAIN]) == 0
    return out


def test_train_test_predict(run_dir, tiny_data, tmp_path, capsys):
    assert main(["test", "--run", str(run_dir)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    for k in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max"):
        assert 0.0 <= metrics[k] <= 1.0 and k in out
    for f in ("scores.csv", "scores.png", "overlays.png"):
        assert (run_dir / f).stat().st_size > 1000 or f == "scores.csv"
    rows = list(csv.DictReader(open(run_dir / "scores.csv")))
    assert len(rows) == metrics["n_test"] == 8 and {r["decision"] for r in rows} <= {"good", "defective"}

    pred = tmp_path / "pred"
    assert main(["predict", "--run", str(run_dir), str(tiny_data / "test" / "crack"),
                 str(tiny_data / "test" / "good" / "000.png"), "--out", str(pred)]) == 0
    rows = list(csv.DictReader(open(pred / "predictions.csv")))
    assert len(rows) == 3 and all(r["decision"] in ("good", "defective") for r in rows)
    assert len(list(pred.rglob("*_overlay.png"))) == 3 and len(list(pred.rglob("*_mask.png"))) == 3


def test_model_flags_come_from_the_signature(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "rd", "--help"])
    helptext = capsys.readouterr().out
    assert "--teacher" in helptext and "--sigma" in helptext and "--betas" in helptext


def test_export_onnx_matches_pytorch(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["export", "--run", str(run_dir), "--out", str(tmp_path / "m.onnx")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["max_abs_diff_maps"] < 1e-4 and info["max_abs_diff_scores"] < 1e-4


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    return subprocess.run([sys.executable, "-m", "distillad", *args], capture_output=True, text=True, env=env)


def test_bad_input_gives_one_clear_line(tiny_data, tmp_path):
    r = _cli("train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TRAIN)
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr

    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad / "washer")
    (bad / "washer" / "train" / "good" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = _cli("train", "--data", str(bad / "washer"), "--out", str(tmp_path / "r2"), *TRAIN)
    assert r.returncode == 2 and "003.png" in r.stderr and "Traceback" not in r.stderr

    empty = tmp_path / "empty" / "cat" / "train" / "good"
    empty.mkdir(parents=True)
    r = _cli("train", "--data", str(tmp_path / "empty" / "cat"), "--out", str(tmp_path / "r3"), *TRAIN)
    assert r.returncode == 2 and "no images" in r.stderr

    r = _cli("train", "--data", str(tiny_data), "--out", str(tmp_path / "r4"), *TRAIN, "--sigmaa", "2")
    assert r.returncode == 2 and "unrecognized arguments: --sigmaa" in r.stderr

    r = _cli("test", "--run", str(tmp_path / "missing-run"))
    assert r.returncode == 2 and "missing-run" in r.stderr and "Traceback" not in r.stderr


def test_mask_of_wrong_size_names_both_files(tiny_data, tmp_path):
    bad = tmp_path / "d" / "washer"
    shutil.copytree(tiny_data, bad)
    mask = bad / "ground_truth" / "crack" / "000_mask.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask)
    r = _cli("train", "--data", str(bad), "--out", str(tmp_path / "r"), *TRAIN)
    assert r.returncode == 0  # training reads good images only
    r = _cli("test", "--run", str(tmp_path / "r"))
    assert r.returncode == 2 and "000_mask.png" in r.stderr and "Traceback" not in r.stderr


def test_grayscale_and_rgba_images_are_converted(tiny_data, tmp_path):
    d = tmp_path / "modes" / "washer"
    shutil.copytree(tiny_data, d)
    g = d / "train" / "good"
    Image.open(g / "000.png").convert("L").save(g / "000.png")
    Image.open(g / "001.png").convert("RGBA").save(g / "001.png")
    arr = (np.asarray(Image.open(g / "002.png").convert("L")).astype(np.uint16) * 257)
    Image.fromarray(arr).save(g / "002.png")  # 16-bit greyscale
    assert main(["train", "--data", str(d), "--out", str(tmp_path / "r"), *TRAIN]) == 0


# --------------------------------------------------------------------------- typed model flags
# Parametrised over the registry: a new method's keywords are covered with no new test code.

BASE = ["train", "--data", "d", "--out", "o"]
_KEYWORDS = [(m, p.name) for m in list_models() for p in model_signature(m).parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _strip_none(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        paths = [a for a in rest if not (isinstance(a, type) and issubclass(a, PurePath))]
        rest = paths or rest  # str | Path → str
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), len(rest) < len(typing.get_args(hint))
    return hint, False


def _scalar_alt(t: Any, default: Any) -> Any:
    if t is int:
        return 2 if default is None else default + 1
    if t is float:
        return 0.25 if default is None else default / 2 + 0.125
    if t is str or (isinstance(t, type) and issubclass(t, PurePath)):
        return "alt" if default is None else f"{default}_alt"
    raise AssertionError(f"no CLI value for hint {t!r}: give the keyword a bool/int/float/str/Literal/tuple hint")


def _alternative(key: str, hint: Any, default: Any) -> tuple[list[str], Any]:
    """A valid non-default value for keyword ``key`` (from its hint and default) and the CLI words for it."""
    flag = "--" + key.replace("_", "-")
    hint, _ = _strip_none(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return ([f"--no-{key.replace('_', '-')}"] if default else [flag]), not default
    if origin is typing.Literal:
        value = next(c for c in args if c != default)
        return [flag, str(value)], value
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        value = tuple(_scalar_alt(t, d) for t, d in zip(args, default or [None] * len(args)))
    elif origin in (tuple, list, collections.abc.Sequence):
        t = args[0]
        d = list(default) if default else [None]
        value = tuple(_scalar_alt(t, v) for v in (d[:-1] if len(d) > 1 else d + d))  # another length too
    else:
        value = _scalar_alt(hint, default)
        return [flag, repr(value) if isinstance(value, float) else str(value)], value
    return [flag, *(repr(v) if isinstance(v, float) else str(v) for v in value)], value


@pytest.mark.parametrize("model,key", _KEYWORDS, ids=[f"{m}-{k}" for m, k in _KEYWORDS])
def test_every_model_keyword_is_a_typed_flag(model, key):
    param = model_signature(model).parameters[key]
    words, value = _alternative(key, model_type_hints(model).get(key), param.default)
    assert value != param.default
    got = parse_train_config([*BASE, "--model", model, *words])["model_kwargs"][key]
    assert got == value and type(got) is type(value), (words, got, value)
    if isinstance(value, tuple):
        assert [type(v) for v in got] == [type(v) for v in value]
    assert bind_model_kwargs(model_class(model), (), {key: got})[key] == value


_NULLABLE = [(m, k) for m, k in _KEYWORDS if _strip_none(model_type_hints(m).get(k))[1]
             or model_signature(m).parameters[k].default is None]


@pytest.mark.parametrize("model,key", _NULLABLE, ids=[f"{m}-{k}" for m, k in _NULLABLE])
def test_none_is_accepted_where_the_hint_allows_it(model, key):
    cfg = parse_train_config([*BASE, "--model", model, "--" + key.replace("_", "-"), "none"])
    assert cfg["model_kwargs"][key] is None


def test_none_default_int_is_an_int_flag():  # was a str flag ending in a TypeError traceback
    cfg = parse_train_config([*BASE, "--model", "dskd", "--dfe-blocks", "1"])
    assert cfg["model_kwargs"]["dfe_blocks"] == 1 and type(cfg["model_kwargs"]["dfe_blocks"]) is int


@pytest.mark.parametrize("argv", [
    ["-v", "train", "--model", "rd", "--teacher", "resnet18", "--data", "d", "--out", "o"],
    ["--verbose", "train", "--model=rd", "--teacher", "resnet18", "--data", "d", "--out", "o"],
    ["train", "--data", "d", "--teacher", "resnet18", "--out", "o", "--model", "rd"],
])
def test_global_flags_before_the_verb_keep_model_flags(argv):
    assert parse_train_config(argv)["model_kwargs"]["teacher"] == "resnet18"


@pytest.mark.parametrize("extra,needle", [
    (["--sigmaa", "2"], "unrecognized arguments: --sigmaa"),
    (["--sig", "2"], "unrecognized arguments: --sig"),  # no abbreviations: a new keyword must not change it
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--betas", "0.5"], "argument --betas: expected 2 arguments"),
    (["--betas", "0.5", "x"], "argument --betas: invalid float value: 'x'"),
    (["--out-indices", "1", "two"], "argument --out-indices: invalid int value: 'two'"),
    (["--combine", "max"], "argument --combine: invalid choice: 'max'"),
    (["--foreground", "magic"], "argument --foreground: invalid choice: 'magic'"),
    (["--logger", "wandb"], "argument --logger: invalid choice: 'wandb'"),
    (["--decoder-relu", "yes"], "unrecognized arguments: yes"),
])
def test_bad_flag_values_are_argparse_errors(extra, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main([*BASE, "--model", "rd", *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and "Traceback" not in err


def test_missing_required_flags_are_named(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "rd", "--data", "d"])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


def test_unknown_model_is_one_line(capsys):
    assert main([*BASE, "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def _capture_train(monkeypatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_train(*args, **kwargs):
        assert not args, "cli passes everything by keyword"
        calls.append(kwargs)
        return {"method": kwargs["model"], "history": [], "calibration": {"n_val": 0}}

    monkeypatch.setattr(api, "train", fake_train)
    return calls


def test_train_flags_reach_api_train(monkeypatch, tmp_path):
    sig = inspect.signature(api.train).parameters
    calls = _capture_train(monkeypatch)
    assert main([*BASE, "--model", "dskd", "--textures", str(tmp_path), "--foreground", "otsu",
                 "--logger", "tensorboard", "--dfe-blocks", "2", "--betas", "0.9", "0.99", "--split-seed", "3"]) == 0
    kw = calls[0]
    assert kw["textures"] == str(tmp_path) and kw["foreground"] == "otsu" and kw["logger"] == "tensorboard"
    assert kw["dfe_blocks"] == 2 and kw["betas"] == (0.9, 0.99) and kw["split_seed"] == 3
    assert set(kw) >= set(inspect.signature(model_class("dskd").__init__).parameters) - {"self"}
    # unset: the method's presets
    assert main([*BASE, "--model", "rd"]) == 0
    assert calls[1]["foreground"] is None and calls[1]["logger"] is None and calls[1]["textures"] is None
    assert calls[1]["epochs"] == model_class("rd").train_defaults["epochs"]
    assert set(calls[1]) - set(model_signature("rd").parameters) - {"resume"} <= set(sig)



def test_torchrun_hands_predict_its_flags_after_a_double_dash() -> None:
    """``torchrun ... -m distillad -- predict --run R`` (the README): without ``--`` torchrun reads ``--run``
    as an abbreviation of its ``--run-path``; with it, distillad gets predict's flags unchanged."""
    from torch.distributed.run import parse_args as torchrun_args

    from distillad.cli import parse_args
    with pytest.raises(SystemExit):
        torchrun_args(["--nproc-per-node", "2", "-m", "distillad", "predict", "--run", "r"])
    got = torchrun_args(["--nproc-per-node", "2", "-m", "distillad", "--", "predict", "--run", "r", "--out", "o", "x.png"])
    args = parse_args(got.training_script_args)
    assert (got.training_script, args.command, args.run, args.out, args.inputs) == ("distillad", "predict", "r", "o", ["x.png"])
