"""``export``: int8 (calibrated on validation images) and float16 ONNX close to PyTorch, OpenVINO when
installed, and refusals that protect the run folder, the data and the disk (simulated ENOSPC)."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from distillad import checkpoint
from distillad import export as export_mod
from distillad.checkpoint import load_run, read_run_spec
from distillad.cli import main
from distillad.errors import ConfigError, OutputError
from distillad.export import export, validation_images

pytest.importorskip("onnxruntime")
TRAIN = ["--model", "rd", "--epochs", "1", "--batch-size", "4", "--image-size", "32", "--teacher-weights", "random",
         "--val-fraction", "0.3"]


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TRAIN]) == 0
    return out


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _ort(path: Path, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort
    maps, scores = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    return maps, scores


def test_validation_images_are_the_runs_split(run_dir):
    spec = read_run_spec(run_dir)
    x = validation_images(spec)
    assert x.shape == (spec["calibration"]["n_val"], 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1


@pytest.mark.parametrize("kw, tol", [({"quantize": "int8"}, 0.1), ({"fp16": True}, 0.01)])
def test_reduced_precision_is_close_to_pytorch(run_dir, tiny_data, tmp_path, kw, tol, one_thread):
    out = tmp_path / "m.onnx"
    info = export(run_dir, out, **kw)
    if "quantize" in kw:
        assert info["calibration_images"] == read_run_spec(run_dir)["calibration"]["n_val"]
        import onnx
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    model, _ = load_run(run_dir, "cpu")
    from distillad.data import AnomalyDataset, load_samples
    ds = AnomalyDataset(load_samples(tiny_data, "test"), image_size=32)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        ref = model.predict(x)[1].numpy()
    _, scores = _ort(out, x)
    assert np.all(np.abs(scores - ref) <= tol * np.abs(ref)), (scores, ref)
    assert np.corrcoef(scores, ref)[0, 1] > 0.9


def test_openvino_matches_pytorch(run_dir, tmp_path, one_thread):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed (pip install 'distillad[openvino]')")
    info = export(run_dir, tmp_path / "m.xml", fmt="openvino", batch_size=2)
    assert (tmp_path / "m.bin").is_file() and info["max_rel_diff_scores"] < 1e-3


def test_outputs_over_the_run_or_its_data_are_refused(run_dir, tiny_data, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")
    monkeypatch.setattr(export_mod, "load_run", boom)
    before = _hashes(run_dir)
    for out, msg in [(run_dir / "model.safetensors", "onnx file"), (run_dir / "run.json", "onnx file"),
                     (run_dir / "m.onnx", "inside the run folder"), (run_dir / "sub" / "m.onnx", "inside the run"),
                     (tiny_data / "m.onnx", "data folder"), (tmp_path, "onnx file"), (tmp_path / "m.png", "onnx file"),
                     (run_dir / "m.xml", "inside the run folder")]:
        with pytest.raises(OutputError, match=msg):
            export(run_dir, out, fmt="openvino" if out.suffix == ".xml" else "onnx")
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        export(run_dir, tmp_path / "d.onnx")
    assert _hashes(run_dir) == before and not (tiny_data / "m.onnx").exists()


@pytest.mark.parametrize("flags, named", [(["--batch-size", "0"], "--batch-size"),
                                          (["--quantize", "int8", "--fp16"], "--fp16"),
                                          (["--quantize", "int8", "--calibration-images", "0"], "--calibration-images")])
def test_bad_flags_are_one_line_errors(run_dir, tmp_path, capsys, flags, named):
    assert main(["export", "--run", str(run_dir), "--out", str(tmp_path / "m.onnx"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1 and not (tmp_path / "m.onnx").exists()


def test_missing_extra_names_the_install_command(run_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["export", "--run", str(run_dir), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'distillad[export]'" in capsys.readouterr().err


def test_full_disk_leaves_nothing_behind(run_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = checkpoint.os.fsync

    def full(fd):  # the up-front probe passes; the export's own write finds the disk full
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)
    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(OutputError, match="no space left on device"):
        export(run_dir, tmp_path / "m.onnx", check=False)
    assert calls["n"] == 2 and list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_refused_before_the_model_loads(run_dir, tmp_path, monkeypatch):
    import distillad.outputs as outputs

    def ro(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(export_mod, "load_run", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(outputs.tempfile, "mkstemp", ro)
    with pytest.raises(OutputError, match="read-only file system"):
        export(run_dir, tmp_path / "m.onnx")


def test_int8_and_fp16_together_are_refused(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="choose one"):
        export(run_dir, tmp_path / "m.onnx", quantize="int8", fp16=True)
