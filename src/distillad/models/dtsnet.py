"""DTSNet: Lin, Lin, Liang, Chen & Lu, "DTSNet: A Denoising Teacher-Student Network with Reverse
Distillation for Anomaly Detection" (paper text: shared/papers/dtsnet.txt). The paper points to
http://www.linshuyuan.com for code; none was available to us, so every block below is our reading of
the text, on RD4AD's layout (hq-deng/RD4AD), which the paper starts from (Sec. II-A, II-C).

- Data (Sec. II-B): a normal image I_n and its anomaly I_a from foreground-aware synthesis:
  eq. 1 (two Perlin masks, ∩ or ∪ with probability α = 0.5, times the foreground M_f), eq. 2
  (I_a = β(M⊙I_n) + (1−β)(M⊙I_r) + M̄⊙I_n, DTD texture I_r, β ~ U[0.15, 1]); the library's
  ``SyntheticAnomalyDataset`` with ``PAPER_PRESETS["dtsnet"]``. The paper's foreground comes from
  IS-Net, whose weights are not available here: the library uses GrabCut (or Otsu, ``--foreground``).
- Two teachers = one frozen encoder run twice (one batched pass over [I_n; I_a]): f_{T,n}^k, f_{T,a}^k.
- MFF bottleneck (Sec. II-C, Fig. 3): coordinate attention (Hou et al., CVPR 2021; houqb/CoordAttention
  ``coordatt.py``: reduction 32, mip = max(8, C/32), h-swish) on each teacher level; 3×3 convs align the
  levels to level 3 (RD's OCBE alignment: level 1 two stride-2 conv-BN-ReLU, level 2 one, level 3 as
  is); element-wise addition (RD concatenates); then the teacher family's fourth residual block
  (``layers.make_stage`` with ``reverse_layout(teacher)``'s block, count and width) compresses to 2·c3.
- Student (Sec. II-C): RD's mirrored decoder (``layers.ReverseDecoder``) → f_S^k. In training it sees
  only the anomalous teacher's features.
- APR (Sec. II-D), training only: G_T^k = (1/C_k) Σ_c |f_{T,a,c}^k| (eq. 3); A_T^k = H_k W_k ·
  softmax(G_T^k/τ) over positions (eq. 4); σ' = σ·ϑ(f_S^k)·A_T^k (eq. 5); f̃_S^k = f_S^k + ε,
  ε ~ N(0, σ'²) (eq. 6); f_R^k = R_k(f̃_S^k), R_k two 3×3 convs (eq. 7). σ = 0.1 (``noise_sigma``).
- Loss (eq. 8): Σ_k 1 − cos(F(f_{T,n}^k), F(f_R^k)) over flattened maps, batch mean
  (``losses.flat_cosine_loss``): the student restores *normal* features from the *anomalous* input.
- Inference (Fig. 4, eqs. 9–10): teacher on the query, student + R without noise; M^k = 1 − cos along
  channels (f_T^k, f_R^k), bilinear to the image size (align_corners as RD), summed; the library's
  σ = 4 Gaussian and image score = max (``predict`` in _base), as RD.
- Adam, lr 0.005 for student + bottleneck, 0.001 for R (Sec. III-B; one phase, per-module lr),
  betas (0.5, 0.999) as RD's code (the paper gives none); 256 px. The paper trains "10–400 epochs"
  with no per-category table: 200 as RD. No batch size is given: 16 as RD.

Shapes (WideResNet50-2 teacher, the paper's, at 256 px; B = batch)::

    I_a (B,3,256,256) ─teacher→ f_{T,a}: (B,256,64,64)  (B,512,32,32)  (B,1024,16,16)
      coordinate attention (same shapes) → align: 2×conv3x3/2 · conv3x3/2 · identity → 3×(B,1024,16,16)
      sum → (B,1024,16,16) → residual stage (3 Bottlenecks, stride 2) → (B,2048,8,8)
      → ReverseDecoder → f_S: (B,256,64,64) (B,512,32,32) (B,1024,16,16)
      → [+ APR noise, training only] → R_k → f_R (same shapes) ; loss against f_{T,n}(I_n)

Parameters outside the teacher (no count in the paper): resnet18 14.32 M (MFF 9.07, decoder 3.70, R 1.55;
RD 15.38 M); wide_resnet50_2 102.42 M (MFF 52.73 of which the layer4-like stage 41.97, decoder 24.92,
R 24.78; RD 83.80 M). Inference costs RD's plus coordinate attention and R; training runs the teacher on
2B images (I_n and I_a in one batch).

Our readings where the paper is silent or ambiguous:
- τ is not given. ``tau = 1.0`` was checked with ``distillad tune`` on validation images only (held-out
  good transistor images and synthetic defects made from them; grid 0.1 / 1 / 10, one seed, 10 epochs):
  0.1 scored lowest, 1 and 10 tied; one seed cannot show either beyond seed noise
  (measured: benchmarks/results/dtsnet_tau.md).
- ϑ(f_S^k): the standard deviation of each image's f_S^k over all its elements (so an item's noise does
  not depend on the rest of its batch). σ' is detached: the noise is a perturbation, not a learnt path.
- R_k = conv3×3-BN-ReLU → conv3×3 (with bias, no activation, so it can reproduce signed features);
  one per level (their channels differ).
- Fig. 3 is an image: that level 3 gets no alignment conv (it is already at the target size) follows RD.
- ``apr=False`` (Table III, "Baseline + Bottleneck") removes the whole APR module, noise *and* R: f_R = f_S.
  ``mff=False`` (Table III baseline) uses RD's OCBE (``layers.OCBE``); with both off the network is RD's
  (same modules, same initial draws for a seed), trained on (I_a → f_{T,n}) pairs.
- ``maps`` (Table VI): "all", "M1", "M2", "M3" or "M23" (M^2 + M^3). ``diversity=False`` (Table IV
  "w/o Diversity"): one Perlin mask (synthesis mode "single"); it is part of the method's declared
  synthesis, so a keyword. "w/o Foreground" is the run's data setting ``--foreground none``.
- Any supported teacher (library default efficientnet_lite0; the paper's ``teacher="wide_resnet50_2"``;
  Table V: resnet18/34/50). ``decoder_relu`` as in rd.py. At sizes not divisible by 32 the student's
  features are resized to the teacher's (``layers.match_sizes``), as in rd.py.

Ablations on bottle (10 epochs, lite0): the Table III switches and the Table VI map subsets stay within
seed noise (bottle saturates); M^1 alone is the only clearly worse choice. The defaults stay the paper's
(measured: benchmarks/results/dtsnet_ablation.md).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..hints import Betas, NonNegativeFloat, PositiveFloat, PositiveInt
from ..layers import (
    Block,
    ConvBNAct,
    ReverseDecoder,
    make_stage,
    match_sizes,
    reverse_layout,
)
from ..losses import flat_cosine_loss
from ..maps import Combine, cosine_distance
from ..phases import Phase
from ..registry import register_model
from ..synthesis import PAPER_PRESETS
from ..teachers import Teacher
from ._base import DistillationModel

__all__ = ["DTSNet", "dtsnet", "CoordinateAttention", "MultiscaleFeatureFusion", "attention_mask",
           "apr_noise", "reconstruction_block", "MAPS"]

#: Table VI: which stages (indices shallow → deep) enter the anomaly map
MapStages = Literal["all", "M1", "M2", "M3", "M23"]
MAPS: dict[str, tuple[int, ...]] = {"all": (0, 1, 2), "M1": (0,), "M2": (1,), "M3": (2,), "M23": (1, 2)}

Feats = Sequence[torch.Tensor]


# --------------------------------------------------------------------------- blocks

class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou, Zhou & Feng, CVPR 2021; houqb/CoordAttention ``CoordAtt``, inp = oup).

    Average over W and over H → concatenated (B,C,H+W,1) → 1×1 conv to mip = max(8, C/reduction) + BN +
    h-swish → split → 1×1 convs back to C, sigmoid → x · a_h · a_w. (B,C,H,W) → (B,C,H,W).
    Pooling is written as means (equal to the reference's AdaptiveAvgPool2d, and exports to ONNX)."""

    def __init__(self, channels: int, reduction: int = 32) -> None:
        super().__init__()
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x_h = x.mean(3, keepdim=True)  # (B,C,H,1)
        x_w = x.mean(2, keepdim=True).transpose(2, 3)  # (B,C,W,1)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], 2))))
        y_h, y_w = torch.split(y, [h, w], 2)
        a_h = self.conv_h(y_h).sigmoid()  # (B,C,H,1)
        a_w = self.conv_w(y_w.transpose(2, 3)).sigmoid()  # (B,C,1,W)
        return x * a_h * a_w


class MultiscaleFeatureFusion(nn.Module):
    """MFF bottleneck (Fig. 3): coordinate attention per level, 3×3 conv alignment to level 3, sum,
    residual stage. [(B,c1,4h,4w), (B,c2,2h,2w), (B,c3,h,w)] → (B, planes·expansion, h/2, w/2).

    ``block``/``n_blocks``/``base_width``: the teacher family's fourth stage (``reverse_layout``);
    ``planes`` defaults to 2·c3/expansion as RD's OCBE (WideResNet50-2: 1024 → 2048, its layer4)."""

    def __init__(self, channels: Sequence[int], block: Block, n_blocks: int, base_width: int = 64,
                 planes: int | None = None, reduction: int = 32) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.attention = nn.ModuleList(CoordinateAttention(c, reduction) for c in channels)
        self.align = nn.ModuleList([nn.Sequential(ConvBNAct(c1, c2, 3, 2), ConvBNAct(c2, c3, 3, 2)),
                                    ConvBNAct(c2, c3, 3, 2), nn.Identity()])
        planes = planes if planes is not None else 2 * c3 // block.expansion
        self.stage = make_stage(block, c3, planes, n_blocks, 2, base_width)
        self.out_channels = planes * block.expansion

    def forward(self, feats: Feats) -> torch.Tensor:
        fused = sum(al(ca(f)) for ca, al, f in zip(self.attention, self.align, feats, strict=True))
        return self.stage(fused).contiguous()


def attention_mask(teacher_feat: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Eqs. 3–4: A = H·W·softmax(mean_c |f| / τ) over the H·W positions.

    (B,C,H,W) → (B,1,H,W); each image's A sums to H·W (1 everywhere when τ → ∞)."""
    g = teacher_feat.abs().mean(1, keepdim=True)  # eq. 3, (B,1,H,W)
    b, _, h, w = g.shape
    return (h * w) * torch.softmax(g.flatten(1) / tau, 1).view(b, 1, h, w)


def apr_noise(student_feat: torch.Tensor, attention: torch.Tensor, sigma: float = 0.1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Eqs. 5–6 noise ε ~ N(0, σ'²), σ' = σ·ϑ(f_S)·A: (B,C,H,W), (B,1,H,W) → (B,C,H,W).

    ϑ(f_S) is each image's standard deviation over all its elements; σ' is detached (a perturbation,
    not a learnt path) and equal across channels at each position."""
    with torch.no_grad():
        std = student_feat.flatten(1).std(1).view(-1, 1, 1, 1)
        scale = sigma * std * attention
        z = torch.randn(student_feat.shape, generator=generator, device=student_feat.device,
                        dtype=student_feat.dtype)
    return scale * z


def reconstruction_block(channels: int) -> nn.Sequential:
    """R_k (eq. 7): two 3×3 convs, conv-BN-ReLU then a linear conv with bias. (B,C,H,W) → (B,C,H,W)."""
    return nn.Sequential(ConvBNAct(channels, channels, 3), nn.Conv2d(channels, channels, 3, padding=1))


# --------------------------------------------------------------------------- the model

class DTSNet(DistillationModel):
    """Frozen teacher (normal on I_n, anomalous on I_a) → MFF → decoder student → APR (noise + R)."""

    train_defaults = {"epochs": 200, "batch_size": 16, "image_size": 256}
    synthesis = dict(PAPER_PRESETS["dtsnet"])

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 lr: PositiveFloat = 0.005, lr_reconstruction: PositiveFloat = 0.001, betas: Betas = (0.5, 0.999),
                 sigma: NonNegativeFloat = 4.0, noise_sigma: NonNegativeFloat = 0.1, tau: PositiveFloat = 1.0,
                 mff: bool = True, apr: bool = True, maps: MapStages = "all", diversity: bool = True,
                 ca_reduction: PositiveInt = 32, combine: Combine = "sum", decoder_relu: bool = True) -> None:
        super().__init__(lr, betas, sigma)
        if len(out_indices) != 3:
            raise ConfigError(f"dtsnet needs exactly 3 teacher stages, got out_indices={tuple(out_indices)}")
        self.combine = combine
        self.lr_reconstruction, self.noise_sigma, self.tau = lr_reconstruction, noise_sigma, tau
        self.mff, self.apr, self.maps = mff, apr, maps
        # Table IV "w/o Diversity": one Perlin mask instead of eq. 1's ∩/∪ of two
        self.synthesis = {**PAPER_PRESETS["dtsnet"], "mode": "fas" if diversity else "single"}
        self.teacher = Teacher(teacher, tuple(out_indices), teacher_weights, teacher_sha256)
        chans = self.teacher.channels
        layout = reverse_layout(teacher)
        if mff:
            self.bottleneck: nn.Module = MultiscaleFeatureFusion(
                chans, layout.encoder_block, layout.bottleneck_blocks, layout.base_width, reduction=ca_reduction)
            self.decoder = ReverseDecoder(self.bottleneck.out_channels, chans, layout.decoder_block,
                                          layout.decoder_layers, layout.base_width, act_out=decoder_relu)
        else:  # Table III baseline: RD's OCBE + decoder, exactly as rd.py builds them
            self.bottleneck, self.decoder = layout.build(chans, act_out=decoder_relu)
        if apr:
            self.reconstruction = nn.ModuleList(reconstruction_block(c) for c in chans)

    # -- the networks -----------------------------------------------------------------
    def student_features(self, teacher_feats: Feats, perturb: bool = False) -> list[torch.Tensor]:
        """Bottleneck + decoder (+ APR noise when ``perturb``) + R → f_R^k [(B,C_k,H_k,W_k)] shallow→deep.

        The noise's attention (eq. 3) comes from ``teacher_feats``, the features the student is fed:
        f_{T,a} in training. Without APR (``apr=False``) this returns f_S."""
        s = match_sizes(self.decoder(self.bottleneck(teacher_feats)), teacher_feats)
        if not self.apr:
            return s
        if perturb and self.noise_sigma > 0:
            s = [f + apr_noise(f, attention_mask(t, self.tau), self.noise_sigma) for f, t in zip(s, teacher_feats)]
        return [r(f) for r, f in zip(self.reconstruction, s)]

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Inference (Fig. 4): images (B,3,H,W) → (f_T, f_R), each [(B,C_k,H/r_k,W/r_k)] shallow→deep, no noise."""
        t = self.teacher(images)
        return t, self.student_features(t)

    # -- the model contract -------------------------------------------------------------
    def phases(self) -> list[Phase]:
        """One joint phase on synthetic (I_n, I_a) pairs: Adam lr 0.005 for bottleneck + student, 0.001 for R."""
        modules = ("bottleneck", "decoder") + (("reconstruction",) if self.apr else ())
        lr = {"reconstruction": self.lr_reconstruction} if self.apr else {}
        return [Phase("train", modules, data="synthetic", lr=lr)]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 8: the student, fed f_{T,a} = T(I_a) and perturbed (APR), reconstructs f_{T,n} = T(I_n)."""
        normal, anomalous = batch["image"], batch["anomalous"]
        t = self.teacher(torch.cat([normal, anomalous]))  # the two teachers: one frozen encoder, one pass
        t_n = [f[: len(normal)] for f in t]
        t_a = [f[len(normal):] for f in t]
        return {"loss": flat_cosine_loss(t_n, self.student_features(t_a, perturb=True))}

    def map_parts(self, images: torch.Tensor) -> tuple[list[torch.Tensor], Combine]:
        """Eqs. 9–10: M^k = 1 − cos(f_T^k, f_R^k) of the selected stages, summed after bilinear upsampling
        to the input size (``anomaly_map``: (B,3,H,W) → (B,1,H,W), unblurred)."""
        t, r = self(images)
        return [cosine_distance(t[k], r[k]) for k in MAPS[self.maps]], self.combine


@register_model
def dtsnet(**kwargs) -> DTSNet:
    """DTSNet with the paper's defaults (MFF + APR, σ = 0.1, Adam 0.005 / 0.001 for R)."""
    return DTSNet(**kwargs)
