"""Building blocks shared by two or more methods: ResNet blocks, their transposed (de-)versions,
RD's one-class bottleneck embedding (OCBE), a reverse decoder that mirrors a teacher, the table
of reference layouts for both (``reverse_layout``) and the student-to-teacher size match.

Follows the layout of the RD4AD reference code (hq-deng/RD4AD, ``resnet.py`` and
``de_resnet.py``) so that for ResNet teachers the parameter counts are the reference's.
One difference: the reference's ``BN_layer`` also builds ``conv4``/``bn4`` (a 1×1 conv,
8.4 M parameters for WideResNet50-2) that its forward never calls; we omit it.
Users: ``rd`` (and ``rd_var``) and ``dskd``, whose deep feature embedding (DSKD Sec. 3.2, Fig. 4)
is RD's OCBE (``OCBE(fuse=False)`` is its DFE-off ablation, Table 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "conv1x1", "conv3x3", "deconv2x2", "BasicBlock", "Bottleneck", "DeBasicBlock", "DeBottleneck",
    "OCBE", "ReverseDecoder", "ConvBNAct", "ReverseLayout", "reverse_layout", "match_sizes", "fold_batchnorm",
    "SamePaddedConv", "static_same_padding", "fuse_for_inference",
]


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def deconv2x2(cin: int, cout: int, stride: int = 2, groups: int = 1) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 2, stride=stride, groups=groups, bias=False)


class ConvBNAct(nn.Sequential):
    """conv k×k → BatchNorm → ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs); ``shortcut`` adapts the identity when shapes change.

    ``act_out = False`` drops the final ReLU (for students that must reproduce signed features).
    """

    expansion = 1
    act_out = True

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + identity
        return self.relu(out) if self.act_out else out


class Bottleneck(nn.Module):
    """ResNet bottleneck (1×1, 3×3, 1×1); width scales with ``base_width`` (128 for WideResNet)."""

    expansion = 4
    act_out = True

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * base_width / 64)
        self.conv1 = conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + identity
        return self.relu(out) if self.act_out else out


class DeBasicBlock(BasicBlock):
    """Basic block whose stride-2 conv is a 2×2 transposed conv: doubles the resolution."""

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 base_width: int = 64) -> None:
        super().__init__(cin, planes, 1, shortcut, base_width)
        if stride == 2:
            self.conv1 = deconv2x2(cin, planes)  # type: ignore[assignment]


class DeBottleneck(Bottleneck):
    """Bottleneck whose stride-2 3×3 conv is a 2×2 transposed conv."""

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 base_width: int = 64) -> None:
        super().__init__(cin, planes, 1, shortcut, base_width)
        if stride == 2:
            width = self.conv2.in_channels
            self.conv2 = deconv2x2(width, width)  # type: ignore[assignment]


Block = Union[Type[BasicBlock], Type[Bottleneck]]


def make_stage(block: Block, cin: int, planes: int, n: int, stride: int, base_width: int = 64,
               transposed: bool = False, act_out: bool = True) -> nn.Sequential:
    """``n`` blocks; the first changes resolution (down, or up when ``transposed``) and width;
    ``act_out=False``: the last block ends without ReLU."""
    cout = planes * block.expansion
    shortcut = None
    if stride != 1 or cin != cout:
        conv = deconv2x2(cin, cout, stride) if transposed and stride != 1 else conv1x1(cin, cout, stride)
        shortcut = nn.Sequential(conv, nn.BatchNorm2d(cout))
    layers = [block(cin, planes, stride, shortcut, base_width)]
    layers += [block(cout, planes, 1, None, base_width) for _ in range(1, n)]
    layers[-1].act_out = act_out
    return nn.Sequential(*layers)


class OCBE(nn.Module):
    """RD's one-class bottleneck embedding: fuse three teacher stages into one compact code.

    Stage 1 goes through two stride-2 3×3 conv-BN-ReLU, stage 2 through one, they are
    concatenated with stage 3 and a stride-2 residual stage (``bn_layer``: ``n_blocks`` blocks,
    the first with a 1×1-conv shortcut) compresses them to ``planes·expansion`` (default 2·c3).
    features [(B,c1,4h,4w), (B,c2,2h,2w), (B,c3,h,w)] → (B, planes·expansion, h/2, w/2).

    DSKD's deep feature embedding (Sec. 3.2, Fig. 4) is this module. ``fuse=False`` is its
    ablation (Table 8, "directly down-sampled"): no fusion convs, the residual stage sees stage 3
    alone. Modules are created in the reference's order (conv1, bn1, conv2, bn2, conv3, bn3,
    bn_layer), so a seed gives the same initial weights as RD4AD's ``BN_layer``.
    """

    def __init__(self, channels: Sequence[int], block: Block = BasicBlock, n_blocks: int = 2,
                 planes: int | None = None, base_width: int = 64, *, fuse: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = channels
        planes = planes if planes is not None else 2 * c3 // block.expansion
        self.fuse = fuse
        if fuse:
            self.conv1 = conv3x3(c1, c2, 2)
            self.bn1 = nn.BatchNorm2d(c2)
            self.conv2 = conv3x3(c2, c3, 2)
            self.bn2 = nn.BatchNorm2d(c3)
            self.conv3 = conv3x3(c2, c3, 2)
            self.bn3 = nn.BatchNorm2d(c3)
        self.relu = nn.ReLU(inplace=True)
        self.bn_layer = make_stage(block, 3 * c3 if fuse else c3, planes, n_blocks, 2, base_width)
        self.out_channels = planes * block.expansion

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.fuse:
            return self.bn_layer(feats[2]).contiguous()
        l1 = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(feats[0]))))))
        l2 = self.relu(self.bn3(self.conv3(feats[1])))
        return self.bn_layer(torch.cat([l1, l2, feats[2]], 1)).contiguous()


class ReverseDecoder(nn.Module):
    """Student decoder mirroring the teacher: each stage doubles resolution and matches a teacher
    stage's channels. (B, cin, h, w) → [(B,c1,8h,8w), (B,c2,4h,4w), (B,c3,2h,2w)] shallow to deep.

    ``act_out=False`` ends every stage without ReLU, for teachers whose stage outputs are signed
    (EfficientNet's linear bottlenecks): a ReLU output could never match their negative part.
    """

    def __init__(self, cin: int, channels: Sequence[int], block: Block = DeBasicBlock,
                 layers: Sequence[int] = (2, 2, 2), base_width: int = 64, act_out: bool = True) -> None:
        super().__init__()
        stages = []
        for c, n in zip(reversed(list(channels)), layers):
            stages.append(make_stage(block, cin, c // block.expansion, n, 2, base_width, transposed=True,
                                     act_out=act_out))
            cin = c
        # names as the reference decoder: layer1 is the deepest stage
        self.layer1, self.layer2, self.layer3 = stages

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.layer1(x)
        b = self.layer2(a)
        c = self.layer3(b)
        return [c, b, a]


@dataclass(frozen=True)
class ReverseLayout:
    """How OCBE and ReverseDecoder are built for one teacher (RD4AD's ``BN_layer`` and de-ResNets).

    ``encoder_block``: the OCBE residual stage's block; ``decoder_block``: the decoder's (its
    transposed twin); ``bottleneck_blocks``: blocks in the OCBE residual stage; ``decoder_layers``:
    decoder blocks per stage, deepest stage first; ``base_width``: 128 for WideResNet.
    """

    encoder_block: Block
    decoder_block: Block
    bottleneck_blocks: int
    decoder_layers: tuple[int, int, int]
    base_width: int = 64

    def build(self, channels: Sequence[int], *, n_blocks: int | None = None, fuse: bool = True,
              act_out: bool = True) -> tuple[OCBE, ReverseDecoder]:
        """(OCBE, ReverseDecoder) for teacher stage ``channels``, created in that order (the seed's
        draws follow it); ``n_blocks`` overrides ``bottleneck_blocks``; ``fuse`` and ``act_out``
        go to OCBE and ReverseDecoder."""
        n = self.bottleneck_blocks if n_blocks is None else n_blocks
        emb = OCBE(channels, self.encoder_block, n, base_width=self.base_width, fuse=fuse)
        dec = ReverseDecoder(emb.out_channels, channels, self.decoder_block, self.decoder_layers,
                             self.base_width, act_out=act_out)
        return emb, dec


#: RD4AD's reference layouts (``resnet.py`` BN_layer + ``de_resnet.py``) for ResNet teachers
_RESNET_LAYOUTS = {
    "resnet18": ReverseLayout(BasicBlock, DeBasicBlock, 2, (2, 2, 2)),
    "resnet34": ReverseLayout(BasicBlock, DeBasicBlock, 3, (3, 4, 6)),
    "resnet50": ReverseLayout(Bottleneck, DeBottleneck, 3, (3, 4, 6)),
    "wide_resnet50_2": ReverseLayout(Bottleneck, DeBottleneck, 3, (3, 4, 6), 128),
}
#: any other teacher: basic blocks, resnet18-style (two blocks per stage)
GENERIC_LAYOUT = ReverseLayout(BasicBlock, DeBasicBlock, 2, (2, 2, 2))


def reverse_layout(teacher: str) -> ReverseLayout:
    """The reference layout for a ResNet ``teacher`` (timm name), else ``GENERIC_LAYOUT``."""
    return _RESNET_LAYOUTS.get(teacher, GENERIC_LAYOUT)


def match_sizes(feats: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Resize each of ``feats`` (B,C,h,w) bilinearly (align_corners=False) to the spatial size of
    its partner in ``ref``, only where the sizes differ.

    At image sizes not divisible by 32 a reverse decoder's up-sampled stages overshoot the
    teacher's (e.g. 64 vs 57 at 225 px); at multiples of 32 this returns the tensors unchanged."""
    return [f if f.shape[-2:] == r.shape[-2:] else
            F.interpolate(f, size=r.shape[-2:], mode="bilinear", align_corners=False)
            for f, r in zip(feats, ref, strict=True)]


def fold_batchnorm(module: nn.Module, example: torch.Tensor, run: Any = None) -> int:
    """Fold every eval-mode BatchNorm2d that reads a convolution's output into that convolution, in place;
    returns the number folded. For inference only (the statistics become conv weights).

    The pairs are found by running ``example`` once with hooks (a BN whose input is the very tensor a
    Conv2d/ConvTranspose2d returned), so no graph tracing is needed and timm's ``BatchNormAct2d`` is kept
    as its activation. A convolution whose output also feeds something else would be changed for that
    other reader too: none of the teachers or students here does that, and the tests compare outputs."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    pairs: list[tuple[nn.Module, str, nn.Module]] = []
    parents = {id(c): (m, n) for m in module.modules() for n, c in m.named_children()}
    from timm.layers import Conv2dSame  # only changes the padding: its weight and bias fold like a Conv2d's
    convs = [m for m in module.modules()
             if type(m) in (nn.Conv2d, Conv2dSame) or (type(m) is nn.ConvTranspose2d and m.groups == 1)]
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and not m.training and m.track_running_stats]

    def on_conv(m: nn.Module, _: Any, out: torch.Tensor) -> None:
        outputs[id(out)] = (m, out)  # the tensor is kept so that its id is not reused during the pass

    def on_bn(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        hit = outputs.get(id(inp[0]))
        if hit is not None and id(m) in parents:
            pairs.append((hit[0], parents[id(m)][1], m))

    hooks = [c.register_forward_hook(on_conv) for c in convs] + [b.register_forward_pre_hook(on_bn) for b in bns]
    try:
        with torch.no_grad():
            (run or module)(example)  # run: e.g. the model's predict, for a model without a plain forward
    finally:
        for h in hooks:
            h.remove()
    done = set()
    for conv, name, bn in pairs:
        if id(bn) in done or id(conv) in done:
            continue
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight,
                                    bn.bias, transpose=isinstance(conv, nn.ConvTranspose2d))
        conv.weight, conv.bias = w, b
        act = [getattr(bn, k) for k in ("drop", "act") if isinstance(getattr(bn, k, None), nn.Module)]
        parents[id(bn)][0].__setattr__(name, nn.Sequential(*act) if act else nn.Identity())
        done.update((id(bn), id(conv)))
    return len(done) // 2


class SamePaddedConv(nn.Conv2d):
    """timm's ``Conv2dSame`` (TensorFlow "same": the odd pixel of padding at the bottom/right) without its
    ``F.pad`` copy of the input, which in channels_last costs more than the strided depthwise convolution
    itself (benchmarks/results/speed.md). Where the padding is (p, p+1), the kernel gets a zero first
    row/column and the convolution a symmetric padding p+1: the same sums, so the outputs are equal."""

    def shifted(self) -> None:
        """Make the three zero-led kernels (first row, first column, both) from ``weight``: buffers, so that
        they move with the module and an export sees constants (inference only: ``weight`` is final)."""
        for h, w in ((1, 0), (0, 1), (1, 1)):
            self.register_buffer(f"weight_{h}{w}", F.pad(self.weight.detach(), (w, 0, h, 0)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads, shift = [], []
        for size, k, st in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((-(-int(size) // st) - 1) * st + k - int(size), 0)
            pads.append(total - total // 2)
            shift.append(total % 2)
        weight = self.weight if shift == [0, 0] else getattr(self, f"weight_{shift[0]}{shift[1]}")
        return F.conv2d(x, weight, self.bias, self.stride, tuple(pads), 1, self.groups)


def static_same_padding(module: nn.Module) -> int:
    """Swap every undilated ``Conv2dSame`` of ``module`` for a ``SamePaddedConv`` sharing its weights, in place
    (for inference: call after ``fold_batchnorm``); returns the number swapped."""
    from timm.layers import Conv2dSame
    n = 0
    for parent in list(module.modules()):
        for name, c in list(parent.named_children()):
            if type(c) is Conv2dSame and c.dilation == (1, 1):
                new = SamePaddedConv(c.in_channels, c.out_channels, c.kernel_size, c.stride, 0, 1, c.groups,
                                     c.bias is not None, device="meta")
                new.weight, new.bias = c.weight, c.bias
                new.shifted()
                setattr(parent, name, new)
                n += 1
    return n


def fuse_for_inference(module: nn.Module, example: torch.Tensor, run: Any = None) -> nn.Module:
    """``module`` made fast for inference, in place: BatchNorm folded (``fold_batchnorm`` on ``example``, through
    ``run`` if given), TF-"same" convolutions without their pad copy (``static_same_padding``), channels_last."""
    fold_batchnorm(module, example, run)
    static_same_padding(module)
    return module.to(memory_format=torch.channels_last)
