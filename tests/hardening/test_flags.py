"""Bad values on the command line: one line naming the flag/keyword and the value, exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch

from helpers.hardening import TINY_FLAGS, fingerprint

TRAIN_CASES = [  # (extra flags, text the message must contain)
    (["--batch-size", "0"], "--batch-size"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-2"], "--epochs"),
    (["--image-size", "0"], "--image-size"),
    (["--image-size", "100000"], "--image-size"),
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--k-sigma", "nan"], "k_sigma"),
    (["--k-sigma", "-1"], "--k-sigma"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--lr", "inf"], "lr"),
    (["--sigma", "-1"], "--sigma"),
    (["--betas", "0.5", "1.5"], "--betas"),
    (["--betas", "0.5", "nan"], "betas"),
    (["--device", "foo"], "'foo'"),
    (["--batch-size", "two"], "--batch-size"),
    (["--epochs", "1.5"], "--epochs"),
    (["--model", "nope"], "'nope'"),
    (["--foreground", "magic"], "--foreground"),
    (["--textures", "/no/such/folder"], "/no/such/folder"),
    (["--resume", "--overwrite"], "exclude each other"),
    (["--out-indices", "9", "9", "9"], "out_indices"),
    (["--out-indices", "3", "2", "1"], "out_indices"),
]


@pytest.mark.parametrize("extra,needle", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_bad_train_flag(extra, needle, cli, tiny_data, tmp_path):
    before = fingerprint(tiny_data)
    out = tmp_path / "out"
    model = [] if "--model" in extra else ["--model", "rd"]
    code, err = cli("train", *model, "--data", tiny_data, "--out", out, *TINY_FLAGS, *extra)
    assert code == 2 and needle in err, err
    assert not (out / "run.json").exists(), "a refused train wrote a run"
    assert fingerprint(tiny_data) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(cli, tiny_data, tmp_path):
    code, err = cli("train", "--model", "rd", "--data", tiny_data, "--out", tmp_path / "o", *TINY_FLAGS,
                    "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err and not (tmp_path / "o" / "run.json").exists()


def test_out_inside_the_data_folder(cli, tiny_data):
    before = fingerprint(tiny_data)
    code, err = cli("train", "--model", "rd", "--data", tiny_data, "--out", tiny_data / "train" / "run",
                    *TINY_FLAGS)
    assert code == 2 and "inside the data folder" in err
    assert fingerprint(tiny_data) == before


TEST_CASES = [
    (["--batch-size", "0"], "batch"),
    (["--batch-size", "-3"], "batch"),
    (["--device", "foo"], "'foo'"),
]


@pytest.mark.parametrize("extra,needle", TEST_CASES, ids=[" ".join(c[0]) for c in TEST_CASES])
def test_bad_test_flag(extra, needle, cli, run_copy):
    before = fingerprint(run_copy)
    code, err = cli("test", "--run", run_copy, *extra)
    assert code == 2 and needle in err.lower(), err
    assert fingerprint(run_copy) == before


@pytest.mark.parametrize("what", ["missing", "data folder", "a file"])
def test_test_on_something_that_is_not_a_run(what, cli, tiny_data, tmp_path):
    target = {"missing": tmp_path / "nope", "data folder": tiny_data, "a file": tmp_path / "f.txt"}[what]
    if what == "a file":
        target.write_text("x")
    code, err = cli("test", "--run", target)
    assert code == 2 and str(target) in err


def test_synth_preview_needs_a_positive_count(cli, tiny_data, tmp_path):
    code, err = cli("synth-preview", "--data", tiny_data, "--out", tmp_path / "p", "--n", "0")
    assert code == 2 and "--n" in err and not (tmp_path / "p").exists()


def test_demo_never_removes_a_folder_it_did_not_make(cli, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    code, err = cli("demo", "--out", tmp_path)
    assert code == 2 and "not a demo folder" in err and (tmp_path / "mine.txt").read_text() == "keep"


def test_training_without_validation_images_warns_that_there_is_no_decision(cli, tiny_data, tmp_path, capsys):
    code, err = cli("train", "--model", "rd", "--data", tiny_data, "--out", tmp_path / "o", *TINY_FLAGS,
                    "--val-fraction", "0")
    assert code == 0 and "no good/defective decision" in err
