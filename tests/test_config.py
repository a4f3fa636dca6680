"""Config files: --print-config → file → --config is the same train call; bad files name file and key."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import jsonschema
import pytest
import yaml

from distillad import api
from distillad.cli import main
from distillad.config import config_schema, flag_paths, flat_defaults, load_config, param_spec
from distillad.errors import ConfigError
from distillad.registry import bind_model_kwargs, list_models, model_class

API_TRAIN = inspect.signature(api.train)


@pytest.fixture
def calls(monkeypatch) -> list[dict[str, Any]]:
    """api.train replaced by a recorder: no training in these tests."""
    seen: list[dict[str, Any]] = []

    def fake_train(*args, **kwargs):
        assert not args
        seen.append(kwargs)
        return {"method": kwargs["model"], "history": [], "calibration": {"n_val": 0}}

    monkeypatch.setattr(api, "train", fake_train)
    return seen


def _print_config(argv: list[str], capsys) -> str:
    assert main([*argv, "--print-config"]) == 0
    return capsys.readouterr().out


ARGV = ["train", "--model", "rd", "--data", "data/bottle", "--out", "runs/x", "--lr", "0.01", "--betas", "0.9",
        "0.99", "--no-decoder-relu", "--out-indices", "1", "2", "--epochs", "3", "--foreground", "otsu",
        "--logger", "tensorboard", "--textures", "dtd", "--seed", "7", "--k-sigma", "2.5"]


def test_print_config_is_the_full_configuration(capsys, calls):
    cfg = yaml.safe_load(_print_config(ARGV, capsys))
    assert not calls  # nothing trained
    assert list(cfg) == ["model", "model_kwargs", "data", "train", "calibration", "out"]
    assert cfg["model"] == "rd" and cfg["out"] == "runs/x"
    full = bind_model_kwargs(model_class("rd"), (), {})
    assert set(cfg["model_kwargs"]) == set(full)
    assert cfg["model_kwargs"]["betas"] == [0.9, 0.99] and cfg["model_kwargs"]["decoder_relu"] is False
    assert cfg["data"] == {"path": "data/bottle", "category": None, "layout": None, "val_fraction": 0.1,
                           "split_seed": 0, "textures": "dtd", "foreground": "otsu", "resize": "squash"}
    td = model_class("rd").train_defaults
    assert cfg["train"] == {"epochs": 3, "batch_size": td["batch_size"], "image_size": td["image_size"], "seed": 7,
                            "device": "auto", "num_workers": 0, "precision": "fp32", "logger": "tensorboard"}
    assert cfg["calibration"] == {"k_sigma": 2.5, "method": "sigma", "quantile": 0.995, "threshold": None,
                                  "pixel_threshold": None, "target_fpr": None}


@pytest.mark.parametrize("model", list_models())
def test_round_trip_print_config_then_config(model, tmp_path, capsys, calls):
    argv = ["train", "--model", model, "--data", "d", "--out", "o", "--epochs", "2"]
    f = tmp_path / "run.yaml"
    f.write_text(_print_config(argv, capsys))
    assert main(argv) == 0 and main(["train", "--config", str(f)]) == 0
    direct, from_file = calls
    assert direct == from_file
    assert all(type(direct[k]) is type(from_file[k]) for k in direct)
    assert isinstance(from_file["out_indices"], tuple)
    assert "betas" not in from_file or isinstance(from_file["betas"], tuple)  # patchcore has no optimiser


def test_flags_override_the_file(tmp_path, capsys, calls):
    f = tmp_path / "run.yaml"
    f.write_text(_print_config(ARGV, capsys))
    assert main(["train", "--config", str(f), "--lr", "0.02", "--epochs", "5", "--decoder-relu",
                 "--out", str(tmp_path / "other")]) == 0
    kw = calls[0]
    assert kw["lr"] == 0.02 and kw["epochs"] == 5 and kw["decoder_relu"] is True and kw["out"] == str(tmp_path / "other")
    assert kw["betas"] == (0.9, 0.99) and kw["foreground"] == "otsu" and kw["seed"] == 7  # from the file


def test_partial_file_and_flags_for_the_rest(tmp_path, calls):
    f = tmp_path / "p.yaml"
    f.write_text("model: dskd\nmodel_kwargs:\n  lr: 1e-3\n  dfe_blocks: 2\n  structure: T-E\ntrain:\n  epochs: 4\n")
    assert main(["train", "--config", str(f), "--data", "d", "--out", "o", "--lam", "0.5"]) == 0
    kw = calls[0]
    assert kw["lr"] == 0.001 and type(kw["lr"]) is float and kw["dfe_blocks"] == 2 and kw["structure"] == "T-E"
    assert kw["lam"] == 0.5 and kw["epochs"] == 4 and kw["data"] == "d"
    # the file's model's flags are known without --model on the command line
    f.write_text("model: rd\ndata:\n  path: d\nout: o\n")
    assert main(["train", "--config", str(f), "--combine", "mean"]) == 0 and calls[1]["combine"] == "mean"


def _err(f: Path, text: str, capsys, *extra: str) -> str:
    f.write_text(text)
    assert main(["train", "--config", str(f), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(f) in err
    return err


@pytest.mark.parametrize("text,needle", [
    ("model: rd\ntrain:\n  epoch: 3\n", "unknown key 'train.epoch' (did you mean 'epochs'?)"),
    ("model: rd\nmodel_kwargs:\n  lrr: 0.1\n", "unknown key 'model_kwargs.lrr' (did you mean 'lr'?)"),
    ("modle: rd\n", "unknown key 'modle' (did you mean 'model'?)"),
    ("model: rd\ndata:\n  path: d\n  colour: red\n", "unknown key 'data.colour'"),
    ("model: rd\ntrain:\n  epochs: ten\n", "train.epochs (--epochs): 'ten' does not match '^auto$'"),
    ("model: rd\nmodel_kwargs:\n  betas: [0.5]\n", "model_kwargs.betas (--betas)"),
    ("model: rd\nmodel_kwargs:\n  combine: max\n", "model_kwargs.combine (--combine): 'max' is not one of"),
    ("model: rd\nmodel_kwargs:\n  decoder_relu: 3\n", "model_kwargs.decoder_relu"),
    ("model: rd\ndata:\n  foreground: magic\n", "data.foreground (--foreground)"),
    ("model: nope\n", "unknown model 'nope'"),
    ("- model\n- rd\n", "a config file is a mapping"),
    ("data:\n  path: d\n", "no method"),
])
def test_bad_files_name_the_key(text, needle, tmp_path, capsys, calls):
    assert needle in _err(tmp_path / "c.yaml", text, capsys, "--data", "d", "--out", "o")
    assert not calls


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    err = _err(tmp_path / "c.yaml", "model: rd\ntrain:\n  epochs: [3\n  seed: 1\n", capsys)
    assert f"{tmp_path / 'c.yaml'}:" in err and "YAML syntax error" in err
    line = int(err.split(f"{tmp_path / 'c.yaml'}:")[1].split(":")[0])
    assert 3 <= line <= 4


def test_config_without_out_anywhere_is_an_error(tmp_path, capsys):
    err = _err(tmp_path / "c.yaml", "model: rd\ndata:\n  path: d\n", capsys)
    assert "missing 'out'" in err and "--out" in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("model", list_models())
def test_schemas_are_valid_and_cover_every_keyword(model):
    for complete in (False, True):
        jsonschema.Draft202012Validator.check_schema(config_schema(model, complete))
    props = config_schema(model)["properties"]["model_kwargs"]["properties"]
    assert set(props) == set(bind_model_kwargs(model_class(model), (), {}))


def _write(f: Path, text: str) -> Path:
    f.write_text(text)
    return f


def test_load_config_types(tmp_path):
    f = _write(tmp_path / "c.yaml", "model: rd\nmodel_kwargs:\n  lr: 1\n  betas: [0, 0]\n  out_indices: [0, 1, 2]\n"
               "data:\n  val_fraction: 0\n")
    cfg = load_config(f)
    mk = cfg["model_kwargs"]
    assert type(mk["lr"]) is float and mk["betas"] == (0.0, 0.0) and all(type(b) is float for b in mk["betas"])
    assert mk["out_indices"] == (0, 1, 2) and type(cfg["data"]["val_fraction"]) is float
    _write(f, "model: rd\nmodel_kwargs:\n  variance_weight: 1\n")
    with pytest.raises(ConfigError, match="c.yaml: unknown key 'model_kwargs.variance_weight'"):
        load_config(f)
    assert load_config(f, model="rd_var")["model_kwargs"]["variance_weight"] == 1.0  # --model overrides the file's


def test_defaults_are_api_trains():
    """The file's defaults are api.train's, so a config says what an unconfigured call would do."""
    for k in flag_paths():
        assert k in API_TRAIN.parameters, f"api.train has no keyword {k!r}"
        default = API_TRAIN.parameters[k].default
        assert flat_defaults()[k] == (None if default is inspect.Parameter.empty else default), k


@pytest.mark.parametrize("hint,default,expect", [
    (int, 1, dict(kind="int", nullable=False)),
    (int | None, None, dict(kind="int", nullable=True)),
    (Optional[str], None, dict(kind="str", nullable=True)),
    (str | Path | None, "auto", dict(kind="str", nullable=True)),
    (Sequence[int], (1, 2, 3), dict(kind="tuple", items=("int",), variadic=True)),
    (tuple[int, ...], (1, 2, 3), dict(kind="tuple", items=("int",), variadic=True)),
    (tuple[float, float], (0.5, 0.9), dict(kind="tuple", items=("float", "float"), variadic=False)),
    (Literal["a", "b"], "a", dict(kind="choice", choices=("a", "b"), nullable=False)),
    (Literal["a", "b"] | None, None, dict(kind="choice", choices=("a", "b"), nullable=True)),
    (bool, True, dict(kind="bool")),
    (inspect.Parameter.empty, 3, dict(kind="int")),
    (float | int, 1.0, dict(kind="float")),
    (type[int], int, dict(kind="any")),
    (dict[str, float], None, dict(kind="any", nullable=True)),
])
def test_param_spec(hint, default, expect):
    p = param_spec("x", hint, default)
    assert {k: getattr(p, k) for k in expect} == expect
