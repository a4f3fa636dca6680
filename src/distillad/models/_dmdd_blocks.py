"""DMDD's private blocks (models/dmdd.py): the decoupled student with its Pyramid Modeling
Network (Sec. 3.2, Fig. 4) and the Multi-perception Segmentation Network (Sec. 3.4.2, Fig. 6).

The paper publishes no code and draws both networks only as figures; every layer below is our
choice, drawn with shapes in the docstrings and listed in dmdd.py's module docstring.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["cut_stages", "PyramidPath", "DecoupledStudent", "MapPyramid", "MultiPerceptionSegNet"]

Feats = list[torch.Tensor]


def cut_stages(body: nn.Module, module_names: Sequence[str]) -> list[nn.Sequential]:
    """Cut a timm ``features_only`` backbone into one ``nn.Sequential`` per feature level.

    ``module_names``: ``body.feature_info.module_name()`` (``["blocks.1", "blocks.2", ...]`` for
    EfficientNet, ``["layer1", ...]`` for ResNet). Children are taken in registration order, which is
    the order the two families' forwards run them (EfficientNetFeatures: stem, bn, blocks; FeatureListNet:
    its items); containers that hold a feature module (``blocks``) are opened. Stage k holds every module
    after stage k−1's feature module up to and including its own, so running the stages in turn gives
    ``body(x)`` (tests/models/test_dmdd.py checks both families). The modules are shared, not copied.
    """
    targets = list(module_names)
    stages: list[nn.Sequential] = []
    current: list[nn.Module] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if not targets:
                return
            path = prefix + name
            if path == targets[0]:
                stages.append(nn.Sequential(*current, child))
                current.clear()
                targets.pop(0)
            elif any(t.startswith(path + ".") for t in targets):
                walk(child, path + ".")
            else:
                current.append(child)

    walk(body, "")
    if targets:
        raise ConfigError(f"cannot cut the backbone into stages: modules {targets} not found in order")
    return stages


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) to ``size``. Halving a size this way is exactly the 2×2
    mean (area down-sampling) of neighbouring pyramid levels, and unlike adaptive pooling it exports to
    ONNX with traced sizes."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PyramidPath(nn.Module):
    """One fusion pass of the Pyramid Modeling Network over L levels, keeping each level's shape.

    ``top_down``:  p_L = x_L,  p_i = x_i + W_i·up(p_{i+1})      for i = L−1 … 1
    bottom-up:     p_1 = x_1,  p_i = x_i + W_i·down(p_{i−1})    for i = 2 … L
    W_i: 1×1 conv (with bias) from the neighbour's channels to level i's, applied at the lower of the
    two resolutions (before up-sampling, after down-sampling: the same map, fewer operations); both
    resizes bilinear (down by 2: the 2×2 mean). W_i starts at zero, so an untrained path is the
    identity and the student starts as the ImageNet network it was copied from.
    """

    def __init__(self, channels: Sequence[int], top_down: bool) -> None:
        super().__init__()
        self.top_down = top_down
        n = len(channels)
        edges = [(i + 1, i) for i in range(n - 2, -1, -1)] if top_down else [(i - 1, i) for i in range(1, n)]
        self.edges = edges
        self.convs = nn.ModuleList(nn.Conv2d(channels[s], channels[d], 1) for s, d in edges)
        for conv in self.convs:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Feats) -> Feats:
        """[(B,C_i,h_i,w_i)] shallow → deep → the fused features, same shapes."""
        out = list(feats)
        for (s, d), conv in zip(self.edges, self.convs):
            size = out[d].shape[-2:]
            step = _resize(conv(out[s]), size) if self.top_down else conv(_resize(out[s], size))
            out[d] = out[d] + step
        return out


class DecoupledStudent(nn.Module):
    """Sec. 3.2: backbone stages, each followed by a 1×1 conv that multiplies its channels by the
    number of branches; the output is split along channels into one feature per branch and only the
    first (the normality feature with both branches) feeds the next stage. Then each branch's Pyramid
    Modeling Network (Fig. 4): its inner path, then its outer path.

    ``branches``: ("normality", "abnormality") (DMD), or one of them (Table 4's single-branch rows,
    where that branch's feature also feeds the next stage). ``split_init="identity"``: every branch's
    half of the 1×1 conv starts as the identity, so with zero-initialised PMN paths the untrained
    student reproduces its ImageNet backbone on every branch; "random": PyTorch's default init.
    ``freeze_bn``: the backbone's BatchNorm layers stay in eval mode (ImageNet statistics; their affine
    weights still train) whatever ``train()`` is called with, as the teacher's do.
    """

    #: (inner, outer) path directions per branch, Fig. 4: normality top-down-top, abnormality down-top-down
    PATHS = {"normality": (True, False), "abnormality": (False, True)}

    def __init__(self, stages: Sequence[nn.Module], channels: Sequence[int], branches: Sequence[str],
                 split_init: str = "identity", inner: bool = True, outer: bool = True,
                 freeze_bn: bool = False) -> None:
        super().__init__()
        self.freeze_bn = freeze_bn
        self.branches = tuple(branches)
        k = len(self.branches)
        self.stages = nn.ModuleList(stages)
        self.splits = nn.ModuleList(nn.Conv2d(c, k * c, 1) for c in channels)
        if split_init == "identity":
            for conv, c in zip(self.splits, channels):
                eye = torch.eye(c).view(c, c, 1, 1)
                with torch.no_grad():
                    conv.weight.copy_(eye.repeat(k, 1, 1, 1))
                    conv.bias.zero_()
        self.pmn = nn.ModuleDict()
        for b in self.branches:
            dirs = [d for d, on in zip(self.PATHS[b], (inner, outer)) if on]
            self.pmn[b] = nn.Sequential(*(PyramidPath(channels, top_down=d) for d in dirs))

    def train(self, mode: bool = True) -> "DecoupledStudent":
        super().train(mode)
        if self.freeze_bn:
            for m in self.stages.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def decouple(self, x: torch.Tensor) -> dict[str, Feats]:
        """Normalised images (B,3,H,W) → {branch: [(B,C_i,h_i,w_i)] shallow → deep}, before the PMN."""
        out: dict[str, Feats] = {b: [] for b in self.branches}
        for stage, split in zip(self.stages, self.splits):
            parts = split(stage(x)).chunk(len(self.branches), dim=1)
            for b, f in zip(self.branches, parts):
                out[b].append(f)
            x = parts[0]  # only the first branch's (the normality) feature reaches the next stage
        return out

    def forward(self, x: torch.Tensor) -> dict[str, Feats]:
        """Normalised images → {branch: PMN-modelled features [(B,C_i,h_i,w_i)]}, shapes as the teacher's."""
        feats = self.decouple(x)
        return {b: self.pmn[b](feats[b]) for b in self.branches}  # an empty Sequential passes the list on


class MapPyramid(nn.Module):
    """Pyramid Upsampling of one branch's L maps (Sec. 3.4.2): a top-down (NGM) or bottom-up (AIM)
    fusion path, m'_i = conv3×3([m_i, resize(m'_neighbour)]) (2 → 1 channels, with bias), m' = m at the
    path's start. (B,1,h_i,w_i) ×L → (B,1,h_i,w_i) ×L.

    Each conv starts as the plain sum m_i + resize(m'_neighbour) (centre taps 1, the rest 0). With
    PyTorch's random init here and in the compression, the MSN on the maps of a 3-epoch bottle student
    (128 px) ranked test pixels inversely within a few dozen steps, far below the plain sum of the maps;
    with these inits it starts level with the sum (measured: benchmarks/results/issue29_mechanisms.md)."""

    def __init__(self, n_levels: int, top_down: bool) -> None:
        super().__init__()
        self.top_down = top_down
        self.convs = nn.ModuleList(nn.Conv2d(2, 1, 3, padding=1) for _ in range(n_levels - 1))
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.zero_()
                conv.weight[0, :, 1, 1] = 1.0
                conv.bias.zero_()

    def forward(self, maps: Feats) -> Feats:
        out = list(maps)
        order = range(len(out) - 2, -1, -1) if self.top_down else range(1, len(out))
        for conv, i in zip(self.convs, order):
            prev = out[i + 1] if self.top_down else out[i - 1]
            out[i] = conv(torch.cat([out[i], _resize(prev, out[i].shape[-2:])], 1))
        return out


class _ChannelAttention(nn.Module):
    """CBAM-style: x · σ(MLP(avgpool x) + MLP(maxpool x)), MLP K → K/r → K shared. (B,K,H,W) → same.

    The first layer starts with non-negative weights (|default init|) and zero bias: the maps are
    non-negative, so no hidden unit starts dead (with random signs all K/r = 4 ReLUs can start, and
    stay, at zero, freezing the attention)."""

    def __init__(self, k: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, k // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(k, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, k, 1))
        with torch.no_grad():
            self.mlp[0].weight.abs_()
            self.mlp[0].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        return x * torch.sigmoid(a)


class _SpatialAttention(nn.Module):
    """CBAM-style: x · σ(conv k×k([mean_c x, max_c x])). (B,K,H,W) → same."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1))
        return x * torch.sigmoid(a)


class MultiPerceptionSegNet(nn.Module):
    """Multi-perception Segmentation Network (Sec. 3.4.2, Fig. 6) over the branches' maps → logits.

    ::

        NGM maps (B,1,h_i,w_i) ×L ── top-down PU ──┐ bilinear to (H,W), concatenated
        AIM maps (B,1,h_i,w_i) ×L ── bottom-up PU ─┴─→ X (B,K,H,W), K = L·branches (8)
        X → channel attention → spatial attention → ⊙ G (global attention, (1,K,g,g) resized to (H,W))
          → channel compression (1×1 conv K → 1) → logit (B,1,H,W);  M = σ(logit)

    ``pyramid_upsampling=False`` (Table 5 "−PU"): maps go straight to (H,W).
    ``multi_perception=False`` ("−MM"): no channel, spatial or global attention; X → compression.
    G starts at 1 and the compression at the mean (weights 1/K), so that with the pyramids' sum init
    (``MapPyramid``) the untrained head ranks pixels as a positive combination of the maps, as Table 5's
    "w/o MSN" sum does, and training starts from there. ``global_size`` g is the paper's input size, one
    weight per pixel and channel there; at other sizes G is resized bilinearly.

    ``prior`` p: the compression's bias starts at log(p / (1 − p)), so the untrained M sits near the
    fraction of anomalous pixels it is trained on instead of σ(0) = 0.5 (the usual init of a sigmoid head
    on a rare class, RetinaNet's "prior probability" init). With bias 0 nearly every pixel starts as a
    false positive: BCE's first steps then drive the bias down and, since the maps are ≥ 0, the
    compression weights with it, until they turn negative and M inverts (Magnetic Tile: the head ranked
    its own synthetic defects backwards; issue 29, measured: benchmarks/results/issue29_mechanisms.md).
    None: bias 0 (the earlier init).
    """

    def __init__(self, n_levels: int, branches: Sequence[str], pyramid_upsampling: bool = True,
                 multi_perception: bool = True, ca_reduction: int = 2, sa_kernel: int = 7,
                 global_size: int = 256, prior: float | None = None) -> None:
        super().__init__()
        k = n_levels * len(branches)
        self.pyramids = nn.ModuleDict(
            {b: MapPyramid(n_levels, top_down=(b == "normality")) for b in branches} if pyramid_upsampling else {})
        self.multi_perception = multi_perception
        if multi_perception:
            self.channel = _ChannelAttention(k, ca_reduction)
            self.spatial = _SpatialAttention(sa_kernel)
            self.global_attention = nn.Parameter(torch.ones(1, k, global_size, global_size))
        self.compress = nn.Conv2d(k, 1, 1)
        nn.init.constant_(self.compress.weight, 1.0 / k)
        nn.init.constant_(self.compress.bias, 0.0 if prior is None else math.log(prior / (1.0 - prior)))

    def forward(self, maps: dict[str, Feats], size: tuple[int, int]) -> torch.Tensor:
        """{branch: [(B,1,h_i,w_i)]} → segmentation logits (B,1,H,W) at ``size``."""
        up = []
        for b, ms in maps.items():
            ms = self.pyramids[b](ms) if b in self.pyramids else ms
            up += [F.interpolate(m, size=size, mode="bilinear", align_corners=True) for m in ms]
        x = torch.cat(up, 1)
        if self.multi_perception:
            x = self.spatial(self.channel(x))
            x = x * _resize(self.global_attention, size)
        return self.compress(x)
