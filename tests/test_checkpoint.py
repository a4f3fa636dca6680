"""Run folders: atomic files, tamper and version detection, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from distillad import api
from distillad.checkpoint import (
    FORMAT_VERSION,
    atomic_write_json,
    load_run,
    load_weights,
    read_json,
    save_weights,
)
from distillad.errors import CheckpointError
from distillad.run_schema import seal

SMALL = dict(epochs=2, batch_size=4, image_size=64, teacher_weights="random", progress=False)


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "rd"
    api.train("rd", tiny_data, run, **SMALL)
    return run


def test_atomic_json_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": (1, 2)})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_run_folder_contents_and_reload(trained_run):
    spec = read_json(trained_run / "run.json")
    assert spec["format_version"] == FORMAT_VERSION and spec["finished"]
    assert spec["method"] == "rd" and spec["teacher"]["name"] == "efficientnet_lite0"
    assert spec["teacher"]["mean"] == [0.5, 0.5, 0.5]  # input normalisation recorded
    assert spec["calibration"]["n_val"] == 1 and "image_threshold" in spec["calibration"]
    assert len(spec["history"]) == 2
    model, _ = load_run(trained_run)
    x = torch.rand(1, 3, 64, 64)
    assert model.predict(x)[0].shape == (1, 1, 64, 64)


def test_tampered_weights_are_refused(trained_run, tmp_path):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (run / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_run(run)


def test_other_format_version_is_refused(trained_run, tmp_path):
    import shutil
    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    spec = read_json(run / "run.json")
    spec["format_version"] = 999
    (run / "run.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="run format 999"):
        load_run(run)
    (run / "run.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_run(run)
    with pytest.raises(CheckpointError, match="not found"):
        load_run(tmp_path / "nothing")


def test_invalid_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_weights(tmp_path / "w.safetensors")
    sha = save_weights(tmp_path / "ok.safetensors", {"a": torch.ones(2)})
    assert torch.equal(load_weights(tmp_path / "ok.safetensors", sha)["a"], torch.ones(2))


def test_existing_run_is_never_overwritten(trained_run, tiny_data):
    before = (trained_run / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="a finished run is here"):
        api.train("rd", tiny_data, trained_run, **SMALL)
    with pytest.raises(CheckpointError, match="different settings"):
        api.train("rd", tiny_data, trained_run, resume=True, **dict(SMALL, epochs=3))
    assert (trained_run / "model.safetensors").read_bytes() == before


class _Interrupt(Exception):
    pass


def _stop_after(n_steps: int):
    def hook(step, model):
        if step.index + 1 >= n_steps:
            raise _Interrupt
    return hook


def test_resume_continues_exactly(tiny_data, tmp_path):
    """2 epochs in one go == 1 epoch, interrupted, resumed for the 2nd (CPU, same seed)."""
    api.train("rd", tiny_data, tmp_path / "straight", **SMALL)
    with pytest.raises(_Interrupt):
        api.train("rd", tiny_data, tmp_path / "resumed", on_step_end=_stop_after(1), **SMALL)
    with pytest.raises(CheckpointError, match="did not finish"):
        load_run(tmp_path / "resumed")
    api.train("rd", tiny_data, tmp_path / "resumed", resume=True, **SMALL)
    a = load_weights(tmp_path / "straight" / "model.safetensors")
    b = load_weights(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    log = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    assert [(json.loads(line)["phase"], json.loads(line)["epoch"]) for line in log] == [("train", 1), ("train", 2)]


def test_run_pins_every_keyword_with_defaults(trained_run):
    """run.json holds the full bound signature, not only the caller's keywords."""
    import inspect

    from distillad.registry import model_class
    spec = read_json(trained_run / "run.json")
    params = [p for p in inspect.signature(model_class("rd").__init__).parameters if p != "self"]
    assert sorted(spec["model_kwargs"]) == sorted(params)
    assert spec["model_kwargs"]["lr"] == 0.005 and spec["model_kwargs"]["teacher_weights"] == "random"


def test_run_rebuilds_from_stored_keywords_not_current_defaults(trained_run, tmp_path, monkeypatch):
    """A later change of a default must not change a model rebuilt from an old run."""
    import inspect
    import shutil

    from distillad.models.rd import ReverseDistillation
    run = tmp_path / "pinned"
    shutil.copytree(trained_run, run)
    sig = inspect.signature(ReverseDistillation.__init__)
    changed = sig.replace(parameters=[p.replace(default=9.0) if p.name == "sigma" else p
                                      for p in sig.parameters.values()])
    monkeypatch.setattr(ReverseDistillation.__init__, "__signature__", changed, raising=False)
    model, _ = load_run(run)
    assert model.sigma == 4.0 and model.model_kwargs["sigma"] == 4.0


def test_run_with_a_keyword_this_version_lacks_is_refused(trained_run, tmp_path):
    import shutil
    run = tmp_path / "future"
    shutil.copytree(trained_run, run)
    spec = read_json(run / "run.json")
    spec["model_kwargs"]["warp_factor"] = 9
    atomic_write_json(run / "run.json", seal(spec))  # as a future version would write it
    with pytest.raises(CheckpointError, match="no keyword 'warp_factor'"):
        load_run(run)


def test_model_built_from_its_class_is_checkpointable(tmp_path):
    """No create_model call: the instance itself records its registry name and full keywords."""
    from distillad.checkpoint import write_run_spec
    from distillad.models.rd import ReverseDistillation
    m = ReverseDistillation(teacher_weights="random", sigma=2.0)
    assert m.model_name == "rd" and m.model_kwargs["sigma"] == 2.0 and m.model_kwargs["lr"] == 0.005
    spec = write_run_spec(tmp_path, m, {"image_size": 64}, {"path": "x"})
    assert spec["model_kwargs"]["sigma"] == 2.0 and spec["method"] == "rd"


def test_random_teacher_is_the_same_at_every_load(trained_run):
    """A run trained with a random teacher (tests only) reloads that teacher, so its scores reproduce."""
    a, _ = load_run(trained_run)
    torch.manual_seed(99)  # the global generator must not matter
    b, _ = load_run(trained_run)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(a.predict(x)[1], b.predict(x)[1], rtol=0, atol=0)
