"""CIFAR-10 for one-class novelty detection, RD4AD's protocol: train on the 5,000 training images of
one class, test on all 10,000 test images with that class normal (label 0) and the nine others
anomalous (label 1, ``defect`` = their class); no masks, so image metrics only.

Three forms of a dataset folder are read (``ROOT`` below):

- ``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``), the folder itself
  or a subfolder of it, as torchvision reads it (nothing is downloaded);
- ``cifar-10-batches-bin`` (``data_batch_1..5.bin``, ``test_batch.bin``, ``batches.meta.txt``;
  each record is 1 label byte and 3,072 pixel bytes, R then G then B planes of 32×32);
- PNG folders ``train/<class>/*.png`` and ``test/<class>/*.png`` (the ten class names).

The library's samples are image files, so the batch forms are converted once into the PNG form,
in ``$DISTILLAD_CACHE/cifar10/<sha256>`` (default ``~/.cache/distillad``), keyed by the SHA-256 of
the batch files: a changed batch gets a new folder. The conversion is written to a temporary folder
renamed into place when complete, so an interrupted conversion is never reused.

A class is chosen with ``--category NAME`` or as if it were a subfolder: ``ROOT/airplane`` (which
need not exist) is class *airplane* of ``ROOT``; that is how ``distillad benchmark --categories
cifar10/airplane`` names it.

Batches are pickles, and user files are never unpickled freely: ``_BatchUnpickler`` follows the
"Restricting Globals" pattern of the Python ``pickle`` documentation and resolves only the numpy
callables that rebuild an array (no callable that runs code). Neither ``torch.load(weights_only=True)``
(it reads torch's own container: a plain pickle fails with "Invalid magic number" even with numpy's
globals allowed) nor ``numpy.load(allow_pickle=False)`` (it refuses any pickle) can read these files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from ..errors import DataError
from ..outputs import cache_root
from .samples import Sample, _check_split, _list_images, _sorted

__all__ = ["CIFAR10_CLASSES", "cache_root", "cifar10_classes", "cifar10_samples", "find_cifar10", "split_class_path"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_FILES = {"py": (*_TRAIN, "test_batch", "batches.meta"),
          "bin": (*(f"{b}.bin" for b in _TRAIN), "test_batch.bin", "batches.meta.txt")}
_SUBFOLDER = {"py": "cifar-10-batches-py", "bin": "cifar-10-batches-bin"}
_PIXELS = 3 * 32 * 32
_MANIFEST = "cifar10.json"
_CONVERTER = "distillad-cifar10-png-1"  # part of the cache key: a change of the PNG form gets new folders
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. -]*$")


# ----------------------------------------------------------------------------- finding the data
def find_cifar10(folder: str | Path) -> tuple[str, Path] | None:
    """``(form, folder holding it)`` with form "py", "bin" or "png" when ``folder`` is CIFAR-10 data; else None.

    A folder holding any one batch file counts, so that missing ones are reported by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for form, names in _FILES.items():
        for d in (folder, folder / _SUBFOLDER[form]):
            if any((d / n).is_file() for n in names):
                return form, d
    if (folder / _MANIFEST).is_file() or (
            (folder / "test").is_dir() and set(CIFAR10_CLASSES) <= set(_subdir_names(folder / "train"))):
        return "png", folder
    return None


def split_class_path(path: str | Path, category: str | None) -> tuple[Path, str | None] | None:
    """``(dataset folder, class)`` when ``path`` is CIFAR-10 data, or a class "inside" it (``ROOT/airplane``,
    not an existing folder); None otherwise. A class in both the path and ``category`` must agree."""
    p = Path(path)
    if find_cifar10(p) is not None:
        return p, category
    if p.exists() or find_cifar10(p.parent) is None:
        return None
    if category is not None and category != p.name:
        raise DataError(f"{p}: the path names class {p.name!r} but --category says {category!r}")
    return p.parent, p.name


def _subdir_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _require(folder: Path) -> tuple[str, Path]:
    found = find_cifar10(folder)
    if found is None:
        raise DataError(f"{folder}: no CIFAR-10 data (looked for {_SUBFOLDER['py']} batches, {_SUBFOLDER['bin']} "
                        f"batches, or PNG folders train/<class>/ and test/<class>/ of the ten classes)")
    form, where = found
    missing = [n for n in _FILES.get(form, ()) if not (where / n).is_file()]
    if missing:
        raise DataError(f"{where}: CIFAR-10 batch files missing: {', '.join(missing)}")
    return found


# ----------------------------------------------------------------------------- reading batches
class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy callables rebuilding an array (``find_class`` allow-list,
    the "Restricting Globals" pattern of the ``pickle`` docs); anything else is a DataError naming the file."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles: str pixel data, as torchvision reads them
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise DataError(f"{self.path}: refused to unpickle: it asks for {module}.{name}, which a CIFAR batch "
                            "never needs (only numpy arrays, dicts, lists, numbers and strings are read)")
        return obj


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What CIFAR batches reference, under the module names numpy 1 and numpy 2 pickle them with."""
    import codecs
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's own array rebuilder, whatever module it lives in now
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 pickles of contiguous arrays
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                       ("_codecs", "encode"): codecs.encode}  # bytes in Python 3 protocol-2 pickles
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return out


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001  a corrupt pickle fails in many ways (EOFError, UnpicklingError, ...)
        raise DataError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a CIFAR batch is a dict, this file holds a {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _as_images(path: Path, data: Any, labels: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Check a batch's arrays: data uint8 (N, 3072), labels N integers in 0..n_classes-1; returns
    (images uint8 (N, 32, 32, 3) RGB, labels int64 (N,))."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, {_PIXELS}), got {got}")
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != len(data) or (len(lab) and not np.issubdtype(lab.dtype, np.integer)):
        raise DataError(f"{path}: 'labels' must be {len(data)} integers (one per image), got {lab.dtype} {lab.shape}")
    bad = np.flatnonzero((lab < 0) | (lab >= n_classes))
    if len(bad):
        raise DataError(f"{path}: label {int(lab[bad[0]])} of image {int(bad[0])} is outside 0..{n_classes - 1} "
                        f"(the meta file names {n_classes} classes)")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), lab.astype(np.int64)


def _check_names(path: Path, names: Any) -> list[str]:
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in (names if isinstance(names, list) else [])]
    if len(names) < 2 or not all(isinstance(n, str) and _SAFE_NAME.match(n) for n in names) or len(set(names)) < len(names):
        raise DataError(f"{path}: expected at least 2 distinct class names (letters, digits, _ . - space), got {names!r}")
    return names


def _read_py(folder: Path, batch: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(folder / batch)
    if "data" not in d or "labels" not in d:
        raise DataError(f"{folder / batch}: no 'data'/'labels' entries (keys: {', '.join(sorted(d)) or 'none'})")
    return _as_images(folder / batch, d["data"], d["labels"], n_classes)


def _read_bin(folder: Path, batch: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    path = folder / f"{batch}.bin"
    raw = path.read_bytes()
    if not raw or len(raw) % (1 + _PIXELS):
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of {1 + _PIXELS}-byte records "
                        f"(1 label byte + {_PIXELS} pixel bytes): truncated or not a CIFAR-10 binary batch")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, 1 + _PIXELS)
    return _as_images(path, np.ascontiguousarray(rec[:, 1:]), rec[:, 0], n_classes)


def _read_names(form: str, folder: Path) -> list[str]:
    if form == "py":
        meta = _unpickle(folder / "batches.meta")
        return _check_names(folder / "batches.meta", meta.get("label_names"))
    path = folder / "batches.meta.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    return _check_names(path, [line.strip() for line in text.splitlines() if line.strip()])


# ----------------------------------------------------------------------------- the PNG cache
def _digest(form: str, folder: Path) -> str:
    h = hashlib.sha256(f"{_CONVERTER}\0{form}\0".encode())
    for name in _FILES[form]:
        h.update(name.encode() + b"\0")
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _write_split(dest: Path, names: list[str], images: np.ndarray, labels: np.ndarray) -> None:
    """PNG files ``dest/<class>/<index>.png``, index = the image's position in the split (5 digits)."""
    for n in names:
        (dest / n).mkdir(parents=True)
    for i, (img, lab) in enumerate(zip(images, labels)):
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))  # OpenCV writes BGR
        if not ok:
            raise DataError(f"{dest}: could not encode image {i} as PNG")
        (dest / names[lab] / f"{i:05d}.png").write_bytes(buf.tobytes())


def _convert(form: str, folder: Path) -> Path:
    """The PNG form of batches at ``folder``, converted on first use into the cache (see the module docstring)."""
    key = _digest(form, folder)
    dest = cache_root() / "cifar10" / key
    if (dest / _MANIFEST).is_file():
        return dest
    names = _read_names(form, folder)
    read = _read_py if form == "py" else _read_bin
    parts = [read(folder, b, len(names)) for b in _TRAIN]  # every batch is checked before anything is written
    test_images, test_labels = read(folder, "test_batch", len(names))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=dest.parent))
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot write the CIFAR-10 PNG cache ({e}); set DISTILLAD_CACHE "
                        "to a writable folder") from None
    try:
        _write_split(tmp / "train", names, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        _write_split(tmp / "test", names, test_images, test_labels)
        manifest = {"converter": _CONVERTER, "source": str(folder.resolve()), "form": form, "sha256": key,
                    "classes": names, "train": sum(len(p[1]) for p in parts), "test": len(test_labels)}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            os.rename(tmp, dest)  # atomic: dest appears complete or not at all
        except OSError:
            if not (dest / _MANIFEST).is_file():  # not another process's finished copy: a real failure
                raise
    except OSError as e:
        raise DataError(f"{dest}: could not write the CIFAR-10 PNG cache ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------- samples
def _png_classes(png: Path) -> list[str]:
    manifest = png / _MANIFEST
    if manifest.is_file():
        try:
            return list(json.loads(manifest.read_text())["classes"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{manifest}: unreadable ({e}); delete the folder to convert again") from None
    return _subdir_names(png / "train")


def _classes(form: str, where: Path) -> list[str]:
    return _png_classes(where) if form == "png" else _read_names(form, where)


def cifar10_classes(folder: str | Path) -> list[str]:
    """Class names of the CIFAR-10 data at ``folder`` (from the meta file, or the PNG form's folders)."""
    return _classes(*_require(Path(folder)))


def cifar10_samples(path: str | Path, category: str | None, split: str) -> list[Sample]:
    """One-class samples of class ``category`` (or the class the path names, ``ROOT/airplane``):
    "train": that class's training images, label 0; "test": every test image, label 0 for the
    class, 1 with ``defect`` = its class for the others; no masks."""
    _check_split(split)
    found = split_class_path(path, category)
    folder, category = found if found is not None else (Path(path), category)
    form, where = _require(folder)
    classes = _classes(form, where)
    if category is None:
        raise DataError(f"{folder}: CIFAR-10 one-class needs a class: --category NAME or the path {folder}/NAME "
                        f"(classes: {', '.join(classes)})")
    if category not in classes:
        raise DataError(f"{folder}: unknown CIFAR-10 class {category!r}; valid: {', '.join(classes)}")
    png = where if form == "png" else _convert(form, where)  # after the cheap checks: a typo converts nothing
    if split == "train":
        images = _list_images(png / "train" / category, required=False) if (png / "train" / category).is_dir() else []
        if not images:
            raise DataError(f"{png / 'train' / category}: no training images of class {category!r}")
        return [Sample(p, 0, None, "good") for p in images]
    samples = [Sample(p, int(c != category), None, "good" if c == category else c)
               for c in classes if (png / "test" / c).is_dir() for p in _list_images(png / "test" / c, required=False)]
    if not any(s.label == 0 for s in samples) or not any(s.label == 1 for s in samples):
        raise DataError(f"{png / 'test'}: the test split needs images of class {category!r} and of other classes")
    return _sorted(samples)
