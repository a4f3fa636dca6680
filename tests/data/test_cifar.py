"""CIFAR-10 one-class layout on small generated batch files (pickle, binary and PNG forms written here):
detection, RD4AD's protocol, equal pixels across forms, the PNG cache, refused pickles, clear errors,
and a tiny train + test with image metrics only."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from distillad.data import CIFAR10_CLASSES, cifar, detect_layout, load_image, load_samples
from distillad.errors import DataError
from helpers.hardening import TINY_FLAGS  # tests/ is on sys.path

N = 20  # images per split: 4 per training batch, labels i % 3 (airplane, automobile, bird)
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (N, 3072), dtype=np.uint8), np.arange(N) % 3


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (BINSTRING), as the real batches hold their pixels."""
    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)
    dispatch[bytes] = _save_str


def _py2_dumps(obj: object) -> bytes:
    """A pickle like the real CIFAR batches (Python 2 cPickle, protocol 2, numpy 1's module names)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_py(folder: Path, protocol: int | None = None) -> Path:
    """``folder/cifar-10-batches-py`` as the real one (``protocol`` None: Python 2 style, see ``_py2_dumps``):
    dicts of 'data' (N, 3072) uint8 and 'labels'."""
    dumps = _py2_dumps if protocol is None else lambda o: pickle.dumps(o, protocol=protocol)
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    (train, tl), (test, vl) = _arrays(0), _arrays(1)
    for i, name in enumerate(_TRAIN):
        part = slice(4 * i, 4 * i + 4)
        batch = {"batch_label": name, "labels": tl[part].tolist(), "data": train[part], "filenames": ["x.png"] * 4}
        (d / name).write_bytes(dumps(batch))
    (d / "test_batch").write_bytes(dumps({"labels": vl.tolist(), "data": test}))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, protocol=2))
    return d


def write_bin(folder: Path) -> Path:
    d = folder / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    (train, tl), (test, vl) = _arrays(0), _arrays(1)
    rec = lambda x, y: np.concatenate([y[:, None].astype(np.uint8), x], 1).tobytes()
    for i, name in enumerate(_TRAIN):
        (d / f"{name}.bin").write_bytes(rec(train[4 * i:4 * i + 4], tl[4 * i:4 * i + 4]))
    (d / "test_batch.bin").write_bytes(rec(test, vl))
    (d / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return d


def write_png(folder: Path) -> Path:
    for split, seed in (("train", 0), ("test", 1)):
        data, labels = _arrays(seed)
        for c in CIFAR10_CLASSES:
            (folder / split / c).mkdir(parents=True)
        for i, (x, y) in enumerate(zip(data, labels)):
            rgb = x.reshape(3, 32, 32).transpose(1, 2, 0)
            cv2.imwrite(str(folder / split / CIFAR10_CLASSES[y] / f"{i:05d}.png"), rgb[..., ::-1])
    return folder


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DISTILLAD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cifar10"


def _pixels(samples) -> dict[tuple[str, str], np.ndarray]:
    return {(s.image.parent.name, s.image.name): load_image(s.image) for s in samples}


def test_detected_in_every_form_and_as_a_class_path(tmp_path):
    write_py(tmp_path / "py"), write_bin(tmp_path / "bin"), write_png(tmp_path / "png")
    for form in ("py", "bin", "png"):
        assert detect_layout(tmp_path / form) == "cifar10"
        assert detect_layout(tmp_path / form / "airplane") == "cifar10"  # the class, addressed like a subfolder
    assert detect_layout(tmp_path / "py" / "cifar-10-batches-py") == "cifar10"


@pytest.mark.parametrize("form", ["py", "bin"])
def test_one_class_protocol(tmp_path, form):
    root = tmp_path / "c"
    (write_py if form == "py" else write_bin)(root)
    train = load_samples(root, "train", "automobile")
    labels = _arrays(0)[1]
    assert len(train) == int((labels == 1).sum()) == 7 and {s.label for s in train} == {0}
    assert all(s.mask is None and s.image.parent.name == "automobile" for s in train)
    test = load_samples(root / "automobile", "test")  # same as --category
    assert len(test) == N
    assert sum(s.label == 0 for s in test) == int((_arrays(1)[1] == 1).sum())
    assert {s.defect for s in test if s.label == 1} == {"airplane", "bird"}
    assert {s.defect for s in test if s.label == 0} == {"good"} and all(s.mask is None for s in test)


def test_pickle_bin_and_png_pixels_agree(tmp_path):
    write_py(tmp_path / "py"), write_bin(tmp_path / "bin"), write_png(tmp_path / "png")
    data, labels = _arrays(1)
    ref = {(CIFAR10_CLASSES[y], f"{i:05d}.png"): x.reshape(3, 32, 32).transpose(1, 2, 0)
           for i, (x, y) in enumerate(zip(data, labels))}
    for form in ("py", "bin", "png"):
        got = _pixels(load_samples(tmp_path / form, "test", "bird"))
        assert got.keys() == ref.keys()
        assert all(np.array_equal(got[k], ref[k]) for k in ref), form
    a, b = (_pixels(load_samples(tmp_path / f, "train", "bird")) for f in ("py", "bin"))
    assert a.keys() == b.keys() and len(a) == 6 and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_python2_style_pickle_is_what_the_real_batches_hold(tmp_path):
    d = write_py(tmp_path)
    raw = (d / "test_batch").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw and raw[:2] == b"\x80\x02"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickles_of_any_protocol_read(tmp_path, protocol):
    write_py(tmp_path, protocol)
    got = _pixels(load_samples(tmp_path, "test", "airplane"))
    data = _arrays(1)[0]
    assert len(got) == N and np.array_equal(got[("bird", "00002.png")], data[2].reshape(3, 32, 32).transpose(1, 2, 0))


def test_cache_reused_then_rebuilt_when_a_batch_changes(tmp_path, cache):
    d = write_py(tmp_path / "c")
    first = load_samples(tmp_path / "c", "train", "airplane")
    assert [p.name for p in cache.iterdir()] == [first[0].image.parents[2].name]  # one folder, no temp left
    stamp = first[0].image.stat().st_mtime_ns
    again = load_samples(tmp_path / "c", "test", "airplane")
    assert again[0].image.parents[2] == first[0].image.parents[2] and first[0].image.stat().st_mtime_ns == stamp
    test, labels = _arrays(1)  # the test batch write_py wrote, rebuilt from its arrays (nothing is unpickled)
    test = test.copy()
    test[0, 0] ^= 0xFF
    (d / "test_batch").write_bytes(_py2_dumps({"labels": labels.tolist(), "data": test}))
    rebuilt = load_samples(tmp_path / "c", "test", "airplane")
    assert rebuilt[0].image.parents[2] != first[0].image.parents[2] and len(list(cache.iterdir())) == 2
    manifest = json.loads((rebuilt[0].image.parents[2] / "cifar10.json").read_text())
    assert manifest["sha256"] == rebuilt[0].image.parents[2].name and (manifest["train"], manifest["test"]) == (N, N)


def test_interrupted_conversion_is_not_reused(tmp_path, cache, monkeypatch):
    write_bin(tmp_path / "c")
    real = cifar._write_split

    def crash_after_train(dest, *a):
        real(dest, *a)
        if dest.name == "test":
            raise KeyboardInterrupt  # killed half-way through the test split
    monkeypatch.setattr(cifar, "_write_split", crash_after_train)
    with pytest.raises(KeyboardInterrupt):
        load_samples(tmp_path / "c", "train", "airplane")
    assert list(cache.iterdir()) == []  # no partial folder under the final name, no temp folder left
    monkeypatch.setattr(cifar, "_write_split", real)
    assert len(load_samples(tmp_path / "c", "test", "airplane")) == N


class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "inside the dict"])
def test_malicious_pickle_refused_without_running(tmp_path, how):
    d = write_py(tmp_path / "c")
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    payload = {"os.system": _Evil(os.system, cmd), "builtins.exec": _Evil(exec, f"open({str(marker)!r}, 'w')"),
               "inside the dict": {"data": np.zeros((4, 3072), np.uint8), "labels": _Evil(os.system, cmd)}}[how]
    (d / "data_batch_2").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: refused to unpickle: it asks for (posix|__builtin__)\."):
        load_samples(tmp_path / "c", "train", "airplane")
    assert not marker.exists()


def _truncate(d: Path) -> None:
    f = d / "data_batch_3.bin"
    f.write_bytes(f.read_bytes()[:-100])


def _bad_shape(d: Path) -> None:
    (d / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((4, 3000), np.uint8), "labels": [0] * 4}))


def _bad_label(d: Path) -> None:
    (d / "test_batch.bin").write_bytes(bytes([12]) + bytes(3072))


ERRORS = [  # (form, damage, class, message)
    ("py", lambda d: (d / "data_batch_3").unlink(), "airplane", r"batch files missing: data_batch_3$"),
    ("bin", lambda d: (d / "batches.meta.txt").unlink(), "airplane", r"missing: batches.meta.txt"),
    ("bin", _truncate, "airplane", r"data_batch_3.bin: 12192 bytes is not a whole number of 3073-byte records.*truncated"),
    ("py", _bad_shape, "airplane", r"test_batch: 'data' must be a uint8 array of shape \(N, 3072\), got uint8 \(4, 3000\)"),
    ("bin", _bad_label, "airplane", r"test_batch.bin: label 12 of image 0 is outside 0..9"),
    ("py", lambda d: None, "airplan", r"unknown CIFAR-10 class 'airplan'; valid: airplane, automobile, .*truck"),
    ("py", lambda d: None, "frog", r"no training images of class 'frog'"),
    ("py", lambda d: (d / "test_batch").write_bytes(b"\x80\x02garbage"), "airplane", r"test_batch: not a readable CIFAR"),
]


@pytest.mark.parametrize("form,damage,cls,message", ERRORS, ids=[e[3][:30] for e in ERRORS])
def test_clear_errors(tmp_path, cache, form, damage, cls, message):
    d = (write_py if form == "py" else write_bin)(tmp_path / "c")
    damage(d)
    with pytest.raises(DataError, match=message):
        load_samples(tmp_path / "c", "train", cls)
    if cls != "frog":  # bad files and unknown classes convert nothing
        assert not cache.exists() or list(cache.iterdir()) == []


def test_a_class_is_required(tmp_path):
    write_png(tmp_path)
    with pytest.raises(DataError, match=r"needs a class: --category NAME .*classes: airplane"):
        load_samples(tmp_path, "train")


def test_benchmark_category_specs(tmp_path):
    from distillad.benchmark.categories import category_table, discover_categories
    write_bin(tmp_path / "cifar10")
    assert discover_categories(tmp_path) == [f"cifar10/{c}" for c in CIFAR10_CLASSES]
    cats = category_table(tmp_path, ["cifar10/airplane", "cifar10/bird"], 32, {})
    assert [(c["name"], c["slug"], c["paper_key"]) for c in cats] == [
        ("cifar10/airplane", "cifar10_airplane", "cifar10/airplane"), ("cifar10/bird", "cifar10_bird", "cifar10/bird")]
    assert len(load_samples(cats[1]["path"], "test")) == N  # the path alone names the class (the runner passes only it)
    assert len(category_table(tmp_path, ["cifar10"], 32, {})) == 10
    with pytest.raises(DataError, match="unknown CIFAR-10 class 'plane'.*valid: airplane"):
        category_table(tmp_path, ["cifar10/plane"], 32, {})


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path]:
    """(data root, run) after ``distillad train --data ROOT/cifar10/airplane``, in the folder where
    ``distillad benchmark --out OUT`` keeps that run (so the benchmark reuses it)."""
    from distillad.cli import main
    write_py(tmp_path / "data" / "cifar10")
    run = tmp_path / "bench" / "runs" / "cifar10_airplane" / "rd" / "seed0"
    assert main(["train", "--model", "rd", "--data", str(tmp_path / "data" / "cifar10" / "airplane"),
                 "--out", str(run), *TINY_FLAGS]) == 0
    return tmp_path / "data", run


def test_train_test_and_benchmark_report_image_metrics_only(trained, capsys):
    """Image AUROC, and blank pixel metrics (no masks) in metrics.json and the benchmark's results."""
    from distillad.cli import main
    root, run = trained
    assert main(["test", "--run", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["image_auroc"] <= 1 and metrics["n_test"] == N and metrics["n_defective"] == 13
    assert "pixel_auroc" not in metrics and "aupro" not in metrics
    weights = (run / "model.safetensors").stat().st_mtime_ns
    assert main(["benchmark", "--data", str(root), "--categories", "cifar10/airplane", "--models", "rd",
                 "--out", str(run.parents[3]), "--seeds", "1", "--no-plots", "--quick", *TINY_FLAGS]) == 0
    assert (run / "model.safetensors").stat().st_mtime_ns == weights  # reused, not trained again
    results = json.loads((run.parents[3] / "results.json").read_text())
    row = results["summary"]["categories"]["cifar10/airplane"]["rd"]
    assert row["image_auroc"]["mean"] == pytest.approx(metrics["image_auroc"])
    assert row["pixel_auroc"]["mean"] is None and row["aupro"]["mean"] is None
    assert results["protocol"]["categories"][0]["paper_key"] == "cifar10/airplane"
