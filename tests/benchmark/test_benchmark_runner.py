"""distillad.benchmark.runner and config: resume after an interruption, reuse of finished runs by
the benchmark's own request, --report-only, the configuration's checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from distillad import api
from distillad.benchmark import BenchmarkConfig, run_benchmark
from distillad.errors import ConfigError, DataError

MODELS = ["rd", "stfpm"]


def test_interrupted_benchmark_resumes_without_retraining_finished_runs(bench: SimpleNamespace) -> None:
    assert bench.calls == ["rd", "stfpm"]
    assert bench.interrupted == {"bench": True, "results": False, "second": False}
    assert bench.fits == ["stfpm"], "the finished first run was trained again"
    assert bench.after == bench.before, "the first run's weights were rewritten"
    assert (bench.first / "bench.json").read_text() == bench.bench_json  # the third call re-measured nothing
    assert [(r["model"], r["seed"]) for r in bench.results["runs"]] == [("rd", 0), ("stfpm", 0)]
    assert bench.again["runs"] == bench.results["runs"]


def test_runs_are_matched_by_the_benchmark_request_not_run_json(bench: SimpleNamespace) -> None:
    run = bench.results["runs"][0]
    assert run["request"] == {"model": "rd", "model_kwargs": {"teacher": "efficientnet_lite0", "teacher_weights": "random"},
                              "data": str((bench.kw["data"] / "washer").resolve()), "epochs": 1, "image_size": 64,
                              "seed": 0, "batch_size": 4}
    on_disk = json.loads((bench.first / "bench.json").read_text())
    assert on_disk["request"] == run["request"]


def test_report_only_aggregates_finished_runs_without_training(bench: SimpleNamespace, monkeypatch) -> None:
    """--report-only reports the finished runs and trains nothing for the missing ones (seed 1)."""
    calls: list[int] = []
    monkeypatch.setattr(api, "fit", lambda *a, **k: calls.append(1))
    res = run_benchmark(**{**bench.kw, "seeds": 2, "out": bench.out, "report_only": True}, plots=False)
    assert not calls
    assert [(r["model"], r["seed"]) for r in res["runs"]] == [("rd", 0), ("stfpm", 0)]


def test_config_defaults_and_checks() -> None:
    quick = BenchmarkConfig(models=["rd"], quick=True).resolved()
    assert (quick.epochs, quick.seeds, quick.image_size, quick.batch_size) == (1, [0], 64, 8)
    full = BenchmarkConfig(models=["rd"], epochs=2).resolved()
    assert (full.seeds, full.image_size, full.batch_size) == ([0, 1, 2], 256, None)
    cfg = BenchmarkConfig(models=["rd", "stfpm"], teacher_weights="random", epochs=1,
                          model_kwargs={"*": {"lr": 0.1}, "rd": {"lr": 0.2}})
    assert cfg.keywords_for("rd") == {"teacher": "efficientnet_lite0", "teacher_weights": "random", "lr": 0.2}
    assert cfg.keywords_for("stfpm")["lr"] == 0.1
    for bad in (dict(models=["rd"], model_kwargs={"stfpm": {"lr": 1}}, epochs=1), dict(models=["rd"]),
                dict(models=["rd", "rd"], epochs=1), dict(models=[], epochs=1), dict(models=["nope"], epochs=1),
                dict(models=["rd"], epochs=1, seeds=0), dict(models=["rd"], epochs=0),
                dict(models=["rd"], epochs=1, threads=0)):
        with pytest.raises(ConfigError):
            BenchmarkConfig(**bad).resolved()  # type: ignore[arg-type]


def test_missing_data_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distillad.benchmark.categories
    monkeypatch.setattr(distillad.benchmark.categories, "find_data_root", lambda explicit=None: None)
    with pytest.raises(DataError, match="--data"):
        run_benchmark(models=["rd"], seeds=1, epochs=1, out=tmp_path / "o", progress=False)


def test_textures_reach_the_synthesizing_methods_only(tmp_path: Path) -> None:
    """--textures feeds the synthesis of methods that train on synthetic defects (here dtsnet), is part
    of their request and of results.md; a method without synthesis (rd) trains and is identified as before."""
    import numpy as np
    from PIL import Image

    from distillad.demo_data import make_demo_dataset

    with pytest.raises(ConfigError, match="--textures"):
        BenchmarkConfig(models=["dtsnet"], epochs=1, textures=tmp_path / "missing").resolved()
    textures = tmp_path / "dtd" / "banded"
    textures.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(textures / f"t{i}.png")
    make_demo_dataset(tmp_path / "data", n_train=6, n_test_good=1, n_test_defect=1, size=32, seed=0)
    res = run_benchmark(models=["rd", "dtsnet"], data=tmp_path / "data", categories=["washer"], seeds=1, epochs=1,
                        out=tmp_path / "out", image_size=32, batch_size=4, quick=True, progress=False, plots=False,
                        model_kwargs={"*": {"teacher_weights": "random"}}, timing=(0, 1, 1),
                        textures=tmp_path / "dtd")
    runs = {r["model"]: r for r in res["runs"]}
    spec = {m: json.loads((tmp_path / "out" / r["run_dir"] / "run.json").read_text()) for m, r in runs.items()}
    assert spec["dtsnet"]["data"]["textures"] == str((tmp_path / "dtd").resolve())
    assert spec["rd"]["data"]["textures"] is None
    assert runs["dtsnet"]["request"]["textures"] == str((tmp_path / "dtd").resolve())
    assert "textures" not in runs["rd"]["request"]
    assert f"synthetic-defect textures: `{(tmp_path / 'dtd').resolve()}`" in (tmp_path / "out" / "results.md").read_text()
