"""The ``Sample`` record and the builders for MVTec AD, plain folders and Magnetic Tile.

Every builder returns ``list[Sample]`` sorted by (label, defect, path): good images first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .io import IMAGE_EXTENSIONS, is_image_file

__all__ = ["Sample", "mvtec_samples", "folder_samples", "magnetic_tile_samples", "train_val_split"]


@dataclass(frozen=True)
class Sample:
    """One image: ``label`` 0 good / 1 anomalous, ``mask`` path (None: no pixel ground truth).

    ``mask_threshold`` overrides the dataset's threshold for this mask (VisA masks hold
    small class indices, so VisA samples use 1); None keeps the dataset's.
    """

    image: Path
    label: int
    mask: Path | None = None
    defect: str = "good"
    mask_threshold: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))
        if self.mask is not None:
            object.__setattr__(self, "mask", Path(self.mask))
        if self.label not in (0, 1):
            raise DataError(f"{self.image}: label must be 0 (good) or 1 (anomalous), got {self.label!r}")


def _sorted(samples: Iterable[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.label, s.defect, str(s.image)))


def _require_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such folder")
    if not p.is_dir():
        raise DataError(f"{p}: not a folder")
    return p


def _list_images(folder: str | Path, required: bool = True) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; DataError naming it when empty."""
    p = _require_dir(folder)
    files = sorted((f for f in p.iterdir() if is_image_file(f)), key=lambda f: f.name)
    if required and not files:
        raise DataError(f"{p}: no images found (extensions: {' '.join(IMAGE_EXTENSIONS)})")
    return files


def _stem_index(folder: Path) -> dict[str, Path]:
    """stem -> image file in ``folder`` (empty when the folder is missing); first by name wins."""
    if not folder.is_dir():
        return {}
    index: dict[str, Path] = {}
    for f in _list_images(folder, required=False):
        index.setdefault(f.stem, f)
    return index


def _check_split(split: str, allowed: Sequence[str] = ("train", "test")) -> None:
    if split not in allowed:
        raise ConfigError(f"split must be one of {', '.join(allowed)}; got {split!r}")


def mvtec_samples(root: str | Path, category: str | None, split: str) -> list[Sample]:
    """MVTec AD layout (also MPDD): ``root/category/{train/good, test/<defect>, ground_truth/<defect>/NNN_mask.png}``.

    ``category=None`` means ``root`` is the category folder itself.
    """
    _check_split(split)
    base = _require_dir(Path(root) / category if category else root)
    if split == "train":
        return [Sample(p, 0, None, "good") for p in _list_images(base / "train" / "good")]
    test = _require_dir(base / "test")
    defects = sorted(d.name for d in test.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not defects:
        raise DataError(f"{test}: no test folders found (expected test/good, test/<defect>)")
    samples = []
    for defect in defects:
        images = _list_images(test / defect)
        if defect == "good":
            samples += [Sample(p, 0, None, "good") for p in images]
            continue
        gt = base / "ground_truth" / defect
        masks = _stem_index(gt)
        for p in images:
            mask = masks.get(f"{p.stem}_mask")
            if mask is None:
                raise DataError(f"{p}: anomalous test image has no mask (expected {gt / (p.stem + '_mask.png')})")
            samples.append(Sample(p, 1, mask, defect))
    return _sorted(samples)


def _split_beside(files: list[Path], mask_suffix: str) -> tuple[list[Path], dict[str, Path]]:
    """Separate images from masks stored beside them; returns (images, stem -> mask)."""
    if mask_suffix:
        masks = {f.stem[: -len(mask_suffix)]: f for f in files if f.stem.endswith(mask_suffix)}
        return [f for f in files if not f.stem.endswith(mask_suffix)], masks
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(f.stem, []).append(f)
    images, masks = [], {}
    for stem, group in groups.items():
        if len(group) == 1:
            images.append(group[0])
            continue
        pngs = [f for f in group if f.suffix.lower() == ".png"]
        others = [f for f in group if f.suffix.lower() != ".png"]
        if len(pngs) != 1 or len(others) != 1:
            raise DataError(f"{group[0].parent}: cannot tell image from mask among {', '.join(f.name for f in group)}")
        images.append(others[0])
        masks[stem] = pngs[0]
    return sorted(images, key=lambda f: f.name), masks


def folder_samples(
    normal_dir: str | Path,
    abnormal_dirs: str | Path | Sequence[str | Path] = (),
    mask_dir: str | Path | None = None,
    mask_suffix: str = "",
    *,
    masks_beside: bool = False,
    split: str = "all",
    test_every: int = 0,
) -> list[Sample]:
    """Generic layout: one folder of normal images and optional folders of anomalous ones.

    Masks (anomalous images only) are found by the image's stem + ``mask_suffix``, any image
    extension: in ``mask_dir/<abnormal folder name>/`` or ``mask_dir/`` when ``mask_dir`` is
    given; beside the images when ``masks_beside`` (with an empty suffix, the ``.png`` sharing an
    image's stem is its mask, as in Magnetic Tile's ``name.jpg`` + ``name.png``). With neither,
    anomalous images have no mask (image-level labels only); with either, a missing mask is an
    error. The defect name is the abnormal folder's name. ``split``: "all"; or "train"/"test",
    where normal images at sorted-name index % ``test_every`` == 0 go to test (0: none) and
    every anomalous image is test.
    """
    _check_split(split, ("all", "train", "test"))
    if isinstance(abnormal_dirs, (str, Path)):
        abnormal_dirs = [abnormal_dirs]
    if test_every < 0:
        raise ConfigError(f"test_every must be >= 0, got {test_every}")
    if mask_dir is not None and masks_beside:
        raise ConfigError("give either mask_dir or masks_beside, not both")

    def images_and_masks(folder: str | Path) -> tuple[list[Path], dict[str, Path]]:
        files = _list_images(folder)
        images, masks = _split_beside(files, mask_suffix) if masks_beside else (files, {})
        if not images:
            raise DataError(f"{folder}: no images found (only masks)")
        return images, masks

    normals, _ = images_and_masks(normal_dir)
    samples = []
    for i, p in enumerate(normals):
        in_test = test_every > 0 and i % test_every == 0
        if split == "all" or (split == "test") == in_test:
            samples.append(Sample(p, 0, None, "good"))
    if split == "train":
        return _sorted(samples)
    for folder in abnormal_dirs:
        folder = Path(folder)
        images, beside = images_and_masks(folder)
        if mask_dir is not None:
            lookups = [_stem_index(Path(mask_dir) / folder.name), _stem_index(_require_dir(mask_dir))]
        for p in images:
            mask = None
            if masks_beside:
                mask = beside.get(p.stem)
                where = f"{folder}/{p.stem}{mask_suffix}.png"
            elif mask_dir is not None:
                key = p.stem + mask_suffix
                mask = lookups[0].get(key) or lookups[1].get(key)
                where = f"{key}.* in {Path(mask_dir) / folder.name} or {mask_dir}"
            if mask is None and (masks_beside or mask_dir is not None):
                raise DataError(f"{p}: anomalous image has no mask (looked for {where})")
            samples.append(Sample(p, 1, mask, folder.name))
    if not samples:
        raise DataError(f"{normal_dir}: no {split} images (no anomalous folders and test_every=0)")
    return _sorted(samples)


def magnetic_tile_samples(root: str | Path, split: str) -> list[Sample]:
    """Magnetic Tile Defects with the project's fixed split (see shared/data/README.md).

    MT_Free names sorted; index % 5 == 0 -> test-good, the rest train-good; every defective
    image (MT_Blowhole, ...) is test, its mask the same-name .png in ``Imgs/`` (empty masks
    still count as anomalous images). Defect names drop the ``MT_`` prefix.
    """
    _check_split(split)
    root = _require_dir(root)
    free = root / "MT_Free" / "Imgs"
    defect_dirs = sorted(d / "Imgs" for d in root.iterdir() if d.is_dir() and d.name.startswith("MT_") and d.name != "MT_Free")
    samples = folder_samples(free, defect_dirs, masks_beside=True, split=split, test_every=5)
    return _sorted(s if s.label == 0 else replace(s, defect=s.image.parent.parent.name[3:]) for s in samples)


def train_val_split(samples: Sequence[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Deterministic random split of good training images into (train, val).

    Val (for score normalisation and thresholds) gets round(n * val_fraction) images, at least
    1 when val_fraction > 0 and n >= 2, at most n - 1; the result does not depend on input order.
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    bad = [s for s in samples if s.label != 0]
    if bad:
        raise DataError(f"{bad[0].image}: train_val_split takes good training images only (got an anomalous one)")
    ordered = sorted(samples, key=lambda s: str(s.image))
    n = len(ordered)
    n_val = 0 if val_fraction == 0 or n < 2 else min(max(1, round(n * val_fraction)), n - 1)
    val_idx = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    train = [s for i, s in enumerate(ordered) if i not in val_idx]
    val = [s for i, s in enumerate(ordered) if i in val_idx]
    return _sorted(train), _sorted(val)
