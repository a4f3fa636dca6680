"""``distillad tune`` on the tiny generated data: one row per candidate, the choice follows the
criterion, test images are never read, finished candidates are reused, bad grids are one-line errors."""

from __future__ import annotations

import builtins
import importlib.util
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from distillad import api
from distillad import tune as tune_mod
from distillad import validation as validation_mod
from distillad.cli import main
from distillad.tune import choose

ARGS = ["--model", "rd_var", "--epochs", "1", "--batch-size", "4", "--image-size", "64",
        "--teacher-weights", "random", "--val-fraction", "0.3"]
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny runs: two spin-waiting threads are ~8x slower


@pytest.fixture(scope="module")
def tuned(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tune of a 2-value grid, with every file open and every sample listing recorded."""
    out = tmp_path_factory.mktemp("tune") / "t"
    opened: list[Path] = []
    splits: list[str] = []
    real_open, real_load = builtins.open, api.load_samples

    def spy_open(file: Any, *a: Any, **k: Any) -> Any:  # PIL decodes through builtins.open, pathlib through io.open
        if isinstance(file, (str, os.PathLike)):
            opened.append(Path(os.fspath(file)).resolve())
        return real_open(file, *a, **k)

    def spy_load(path: Any, split: str, *a: Any, **k: Any) -> Any:
        splits.append(split)
        return real_load(path, split, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", spy_open)
        mp.setattr(io, "open", spy_open)
        mp.setattr(api, "load_samples", spy_load)
        mp.setattr(validation_mod, "load_samples", spy_load)  # the validation split of distillad.validation
        assert main(["tune", "--data", str(tiny_data), "--out", str(out), *ARGS, "--grid", "variance_weight=0,2"]) == 0
    return {"out": out, "res": json.loads((out / "tune.json").read_text()), "opened": opened, "splits": splits}


def test_one_row_per_candidate_and_the_choice_is_the_argmax(tuned):
    res, out = tuned["res"], tuned["out"]
    assert [r["values"] for r in res["rows"]] == [{"variance_weight": 0.0}, {"variance_weight": 2.0}]
    for r in res["rows"]:
        assert r["criterion"] == pytest.approx((r["image_auroc"] + r["pixel_auroc"]) / 2)
        assert 0 <= r["image_auroc"] <= 1 and 0 <= r["pixel_auroc"] <= 1 and math.isfinite(r["val_loss_rd"])
        assert len(r["runs"]) == 1 and r["runs"][0]["n_val"] == res["n_val"] == 3
        assert json.loads((Path(r["runs"][0]["run"]) / "run.json").read_text())["finished"]
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == ["variance_weight=0.0__seed=0", "variance_weight=2.0__seed=0"]
    crit = [r["criterion"] for r in res["rows"]]
    assert res["chosen_index"] == choose(res["rows"]) and crit[res["chosen_index"]] == max(crit)
    assert res["chosen"] == res["rows"][res["chosen_index"]]["values"]
    table = [line for line in (out / "tune.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2 and sum("**chosen**" in line for line in table) == 1
    assert "**chosen**" in table[1 + res["chosen_index"]]


def test_test_images_are_never_read(tuned, tiny_data):
    root = tiny_data.resolve()
    forbidden = [root / "test", root / "ground_truth"]
    assert not [p for p in tuned["opened"] if any(p.is_relative_to(f) for f in forbidden)]
    assert "test" not in tuned["splits"] and "train" in tuned["splits"]
    assert any(p.is_relative_to(root / "train") for p in tuned["opened"])  # the spy did see the images read


def test_choose_takes_the_best_criterion_then_the_tie_rule():
    def row(c: float, loss: float, default: bool = False) -> dict[str, Any]:
        return {"criterion": c, "val_loss": loss, "val_loss_rd": -loss, "default": default}

    assert choose([row(0.5, 1), row(0.9, 9), row(0.7, 0)]) == 1  # argmax, whatever the loss
    assert choose([row(0.9, 2), row(0.9, 1), row(0.8, 0)]) == 1  # tie: lower validation loss
    assert choose([row(0.9, 2), row(0.9, 1), row(0.8, 0)], tie_loss="loss_rd") == 0  # the chosen loss term
    assert choose([row(0.9, 1), row(0.9, 1, default=True)]) == 1  # then the method's default
    assert choose([row(0.9, 1), row(0.9, 1)]) == 0  # then grid order
    assert choose([row(float("nan"), 0), row(0.1, 5)]) == 1  # nan is worst


def test_resume_reuses_finished_candidates(tuned, tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "t"
    shutil.copytree(tuned["out"], out)
    fits, scores = [], []
    real_fit, real_score = api.fit, tune_mod.score_run
    monkeypatch.setattr(api, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    monkeypatch.setattr(tune_mod, "score_run", lambda *a, **k: scores.append(1) or real_score(*a, **k))
    base = ["tune", "--data", str(tiny_data), "--out", str(out), *ARGS]
    assert main([*base, "--grid", "variance_weight=0,2", "--tie-loss", "nope"]) == 2  # checked on a reused run
    assert "tie_loss 'nope'" in capsys.readouterr().err and not fits and not scores
    assert main([*base, "--grid", "variance_weight=0,2,5"]) == 0
    assert len(fits) == 1 and len(scores) == 1  # only the new candidate trained and scored
    res = json.loads((out / "tune.json").read_text())
    assert [r["criterion"] for r in res["rows"][:2]] == [r["criterion"] for r in tuned["res"]["rows"]]
    assert len(res["rows"]) == 3 and "Chosen: variance_weight=" in capsys.readouterr().out


@pytest.mark.parametrize("extra,needle", [
    ([], "at least one --grid"),
    (["--grid", "nosuch=1,2"], "no keyword 'nosuch'"),
    (["--grid", "variance_wieght=1,2"], "did you mean 'variance_weight'"),
    (["--grid", "variance_weight=a,2"], "--grid variance_weight: invalid float value: 'a'"),
    (["--grid", "variance_weight="], "--grid variance_weight: no values"),
    (["--grid", "variance_weight=1,,2"], "--grid variance_weight: an empty value"),
    (["--grid", "variance_weight"], "expected KEY=V1,V2"),
    (["--grid", "variance_weight=1,1"], "'variance_weight' lists the value 1.0 twice"),
    (["--grid", "variance_weight=-1,1"], "variance_weight (--variance-weight): -1.0 is less than the minimum of 0"),
    (["--grid", "variance_block=D1,D9"], "--grid variance_block: invalid choice: 'D9'"),
    (["--grid", "betas=0.5:0.9,0.5"], "--grid betas: expected 2 values, got 1"),
    (["--grid", "epochs=1,2"], "'epochs' is a train setting"),
    (["--grid", "variance_weight=0,1", "--variance-weight", "2"], "--grid variance_weight: also given"),
    (["--grid", "variance_weight=0,1", "--grid", "variance_weight=2"], "--grid variance_weight: given twice"),
    (["--grid", "variance_weight=0,1", "--seed", "1", "--seeds", "1", "2"], "--seed or --seeds"),
])
def test_bad_grids_are_one_line_errors(extra, needle, tiny_data, tmp_path, capsys):
    code = main(["tune", "--data", str(tiny_data), "--out", str(tmp_path / "t"), *ARGS, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "t").exists()  # nothing trained or written


def test_a_keyword_of_another_method_is_named(tiny_data, tmp_path, capsys):
    argv = ["tune", "--data", str(tiny_data), "--out", str(tmp_path / "t"), "--model", "rd",
            "--grid", "variance_weight=0,1"]
    assert main(argv) == 2
    assert "model 'rd' has no keyword 'variance_weight'" in capsys.readouterr().err


def test_tuple_values_are_typed_from_the_hint():
    from distillad.cli_flags import parse_grid as _grid
    grid = _grid("rd_var", ["betas=0.5:0.999,0.9:0.99", "decoder-relu=true,false", "out_indices=1:2:3,2:3"])
    assert grid == {"betas": [(0.5, 0.999), (0.9, 0.99)], "decoder_relu": [True, False],
                    "out_indices": [(1, 2, 3), (2, 3)]}
    assert type(grid["betas"][0][0]) is float and type(grid["out_indices"][0][0]) is int


def test_bench_rd_var_builds_its_lambda_table_from_a_tune_result(tuned, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_rd_var", ROOT / "benchmarks" / "bench_rd_var.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    test_metrics = {"image_auroc": 0.9, "pixel_auroc": 0.8, "aupro": 0.7}
    monkeypatch.setattr(bench, "tested", lambda args, run: (test_metrics, 1.0))  # no test images here
    part = bench.lambda_part(None, "tiny", tuned["res"])
    assert [r["lambda"] for r in part["rows"]] == [0.0, 2.0]
    assert part["chosen"] == tuned["res"]["chosen"]["variance_weight"]
    assert part["rows"][0]["val_criterion"] == pytest.approx(100 * tuned["res"]["rows"][0]["criterion"])
    md = bench.render({"lambda": part}, {"command": "x", "date": "d", "machine": "m", "teacher": "t", "epochs": 1})
    assert "| λ | val criterion | val syn I / P-AUROC | val L_model |" in md and md.count("**chosen**") == 1
