"""distillad.benchmark.args and categories: the CLI's argument checks, --set / --image-size-for
parsing, category discovery and paper keys, and the printed overall table."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

from distillad.benchmark import add_arguments, config_from_args, discover_categories, run_from_args
from distillad.benchmark.args import _parse_set, _parse_sizes
from distillad.benchmark.categories import paper_key
from distillad.benchmark.report import table
from distillad.cli import main
from distillad.errors import ConfigError


def test_cli_rejects_unknown_model_and_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "--models", "rd,nope", "--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    assert "unknown model(s) nope" in capsys.readouterr().err
    assert main(["benchmark", "--models", "rd", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["benchmark", "--set", "rd.lr", "--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    assert "MODEL.keyword=value" in capsys.readouterr().err
    assert main(["benchmark", "--seeds", "0", "--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err


def test_set_and_size_parsing() -> None:
    assert _parse_set(["rd.lr=0.001", "stfpm.combine=sum", "rd.betas=(0.9, 0.99)", "*.sigma=2"]) == {
        "rd": {"lr": 0.001, "betas": (0.9, 0.99)}, "stfpm": {"combine": "sum"}, "*": {"sigma": 2}}
    assert _parse_sizes(["magnetic_tile=128", "mvtec_ad/bottle=256"]) == {"magnetic_tile": 128, "mvtec_ad/bottle": 256}
    with pytest.raises(ConfigError):
        _parse_sizes(["magnetic_tile"])


def test_flags_become_one_config() -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--models", "rd, stfpm", "--quick", "--set", "rd.lr=0.1", "--no-plots",
                                         "--image-size-for", "washer=32", "--threads", "1"]))
    assert cfg.models == ["rd", "stfpm"] and cfg.quick and not cfg.plots and cfg.threads == 1
    assert cfg.model_kwargs == {"rd": {"lr": 0.1}} and cfg.image_size_for == {"washer": 32}
    assert cfg.seeds is None and cfg.teacher == "efficientnet_lite0"


def test_run_from_args_prints_the_overall_table_from_the_results(bench: SimpleNamespace, capsys, monkeypatch) -> None:
    import distillad.benchmark.args as args_mod
    monkeypatch.setattr(args_mod, "run_benchmark", lambda cfg: bench.results)
    run_from_args(SimpleNamespace(models="rd,stfpm", data=None, categories=None, seeds=None, epochs=None,
                                  out=str(bench.out), image_size=None, batch_size=None, set_=None, quick=True,
                                  device="cpu", teacher="efficientnet_lite0", teacher_weights=None,
                                  image_size_for=None, no_plots=True, threads=None, report_only=False))
    printed = capsys.readouterr().out
    assert "\n".join(table(bench.results["summary"]["overall"])) in printed
    assert printed.startswith("Overall (mean over categories):\n| model |")


def test_categories_are_discovered(tmp_path: Path) -> None:
    for p in ("mvtec_ad/bottle/train/good", "mvtec_ad/cable/train/good", "magnetic_tile/MT_Free/Imgs", "dtd/images/x"):
        (tmp_path / p).mkdir(parents=True)
    assert discover_categories(tmp_path) == ["magnetic_tile", "mvtec_ad/bottle", "mvtec_ad/cable"]
    assert discover_categories(tmp_path / "mvtec_ad" / "bottle") == ["."]
    assert paper_key("mvtec_ad/bottle", tmp_path / "mvtec_ad" / "bottle") == "mvtec_ad/bottle"
    assert paper_key("magnetic_tile", tmp_path / "magnetic_tile") == "magnetic_tile"
