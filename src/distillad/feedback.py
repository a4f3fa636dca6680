"""Images a user confirmed as good, added to a run's calibration set (``distillad calibrate --good DIR``).

A line's false alarms, once a person has looked at them and called them good, are exactly the good
images the thresholds were wrong about. ``calibrate --good`` adds them to the validation good images
and re-fits; run.json's ``calibration.feedback`` keeps every addition (the files' paths and SHA-256,
when, the thresholds before and after), and every later re-fit (``calibrate``, ``test
--threshold-method``) reads those files again, checked against their hashes: a moved or edited file
is an error, never silently a different calibration set.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Mapping

from .data.io import IMAGE_EXTENSIONS, load_image
from .data.samples import Sample
from .errors import DataError

__all__ = ["read_good_folder", "feedback_samples", "history_entry"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_good_folder(folder: str | Path, known: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """[{path, sha256}] of the images in ``folder`` (not its subfolders; hidden files skipped), each one
    decoded once. A missing or empty folder, a file that is not an image, or only images already added
    (``known``: the run's calibration) is a ``DataError`` naming it: nothing may change then."""
    p = Path(folder)
    if not p.is_dir():
        raise DataError(f"{p}: folder of good images not found (--good)")
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise DataError(f"{p}: no images in the folder (--good)")
    for f in files:
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"{f}: not an image (--good takes a folder of images only: {' '.join(IMAGE_EXTENSIONS)})")
        load_image(f)  # an unreadable image fails here, naming the file
    seen = {im["sha256"] for e in (known or {}).get("feedback", []) for im in e["images"]}
    out = [{"path": str(f.resolve()), "sha256": _sha256(f)} for f in files]
    new = [im for im in out if im["sha256"] not in seen]
    if not new:
        raise DataError(f"{p}: every image there was already added to this run's calibration set; nothing changed")
    return list({im["sha256"]: im for im in new}.values())  # the same file twice counts once


def feedback_samples(calib: Mapping[str, Any]) -> list[Sample]:
    """The good samples of every addition recorded in a calibration, each file checked against its hash."""
    out = []
    for entry in calib.get("feedback", []):
        for im in entry["images"]:
            f = Path(im["path"])
            if not f.is_file():
                raise DataError(f"{f}: an image added to the calibration set (calibrate --good, {entry['added_at']}) "
                                "is gone; restore it to re-fit")
            if _sha256(f) != im["sha256"]:
                raise DataError(f"{f}: changed since it was added to the calibration set (SHA-256 differs); "
                                "restore it to re-fit")
            out.append(Sample(f, 0))
    return out


def history_entry(folder: str | Path, images: list[dict[str, str]], before: Mapping[str, Any],
                  after: Mapping[str, Any]) -> dict[str, Any]:
    """One addition: where from, what (paths + SHA-256), when (UTC), thresholds before and after."""
    keep = ("method", "image_threshold", "pixel_threshold", "n_val")
    return {"added_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "folder": str(Path(folder).resolve()),
            "images": images, "before": {k: before[k] for k in keep if k in before},
            "after": {k: after[k] for k in keep if k in after}}
