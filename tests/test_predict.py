"""``predict`` on files and folders: recursion and relative names, same scores as the model on the same
images, a corrupt file among good ones (exit code 3), checks before the model loads, refusals of
dangerous ``--out`` folders, a full disk (simulated) leaving the earlier prediction intact."""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.hardening import TINY_FLAGS  # tests/ is on sys.path

from distillad import predict as predict_mod
from distillad.api import predict
from distillad.checkpoint import load_run
from distillad.cli import PREDICT_FAILED, main
from distillad.data import AnomalyDataset, Sample
from distillad.engine import infer
from distillad.errors import CheckpointError, DataError, OutputError

TRAIN = ["--model", "rd", *TINY_FLAGS]


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TRAIN]) == 0
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(out / "predictions.csv")))


def _no_model_load(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")
    monkeypatch.setattr(predict_mod, "load_run", boom)


def test_folder_is_searched_recursively_with_relative_names_and_same_scores(run_dir, tiny_data, tmp_path, one_thread):
    test_dir = tiny_data / "test"
    out = tmp_path / "pred"
    rows = predict(run_dir, [test_dir], out, device="cpu", batch_size=3, num_workers=2)
    files = sorted(p for p in test_dir.rglob("*.png"))
    assert [r["relative_path"] for r in rows] == [p.relative_to(test_dir).as_posix() for p in files]
    assert all(r["error"] is None and r["decision"] in ("good", "defective") for r in rows)
    for r in _rows(out):
        stem = r["relative_path"][:-4]
        assert r["overlay"] == f"{stem}_overlay.png" and (out / r["overlay"]).is_file()
        assert r["mask"] == f"{stem}_mask.png" and (out / r["mask"]).is_file()
    assert not list(out.glob(".distillad-*")), "the staging folder must be gone"
    # the scores are the model's on the same images, decoded and resized the way test/train do it
    model, spec = load_run(run_dir, "cpu")
    ref = infer(model, AnomalyDataset([Sample(p, 0) for p in files], image_size=spec["image_size"]), 4, "cpu")
    torch.testing.assert_close(torch.tensor([r["score"] for r in rows]), ref["scores"], rtol=1e-5, atol=1e-6)


def test_several_inputs_are_prefixed_and_collisions_renamed(run_dir, tiny_data, tmp_path, one_thread):
    t = tiny_data / "test"
    rows = predict(run_dir, [t / "crack", t / "good", t / "good" / "000.png"], tmp_path / "p", device="cpu",
                   num_workers=0, overlays=False)
    names = [r["relative_path"] for r in rows]
    assert names[0].startswith("crack/") and "good/000.png" in names and names[-1] == "000.png"
    dup = predict(run_dir, [t / "good" / "000.png", t / "crack" / "000.png"], tmp_path / "q", device="cpu",
                  num_workers=0)
    assert [r["relative_path"] for r in dup] == ["000.png", "000~2.png"]
    assert (tmp_path / "q" / "000~2_overlay.png").is_file()


def test_corrupt_file_among_good_ones(run_dir, tiny_data, tmp_path, capsys, one_thread):
    src = tmp_path / "in"
    shutil.copytree(tiny_data / "test" / "good", src / "good")
    bad = src / "good" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    assert main(["predict", "--run", str(run_dir), str(src), "--out", str(out), "--device", "cpu"]) == PREDICT_FAILED
    err = capsys.readouterr().err
    assert "zz_broken.png" in err and "Traceback" not in err
    rows = {r["relative_path"]: r for r in _rows(out)}
    assert rows["good/zz_broken.png"]["error"] and rows["good/zz_broken.png"]["decision"] == ""
    good = [r for k, r in rows.items() if k != "good/zz_broken.png"]
    assert good and all(r["decision"] in ("good", "defective") and not r["error"] for r in good)
    assert len(list(out.rglob("*_overlay.png"))) == len(good)


def test_console_entry_exits_at_once_with_the_files_written_and_the_streams_flushed(run_dir, tiny_data, tmp_path):
    """``python -m distillad predict`` ends by ``os._exit`` after predict: the exit code, the stderr line and
    every file must still be there."""
    src = tmp_path / "in"
    shutil.copytree(tiny_data / "test" / "good", src / "good")
    (src / "good" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "distillad", "predict", "--run", str(run_dir), str(src), "--out",
                        str(out), "--device", "cpu"], capture_output=True, text=True, env=env)
    assert r.returncode == PREDICT_FAILED, r.stderr
    assert "zz_broken.png" in r.stderr and "Traceback" not in r.stderr and "1 failed" in r.stdout
    rows = _rows(out)
    assert len(rows) == len(list(src.rglob("*.png"))) and len(list(out.rglob("*_overlay.png"))) == len(rows) - 1


@pytest.mark.parametrize("n,batch", [(0, 3), (1, 3), (7, 3), (9, 3), (5, 8)])
def test_thread_batches_keep_the_order_and_every_item(n, batch):
    class Items:
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"index": i}

    got = list(predict_mod._ThreadBatches(Items(), batch))
    assert [len(b) for b in got] == [min(batch, n - k) for k in range(0, n, batch)]
    assert [d["index"] for b in got for d in b] == list(range(n))


def test_non_finite_score_is_an_error_not_a_decision(run_dir, tiny_data, tmp_path, monkeypatch, one_thread):
    real = predict_mod.load_run

    def nan_model(*a, **k):
        model, spec = real(*a, **k)
        model.predict = lambda x: (torch.full((len(x), 1, *x.shape[2:]), math.nan), torch.full((len(x),), math.nan))
        return model, spec
    monkeypatch.setattr(predict_mod, "load_run", nan_model)
    rows = predict(run_dir, [tiny_data / "test" / "good"], tmp_path / "o", device="cpu", num_workers=0)
    assert rows and all(r["decision"] == "" and "not finite" in r["error"] for r in rows)


def test_nan_threshold_in_the_run_is_refused(run_dir, tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    spec = json.loads((run / "run.json").read_text())
    spec["calibration"]["image_threshold"] = float("nan")
    (run / "run.json").write_text(json.dumps(spec))
    _no_model_load(monkeypatch)
    with pytest.raises(CheckpointError, match="image_threshold"):  # run.json's schema check refuses it
        predict(run, [tiny_data / "test" / "good"], tmp_path / "o")


@pytest.mark.parametrize("case", ["missing", "empty_folder", "bad_extension"])
def test_inputs_are_checked_before_the_model_loads(run_dir, tmp_path, monkeypatch, case):
    _no_model_load(monkeypatch)
    target = {"missing": tmp_path / "nope", "empty_folder": tmp_path / "empty", "bad_extension": tmp_path / "a.txt"}[case]
    if case == "empty_folder":
        (target / "sub").mkdir(parents=True)
    if case == "bad_extension":
        target.write_text("x")
    with pytest.raises(DataError, match=target.name):
        predict(run_dir, [target], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_first_prediction_leaves_no_folder(run_dir, tiny_data, tmp_path, monkeypatch):
    from distillad.errors import CheckpointError

    def broken(*a, **k):
        raise CheckpointError("weights do not match")
    monkeypatch.setattr(predict_mod, "load_run", broken)
    with pytest.raises(CheckpointError):
        predict(run_dir, [tiny_data / "test" / "good"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dangerous_out_folders_are_refused(run_dir, tiny_data, tmp_path, monkeypatch):
    src = tmp_path / "in"
    shutil.copytree(tiny_data / "test", src)
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep")
    _no_model_load(monkeypatch)
    cases = {src: "overlaps the input", src / "good": "overlaps the input", src / "new": "overlaps the input",
             tmp_path / "afile": "existing file", run_dir: "run folder", run_dir / "sub": "run folder",
             tmp_path / "other": "not empty"}
    for out, msg in cases.items():
        with pytest.raises(OutputError, match=msg):
            predict(run_dir, [src], out)
    assert (tmp_path / "afile").read_text() == "keep" and not (src / "new").exists()


def test_earlier_prediction_needs_overwrite_and_leaves_no_stale_files(run_dir, tiny_data, tmp_path, one_thread):
    t = tiny_data / "test"
    out = tmp_path / "out"
    predict(run_dir, [t], out, device="cpu", num_workers=0)
    assert (out / "crack").is_dir()
    with pytest.raises(OutputError, match="--overwrite"):
        predict(run_dir, [t / "good"], out, device="cpu")
    predict(run_dir, [t / "good"], out, device="cpu", num_workers=0, overwrite=True)
    listed = {f for r in _rows(out) for f in (r["overlay"], r["mask"])}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert written == listed and not (out / "crack").exists()


def test_full_disk_keeps_the_earlier_prediction_and_no_junk(run_dir, tiny_data, tmp_path, monkeypatch, one_thread):
    t = tiny_data / "test" / "good"
    out = tmp_path / "out"
    predict(run_dir, [t], out, device="cpu", num_workers=0)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = {"n": 0}
    real = predict_mod.save_png

    def full(path, rgb):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, rgb)
    monkeypatch.setattr(predict_mod, "save_png", full)
    with pytest.raises(OutputError, match="no space left on device"):
        predict(run_dir, [t], out, device="cpu", num_workers=0, overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_unwritable_out_is_refused_before_the_model_loads(run_dir, tiny_data, tmp_path, monkeypatch):
    import distillad.outputs as outputs

    def ro(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    _no_model_load(monkeypatch)
    monkeypatch.setattr(outputs.tempfile, "mkstemp", ro)
    with pytest.raises(OutputError, match="read-only file system"):
        predict(run_dir, [tiny_data / "test" / "good"], tmp_path / "out")


@pytest.mark.parametrize("flags, named", [(["--batch-size", "0"], "--batch-size"),
                                          (["--num-workers", "-1"], "--num-workers")])
def test_bad_numbers_are_one_line_errors(run_dir, tiny_data, tmp_path, capsys, flags, named):
    code = main(["predict", "--run", str(run_dir), str(tiny_data / "test"), "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and named in err and flags[1] in err and len(err.splitlines()) == 1


def test_label_and_defect_come_from_the_folder_layout(run_dir, tiny_data, tmp_path, one_thread):
    loose = tmp_path / "loose" / "test" / "crack"  # a test/ folder with no train/ beside it says nothing
    loose.mkdir(parents=True)
    shutil.copy(tiny_data / "test" / "crack" / "000.png", loose / "000.png")
    predict(run_dir, [tiny_data / "test", loose], tmp_path / "pred", device="cpu", num_workers=0)
    got = {(Path(r["path"]).parent.name, r["label"], r["defect"]) for r in _rows(tmp_path / "pred")}
    assert got == {("good", "0", "good"), ("crack", "1", "crack"), ("scratch", "1", "scratch"),
                   ("spot", "1", "spot"), ("crack", "", "")}
    assert predict_mod.CSV_COLUMNS[2:4] == ["label", "defect"]


def test_label_from_path_for_magnetic_tile_and_btad(tmp_path):
    for d in ("MT_Free/Imgs", "MT_Crack/Imgs", "01/train/ok", "01/test/ok", "01/test/ko"):
        (tmp_path / d).mkdir(parents=True)
    assert predict_mod.label_from_path(tmp_path / "MT_Free/Imgs/a.jpg") == (0, "good")
    assert predict_mod.label_from_path(tmp_path / "MT_Crack/Imgs/a.jpg") == (1, "Crack")
    assert predict_mod.label_from_path(tmp_path / "01/test/ok/a.bmp") == (0, "good")
    assert predict_mod.label_from_path(tmp_path / "01/test/ko/a.bmp") == (1, "ko")
    assert predict_mod.label_from_path(tmp_path / "elsewhere/a.png") == (None, "")
