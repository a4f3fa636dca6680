"""``--epochs auto``: it stops when validation stops improving, the run keeps the best epoch's weights,
a stopped run does not train on when resumed, and bad requests are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from distillad import api
from distillad.checkpoint import load_weights
from distillad.cli import main
from distillad.early_stopping import BEST_FILE, RECORD_FILE, parse_epochs
from distillad.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    from distillad.demo_data import make_demo_dataset
    root = tmp_path_factory.mktemp("auto")
    data = make_demo_dataset(root / "data", n_train=16, n_test_good=2, n_test_defect=2, size=64, seed=2)
    mp = pytest.MonkeyPatch()
    mp.setattr(api, "DEFAULT_PATIENCE", 2)
    try:
        spec = api.train("rd", data, root / "run", epochs="auto", batch_size=4, image_size=64,
                         teacher_weights="random", val_fraction=0.25, progress=False)
    finally:
        mp.undo()
    return root, data, spec


def test_auto_stops_on_validation_and_keeps_the_best_weights(auto_run):
    root, _, spec = auto_run
    rec = json.loads((root / "run" / RECORD_FILE).read_text())
    assert spec["train"]["early_stopping"] == {"patience": 2, "min_delta": 1e-3}
    assert rec["stopped"] and rec["epochs_run"] < spec["train"]["epochs"]  # stopped long before rd's 200
    crit = [s["criterion"] for s in rec["scores"]]
    assert rec["epochs_run"] == len(crit) == len(spec["history"])
    assert rec["best_criterion"] == max(crit) or max(crit) - rec["best_criterion"] <= 1e-3
    assert len(crit) - rec["best_epoch"] == 2  # patience 2: two epochs without a gain, then stop
    final = load_weights(root / "run" / "model.safetensors")
    best = load_weights(root / "run" / BEST_FILE)
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)


def test_a_stopped_run_does_not_train_on_when_resumed(auto_run, tmp_path, monkeypatch):
    import shutil
    monkeypatch.setattr(api, "DEFAULT_PATIENCE", 2)  # the settings the run was started with
    root, data, spec = auto_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    # as if killed after the stop but before the run finished: take the finish back
    raw = json.loads((run / "run.json").read_text())
    raw.update(finished=False)
    raw.pop("weights", None)
    from distillad.run_schema import seal
    (run / "run.json").write_text(json.dumps(seal(raw)))
    (run / "model.safetensors").unlink()
    again = api.train("rd", data, run, epochs="auto", batch_size=4, image_size=64, teacher_weights="random",
                      val_fraction=0.25, resume=True, progress=False)
    assert len(again["history"]) == len(spec["history"])
    w = load_weights(run / "model.safetensors")
    best = load_weights(root / "run" / BEST_FILE)
    assert all(torch.equal(w[k], best[k]) for k in w)


@pytest.mark.parametrize("bad", [0, -1, "ten", 2.5, True])
def test_bad_epochs_are_refused(bad):
    with pytest.raises(ConfigError, match="epochs must be a positive integer or 'auto'"):
        parse_epochs(bad)


def test_auto_without_validation_images_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(DataError, match="--epochs auto needs validation images"):
        api.train("rd", tiny_data, tmp_path / "r", epochs="auto", image_size=64, teacher_weights="random",
                  val_fraction=0.0, progress=False)


def test_cli_epochs_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "rd", "--data", "d", "--out", "o", "--epochs", "many"])
    assert e.value.code == 2
    assert "epochs must be a positive integer or 'auto'" in capsys.readouterr().err
