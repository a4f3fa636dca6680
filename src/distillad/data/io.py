"""Decode image and mask files into plain numpy arrays, with one clear error per bad file.

Conversions (pixels are used as stored: EXIF orientation is ignored so masks stay aligned):

- ``1``/``L``: grey values replicated into R, G and B; ``LA``: alpha dropped, then replicated.
- ``P`` (palette): each index mapped to its palette colour; palette transparency ignored.
- ``RGBA``/``RGBX``: the alpha channel is dropped, not composited: colours stay as stored.
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion to RGB.
- 16-bit (``I;16*``, 32-bit ``I`` holding 0..65535, 16-bit RGB/RGBA PNG or TIFF read with
  OpenCV): scaled from the full 0..65535 range with ``round(x / 257)``, so 65535 -> 255.
  12-bit data stored in 16 bits therefore looks dark; convert such files yourself.
- float images (``F``, float TIFF): rejected with :class:`DataError` (no agreed range).
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "load_image", "load_mask", "is_image_file", "decode_image", "read_size"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


def is_image_file(path: Path) -> bool:
    """True for a visible file with a supported image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3); see the module docstring for the conversions."""
    arr = _read_uint8(path)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def read_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header (Pillow opens lazily); decodes only files Pillow
    cannot open (``load_image``'s OpenCV path), so a bad file fails as ``load_image`` fails."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, UnidentifiedImageError, ValueError):
        h, w = load_image(path).shape[:2]
        return w, h


def load_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """Read a mask as bool (H, W): anomalous where max over colour channels >= ``threshold``.

    16-bit masks are first scaled to 8 bits; alpha is ignored. 128 suits 0/255 masks and the
    anti-aliased grey masks of Magnetic Tile.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 1 <= threshold <= 255:
        raise ConfigError(f"mask threshold must be an integer in 1..255, got {threshold!r}")
    arr = _read_uint8(path)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr >= threshold


def _check_path(path: str | Path) -> Path:
    """Fail early, naming the file, for a missing path, a folder or an unsupported extension."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{p}: unsupported extension {p.suffix or '(none)'!r} (supported: {' '.join(IMAGE_EXTENSIONS)})")
    return p


def _read_uint8(path: str | Path) -> np.ndarray:
    """Decode to uint8, grey (H, W) or RGB (H, W, 3), alpha dropped and 16-bit scaled."""
    p = _check_path(path)
    return _decode_uint8(p, str(p), tiff=p.suffix.lower() in (".tif", ".tiff"))


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes (an HTTP upload, say) exactly as :func:`load_image` decodes the same file:
    uint8 RGB (H, W, 3). ``name`` is used in error messages; ``max_pixels`` (default: Pillow's
    ``Image.MAX_IMAGE_PIXELS``) refuses larger images from their header, before decoding."""
    if not data:
        raise DataError(f"{name}: empty (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    arr = _decode_uint8(data, name, tiff=data[:4] in _TIFF_SIGNATURES, max_pixels=limit)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def _decode_uint8(src: Path | bytes, name: str, tiff: bool, max_pixels: int | None = None) -> np.ndarray:
    """``src`` (a file or its bytes) → uint8, grey (H, W) or RGB (H, W, 3); ``tiff``: try OpenCV when
    Pillow cannot identify it."""
    try:
        with Image.open(src if isinstance(src, Path) else io.BytesIO(src)) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise DataError(f"{name}: {im.width}x{im.height} pixels is over the limit of {max_pixels} "
                                "(a decompression bomb?)")
            if _is_16bit_colour(_head(src), im):
                arr = _read_cv2(src, name)
            else:
                im.load()
                arr = _pil_to_array(im, name)
    except DataError:
        raise
    except UnidentifiedImageError:
        if not tiff:
            raise DataError(f"{name}: not a readable image (unknown or corrupt format)") from None
        arr = _read_cv2(src, name)  # TIFF flavours Pillow cannot open
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: cannot decode image ({exc})") from None
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if arr.dtype != np.uint8:
        raise DataError(f"{name}: unsupported pixel type {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if min(arr.shape[:2]) == 0:
        raise DataError(f"{name}: empty image")
    return arr


def _head(src: Path | bytes, n: int = 26) -> bytes:
    if isinstance(src, Path):
        with open(src, "rb") as f:
            return f.read(n)
    return src[:n]


def _is_16bit_colour(head: bytes, im: Image.Image) -> bool:
    """16-bit colour PNG/TIFF, which Pillow would silently truncate to 8 bits; ``head``: the file's first bytes."""
    if im.format == "PNG":
        # IHDR: byte 24 is the bit depth, byte 25 the colour type (2 RGB, 4 grey+alpha, 6 RGBA).
        return head[:8] == _PNG_SIGNATURE and head[24] == 16 and head[25] in (2, 4, 6)
    if im.format == "TIFF" and im.mode in ("RGB", "RGBA", "RGBX", "LA"):
        bits = im.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


def _pil_to_array(im: Image.Image, p: str) -> np.ndarray:
    """Pillow image -> uint8/uint16 array, grey (H, W) or RGB (H, W, 3)."""
    mode = im.mode
    if mode == "L" or mode == "RGB":
        return np.array(im)
    if mode in ("1", "LA", "La"):
        return np.array(im.convert("L"))
    if mode in ("P", "PA", "RGBA", "RGBa", "RGBX"):
        return np.array(im.convert("RGBA"))[:, :, :3]
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)
    if mode == "I":
        arr = np.array(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{p}: 32-bit integer image with values outside 0..65535")
        return arr.astype(np.uint16)
    if mode == "F":
        raise DataError(f"{p}: floating-point images are not supported (convert to 8 or 16 bit)")
    return np.array(im.convert("RGB"))


def _read_cv2(src: Path | bytes, name: str) -> np.ndarray:
    """OpenCV fallback for 16-bit colour files: returns RGB (alpha dropped) at native depth."""
    buf = np.fromfile(str(src), dtype=np.uint8) if isinstance(src, Path) else np.frombuffer(src, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"{name}: not a readable image (unknown or corrupt format)")
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{name}: {arr.dtype} pixels are not supported (convert to 8 or 16 bit)")
    if arr.ndim == 3:
        if arr.shape[2] == 2:
            return arr[:, :, 0]
        return arr[:, :, 2::-1]  # BGR(A) -> RGB
    return arr
