"""Tile-by-tile prediction for large images (``test``/``predict --tile N``), maps stitched back.

The image is fitted (the run's resize mode) to :func:`tiled_size`, i.e. about ``N`` times the run's
input size per side, cut into tiles of exactly the run's input size overlapping by half a tile
(``2N − 1`` tiles per side), every tile goes through ``model.predict`` in batches, and the maps are
stitched with ``F.fold``, each pixel the mean of the tiles that cover it. The image score is the
highest tile score (each tile scored as the method scores an image). ``N = 1`` is the untiled model.

Caveat (a trade-off, stated): the model sees details ``N`` times larger than in training, which is
the point for small defects in large images, but the thresholds were calibrated on whole validation
images, so read decisions under ``--tile`` with care; AUROC/AUPRO need no threshold.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["tiled_size", "TiledModel", "check_tile"]


def check_tile(n: object) -> int:
    """``n`` if it is an integer between 1 and 16, else a ``ConfigError`` naming it."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 16:
        raise ConfigError(f"--tile must be an integer between 1 and 16, got {n!r}")
    return n


def _stride(tile: tuple[int, int]) -> tuple[int, int]:
    return max(1, tile[0] // 2), max(1, tile[1] // 2)


def tiled_size(tile: tuple[int, int], n: int) -> tuple[int, int]:
    """(H, W) that ``2n − 1`` tiles of ``tile`` at a stride of half a tile cover exactly (``n·tile`` when even)."""
    check_tile(n)
    sh, sw = _stride(tile)
    return tile[0] + 2 * (n - 1) * sh, tile[1] + 2 * (n - 1) * sw


class TiledModel(nn.Module):
    """``model`` applied tile by tile: ``predict`` takes (B, 3, H, W) images of ``tiled_size(tile, n)``.
    ``model`` is one ``precision.prepare_for_inference`` made (BatchNorm folded), so the wrapper is too."""

    inference_ready = True

    def __init__(self, model: nn.Module, tile: tuple[int, int], batch_size: int = 16) -> None:
        super().__init__()
        self.model, self.tile, self.batch_size = model, (int(tile[0]), int(tile[1])), int(batch_size)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B,3,H,W) → (maps (B,1,H,W): per-pixel mean over covering tiles, scores (B,): max over tiles)."""
        b, c, h, w = images.shape
        (th, tw), stride = self.tile, _stride(self.tile)
        if (h - th) % stride[0] or (w - tw) % stride[1] or h < th or w < tw:
            raise ConfigError(f"tiled input {h}×{w} is not covered by {th}×{tw} tiles at stride {stride}")
        cols = F.unfold(images, (th, tw), stride=stride)  # (B, C·th·tw, L)
        n_tiles = cols.shape[-1]
        tiles = cols.transpose(1, 2).reshape(b * n_tiles, c, th, tw)
        outs = [self.model.predict(t) for t in tiles.split(self.batch_size)]  # type: ignore[operator]
        maps = torch.cat([m for m, _ in outs]).float()  # (B·L, 1, th, tw)
        scores = torch.cat([s for _, s in outs]).float().view(b, n_tiles).amax(1)
        map_cols = maps.reshape(b, n_tiles, th * tw).transpose(1, 2)
        summed = F.fold(map_cols, (h, w), (th, tw), stride=stride)
        count = F.fold(torch.ones_like(map_cols[:1]), (h, w), (th, tw), stride=stride)
        return summed / count, scores
