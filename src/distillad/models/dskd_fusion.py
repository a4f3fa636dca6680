"""DSKD-fusion: a forward and a reverse student whose anomaly maps a tiny net fuses, trained on
synthetic defects (paper text: shared/papers/dskd-forward-reverse-fusion.txt; "DSKD" there, a
different paper from ``dskd``, the dual-student inverted one). No upstream code is published.

- Teacher E: frozen backbone, blocks E1..E4 as the teacher has them (``out_indices``, default
  (1, 2, 3, 4); WideResNet50 in the paper, the library's default teacher here).
- Forward student D_f: E's architecture, randomly initialised, fed the same image. Eq. 1,
  1 − cos(z^t, z^f), on every stage it has (E1..E4); its first three stage maps are kept.
- Reverse student D_r: RD's one-class bottleneck (``layers.OCBE``) and de-ResNet decoder
  (``layers.ReverseDecoder``, both from ``layers.reverse_layout``), with eq. 2 in front of each
  of the decoder's three up-sampling stages (``_SkipFusion``):
      D_r^t = stage_t( conv1x1( D_r^{t+1} ⊕ att(D_r^{t+1}, conv1(E) ⊕ conv2(E)) ) ),
  conv1 3×3 and conv2 7×7, both stride 2, ⊕ concatenation along channels, D_r^4 the bottleneck.
  Our reading of eq. 2's resolutions: the stride-2 convolutions must bring E to D_r^{t+1}'s size
  ("to align with the input size of the next block"), so E is the teacher block at *twice*
  D_r^{t+1}'s resolution, i.e. E^t, the block D_r^t is compared with; the prose says so too
  ("the results of conv1, conv2 from E_t", "the previous teacher layer", contribution 2: "the
  information of the layer corresponding to the teacher"). A literal E^{t+1} strided twice would
  sit at half D_r^{t+1}'s size and could not be concatenated with it. The 1×1 conv keeps D_r^{t+1}'s
  channels, so the decoder stage after it is RD's unchanged. Per block t = 3, 2, 1:

      S     = conv1_{3×3, s2}(E^t) ⊕ conv2_{7×7, s2}(E^t)     (at D_r^{t+1}'s size)
      A     = att(D_r^{t+1}, S)                              (S's shape)
      D_r^t = stage_t(conv_{1×1}(D_r^{t+1} ⊕ A))              (stage_t: RD's de-ResNet stage, 2× up)

  Shapes, WideResNet50 at 256 px (C×H², each conv branch r·c_t wide, r = ``skip_ratio`` = 1/8):

      t   D_r^{t+1} (input)     E^t          S and A      conv_{1×1}   D_r^t
      3   OCBE(E1..E3) 2048×8²  1024×16²     256×8²       2048×8²      1024×16²
      2   D_r^3 1024×16²        512×32²      128×16²      1024×16²     512×32²
      1   D_r^2 512×32²         256×64²      64×32²       512×32²      256×64²

  att is an additive attention gate (Oktay et al., "Attention U-Net", 2018): the decoder
  feature gates the skip features, α = σ(BN ψ(ReLU(BN W_g D + BN W_s S))), out = α·S. The
  paper names only "an attention module" over these two inputs; this is the standard two-input
  one. The same eq. 1 loss and 1 − cos maps as D_f (Sec. "Reverse distillation student network").
- Fusion (Fig. 2, "Anomaly score map fusion"): the six 1 − cos maps (D_f's and D_r's E1..E3),
  bilinearly upsampled to the image (align_corners, as RD), → 1×1 conv (6 weights + 1 bias: the
  paper's "six 1*1 convolution parameters"; weights ≥ 0 by default, see issue 29 below) → ReLU →
  sigmoid. Trained with Dice loss (eq. 4,
  ``dice_loss``) on synthetic anomalies: eq. 3, I_a = β(M⊙A) + (1 − β)(M⊙I_n) + (1 − M)⊙I_n,
  β ~ U[0.15, 1], A from DTD (``synthesis = PAPER_PRESETS["dskd"]``; the texture folder is the
  run's ``--textures``), in a second phase after the students' epochs, students frozen.
- Inference: fused map, Gaussian σ = 4, score = max (``predict`` in _base): the paper's image score
  ("the maximum value in the abnormal score map", as RD4AD); no loss trains it, Dice trains the map
  only. Adam lr 0.005, betas (0.5, 0.999), 200 epochs, 128 and 256 px; batch size not given (16, as RD).
- Ablations (Tables 4–5), ``fusion``: "learned" (the method), "forward" (D_f only: Σ of its three
  maps), "reverse" (D_r only), "manual": (1·Σ D_f maps + 3·Σ D_r maps)/4, the paper's "1 : 3"
  weighting of "the two student networks", listed forward (Pos) then reverse (Res), reverse, the
  stronger one, weighted up (``manual_weights``). Non-learned modes build no fusion net and
  declare no fusion phase; "forward" and "reverse" build only their student. ``student_maps``
  gives the six maps of one trained model, from which every mode's map can be computed.

Parameter counts, WideResNet50-2 (tests/models/test_dskd_fusion.py). Teacher and D_f, built up to
E4 without pooling and fc: 66.83 M each; the paper's 68.8 M is torchvision's whole classifier
(68.88 M; its fc is 2.05 M). D_r: 100.36 M = OCBE 58.89 M + decoder 24.92 M + eq. 2 blocks 16.56 M.
The paper's 108 M, like its 67.2 M for RD's bottleneck, counts RD's never-called ``conv4``/``bn4``
(8.39 M, see layers.py): 100.36 + 8.39 = 108.75 M. The paper gives no widths for conv1, conv2 or
the attention; ``skip_ratio`` = 1/8 is our choice, the round width that reproduces its count
(with conv4, 1/4 would give 119.9 M, 1/16 103.2 M).

Differences from the paper: any supported teacher; eq. 1's loss is read per position, the way
the paper's maps use it (mean over positions of 1 − cos, summed over stages: ``loss_form="position"``;
"flat", RD's reference-code loss over whole flattened maps, is offered). D_f's BatchNorm γ start
at 1 (timm zero-initialises each residual block's last γ; torchvision, which the paper's
WideResNet50 comes from, does not). The fusion conv starts at weights 1/6, bias 0 (the mean of
the maps, ≥ 0): with the ReLU before the sigmoid, a random start whose weights sum below zero
would give zero output and zero gradient everywhere and never learn. The paper does not say how
long the fusion trains; ``fusion_epochs`` = 50 is ours: the training Dice loss falls quickly in the
first few hundred Adam steps and then only slowly (the weights keep growing in scale: under the 0.5
floor the loss rewards ever larger logits); 50 epochs are 600 steps for bottle's 188 images at batch
16, and a fusion epoch costs less than a student epoch (no backward through the students) (measured:
benchmarks/results/dskd_fusion_modes.md). ``fusion_lr``: the paper's lr. With the ReLU, every pixel
the conv scores ≤ 0 maps to exactly 0.5, so maps have a floor and normal images can tie at score
0.5; ``fusion_relu=False`` (sigmoid only) keeps their ranking.
At sizes not divisible by 32 D_r's stages are resized to the teacher's (``layers.match_sizes``).

Issue 29 (the measured standing, one seed, small size: benchmarks/results/issue29_mechanisms.md):
- ``fusion_weights="nonneg"`` (default, ours): the six weights are softplus(raw) > 0 (``_NonNegFusion``,
  same 6 + 1 parameters, starting at 1/6), so no student's map can be subtracted. The paper's plain
  1×1 conv, ``"free"``, fitted by Dice on synthetic blobs gave the deepest maps negative weights and
  nearly zeroed the forward student, which alone ranks images best; on transistor the free learned
  fusion fell well below the manual 1:3 sum, and non-negative weights recovered part of the gap
  (measured: benchmarks/results/issue29_mechanisms.md). Runs saved before this change hold a free
  conv (state key ``fusion.weight``, not ``fusion.raw``): rebuild them with ``fusion_weights="free"``.
- ``skip`` (default True, the paper's): False builds D_r without the eq. 2 blocks (RD's OCBE and
  decoder alone). With them, D_r^t is computed from E^t, the very block it is scored against, which
  may let it copy a defect through the skip (issue 29, open); the switch is for that ablation.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..hints import Betas, Fraction, NonNegativeFloat, NonNegativePair, PositiveFloat, PositiveInt
from ..layers import ConvBNAct, conv1x1, match_sizes, reverse_layout
from ..losses import flat_cosine_loss, normalized_mse_loss
from ..maps import cosine_distance
from ..phases import Phase
from ..registry import register_model
from ..synthesis import PAPER_PRESETS
from ..teachers import Teacher, build_backbone
from ._base import DistillationModel

__all__ = ["DSKDFusion", "dskd_fusion", "dice_loss", "FUSION_MODES", "LOSS_FORMS"]

#: Tables 4–5: learned fusion (the method), manual 1:3 fusion, one student alone
FusionMode = Literal["learned", "manual", "forward", "reverse"]
FUSION_MODES: tuple[str, ...] = get_args(FusionMode)
LossForm = Literal["position", "flat"]
LOSS_FORMS: tuple[str, ...] = get_args(LossForm)
#: the fusion conv's weights: softplus-parametrised (≥ 0, ours) or free (the paper's plain 1×1 conv)
FusionWeights = Literal["nonneg", "free"]


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 4 per image, averaged over the batch: 1 − 2Σ p·g / (Σ p² + Σ g² + eps).

    pred, target (B,1,H,W) (pred in [0, 1], target {0, 1}) → scalar. ``eps`` only guards an
    all-zero prediction on an empty mask (then the loss is 1)."""
    p, g = pred.flatten(1), target.flatten(1).to(pred.dtype)
    return (1 - 2 * (p * g).sum(1) / ((p * p).sum(1) + (g * g).sum(1) + eps)).mean()


class _NonNegFusion(nn.Module):
    """1×1 conv (K → 1) whose weights are softplus_b(raw) > 0, plus a free bias. (B,K,H,W) → (B,1,H,W).

    Same 6 + 1 parameters as the paper's conv; ``weight`` is the effective (positive) weight. Every
    student map can only raise the fused logit, so fitting on synthetic blobs can rescale a map, and
    shrink it towards 0, but never subtract it (issue 29: the free conv gave the deepest maps negative
    weights and nearly zeroed the forward student). softplus_b(r) = log(1 + e^{b·r}) / b with b = 1/init:
    the weights start at ``init`` with slope 1 − 1/e ≈ 0.63, so Adam (which moves ``raw`` ~lr a step)
    moves them at ~0.63·lr, slowing only as one nears 0; plain softplus (b = 1) at 1/6 has slope 0.15
    and barely moved them in a 60-step fit (benchmarks/results/issue29_mechanisms.md)."""

    def __init__(self, k: int, init: float) -> None:
        super().__init__()
        self.beta = 1.0 / init
        self.raw = nn.Parameter(torch.full((1, k, 1, 1), math.log(math.expm1(1.0)) * init))  # softplus_b⁻¹(init)
        self.bias = nn.Parameter(torch.zeros(1))

    @property
    def weight(self) -> torch.Tensor:
        return F.softplus(self.raw, beta=self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class _AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): ``gate`` (B,C_g,h,w) weighs ``skip`` (B,C_s,h,w)
    per position → (B,C_s,h,w). Intermediate width C_s/2 as there."""

    def __init__(self, c_gate: int, c_skip: int) -> None:
        super().__init__()
        c_mid = max(1, c_skip // 2)
        self.w_gate = nn.Sequential(conv1x1(c_gate, c_mid), nn.BatchNorm2d(c_mid))
        self.w_skip = nn.Sequential(conv1x1(c_skip, c_mid), nn.BatchNorm2d(c_mid))
        self.psi = nn.Sequential(conv1x1(c_mid, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * self.psi(F.relu(self.w_gate(gate) + self.w_skip(skip)))


class _SkipFusion(nn.Module):
    """Eq. 2 before one up-sampling stage: x = D_r^{t+1} (B,C_x,h,w) and the teacher block
    e = E^t (B,C_e,≈2h,≈2w) → conv1x1(x ⊕ att(x, conv1(e) ⊕ conv2(e))) (B,C_x,h,w)."""

    def __init__(self, c_x: int, c_e: int, width: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(c_e, width, 3, stride=2)  # two receptive fields over the same block
        self.conv2 = ConvBNAct(c_e, width, 7, stride=2)
        self.att = _AttentionGate(c_x, 2 * width)
        self.conv = conv1x1(c_x + 2 * width, c_x)  # "the outermost convolution uses a 1*1 kernel"

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        s = match_sizes([torch.cat([self.conv1(e), self.conv2(e)], 1)], [x])[0]
        return self.conv(torch.cat([x, self.att(x, s)], 1))


class _ReverseStudent(nn.Module):
    """D_r: teacher blocks [E1, E2, E3] (B,c_k,H/r_k,W/r_k) → [D_r^1, D_r^2, D_r^3] of the same shapes.

    OCBE → (eq. 2 → de-ResNet stage) × 3, deepest first; ``skips[i]`` precedes ``decoder.layer{i+1}``."""

    def __init__(self, teacher: str, channels: list[int], skip_ratio: float, skip: bool = True) -> None:
        super().__init__()
        self.bottleneck, self.decoder = reverse_layout(teacher).build(channels)
        c1, c2, c3 = channels
        inputs = (self.bottleneck.out_channels, c3, c2)  # what decoder layer1, layer2, layer3 take
        self.skips = nn.ModuleList(_SkipFusion(cx, ce, max(1, round(skip_ratio * ce)))
                                   for cx, ce in zip(inputs, (c3, c2, c1))) if skip else None

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.bottleneck(feats)
        out = []
        stages = (self.decoder.layer1, self.decoder.layer2, self.decoder.layer3)
        skips = self.skips if self.skips is not None else [None] * len(stages)
        for stage, skip, e in zip(stages, skips, feats[::-1]):
            x = stage(x if skip is None else skip(x, e))
            x = match_sizes([x], [e])[0]  # sizes not divisible by 32: back to E^t's
            out.append(x)
        return out[::-1]


class DSKDFusion(DistillationModel):
    """Teacher E, forward student D_f, reverse student D_r with eq. 2 skips, and a 1×1 fusion net."""

    train_defaults = {"epochs": 200, "batch_size": 16, "image_size": 256}
    synthesis = dict(PAPER_PRESETS["dskd"])

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3, 4),
                 lr: PositiveFloat = 0.005, betas: Betas = (0.5, 0.999), sigma: NonNegativeFloat = 4.0,
                 fusion: FusionMode = "learned", fusion_epochs: PositiveInt = 50, fusion_lr: PositiveFloat = 0.005,
                 fusion_relu: bool = True, manual_weights: NonNegativePair = (1.0, 3.0),
                 skip_ratio: Fraction = 0.125, loss_form: LossForm = "position",
                 fusion_weights: FusionWeights = "nonneg", skip: bool = True) -> None:
        super().__init__(lr, betas, sigma)
        out_indices = tuple(out_indices)
        if len(out_indices) < 3:
            raise ConfigError(f"dskd_fusion needs at least 3 teacher blocks, got out_indices={out_indices}")
        manual_weights = tuple(manual_weights)  # type: ignore[assignment]
        # each weight >= 0 is the hint's bound; the count and the sum are not expressible as bounds
        if len(manual_weights) != 2 or sum(manual_weights) <= 0:
            raise ConfigError(f"manual_weights must be two weights >= 0 with a positive sum, got {manual_weights}")
        self.fusion_mode, self.fusion_epochs, self.fusion_lr = fusion, fusion_epochs, fusion_lr
        self.fusion_relu, self.manual_weights, self.loss_form = fusion_relu, manual_weights, loss_form
        self.has_forward, self.has_reverse = fusion != "reverse", fusion != "forward"
        # D_r and the maps use E1..E3; E4 onwards only trains D_f
        self.teacher = Teacher(teacher, out_indices if self.has_forward else out_indices[:3],
                               teacher_weights, teacher_sha256)
        if self.has_forward:
            self.forward_student = build_backbone(teacher, out_indices)
            for mod in self.forward_student.modules():  # torchvision's init: every BatchNorm γ = 1
                if isinstance(mod, nn.BatchNorm2d):
                    nn.init.ones_(mod.weight)
        if self.has_reverse:
            self.reverse_student = _ReverseStudent(teacher, self.teacher.channels[:3], skip_ratio, skip)
        if fusion == "learned" and fusion_weights == "nonneg":
            self.fusion = _NonNegFusion(6, 1 / 6)
        elif fusion == "learned":
            self.fusion = nn.Conv2d(6, 1, 1)
            nn.init.constant_(self.fusion.weight, 1 / 6)  # the mean of the maps: alive under the ReLU
            nn.init.zeros_(self.fusion.bias)

    # -- training schedule ------------------------------------------------------------
    def phases(self) -> list[Phase]:
        """Students (joint, ``epochs``), then for ``fusion="learned"`` the fusion net alone on
        synthetic defects for ``fusion_epochs`` (students frozen, BatchNorm statistics fixed)."""
        students = tuple(n for n, ok in (("forward_student", self.has_forward),
                                         ("reverse_student", self.has_reverse)) if ok)
        out = [Phase("students", students)]
        if self.fusion_mode == "learned":
            out.append(Phase("fusion", ("fusion",), loss="fusion_loss", data="synthetic", schedule="after",
                             after="students", epochs=self.fusion_epochs, lr={"fusion": self.fusion_lr}))
        return out

    # -- the networks -------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """images (B,3,H,W) in [0,1] → ``t`` (E's blocks), ``f`` (D_f's, as many) and ``r`` (D_r's,
        E1..E3), each [(B,C_k,H/r_k,W/r_k)] shallow→deep, for the students the mode has."""
        out = {"t": self.teacher(images)}
        if self.has_forward:
            out["f"] = list(self.forward_student(self.teacher.normalize(images)))
        if self.has_reverse:
            out["r"] = self.reverse_student(out["t"][:3])
        return out

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """images (B,3,H,W) → (teacher_feats, student_feats): the pairs whose 1 − cos maps are fused,
        D_f's E1..E3 then D_r's E1..E3 (the teacher's E1..E3 repeated), for the students present."""
        f = self.features(images)
        stu = f.get("f", [])[:3] + f.get("r", [])
        return f["t"][:3] * (len(stu) // 3), stu

    def student_maps(self, images: torch.Tensor) -> torch.Tensor:
        """The fusion net's input: 1 − cos per position of each pair of ``forward``, bilinearly
        upsampled to the image (align_corners=True) → (B, n, H, W), n = 6 (3 for one student)."""
        t, s = self(images)
        return torch.cat([F.interpolate(cosine_distance(a, b), size=images.shape[-2:], mode="bilinear",
                                        align_corners=True) for a, b in zip(t, s)], 1)

    def fuse(self, maps: torch.Tensor) -> torch.Tensor:
        """Fig. 2: (B,6,H,W) → sigmoid(ReLU(conv1x1)) (B,1,H,W) in [0.5, 1) (ReLU off: (0, 1))."""
        z = self.fusion(maps)
        return torch.sigmoid(F.relu(z) if self.fusion_relu else z)

    # -- the model contract -------------------------------------------------------------
    def _stage_loss(self, ref: list[torch.Tensor], stu: list[torch.Tensor]) -> torch.Tensor:
        if self.loss_form == "flat":
            return flat_cosine_loss(ref, stu)
        return normalized_mse_loss(ref, stu)  # ½‖t̂ − ŝ‖² = 1 − cos: eq. 1 per position, mean, Σ stages

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Students' phase: ``loss`` = ``loss_f`` (eq. 1 on D_f's blocks) + ``loss_r`` (on D_r's E1..E3)."""
        f = self.features(batch["image"])
        out = {}
        if "f" in f:
            out["loss_f"] = self._stage_loss(f["t"], f["f"])
        if "r" in f:
            out["loss_r"] = self._stage_loss(f["t"][:3], f["r"])
        out["loss"] = sum(out.values())  # type: ignore[assignment]
        return out

    def fusion_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fusion phase: Dice loss (eq. 4) of the fused map of ``anomalous`` against ``mask`` (B,1,H,W)."""
        with torch.no_grad():  # the students are frozen: their maps are inputs
            maps = self.student_maps(batch["anomalous"])
        return {"loss": dice_loss(self.fuse(maps), batch["mask"])}

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) → (B,1,H,W), unblurred: fused ("learned"), (w_f Σ D_f + w_r Σ D_r)/(w_f + w_r)
        ("manual"), or the sum of the one student's three maps ("forward", "reverse")."""
        maps = self.student_maps(images)
        if self.fusion_mode == "learned":
            return self.fuse(maps)
        if self.fusion_mode == "manual":
            wf, wr = self.manual_weights
            return (wf * maps[:, :3].sum(1, keepdim=True) + wr * maps[:, 3:].sum(1, keepdim=True)) / (wf + wr)
        return maps.sum(1, keepdim=True)


@register_model
def dskd_fusion(**kwargs) -> DSKDFusion:
    """DSKD-fusion with the paper's defaults (Adam lr 0.005, learned fusion, Dice loss)."""
    return DSKDFusion(**kwargs)
