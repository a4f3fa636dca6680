"""layers.py: the shared reverse-distillation blocks (reference layout table, OCBE with and without
fusion, the student-to-teacher size match) and maps.check_combine. CPU, random weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distillad.errors import ConfigError
from distillad.layers import (OCBE, BasicBlock, Bottleneck, DeBasicBlock, DeBottleneck, ReverseDecoder,
                              ReverseLayout, match_sizes, reverse_layout)
from distillad.maps import COMBINE_MODES, check_combine


@pytest.mark.parametrize("teacher, expect", [
    ("resnet18", (BasicBlock, DeBasicBlock, 2, (2, 2, 2), 64)),
    ("resnet34", (BasicBlock, DeBasicBlock, 3, (3, 4, 6), 64)),
    ("resnet50", (Bottleneck, DeBottleneck, 3, (3, 4, 6), 64)),
    ("wide_resnet50_2", (Bottleneck, DeBottleneck, 3, (3, 4, 6), 128)),
    ("efficientnet_lite0", (BasicBlock, DeBasicBlock, 2, (2, 2, 2), 64)),  # generic fallback
    ("mobilenetv3_large_100", (BasicBlock, DeBasicBlock, 2, (2, 2, 2), 64)),
])
def test_reverse_layout_is_rd4ad_reference_table(teacher, expect):
    lay = reverse_layout(teacher)
    assert (lay.encoder_block, lay.decoder_block, lay.bottleneck_blocks, lay.decoder_layers, lay.base_width) == expect
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.base_width = 32  # type: ignore[misc]


def test_reverse_layout_builds_rd4ad_parameter_counts():
    """resnet18 layout with ResNet18's stage channels: RD4AD's BN_layer (minus unused conv4) + de-ResNet18."""
    emb, dec = reverse_layout("resnet18").build([64, 128, 256])
    assert isinstance(emb, OCBE) and isinstance(dec, ReverseDecoder)
    assert len(emb.bn_layer) == 2 and [len(s) for s in (dec.layer1, dec.layer2, dec.layer3)] == [2, 2, 2]
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (n(emb), n(dec)) == (11_680_000, 3_703_168)
    emb1, _ = reverse_layout("resnet18").build([64, 128, 256], n_blocks=1)
    assert len(emb1.bn_layer) == 1


@pytest.mark.parametrize("block, base_width", [(BasicBlock, 64), (Bottleneck, 128)])
@pytest.mark.parametrize("fuse", [True, False])
def test_ocbe_shapes_with_and_without_fusion(block, base_width, fuse):
    chans = [16, 24, 40]
    emb = OCBE(chans, block, 2, base_width=base_width, fuse=fuse).eval()
    feats = [torch.rand(2, c, 32 // 2 ** k, 32 // 2 ** k) for k, c in enumerate(chans)]
    out = emb(feats)
    assert emb.out_channels == 80 and tuple(out.shape) == (2, 80, 4, 4)  # 2·c3 channels, half stage 3's size
    assert hasattr(emb, "conv1") == fuse  # no fusion convs for the DFE-off ablation
    assert emb.bn_layer[0].conv1.in_channels == (3 * 40 if fuse else 40)
    if not fuse:  # the residual stage sees stage 3 alone: stages 1 and 2 do not matter
        other = [torch.rand_like(feats[0]), torch.rand_like(feats[1]), feats[2]]
        assert torch.equal(emb(other), out)


def test_ocbe_keeps_rd_reference_state_dict_names():
    emb = OCBE([8, 16, 32])
    prefixes = {k.split(".")[0] for k in emb.state_dict()}
    assert prefixes == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "bn_layer"}


def test_match_sizes_resizes_only_where_shapes_differ():
    ref = [torch.rand(2, 4, 14, 14), torch.rand(2, 8, 7, 7)]
    same = torch.rand(2, 4, 14, 14)
    big = torch.rand(2, 8, 8, 8)
    out = match_sizes([same, big], ref)
    assert out[0] is same
    assert tuple(out[1].shape) == (2, 8, 7, 7)
    expect = torch.nn.functional.interpolate(big, size=(7, 7), mode="bilinear", align_corners=False)
    assert torch.equal(out[1], expect)
    with pytest.raises(ValueError):  # one reference per feature map
        match_sizes([same], ref)


def test_check_combine_accepts_the_modes_and_names_a_bad_value():
    assert COMBINE_MODES == ("sum", "product", "mean")
    assert all(check_combine(m) == m for m in COMBINE_MODES)
    with pytest.raises(ConfigError, match="combine must be one of 'sum', 'product', 'mean', got 'max'"):
        check_combine("max")


@pytest.mark.parametrize("name", ["rd", "stfpm"])
def test_methods_validate_combine_at_construction(name):
    import distillad
    with pytest.raises(ConfigError, match="'median'"):
        distillad.create_model(name, teacher_weights="random", combine="median")


def test_layout_is_a_plain_frozen_dataclass():
    fields = [f.name for f in dataclasses.fields(ReverseLayout)]
    assert fields == ["encoder_block", "decoder_block", "bottleneck_blocks", "decoder_layers", "base_width"]
