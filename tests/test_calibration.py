"""distillad.calibration: each method against a hand-computed case, no path reading test labels,
``distillad calibrate`` end to end on a tiny run, and the CLI's refusals."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.hardening import TINY, TINY_FLAGS, fingerprint
from scipy import special, stats

from distillad import api, data
from distillad.calibration import refit
from distillad.thresholds import (METHODS, CalibrationSettings, calibration_warnings, fit_thresholds,
                                  normalize_scores)
from distillad.checkpoint import load_run, read_run_spec, run_lock
from distillad.cli import main
from distillad.errors import ConfigError, DataError

S = CalibrationSettings
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards on a shared CPU: one thread is fastest


# ----------------------------------------------------------------------------- hand-computed cases
def test_sigma_mean_plus_k_sample_std_and_normalisation():
    maps = torch.zeros(3, 1, 4, 4)
    maps[0, 0, 0, 0] = 16.0  # 48 pixels: mean 1/3, sample variance (47/3)² + 47·(1/3)² over 47 = 16/3
    c = fit_thresholds(S("sigma", k_sigma=3.0), torch.tensor([1.0, 2.0, 3.0]), maps)
    assert c["method"] == "sigma" and c["n_val"] == 3 and c["k_sigma"] == 3.0
    assert c["score_mean"] == 2.0 and c["score_std"] == pytest.approx(1.0) and c["image_threshold"] == 5.0
    assert c["pixel_mean"] == pytest.approx(1 / 3) and c["pixel_threshold"] == pytest.approx(1 / 3 + 3 * 4 / math.sqrt(3))
    assert normalize_scores(torch.tensor([2.0, 5.0, 8.0]), c).tolist() == [0.0, 0.5, 1.0]  # mean ↦ 0, threshold ↦ 0.5


def test_quantile_is_numpys_linear_rule():
    # numpy's default ("linear"): position h = (n - 1)·q in the sorted values, interpolated.
    # scores 0..4 shuffled, q = 0.9: h = 3.6 → 3 + 0.6·(4 − 3) = 3.6; pixels 0..15: h = 13.5 → 13.5
    c = fit_thresholds(S("quantile", quantile=0.9), [3.0, 0.0, 4.0, 1.0, 2.0], np.arange(16.0).reshape(1, 1, 4, 4))
    assert c["image_threshold"] == pytest.approx(3.6) and c["pixel_threshold"] == pytest.approx(13.5)
    assert c["quantile"] == 0.9
    assert normalize_scores(torch.tensor([3.6]), c).item() == pytest.approx(0.5)


def test_gamma_is_the_loc0_maximum_likelihood_fit_and_its_quantile():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    c = fit_thresholds(S("gamma", quantile=0.99), x)
    a, scale = c["gamma_shape"], c["gamma_scale"]
    # the two-parameter MLE: shape·scale = mean, and log(shape) − ψ(shape) = log(mean) − mean(log x)
    assert a * scale == pytest.approx(x.mean(), rel=1e-6)
    assert math.log(a) - special.digamma(a) == pytest.approx(math.log(x.mean()) - np.log(x).mean(), rel=1e-5)
    assert stats.gamma.cdf(c["image_threshold"], a, scale=scale) == pytest.approx(0.99)  # upper tail 1 − q
    # a sample of a known Gamma(2, scale 3): the fit recovers it, the threshold is near the true 99 % point
    big = stats.gamma.rvs(2.0, scale=3.0, size=20000, random_state=0)
    c = fit_thresholds(S("gamma", quantile=0.99), big)
    assert c["gamma_shape"] == pytest.approx(2.0, rel=0.05) and c["gamma_scale"] == pytest.approx(3.0, rel=0.05)
    assert c["image_threshold"] == pytest.approx(stats.gamma.ppf(0.99, 2.0, scale=3.0), rel=0.03)


def test_gamma_refuses_values_it_cannot_fit():
    with pytest.raises(ConfigError, match="positive"):
        fit_thresholds(S("gamma"), [0.0, 1.0, 2.0])
    with pytest.raises(DataError, match="two different"):
        fit_thresholds(S("gamma"), [1.0, 1.0])


def test_synthetic_is_the_f1_best_threshold():
    # good 0.1 0.2 0.3 0.6 vs defects 0.5 0.7 0.8: F1 at 0.5 = 2·3/(3+1+3) = 6/7, at 0.7 = 4/5, at 0.8 = 1/2
    good_maps = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    dmap, dmask = torch.tensor([[[[0.9, 0.35], [0.5, 0.1]]]]), torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    c = fit_thresholds(S("synthetic"), [0.1, 0.2, 0.3, 0.6], good_maps.repeat(4, 1, 1, 1), [0.5, 0.7, 0.8],
                       dmap, dmask)
    assert c["image_threshold"] == 0.5 and c["synthetic_f1"] == pytest.approx(6 / 7) and c["n_synthetic"] == 3
    # pixels: defects 0.9, 0.5 inside the masks; every other pixel normal (max 0.4) → 0.5 separates them, F1 1
    assert c["pixel_threshold"] == 0.5 and c["pixel_synthetic_f1"] == 1.0
    assert c["synthesis"] == "draem"


def test_fixed_takes_the_users_numbers():
    c = fit_thresholds(S("fixed", threshold=0.7, pixel_threshold=0.2), [0.1, 0.3], torch.zeros(2, 1, 2, 2))
    assert (c["image_threshold"], c["pixel_threshold"], c["score_mean"]) == (0.7, 0.2, pytest.approx(0.2))
    c = fit_thresholds(S("fixed", threshold=0.7), [1.0, 2.0, 3.0], torch.zeros(3, 1, 2, 2))
    assert c["pixel_method"] == "sigma" and c["pixel_threshold"] == 0.0  # sigma's on the (all-zero) pixels
    c = fit_thresholds(S("fixed", threshold=2.0), [])  # no validation images: the reference of 0.5 is 0
    assert c == {"method": "fixed", "n_val": 0, "image_threshold": 2.0, "k_sigma": 3.0}
    assert normalize_scores(torch.tensor([2.0]), c).item() == 0.5


@pytest.mark.parametrize("kw,needle", [({"method": "best"}, "--threshold-method"), ({"method": "fixed"}, "--threshold X"),
                                       ({"threshold": 1.0}, "--threshold-method fixed"),
                                       ({"quantile": 1.0}, "--quantile"), ({"k_sigma": -1}, "--k-sigma"),
                                       ({"method": "fixed", "threshold": float("nan")}, "--threshold"),
                                       ({"synthesis": "nope"}, "synthesis")])
def test_bad_settings_name_the_flag(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        CalibrationSettings(**kw)


def test_small_validation_split_is_warned_about_with_its_size():
    assert any("only 3 validation images" in w for w in calibration_warnings({"n_val": 3, "image_threshold": 1.0}))
    assert calibration_warnings({"n_val": 25, "image_threshold": 1.0, "score_mean": 0.5}) == []


# ----------------------------------------------------------------------------- with a trained run
@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("calib") / "rd"
    api.train("rd", tiny_data, run, val_fraction=0.3, **TINY)  # 3 validation images
    return run


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def cli(capsys):
    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        if code != 0:
            assert err.strip().count("\n") == 0 and "error: " in err, err
        return code, out, err.strip()
    return run


ALL = [S("sigma"), S("quantile", quantile=0.9), S("gamma", quantile=0.9), S("synthetic"), S("fpr", target_fpr=0.5),
       S("fixed", threshold=1.0)]


def test_no_calibration_path_reads_test_images(tiny_run, tiny_data, tmp_path, monkeypatch):
    """Fit every method; then with the test labels shuffled (defect and good folders swapped, masks
    gone) and with any read of the test split made an error: the same thresholds."""
    model, spec = load_run(tiny_run)
    first = [refit(model, spec, s, tiny_run) for s in ALL]
    shuffled = tmp_path / tiny_data.name
    shutil.copytree(tiny_data, shuffled)
    test = shuffled / "test"
    defects = sorted(p for p in test.iterdir() if p.name != "good")
    (test / "good").rename(test / "tmp")
    defects[0].rename(test / "good")
    (test / "tmp").rename(defects[0])
    shutil.rmtree(shuffled / "ground_truth")
    real = data.load_samples

    def train_only(path, split, *a, **k):
        assert split == "train", f"calibration read the {split} split"
        return real(path, split, *a, **k)

    monkeypatch.setattr("distillad.validation.load_samples", train_only)
    moved = {**spec, "data": {**spec["data"], "path": str(shuffled)}}
    again = [refit(model, moved, s, tiny_run) for s in ALL]
    assert again == first
    assert {c["method"] for c in again} == set(METHODS)


def test_calibrate_end_to_end_rewrites_a_valid_sealed_run(run_copy, cli):
    from distillad.calibration import validation_good
    from distillad.engine import infer
    old = read_run_spec(run_copy)["calibration"]
    code, out, err = cli("calibrate", "--run", run_copy, "--method", "quantile", "--quantile", "0.5")
    assert code == 0, err
    assert f"old: sigma (k_sigma=3): image threshold {old['image_threshold']:.6g}" in out and "new: quantile" in out
    assert "only 3 validation images" in err  # the small split is named
    model, spec = load_run(run_copy)  # schema, seal and weights all still check
    scores = infer(model, validation_good(spec), 16, "cpu", progress=False)["scores"].double().numpy()
    cal = spec["calibration"]
    assert cal["method"] == "quantile" and cal["image_threshold"] == pytest.approx(np.quantile(scores, 0.5))
    assert cal["n_val"] == 3 and spec["weights"] == read_run_spec(run_copy)["weights"]
    res = api.test(run_copy, device="cpu")
    m = res["metrics"]
    assert res["calibration"] == cal and 0 <= m["threshold_accuracy"] <= 1 and "mask_recall" in m
    code, out, _ = cli("calibrate", "--run", run_copy, "--method", "fixed", "--threshold", "1e9")
    assert code == 0 and read_run_spec(run_copy)["calibration"]["image_threshold"] == 1e9


def test_test_refits_only_when_asked_and_leaves_run_json(run_copy):
    before = (run_copy / "run.json").read_bytes()
    stored = api.test(run_copy, device="cpu")
    fixed = api.test(run_copy, device="cpu", calibration=S("fixed", threshold=-1e9, pixel_threshold=-1e9))
    assert stored["calibration_source"] == "run.json" and (run_copy / "run.json").read_bytes() == before
    m = fixed["metrics"]  # everything flagged: recall 1, FPR 1, precision = share of defective images
    assert (m["threshold_tpr"], m["threshold_fpr"], m["mask_recall"]) == (1.0, 1.0, 1.0)
    assert m["threshold_precision"] == pytest.approx(m["n_defective"] / m["n_test"])
    assert json.loads((run_copy / "metrics.json").read_text())["calibration"]["image_threshold"] == -1e9


def test_calibrate_refuses_tampered_foreign_and_busy_runs(run_copy, tmp_path, cli):
    spec = json.loads((run_copy / "run.json").read_text())
    spec["calibration"]["image_threshold"] = 123.0  # edited by hand, seal left as it was
    (run_copy / "run.json").write_text(json.dumps(spec))
    before = fingerprint(run_copy)
    code, _, err = cli("calibrate", "--run", run_copy, "--method", "sigma")
    assert code == 2 and "integrity hash differs" in err and fingerprint(run_copy) == before
    foreign = tmp_path / "notarun"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"x")
    code, _, err = cli("calibrate", "--run", foreign, "--method", "sigma")
    assert code == 2 and "run.json" in err and sorted(p.name for p in foreign.iterdir()) == ["model.safetensors"]
    code, _, err = cli("calibrate", "--run", tmp_path / "missing", "--method", "sigma")
    assert code == 2 and "not found" in err and not (tmp_path / "missing").exists()


def test_calibrate_waits_for_no_training(tiny_run, tmp_path, cli):
    run = tmp_path / "busy"
    shutil.copytree(tiny_run, run)
    before = (run / "run.json").read_bytes()
    with run_lock(run):  # as if `train --overwrite` were writing the folder
        code, _, err = cli("calibrate", "--run", run, "--method", "quantile")
    assert code == 2 and "training into this folder" in err and (run / "run.json").read_bytes() == before


def test_run_without_validation_split(tiny_data, tmp_path, cli):
    run = tmp_path / "noval"
    code, _, err = cli("train", "--model", "rd", "--data", tiny_data, "--out", run, "--val-fraction", "0", *TINY_FLAGS)
    assert code == 0 and "no good/defective decision" in err
    code, _, err = cli("calibrate", "--run", run, "--method", "synthetic")
    assert code == 2 and "no validation images (val_fraction 0" in err and "--method fixed" in err
    code, out, _ = cli("calibrate", "--run", run, "--method", "fixed", "--threshold", "0.5")
    assert code == 0 and read_run_spec(run)["calibration"]["image_threshold"] == 0.5


@pytest.mark.parametrize("argv,needle", [
    (["train", "--threshold-method", "best"], "invalid choice: 'best'"),
    (["train", "--threshold-method", "fixed"], "--threshold X"),
    (["train", "--threshold", "0.3"], "--threshold-method fixed"),
    (["train", "--quantile", "1.5"], "--quantile"),
    (["test", "--threshold-method", "nope"], "invalid choice: 'nope'"),
    (["test", "--quantile", "0.9"], "needs --threshold-method"),
    (["calibrate", "--method", "mean"], "invalid choice: 'mean'"),
    (["calibrate"], "--method"),
])
def test_threshold_flag_errors_are_one_line(argv, needle, tiny_data, tmp_path, cli):
    verb, rest = argv[0], argv[1:]
    base = {"train": ["--model", "rd", "--data", tiny_data, "--out", tmp_path / "r", *TINY_FLAGS],
            "test": ["--run", tmp_path / "r"], "calibrate": ["--run", tmp_path / "r"]}[verb]
    code, _, err = cli(verb, *base, *rest)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "r").exists()


def test_train_stores_the_method_and_its_parameters(tiny_data, tmp_path):
    spec = api.train("rd", tiny_data, tmp_path / "q", val_fraction=0.3, threshold_method="quantile", quantile=0.75,
                     **TINY)
    assert spec["train"]["threshold_method"] == "quantile" and spec["train"]["quantile"] == 0.75
    cal = read_run_spec(tmp_path / "q")["calibration"]
    assert cal["method"] == "quantile" and cal["quantile"] == 0.75 and cal["image_threshold"] <= cal["score_max"]


def test_a_method_that_cannot_fit_keeps_the_trained_run(tiny_data, tmp_path, monkeypatch, cli):
    def cannot(*a, **k):
        raise ConfigError("gamma calibration needs positive scores")

    monkeypatch.setattr(api, "fit_calibration", cannot)
    with pytest.raises(ConfigError, match="trained and saved .* `distillad calibrate --run"):
        api.train("rd", tiny_data, tmp_path / "g", val_fraction=0.3, threshold_method="gamma", **TINY)
    monkeypatch.undo()
    spec = read_run_spec(tmp_path / "g")
    assert spec["finished"] and spec["calibration"] == {"method": "gamma", "n_val": 3}
    code, out, _ = cli("calibrate", "--run", tmp_path / "g", "--method", "sigma")
    assert code == 0 and "image threshold none" in out and "new: sigma" in out


def test_synthetic_with_a_texture_folder_records_it(run_copy, tmp_path, cli):
    from PIL import Image
    tex = tmp_path / "textures"
    tex.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tex / f"t{i}.png")
    code, out, err = cli("calibrate", "--run", run_copy, "--method", "synthetic", "--textures", tex)
    assert code == 0, err
    cal = load_run(run_copy)[1]["calibration"]
    assert cal["textures"] == str(tex.resolve()) and cal["method"] == "synthetic" and cal["n_synthetic"] == 3
    code, _, err = cli("calibrate", "--run", run_copy, "--method", "sigma", "--textures", tex)
    assert code == 2 and "--threshold-method synthetic" in err
    code, _, err = cli("calibrate", "--run", run_copy, "--method", "sigma", "--synthesis", "dskd")
    assert code == 2 and "--threshold-method synthetic" in err


# ----------------------------------------------------------------------------- fpr: a target false-alarm rate
def test_fpr_is_the_conformal_order_statistic():
    from distillad.thresholds import fpr_threshold
    x = np.random.default_rng(0).permutation(np.arange(1.0, 40.0))  # n = 39, F = 0.05: k = ⌈40·0.95⌉ = 38
    thr, rec = fpr_threshold(x, 0.05)
    assert thr == 38.0 and rec == {"fpr_rank": 38, "expected_fpr": pytest.approx(2 / 40)}
    assert fpr_threshold(np.arange(1.0, 20.0), 0.05)[0] == 19.0  # n = 19: (n+1)(1−F) = 19 exactly, the largest
    assert fpr_threshold(np.arange(1.0, 11.0), 0.3)[0] == 8.0  # k = ⌈11·0.7⌉ = 8


def test_fpr_with_too_few_images_extrapolates_and_warns():
    x = np.array([1.0, 2.0, 4.0, 3.0, 2.5])  # n = 5 < 1/0.05 − 1: no order statistic reaches 5 %
    c = fit_thresholds(S("fpr"), x, torch.arange(80.0).reshape(5, 1, 4, 4))
    want = x.mean() + stats.t.ppf(0.95, 4) * x.std(ddof=1) * math.sqrt(1 + 1 / 5)
    assert c["image_threshold"] == pytest.approx(want) and c["fpr_rank"] == 0 and c["target_fpr"] == 0.05
    maxima = np.array([15.0, 31.0, 47.0, 63.0, 79.0])  # pixels: the same rule on each image's largest value
    assert c["pixel_threshold"] == pytest.approx(maxima.mean() + stats.t.ppf(0.95, 4) * maxima.std(ddof=1)
                                                 * math.sqrt(1.2))
    assert any("cannot show a false-alarm rate of 0.05 (that needs 19)" in w for w in calibration_warnings(c))
    tight = fit_thresholds(S("fpr"), [1.0, 1.0, 1.0, 1.0, 1.0, 9.0])  # never below the largest score
    assert tight["image_threshold"] >= 9.0
    with pytest.raises(DataError, match="at least 2"):
        fit_thresholds(S("fpr"), [1.0])


@pytest.mark.parametrize("kw,needle", [({"method": "sigma", "target_fpr": 0.1}, "--target-fpr"),
                                       ({"method": "fpr", "target_fpr": 1.0}, "--target-fpr"),
                                       ({"method": "fpr", "target_fpr": 0}, "--target-fpr")])
def test_bad_target_fpr_names_the_flag(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        CalibrationSettings(**kw)


def test_calibrate_target_fpr_refits_and_records_it(run_copy, cli):
    from distillad.calibration import validation_good
    from distillad.engine import infer
    code, out, err = cli("calibrate", "--run", run_copy, "--target-fpr", "0.5")
    assert code == 0, err
    assert "new: fpr (target_fpr=0.5)" in out
    model, spec = load_run(run_copy)
    scores = np.sort(infer(model, validation_good(spec), 16, "cpu", progress=False)["scores"].double().numpy())
    cal = spec["calibration"]  # n = 3, F = 0.5: k = ⌈4·0.5⌉ = 2, the 2nd smallest
    assert cal["method"] == "fpr" and cal["target_fpr"] == 0.5 and cal["fpr_rank"] == 2
    assert cal["image_threshold"] == pytest.approx(scores[1])


def test_train_target_fpr_alone_chooses_fpr(tiny_data, tmp_path, cli):
    code, _, err = cli("train", "--model", "rd", "--data", tiny_data, "--out", tmp_path / "f", "--val-fraction", "0.3",
                       "--target-fpr", "0.2", *TINY_FLAGS)
    assert code == 0, err
    spec = read_run_spec(tmp_path / "f")
    assert spec["train"]["threshold_method"] == "fpr" and spec["train"]["target_fpr"] == 0.2
    assert spec["calibration"]["method"] == "fpr" and spec["calibration"]["target_fpr"] == 0.2
    assert "cannot show a false-alarm rate of 0.2" in err  # 3 images: k = ⌈4·0.8⌉ = 4 > 3


# ----------------------------------------------------------------------------- feedback: calibrate --good
def _good_folder(tiny_data: Path, dest: Path, n: int = 2) -> Path:
    dest.mkdir()
    for f in sorted((tiny_data / "test" / "good").iterdir())[:n]:
        shutil.copy(f, dest / f.name)
    return dest


def test_calibrate_good_adds_images_and_keeps_the_history(run_copy, tiny_data, tmp_path, cli):
    import hashlib
    before = read_run_spec(run_copy)["calibration"]
    good = _good_folder(tiny_data, tmp_path / "fa")
    code, out, err = cli("calibrate", "--run", run_copy, "--good", good)
    assert code == 0, err
    assert "added as good: 2 image(s)" in out and "new: sigma" in out  # the stored method, re-fitted
    cal = load_run(run_copy)[1]["calibration"]  # schema and seal still check
    assert cal["n_val"] == before["n_val"] + 2 and cal["n_feedback"] == 2 and len(cal["feedback"]) == 1
    entry = cal["feedback"][0]
    assert entry["folder"] == str(good.resolve()) and entry["added_at"].endswith("Z")
    assert {im["path"] for im in entry["images"]} == {str(f.resolve()) for f in good.iterdir()}
    assert all(im["sha256"] == hashlib.sha256(Path(im["path"]).read_bytes()).hexdigest() for im in entry["images"])
    assert entry["before"]["image_threshold"] == before["image_threshold"]
    assert entry["after"]["image_threshold"] == cal["image_threshold"] and entry["after"]["n_val"] == cal["n_val"]
    # a later re-fit with another method keeps the added images and their history
    code, _, err = cli("calibrate", "--run", run_copy, "--method", "quantile")
    cal2 = read_run_spec(run_copy)["calibration"]
    assert code == 0 and cal2["n_val"] == cal["n_val"] and cal2["feedback"] == cal["feedback"]
    # the same images again: nothing to add, nothing written
    raw = (run_copy / "run.json").read_bytes()
    code, _, err = cli("calibrate", "--run", run_copy, "--good", good)
    assert code == 2 and "already added" in err and (run_copy / "run.json").read_bytes() == raw
    # an added file edited afterwards: re-fits refuse rather than use other images
    f = sorted(good.iterdir())[0]
    f.write_bytes(f.read_bytes() + b"x")
    code, _, err = cli("calibrate", "--run", run_copy, "--method", "sigma")
    assert code == 2 and "SHA-256 differs" in err and (run_copy / "run.json").read_bytes() == raw


@pytest.mark.parametrize("case", ["missing", "empty", "not_image", "broken_image", "no_method"])
def test_calibrate_good_bad_input_changes_nothing(case, run_copy, tiny_data, tmp_path, cli):
    folder = tmp_path / "g"
    if case != "missing":
        folder = _good_folder(tiny_data, folder, n=0 if case == "empty" else 1)
    if case == "not_image":
        (folder / "notes.txt").write_text("line 3 false alarms")
    if case == "broken_image":
        (folder / "bad.png").write_bytes(b"not a png")
    raw = (run_copy / "run.json").read_bytes()
    argv = ["calibrate", "--run", run_copy] + ([] if case == "no_method" else ["--good", folder])
    code, _, err = cli(*argv)
    needle = {"missing": "not found", "empty": "no images", "not_image": "notes.txt: not an image",
              "broken_image": "bad.png", "no_method": "--good DIR"}[case]
    assert code == 2 and needle in err, err
    assert (run_copy / "run.json").read_bytes() == raw


def test_calibrate_good_refuses_a_run_without_validation_scores(tiny_data, tmp_path, cli):
    run = tmp_path / "noval"
    api.train("rd", tiny_data, run, val_fraction=0.0, **TINY)
    raw = (run / "run.json").read_bytes()
    code, _, err = cli("calibrate", "--run", run, "--good", _good_folder(tiny_data, tmp_path / "g"))
    assert code == 2 and "no validation scores" in err and (run / "run.json").read_bytes() == raw
