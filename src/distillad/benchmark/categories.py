"""Which data a benchmark runs on: the data root (or generated demo data for ``--quick``), the
category folders under it, and each category's key in ``paper_numbers.json``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

from ..data import detect_layout, find_data_root
from ..data.cifar import cifar10_classes, find_cifar10, split_class_path
from ..demo_data import make_demo_dataset
from ..errors import ConfigError, DataError

__all__ = ["discover_categories", "paper_key", "resolve_data", "category_table"]

_MARKERS = ("MT_Free/Imgs", "train/good", "train/ok", "Data/Images")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "data"


def _is_category_folder(p: Path) -> bool:
    return any((p / m).is_dir() for m in _MARKERS)


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def _cifar_specs(folder: Path, prefix: str) -> list[str] | None:
    """``prefix/<class>`` for every class when ``folder`` is CIFAR-10 data (one category per class), else None."""
    if find_cifar10(folder) is None:
        return None
    return [f"{prefix}/{c}" if prefix else c for c in cifar10_classes(folder)]


def discover_categories(root: str | Path) -> list[str]:
    """Category specs under a data root: ``.`` when the root is a category itself, else
    ``name`` for category folders one level down and ``dataset/name`` two levels down
    (e.g. ``mvtec_ad/bottle``, ``magnetic_tile``). CIFAR-10 data gives one spec per class,
    ``cifar10/airplane`` ... (``data.cifar``: a class is addressed like a subfolder)."""
    root = Path(root)
    if _is_category_folder(root):
        return ["."]
    cifar = _cifar_specs(root, "")
    if cifar is not None:
        return cifar
    found = []
    for d in _subdirs(root):
        if _is_category_folder(d):
            found.append(d.name)
        elif (cifar := _cifar_specs(d, d.name)) is not None:
            found += cifar
        else:
            found += [f"{d.name}/{s.name}" for s in _subdirs(d) if _is_category_folder(s)]
    return found


def _expand_cifar(root: Path, specs: Sequence[str]) -> list[str]:
    """A spec naming a whole CIFAR-10 folder (``cifar10``) stands for its ten classes."""
    out: list[str] = []
    for spec in specs:
        prefix = spec.strip("/")
        out += _cifar_specs(root / spec, "" if prefix == "." else prefix) or [spec]
    return out


def paper_key(name: str, path: Path) -> str:
    """The key of ``paper_numbers.json`` for our category: MVTec AD categories are
    ``mvtec_ad/<category>`` wherever the dataset lives; Magnetic Tile is ``magnetic_tile``;
    a CIFAR-10 class is ``cifar10/<class>``."""
    try:
        layout = detect_layout(path)
    except DataError:
        return name
    if layout == "magnetic_tile":
        return "magnetic_tile"
    if layout == "cifar10":
        return f"cifar10/{path.name}"
    if layout == "mvtec" and any("mvtec" in part.lower() and "3d" not in part.lower() for part in path.resolve().parts[:-1]):
        return f"mvtec_ad/{path.name}"
    return name


def resolve_data(data: str | Path | None, quick: bool, out: Path, categories: Sequence[str] | None,
                 say: Callable[[str], Any]) -> tuple[Path, list[str] | None]:
    """(data root, category specs or None for all): ``data``, else the shared data folder, else
    (``quick`` only) generated demo data in ``out/data``."""
    if data is not None:
        return find_data_root(data), categories  # type: ignore[return-value]
    root = find_data_root()
    if root is not None:
        say(f"data: {root}")
        return root, categories  # type: ignore[return-value]
    if not quick:
        raise DataError("no data: pass --data PATH or set DISTILLAD_DATA (only --quick falls back to generated demo data)")
    demo = out / "data"
    if not (demo / "washer" / "train" / "good").is_dir():
        _make_demo_once(demo)
    say(f"no real data found: using generated demo data in {demo} (numbers say nothing about real data)")
    return demo, list(categories) if categories else ["washer"]


def _make_demo_once(dest: Path) -> None:
    """Generate the demo data into a private folder, then rename it into place: concurrent shards of one
    benchmark never write the same files, and a worker killed meanwhile leaves no half-written ``dest``."""
    import os
    import shutil
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        make_demo_dataset(tmp, n_train=24, n_test_good=6, n_test_defect=4, size=128, seed=0)
        os.rename(tmp, dest)  # atomic; fails when another worker's copy is already there
    except OSError:
        if not (dest / "washer" / "train" / "good").is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def category_table(root: Path, specs: Sequence[str] | None, image_size: int,
                   image_size_for: dict[str, int]) -> list[dict[str, Any]]:
    """One entry per category spec (all found under ``root`` when None): name, absolute path, file-name
    slug, image size (``image_size_for`` overrides ``image_size``) and paper key. A CIFAR-10 class is
    ``<cifar folder>/<class>`` (``cifar10/airplane``); the folder alone (``cifar10``) means all its classes."""
    specs = _expand_cifar(root, specs) if specs else discover_categories(root)
    if not specs:
        raise DataError(f"{root}: no dataset categories found (looked for {', '.join(_MARKERS)} "
                        "one and two levels down); name them with --categories")
    unknown = set(image_size_for) - set(specs)
    if unknown:
        raise ConfigError(f"--image-size-for names categories not benchmarked: {', '.join(sorted(unknown))}")
    cats = []
    for spec in specs:
        path = (root / spec).resolve()
        cifar = None if path.is_dir() else split_class_path(path, None)
        if not path.is_dir() and cifar is None:
            found = ", ".join(discover_categories(root)) or "none"
            raise DataError(f"{path}: category {spec!r} not found under {root} (found: {found})")
        if cifar is not None and cifar[1] not in (classes := cifar10_classes(cifar[0])):
            raise DataError(f"{cifar[0]}: unknown CIFAR-10 class {cifar[1]!r} in {spec!r}; valid: {', '.join(classes)}")
        name = path.name if spec in (".", "") else spec.strip("/")
        cats.append({"name": name, "path": str(path), "slug": _slug(name),
                     "image_size": int(image_size_for.get(spec, image_size)), "paper_key": paper_key(name, path)})
    return cats
