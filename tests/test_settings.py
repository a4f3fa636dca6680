"""One definition of the run settings (``distillad.settings``): a setting added there reaches the CLI,
the YAML, both JSON schemas, api.train and run.json; ``--print-config`` with only ``--model`` is a
template that trains once its paths are filled in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

import pytest
import yaml
from annotated_types import Ge

from distillad import api, settings
from distillad.checkpoint import read_run_spec
from distillad.cli import main, parse_train_config
from distillad.config import config_schema, dump_config, load_config
from distillad.errors import ConfigError
from distillad.run_schema import run_spec_schema
from distillad.settings import TrainSettings, setting

from helpers.hardening import TINY, TINY_FLAGS


@dataclass
class _WithKnob(TrainSettings):
    """The train section with one more setting, written once, here."""

    dummy_knob: Annotated[int, Ge(2)] = setting(3, "a setting only this test has", run="train.dummy_knob")


@pytest.fixture
def knob(monkeypatch):
    monkeypatch.setitem(settings.SECTIONS, "train", _WithKnob)


def test_a_new_setting_reaches_cli_yaml_schemas_and_api(knob, tiny_data, tmp_path, capsys):
    argv = ["train", "--model", "rd", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *TINY_FLAGS]
    cfg = parse_train_config([*argv, "--dummy-knob", "5"])  # a typed flag
    assert cfg["train"]["dummy_knob"] == 5
    assert parse_train_config(argv)["train"]["dummy_knob"] == 3  # its default
    text = dump_config(cfg)  # YAML out and in
    f = tmp_path / "c.yaml"
    f.write_text(text)
    assert yaml.safe_load(text)["train"]["dummy_knob"] == 5 and load_config(f)["train"]["dummy_knob"] == 5
    assert config_schema("rd")["properties"]["train"]["properties"]["dummy_knob"] == {"type": "integer", "minimum": 2}
    assert run_spec_schema()["properties"]["train"]["properties"]["dummy_knob"] == {"type": "integer", "minimum": 2}
    assert "dummy_knob" in [p.name for p in settings.api_parameters()]
    # the bound, written once, refuses on every path with the flag named
    assert main([*argv, "--dummy-knob", "1"]) == 2 and "--dummy-knob" in capsys.readouterr().err
    f.write_text(text.replace("dummy_knob: 5", "dummy_knob: 1"))
    with pytest.raises(ConfigError, match="dummy_knob"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"dummy_knob must be >= 2, got 1 \(--dummy-knob\)"):
        api.train("rd", tiny_data, tmp_path / "bad", dummy_knob=1, **TINY)
    assert not (tmp_path / "bad").exists()
    spec = api.train("rd", tiny_data, tmp_path / "run", dummy_knob=4, **TINY)  # api → run.json, checked on read
    assert spec["train"]["dummy_knob"] == 4 and read_run_spec(tmp_path / "run")["train"]["dummy_knob"] == 4
    assert "dummy_knob" not in spec["model_kwargs"]


def test_each_check_is_the_settings_own():
    """api.train, the YAML schema and run.json refuse the same values (one bound each)."""
    for name, bad in [("val_fraction", 1.0), ("batch_size", 0), ("image_size", 16), ("k_sigma", -1.0),
                      ("quantile", 1.0), ("target_fpr", 0.0), ("resize", "crop"), ("precision", "fp16")]:
        with pytest.raises(ConfigError, match=rf"{name} .*\(--{name.replace('_', '-')}\)"):
            settings.check({name: bad})
    settings.check({"val_fraction": 0.0, "epochs": "auto", "target_fpr": None, "foreground": None})
    with pytest.raises(ConfigError, match="finite"):
        settings.check({"k_sigma": float("nan")})


def test_print_config_with_only_the_model_is_a_template(tiny_data, tmp_path, capsys):
    assert main(["train", "--model", "stfpm", "--print-config"]) == 0
    text = capsys.readouterr().out
    cfg = yaml.safe_load(text)
    assert cfg["model"] == "stfpm" and cfg["data"]["path"] is None and cfg["out"] is None
    assert "fill in" in text and cfg["train"]["epochs"] > 0  # the method's paper settings
    f = tmp_path / "t.yaml"
    f.write_text(text)  # unfilled: one line naming what is missing
    assert main(["train", "--config", str(f)]) == 2
    assert "data.path" in capsys.readouterr().err
    cfg["data"]["path"], cfg["out"] = str(tiny_data), str(tmp_path / "run")
    cfg["train"].update(epochs=1, batch_size=4, image_size=32)
    cfg["model_kwargs"]["teacher_weights"] = "random"
    f.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(f)]) == 0
    spec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert spec["finished"] and spec["method"] == "stfpm" and spec["train"]["epochs"] == 1
