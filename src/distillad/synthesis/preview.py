"""``distillad synth-preview``: a grid of normal / synthetic / mask / foreground, to see what training sees."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import AnomalyDataset, load_image, load_samples
from ..errors import ConfigError, DataError, DistilladError
from .dataset import SyntheticAnomalyDataset
from .presets import PAPER_PRESETS
from .textures import IMAGE_EXTENSIONS

__all__ = ["synth_preview", "synth_preview_from_data", "ImageListDataset", "add_arguments", "run", "main"]

ROWS = ("normal", "synthetic", "mask", "foreground")


def _load_rgb(path: Path) -> np.ndarray:
    return load_image(path)


class ImageListDataset:
    """Minimal dataset of dicts (``image`` 3xSxS float in [0, 1], ``path``) over files or arrays."""

    def __init__(self, images: Sequence[str | Path | np.ndarray], size: int = 256) -> None:
        self.images, self.size = list(images), size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        src = self.images[index]
        img = src if isinstance(src, np.ndarray) else _load_rgb(Path(src))
        if img.dtype != np.uint8:
            img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        if img.shape[:2] != (self.size, self.size):
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        item: dict[str, Any] = {"image": torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255.0)}
        if not isinstance(src, np.ndarray):
            item["path"] = str(src)
        return item


def image_files(folder: str | Path) -> list[Path]:
    """Images under ``folder`` (its ``train/good`` when it is an MVTec category), sorted."""
    folder = Path(folder)
    if (folder / "train" / "good").is_dir():
        folder = folder / "train" / "good"
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


def _tile(t: torch.Tensor | np.ndarray) -> np.ndarray:
    a = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
    return (np.clip(a.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


def synth_preview(dataset_or_images: Any, out_png: str | Path, n: int = 8, seed: int = 0,
                  size: int = 256, **synth_kwargs: Any) -> Path:
    """Write a 4-row grid (normal, synthetic, mask, foreground shown as the image dimmed outside
    M_f) of ``n`` evenly spaced items; accepts a SyntheticAnomalyDataset, a dataset of dicts,
    a folder, or a list of image paths/arrays (``synth_kwargs`` go to SyntheticAnomalyDataset)."""
    data = dataset_or_images
    if isinstance(data, (str, Path)):
        files = image_files(data)
        pick = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
        data = ImageListDataset([files[i] for i in pick], size)
    elif isinstance(data, (list, tuple)):
        data = ImageListDataset(data, size)
    if not isinstance(data, SyntheticAnomalyDataset):
        data = SyntheticAnomalyDataset(data, seed=seed, **synth_kwargs)
    elif synth_kwargs:
        raise ConfigError("synth_kwargs cannot be applied to an existing SyntheticAnomalyDataset")
    if len(data) == 0:
        raise DataError("synth_preview: the dataset is empty")
    indices = np.unique(np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(int))
    columns = []
    for i in indices:
        it = data[int(i)]
        fg = it["foreground"].numpy()
        dimmed = it["image"].numpy() * (0.25 + 0.75 * fg)
        columns.append(np.concatenate([_tile(it["image"]), _tile(it["anomalous"]), _tile(it["mask"]),
                                       _tile(dimmed)], axis=0))
    pad = 4
    h, w = columns[0].shape[0] // len(ROWS), columns[0].shape[1]
    label_w = 96
    grid = np.full((len(ROWS) * (h + pad) + pad, label_w + len(columns) * (w + pad) + pad, 3), 255, np.uint8)
    for c, col in enumerate(columns):
        for r in range(len(ROWS)):
            y, x = pad + r * (h + pad), label_w + pad + c * (w + pad)
            grid[y:y + h, x:x + w] = col[r * h:(r + 1) * h]
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(ROWS):
        draw.text((6, pad + r * (h + pad) + h // 2 - 6), name, fill=(0, 0, 0))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png


def synth_preview_from_data(data: str | Path, out_png: str | Path, *, category: str | None = None,
                            layout: str | None = None, n: int = 8, image_size: int = 256,
                            textures: str | Path | None = None, foreground: str = "grabcut", seed: int = 0,
                            **synth_kwargs: Any) -> Path:
    """Preview over ``n`` evenly spaced training images of a dataset that ``distillad.data``
    reads (any layout it detects); only those images are decoded and segmented."""

    samples = load_samples(data, "train", category, layout)
    if not samples:
        raise DataError(f"{data}: no training images")
    pick = np.unique(np.linspace(0, len(samples) - 1, min(n, len(samples))).round().astype(int))
    base = AnomalyDataset([samples[i] for i in pick], image_size=image_size)
    return synth_preview(base, out_png, n=n, seed=seed, textures=textures, foreground=foreground, **synth_kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``distillad synth-preview`` (the CLI module registers the subcommand)."""
    parser.add_argument("--data", required=True, help="dataset root or category folder (any layout distillad reads)")
    parser.add_argument("--category", default=None)
    parser.add_argument("--layout", default=None)
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--textures", default=None, help="texture folder (e.g. DTD images/); default: fallback")
    parser.add_argument("--preset", choices=sorted(PAPER_PRESETS), default="dtsnet")
    parser.add_argument("--mode", choices=("fas", "single", "plain"), default=None)
    parser.add_argument("--form", choices=("dtsnet", "dskd"), default=None)
    parser.add_argument("--foreground", choices=("grabcut", "otsu", "none"), default=None)
    parser.add_argument("--cache-dir", default=None, help="folder for cached foreground masks")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("-n", "--n", type=int, default=8, help="number of columns")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> Path:
    kwargs = dict(PAPER_PRESETS[args.preset])
    kwargs.update({k: v for k, v in (("mode", args.mode), ("form", args.form),
                                     ("foreground", args.foreground)) if v is not None})
    out = synth_preview_from_data(args.data, args.out, category=args.category, layout=args.layout, n=args.n,
                                  image_size=args.size, textures=args.textures, seed=args.seed,
                                  cache_dir=args.cache_dir, **kwargs)
    print(f"wrote {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distillad synth-preview", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(parser.parse_args(argv))
    except DistilladError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
