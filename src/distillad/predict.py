"""Score folders of new images with a trained run: ``predictions.csv`` + heat-map overlay and mask PNGs.

Order of work, so that mistakes cost seconds: the inputs are listed (folders recursively) and the
``--out`` folder is checked *before* the model is loaded; then decoding (a thread, or DataLoader workers
with ``num_workers`` > 0), the model and PNG writing (a thread; OpenCV releases the GIL) overlap. Outputs
keep the inputs' relative paths (``good/000.png`` → ``OUT/good/000_overlay.png``). Everything is written
into a hidden staging folder inside ``--out`` and moved into place at the end, so a full disk or a
crash never leaves new files mixed with an earlier prediction, and ``--overwrite`` removes only the
files an earlier prediction listed in its own ``predictions.csv``.

A file that cannot be decoded, or whose score is not finite, is listed in ``predictions.csv``
with its error and no decision; the other files are still predicted (the CLI exits with 3).

Images are fitted as the run's ``data.resize`` says (``distillad.data.resize``); under ``pad`` the
map is cropped back to the image's region before the overlay and the mask are drawn, so both keep
the image's aspect. ``tile`` > 1 predicts tile by tile (``distillad.tiling``). Under ``torchrun`` the
ranks split the images and rank 0 writes the one predictions.csv (``distillad.distributed``).

``predictions.csv``, one row per input, in input order:

- ``path``: the file as given (folders expanded); ``relative_path``: its name in the outputs.
- ``label``, ``defect``: what the folder layout says the image is, for checking the decisions:
  under ``<dataset>/test/good/`` (or BTAD's ``test/ok/``) → 0, ``good``; under ``<dataset>/test/<name>/``
  → 1, ``<name>`` (only where ``<dataset>/train/`` exists beside ``test/``: MVTec AD, MPDD, MVTec 3D-AD,
  BTAD); Magnetic Tile's ``MT_Free/Imgs/`` → 0, ``good``, ``MT_<name>/Imgs/`` → 1, ``<name>``; otherwise
  empty. Never used by the model or the threshold.
- ``score``: the method's image score (higher = more anomalous; for most methods the maximum of the
  anomaly map); not comparable between runs.
- ``normalized_score``: ``0.5 · (score − m) / (t − m)`` with ``m`` the mean score of the run's
  validation good images and ``t`` the run's image threshold: 0 is the validation mean, 0.5 the
  threshold (≥ 0.5 is "defective"), 1 twice as far above the mean; not clipped. Empty without a threshold.
- ``decision``: ``defective`` (score ≥ threshold) or ``good``; empty without a threshold or on error.
- ``overlay``: the heat-map overlay PNG (the run's validation colour scale), relative to ``--out``;
  ``mask``: the defect-mask PNG, one grey channel, 255 where the map ≥ the run's pixel threshold;
  empty with ``--no-overlays``.
- ``error``: why the file has no score (unreadable, non-finite score); empty when it worked.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed
from .checkpoint import atomic_write_bytes, load_run, read_run_spec
from .data.io import IMAGE_EXTENSIONS, is_image_file, load_image
from .calibration import normalize_scores
from .data.resize import crop_map, fit_image, run_geometry
from .engine import _progress, resolve_device
from .precision import check_precision, predict_batch, prepare_for_inference
from .errors import DataError, OutputError
from .hints import check_int
from .outputs import check_writable, first_existing_parent, is_within, write_failed
from .tiling import TiledModel, check_tile, tiled_size
from .visualize import calibrated_colour_scale, overlay, save_png

__all__ = ["InputImage", "collect_inputs", "prepare_output", "predict_images", "label_from_path", "CSV_FILE",
           "CSV_COLUMNS"]

CSV_FILE = "predictions.csv"
CSV_COLUMNS = ["path", "relative_path", "label", "defect", "score", "normalized_score", "decision", "overlay", "mask",
               "error"]
_GOOD_FOLDERS = ("good", "ok")  # MVTec's test/good, BTAD's test/ok
_STAGING_PREFIX = ".distillad-predict-"
#: threads encoding PNGs beside the model: one keeps up (an image's PNGs cost less than its forward) and a
#: second only takes time from torch's threads on a 2-core machine (benchmarks/results/predict.md)
_PNG_THREADS = 1


@dataclass(frozen=True)
class InputImage:
    """One image to predict: its path and its name in the outputs (relative, POSIX, extension kept)."""

    path: Path
    name: str

    @property
    def stem(self) -> str:
        """Output name without the extension: ``good/000.png`` → ``good/000``."""
        p = PurePosixPath(self.name)
        return str(p.with_name(p.stem))


@functools.lru_cache(maxsize=256)
def _has_train(root: Path) -> bool:
    """Whether ``root/train`` is a folder: asked once per dataset root, not once per file."""
    return (root / "train").is_dir()


def label_from_path(path: str | Path) -> tuple[int | None, str]:
    """(label, defect) that the folder layout gives a file (see the module docstring); (None, "") when it
    says nothing. A ``test/<class>/`` folder counts only with a ``train/`` folder beside ``test/``."""
    parts = Path(path).resolve().parts
    for i in range(len(parts) - 3, 0, -1):
        if parts[i] == "test":
            if not _has_train(Path(*parts[:i])):
                break
            cls = parts[i + 1]
            return (0, "good") if cls in _GOOD_FOLDERS else (1, cls)
    if len(parts) >= 3 and parts[-2] == "Imgs" and parts[-3].startswith("MT_"):
        return (0, "good") if parts[-3] == "MT_Free" else (1, parts[-3][3:])
    return None, ""


def _walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, hidden files and folders skipped, symlinked folders not followed."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if is_image_file(Path(root) / f)]
    return found


def collect_inputs(inputs: Sequence[str | Path]) -> list[InputImage]:
    """Image files of ``inputs`` (files, or folders searched recursively), named relative to the folder given.

    With several inputs, a folder's images are prefixed with the folder's name (``crack/000.png``);
    names that still collide get ``~2``, ``~3`` ... before the extension. Raises DataError naming
    the input for a missing path, an unsupported file, or a folder without images."""
    if not inputs:
        raise DataError("predict: no inputs given")
    several = len(inputs) > 1
    out: list[InputImage] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files = _walk_images(p)
            if not files:
                raise DataError(f"{p}: no images found, subfolders included "
                                f"(extensions {' '.join(IMAGE_EXTENSIONS)})")
            prefix = PurePosixPath(p.resolve().name) if several else PurePosixPath()
            out += [InputImage(f, str(prefix / PurePosixPath(*f.relative_to(p).parts))) for f in files]
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{p}: unsupported extension {p.suffix or '(none)'!r} "
                                f"(supported: {' '.join(IMAGE_EXTENSIONS)})")
            out.append(InputImage(p, p.name))
        else:
            raise DataError(f"{p}: no such file or folder")
    seen: dict[str, int] = {}
    unique = []
    for item in out:
        key, n = item.stem, seen.get(item.stem, 0) + 1
        seen[key] = n
        if n > 1:
            p = PurePosixPath(item.name)
            item = InputImage(item.path, str(p.with_name(f"{p.stem}~{n}{p.suffix}")))
        unique.append(item)
    return unique


def _owned_files(out: Path) -> list[Path]:
    """Files an earlier prediction in ``out`` wrote: its predictions.csv and the overlays/masks it lists
    (a csv without those columns, from distillad ≤ 0.2: its flat ``NNNN_*_overlay.png`` / ``_mask.png``)."""
    csv_path = out / CSV_FILE
    owned = [csv_path]
    try:
        rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise OutputError(f"--out {out}: cannot read the earlier {CSV_FILE} ({e}); remove the folder yourself") from None
    if rows and "overlay" in rows[0]:
        names = [r.get(k) for r in rows for k in ("overlay", "mask") if r.get(k)]
        owned += [out / n for n in names if is_within(out / n, out) and n.endswith(("_overlay.png", "_mask.png"))]
    else:
        owned += [f for f in out.iterdir() if f.name[:4].isdigit() and f.name[4:5] == "_"
                  and f.name.endswith(("_overlay.png", "_mask.png"))]
    return [f for f in owned if f.is_file()]


def prepare_output(out: str | Path, inputs: Sequence[str | Path], images: Sequence[InputImage], run: str | Path,
                   overwrite: bool = False) -> list[Path]:
    """Check ``out`` before any work: not a file, not inside an input folder or the run, writable, and
    empty unless it holds an earlier prediction and ``overwrite`` is set. Creates it; returns the
    earlier prediction's files (removed once the new one is complete)."""
    out = Path(out)
    folders = {Path(p) if Path(p).is_dir() else Path(p).parent for p in inputs}
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is an existing file; give a folder for {CSV_FILE} and the overlays")
    if is_within(out, run) or is_within(run, out):
        raise OutputError(f"--out {out}: is or contains the run folder {run}; choose a folder outside it")
    clash = next((f for f in folders if is_within(out, f)), None) or \
        next((im.path for im in images if is_within(im.path, out)), None)
    if clash is not None:
        raise OutputError(f"--out {out}: overlaps the input {clash} (the next predict would read the "
                          "overlays as inputs); choose a folder outside the inputs")
    old: list[Path] = []
    if out.is_dir():
        entries = [e for e in out.iterdir() if not e.name.startswith(_STAGING_PREFIX)]
        if (out / CSV_FILE).is_file():
            if not overwrite:
                raise OutputError(f"--out {out}: holds an earlier prediction; pass --overwrite to replace it "
                                  "(its predictions.csv, overlays and masks) or choose another folder")
            old = _owned_files(out)
        elif entries:
            raise OutputError(f"--out {out}: folder is not empty and holds no earlier prediction; "
                              "choose a new or empty folder")
    else:
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise write_failed(first_existing_parent(out), e) from None
    check_writable(out)
    return old


class _Decode(Dataset):
    """Items: index, model input (3, h, w) float in [0, 1] fitted as ``resize`` says, the image's region of it
    (``content``), the decoded original (uint8, for the overlay), or the decoding error's message."""

    def __init__(self, images: Sequence[InputImage], size: tuple[int, int], keep_original: bool,
                 resize: str = "squash") -> None:
        self.images, self.size, self.keep_original, self.resize = list(images), size, keep_original, resize

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            img = load_image(self.images[i].path)
        except DataError as e:
            return {"index": i, "error": str(e)}
        fitted, content = fit_image(img, self.size, self.resize)
        small = torch.from_numpy(np.ascontiguousarray(fitted.transpose(2, 0, 1)))
        return {"index": i, "image": small.float().div_(255.0), "content": content,
                "original": torch.from_numpy(img) if self.keep_original else None}


def _as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


class _ThreadBatches:
    """Batches of ``decode``'s items in order, the next ``ahead`` decoded by one thread while the model runs
    (PIL and OpenCV release the GIL): ``--num-workers 0``. Decoding is a small share of the work, so a worker
    process per core would only take cores from the model (benchmarks/results/predict.md)."""

    def __init__(self, decode: _Decode, batch_size: int, ahead: int = 2) -> None:
        self.decode, self.batch_size, self.ahead = decode, batch_size, ahead

    def __len__(self) -> int:
        return -(-len(self.decode) // self.batch_size)

    def _batch(self, k: int) -> list[dict[str, Any]]:
        return [self.decode[i] for i in range(k * self.batch_size, min(len(self.decode), (k + 1) * self.batch_size))]

    def __iter__(self) -> Any:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillad-decode") as pool:
            queue = deque(pool.submit(self._batch, k) for k in range(min(self.ahead, len(self))))
            for k in range(self.ahead, len(self) + self.ahead):
                batch = queue.popleft().result()
                if k < len(self):
                    queue.append(pool.submit(self._batch, k))
                yield batch


def _write_pngs(stage: Path, stem: str, original: torch.Tensor, amap: np.ndarray, scale: tuple[float, float],
                pixel_threshold: float | None) -> tuple[str, str]:
    """Overlay (at the original's resolution) and mask (at the model's) PNGs into ``stage``; their names."""
    ov_name, mask_name = f"{stem}_overlay.png", ""
    save_png(stage / ov_name, overlay(original.numpy(), amap, *scale, threshold=None))
    if pixel_threshold is not None:
        mask_name = f"{stem}_mask.png"
        save_png(stage / mask_name, ((amap >= pixel_threshold) * 255).astype(np.uint8))  # one grey channel
    return ov_name, mask_name


@torch.no_grad()
def predict_images(run: str | Path, inputs: Sequence[str | Path], out: str | Path, device: str = "auto",
                   batch_size: int = 8, overlays: bool = True, progress: bool | None = None,
                   num_workers: int = 0, overwrite: bool = False, threads: int | None = None,
                   tile: int = 1, precision: str = "fp32") -> list[dict[str, Any]]:
    """Predict every image of ``inputs`` with run ``run`` into folder ``out``; one row per image (dicts with
    the CSV's columns, ``score`` a float, ``error`` None when it worked). See the module docstring.

    ``num_workers``: 0 (default) decodes in one thread of this process, > 0 in that many DataLoader
    processes. ``threads``: torch's intra-op threads while predicting; None = the usable cores minus the
    decoding processes (at least 1): spinning OpenMP threads that share cores with decoding processes slow
    the model down several-fold, and decoding is too small a share to be worth a core
    (benchmarks/results/predict.md)."""
    run, out = Path(run), Path(out)
    check_int("--batch-size", batch_size)
    check_int("--num-workers", num_workers, minimum=0)
    check_int("--threads", threads, none_ok=True)
    check_tile(tile)
    _has_train.cache_clear()  # the folders may have changed since an earlier call in this process
    spec = read_run_spec(run)  # its schema check refuses a non-finite threshold
    calib = spec.get("calibration") or {}
    images = collect_inputs(inputs)
    dev = distributed.init(resolve_device(device))  # under torchrun: this rank's device, the ranks joined
    check_precision(precision, dev)
    created = not out.exists()
    # rank 0 checks --out and makes the staging folder every rank writes into (the module docstring)
    old, stage = distributed.main_first(lambda: _prepare(out, inputs, images, run, overwrite))
    try:
        try:
            mine = [images[i] for i in distributed.my_share(len(images))]
            model, spec = load_run(run, dev)
            model = prepare_for_inference(model, dev)
            n_threads = torch.get_num_threads()
            torch.set_num_threads(threads or _default_threads(num_workers))
            try:
                hw, mode = run_geometry(spec)
                if tile > 1:
                    model = TiledModel(model, hw, batch_size)
                share: list[dict[str, Any]] | Exception = _run(
                    model, tiled_size(hw, tile), mode, dev, mine, stage, batch_size, overlays,
                    progress if distributed.is_main() else False, num_workers, calib, precision)
            finally:
                torch.set_num_threads(n_threads)
        except Exception as e:  # noqa: BLE001  (raised again below, on every rank)
            share = e
        rows = distributed.gather_shares(share, len(images))
        distributed.main_first(lambda: _publish(out, stage, rows, old))
    except OSError as e:
        raise write_failed(out, e) from None
    finally:
        if distributed.is_main():
            shutil.rmtree(stage, ignore_errors=True)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # a failed first prediction leaves no empty folder behind
    return rows


def _prepare(out: Path, inputs: Sequence[str | Path], images: Sequence[InputImage], run: Path,
             overwrite: bool) -> tuple[list[Path], Path]:
    """``prepare_output``, then the hidden staging folder in ``out``: (earlier prediction's files, stage)."""
    old = prepare_output(out, inputs, images, run, overwrite)
    try:
        return old, Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    except OSError as e:
        raise write_failed(out, e) from None


def _default_threads(num_workers: int) -> int:
    """Usable cores (shared by torchrun's ranks on this machine) minus the decoding workers, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) - num_workers)


def _run(model: torch.nn.Module, size: tuple[int, int], resize: str, dev: torch.device, images: list[InputImage],
         stage: Path, batch_size: int, overlays: bool, progress: bool | None, num_workers: int,
         calib: dict[str, Any], precision: str = "fp32") -> list[dict[str, Any]]:
    """Decode → model → PNGs into ``stage``, overlapped; the rows in input order."""
    thr, pthr = calib.get("image_threshold"), calib.get("pixel_threshold")
    scale = calibrated_colour_scale(calib)  # the run's validation statistics, never these images
    decode = _Decode(images, size, overlays, resize)
    loader: Any = (DataLoader(decode, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                              collate_fn=_as_list, persistent_workers=False) if num_workers
                   else _ThreadBatches(decode, batch_size))
    rows: list[dict[str, Any]] = [{"path": str(im.path), "relative_path": im.name, "score": float("nan"),
                                   **dict(zip(("label", "defect"), label_from_path(im.path))),
                                   "normalized_score": float("nan"), "decision": "", "overlay": "", "mask": "",
                                   "error": None} for im in images]
    pending: deque[tuple[int, Future]] = deque()
    bar = _progress(len(loader), "predict", progress)
    with ThreadPoolExecutor(max_workers=_PNG_THREADS, thread_name_prefix="distillad-png") as pool:
        for batch in loader:
            good = [b for b in batch if "error" not in b]
            for b in batch:
                if "error" in b:
                    rows[b["index"]]["error"] = b["error"]
            if good:
                maps, scores = predict_batch(model, torch.stack([b["image"] for b in good]).to(dev), precision)
                maps, scores = maps[:, 0].float().cpu().numpy(), scores.float().cpu()
                norm = normalize_scores(scores, calib).numpy() if thr is not None else None
                for j, b in enumerate(good):
                    i, s = b["index"], float(scores[j])
                    row = rows[i]
                    row["score"] = s
                    if not (math.isfinite(s) and np.isfinite(maps[j]).all()):
                        row["error"] = f"{images[i].path}: the model's score or map is not finite ({s})"
                        continue
                    row["normalized_score"] = float(norm[j]) if norm is not None else float("nan")
                    row["decision"] = "" if thr is None else ("defective" if s >= thr else "good")
                    if overlays:
                        (stage / images[i].stem).parent.mkdir(parents=True, exist_ok=True)
                        pending.append((i, pool.submit(_write_pngs, stage, images[i].stem, b["original"],
                                                       crop_map(maps[j], b["content"]), scale, pthr)))
            while len(pending) > 4 * batch_size:  # bounded memory: wait for the oldest writes
                _collect(pending.popleft(), rows)
            bar.update(1)
        while pending:
            _collect(pending.popleft(), rows)
    bar.close()
    return rows


def _collect(item: tuple[int, Future], rows: list[dict[str, Any]]) -> None:
    i, fut = item
    rows[i]["overlay"], rows[i]["mask"] = fut.result()  # an OSError (disk full ...) ends the prediction


def _csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([r["path"], r["relative_path"], "" if r["label"] is None else r["label"], r["defect"],
                    f"{r['score']:.6g}", f"{r['normalized_score']:.4f}",
                    r["decision"], r["overlay"], r["mask"], r["error"] or ""])
    return buf.getvalue().encode()


def _publish(out: Path, stage: Path, rows: Sequence[dict[str, Any]], old: Sequence[Path]) -> None:
    """Replace the earlier prediction by the staged one: CSV staged too, old files removed, new moved in,
    CSV last (so a folder with a predictions.csv always holds the files it lists)."""
    atomic_write_bytes(stage / CSV_FILE, _csv_bytes(rows))
    for f in old:
        f.unlink(missing_ok=True)
    for f in sorted({p.parent for p in old if p.parent != out}, key=lambda p: -len(p.parts)):
        _remove_empty_dirs(f, out)
    for r in rows:
        for name in (r["overlay"], r["mask"]):
            if name:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / name, out / name)
    os.replace(stage / CSV_FILE, out / CSV_FILE)


def _remove_empty_dirs(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``top`` while they are empty."""
    while folder != top and is_within(folder, top):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
