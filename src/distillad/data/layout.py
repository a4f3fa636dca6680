"""Recognise a dataset folder's layout and build its samples, for ``--data PATH [--category C]``."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError
from .adapters import MPDD_CATEGORIES, btad_samples, mpdd_samples, mvtec3d_samples, visa_samples
from .cifar import cifar10_samples, split_class_path
from .samples import Sample, _list_images, _require_dir, folder_samples, magnetic_tile_samples, mvtec_samples

__all__ = ["LAYOUTS", "detect_layout", "load_samples", "test_folders"]

LAYOUTS = ("mvtec", "mpdd", "mvtec3d", "btad", "visa", "magnetic_tile", "cifar10", "folder")
# What marks a category folder of each per-category layout (checked in this order).
_MARKERS = {"visa": "Data/Images", "mvtec3d": "train/good/rgb", "btad": "train/ok", "mvtec": "train/good"}
_LOOKED_FOR = (
    "magnetic_tile (MT_Free/Imgs), visa (split_csv/1cls.csv or <category>/Data/Images), "
    "mvtec3d (<category>/train/good/rgb), btad (<category>/train/ok), mvtec/mpdd (<category>/train/good), "
    "cifar10 (cifar-10-batches-py/-bin, or train/<class>/ and test/<class>/ of the ten classes), "
    "folder (image files directly inside)"
)


def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _candidates(root: Path, category: str | None) -> list[Path]:
    """Folders that may be a category folder: ``root/category``, else root and its subfolders."""
    if category is None:
        return [root, *_subdirs(root)]
    if not (root / category).is_dir():
        found = ", ".join(d.name for d in _subdirs(root)) or "none"
        raise DataError(f"{root}: no category folder {category!r} (subfolders: {found})")
    return [root / category]


def detect_layout(path: str | Path, category: str | None = None) -> str:
    """Name of the layout of ``path`` (one of ``LAYOUTS``); DataError listing what was looked for.

    CIFAR-10 is recognised at ``path`` itself or as a class "inside" it (``ROOT/airplane``, see ``data.cifar``)."""
    if split_class_path(path, category) is not None:
        return "cifar10"
    root = _require_dir(path)
    if (root / "MT_Free" / "Imgs").is_dir():
        return "magnetic_tile"
    candidates = _candidates(root, category)
    if (root / "split_csv" / "1cls.csv").is_file():
        return "visa"
    for layout, marker in _MARKERS.items():
        hits = [d for d in candidates if (d / marker).is_dir()]
        if hits:
            if layout == "mvtec" and all(d.name in MPDD_CATEGORIES for d in hits):
                return "mpdd"
            return layout
    if _list_images(root, required=False):
        return "folder"
    raise DataError(f"{root}: no known dataset layout; looked for {_LOOKED_FOR}")


def _resolve(root: Path, category: str | None, layout: str) -> tuple[Path, str | None]:
    """(dataset root, category) for a per-category layout, given the root or a category folder."""
    marker = _MARKERS["mvtec" if layout == "mpdd" else layout]
    if category is not None:
        return root, category
    if (root / marker).is_dir():
        return (root.parent, root.name) if layout == "visa" else (root, None)
    hits = [d.name for d in _subdirs(root) if (d / marker).is_dir()]
    if len(hits) == 1:
        return root, hits[0]
    if not hits:
        raise DataError(f"{root}: no {layout} category folder (with {marker}) found")
    raise DataError(f"{root}: several categories ({', '.join(hits)}); choose one (--category)")


def load_samples(path: str | Path, split: str, category: str | None = None, layout: str | None = None) -> list[Sample]:
    """Samples of ``split`` ("train"/"test") at ``path``, layout detected unless given.

    ``path`` may be a dataset root (with ``category``) or a category folder. A plain folder of
    images ("folder") gives all its images as good training images and has no test split. CIFAR-10
    ("cifar10") gives the one-class split of class ``category`` (``data.cifar``).
    """
    if layout is None:
        layout = detect_layout(path, category)
    elif layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if layout == "cifar10":
        return cifar10_samples(path, category, split)
    root = _require_dir(path)
    if layout == "magnetic_tile":
        return magnetic_tile_samples(root, split)
    if layout == "folder":
        if split != "train":
            raise DataError(f"{root}: a plain image folder has no {split} split (use folder_samples with abnormal_dirs)")
        return folder_samples(root, split="all")
    root, category = _resolve(root, category, layout)
    if layout == "visa":
        return visa_samples(root, category, split)
    builders = {"mvtec": mvtec_samples, "mpdd": mpdd_samples, "btad": btad_samples, "mvtec3d": mvtec3d_samples}
    return builders[layout](root, category, split)


def test_folders(path: str | Path, category: str | None = None, layout: str | None = None) -> list[tuple[str, int]]:
    """(folder name, label) of the test split's class folders as ``load_samples`` reads them: 0 for the
    good folder, 1 for a defect class (every ``test/<name>`` but ``good`` in the MVTec layouts);
    [] for a layout without a test split. Reads folder names only (``train`` lists them up front)."""
    if layout is None:
        layout = detect_layout(path, category)
    elif layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    root = _require_dir(path)
    if layout == "folder":
        return []
    if layout == "magnetic_tile":
        return [("MT_Free", 0)] + [(d.name, 1) for d in _subdirs(root) if d.name.startswith("MT_") and d.name != "MT_Free"]
    if layout == "visa":
        return [("Normal", 0), ("Anomaly", 1)]
    root, category = _resolve(root, category, layout)
    if layout == "btad":
        return [("ok", 0), ("ko", 1)]
    test = (root / category if category else root) / "test"
    return [(d.name, 0 if d.name == "good" else 1) for d in _subdirs(test)] if test.is_dir() else []
