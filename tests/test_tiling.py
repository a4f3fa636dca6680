"""``tiling``: stitched maps equal the untiled map of a local model, one tile is the model itself, and
``test``/``predict --tile`` run end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers.hardening import TINY

from distillad import api
from distillad.errors import ConfigError
from distillad.registry import create_model
from distillad.tiling import TiledModel, tiled_size


class PixelModel(nn.Module):
    """Map = a per-pixel function of the input (so tiles must stitch back to it exactly); score = max."""

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (x[:, :1] * 2 + x[:, 1:2] ** 2 - x[:, 2:]).contiguous()
        return m, m.flatten(1).amax(1)


@pytest.mark.parametrize("tile, n", [((16, 16), 3), ((8, 12), 2), ((9, 9), 2)])
def test_stitched_map_equals_the_whole_image_map(tile, n):
    size = tiled_size(tile, n)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    maps, scores = TiledModel(PixelModel(), tile, batch_size=3).predict(x)
    ref, ref_scores = PixelModel().predict(x)
    assert maps.shape == ref.shape and torch.allclose(maps, ref, atol=1e-6)
    assert torch.allclose(scores, ref_scores)


def test_sizes_and_one_tile_is_the_model(one_thread):
    assert tiled_size((32, 32), 1) == (32, 32) and tiled_size((32, 32), 3) == (96, 96)
    assert tiled_size((33, 33), 2) == (65, 65)  # stride 16: 33 + 2·16
    with pytest.raises(ConfigError, match="--tile"):
        tiled_size((32, 32), 0)
    net = create_model("rd", teacher_weights="random").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    m1, s1 = TiledModel(net, (32, 32)).predict(x)
    m0, s0 = net.predict(x)
    assert torch.allclose(m1, m0) and torch.allclose(s1, s0)


def test_test_and_predict_with_tiles(tiny_data, tmp_path, one_thread):
    run = tmp_path / "run"
    api.train(model="rd", data=tiny_data, out=run, val_fraction=0.2, announce=lambda t: None, **TINY)
    out = api.test(run, device="cpu", progress=False, tile=2)
    assert out["tile"] == 2 and 0 <= out["metrics"]["image_auroc"] <= 1
    rows = api.predict(run, [tiny_data / "test" / "crack"], tmp_path / "pred", device="cpu", num_workers=0, tile=2)
    assert all(r["error"] is None and r["decision"] for r in rows)
    with pytest.raises(ConfigError, match="--tile"):
        api.test(run, device="cpu", tile=0)
