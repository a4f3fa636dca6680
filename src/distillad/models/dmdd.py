"""Dual-Modeling Decouple Distillation (DMDD): Liu, Wang, Leng & Zhang, "Dual-Modeling Decouple
Distillation for Unsupervised Anomaly Detection", ACM MM 2024 (paper text: shared/papers/dmdd.txt).
No upstream code is published; every layer the paper shows only as a figure is our choice, below.

- Teacher T and student S are the same ImageNet network (Sec. 3.1: the first 4 stages of
  WideResNet50, here ``teacher="wide_resnet50_2"``; library default efficientnet_lite0, whose timm
  levels 1–4 are the stride-4/8/16/32 stages). T is frozen; S is a deep copy of T's backbone, cut into
  its stages (``_dmdd_blocks.cut_stages``) and trained.
- Decoupled student (Sec. 3.2): after each stage a 1×1 conv doubles the channels; the output is split
  into a normality and an abnormality feature; only the normality feature feeds the next stage.
- Pyramid Modeling Network (PMN, Fig. 4), per branch an inner then an outer fusion path over the
  four levels (``_dmdd_blocks.PyramidPath``)::

      image → stage1 → 1×1 (C1→2C1) ─split─ n1 → stage2 → 1×1 ─split─ n2 → stage3 → … → n4
                                     └────── a1                     └── a2            … a4
      level i: n_i, a_i (B, C_i, h_i, w_i)   efficientnet_lite0 | wide_resnet50_2 at 256 px
        1    (B,  24 |  256, 64, 64)
        2    (B,  40 |  512, 32, 32)
        3    (B, 112 | 1024, 16, 16)
        4    (B, 320 | 2048,  8,  8)
      normality    inner top-down   p4 = n4,  p_i = n_i + W(↑p_{i+1})   i = 3, 2, 1
                   outer bottom-up  q1 = p1,  q_i = p_i + W(↓q_{i−1})   i = 2, 3, 4    S^NGM_i = q_i
      abnormality  inner bottom-up  p1 = a1,  p_i = a_i + W(↓p_{i−1})   i = 2, 3, 4
                   outer top-down   q4 = p4,  q_i = p_i + W(↑q_{i+1})   i = 3, 2, 1    S^AIM_i = q_i
      W: 1×1 conv (bias) to level i's channels, zero-initialised, applied at the lower resolution;
      ↑ bilinear ×2, ↓ bilinear ×½ (= the 2×2 mean); every output keeps its teacher level's shape.

  The inner path lets the better-decoupled levels guide the others (deep levels for normality, whose
  large receptive fields see more normal context; shallow ones for abnormality), the outer path adds
  the opposite direction. ``pmn_inner`` / ``pmn_outer`` switch them (Table 4).
- Training pairs (I^n, I_a^n): foreground-aware synthesis (Sec. 3.4.1, ``PAPER_PRESETS["dmdd"]``: one
  Perlin mask inside the GrabCut foreground, DTD texture, DRAEM blending: the texture at opacity
  β ~ U[0.1, 1], DRAEM's eq. 4; until issue 29 DTSNet's range, which left ~18 % of the defects at opacity
  < 0.15, nearly invisible, while AIM and the MSN were still asked to fire there).
- NGM (eqs. 1–2): L_NGM = 1/4 Σ_i [mean D_i^n + mean D_i^a], D_i^{n|a} = 1 − cos(T_i(I^n), S^NGM_i(I^n | I_a^n)).
- AIM (eqs. 3–4): M_i^AIM = 1 − cos(T_i(I), S^AIM_i(I)); L_AIM = 1/4 Σ_i mean|M_i^AIM − M_i^gt|, summed
  over I ∈ {I^n (gt 0), I_a^n (its mask, area-downsampled to stage i)}, as eq. 2 sums n and a.
  The student phase minimises L_NGM + L_AIM (the paper gives no weights).
- MSN (Sec. 3.4.2, Fig. 6), a second phase at the end of every epoch with T and S frozen
  (``_dmdd_blocks.MultiPerceptionSegNet``): the 8 maps → Pyramid Upsampling (top-down for NGM maps,
  bottom-up for AIM maps) → bilinear to the image size, concatenated → channel attention → spatial
  attention → global attention parameter → channel compression → σ → M; S = mean of the 100 largest
  values of M; L_seg = BCE(M, M^gt) + BCE(S, max M^gt) (eq. 5). Inference returns M and S.
- Adam lr 0.005, 256 px (Sec. 4.2).

Ablations (keywords; the paper's row → setting):
Table 4: "Normality Branch with NGM" ``losses="ngm"``, "Abnormality Branch with AIM" ``losses="aim"``:
one branch only, the 1×1 conv keeps the channels and the branch's feature feeds the next stage; its 4
maps go to the MSN. PMN rows: ``pmn_inner`` / ``pmn_outer``. Table 5: "w/o MSN" ``msn=False``: the maps
upsampled (bilinear, align_corners as RD) and summed, no MSN phase; "−PU" ``pyramid_upsampling=False``;
"−MM" ``multi_perception=False`` (no channel, spatial or global attention); "−FAS" (full-image synthesis)
is a data setting, not a keyword: ``--foreground none`` makes the preset's single Perlin mask cover the
whole image (DRAEM's synthesis). ``pyramid_upsampling``, ``multi_perception``, ``msn_*``, ``ca_reduction``,
``sa_kernel`` and ``global_size`` shape the MSN and apply only with ``msn=True``. Every row is defined;
what the text leaves open in them (the PU and MM layers) is our choice as listed here.

Our choices where the paper is silent, and differences:
- 1×1 split convs start as [I; I] (``split_init="identity"``) and PMN paths at zero, so the untrained
  student equals the ImageNet network on both branches; ``split_init="random"``: PyTorch's default.
- PU: m'_i = conv3×3([m_i, resized m'_neighbour]), 2 → 1 channels. Channel/spatial attention: CBAM's
  (reduction ``ca_reduction``, kernel ``sa_kernel``). Global attention: a (1, 8, 256, 256) parameter,
  initialised to 1, multiplying the attended maps per channel and position before the 1×1 compression
  (together: a per-region, per-channel weighted average plus a bias, which a sigmoid needs). The PU
  convs start as plain sums and the compression as the mean: the untrained MSN ranks like the summed
  maps (PyTorch's random init inverted the ranking on bottle, see ``_dmdd_blocks.MapPyramid``).
- The compression's bias starts at the anomaly prior's logit, log(p/(1−p)) with p = ``seg_prior`` = 0.026
  (about −3.6; about the anomalous-pixel fraction of I_a^n, of which the MSN's batches, I^n with I_a^n,
  hold half), so the untrained M is near p instead of 0.5. With bias 0 (``seg_prior=None``, the earlier
  init) BCE on the mostly good pixels pulls the bias and, the maps being ≥ 0, the compression weights
  down together (Adam moves each by ~lr a step); a weight turns negative long before the bias reaches
  the prior and, at a longer budget, M inverts: on Magnetic Tile the head ranked its own synthetic
  training defects backwards, far below the plain sum of the maps. tests/models/test_dmdd.py checks the
  order on the training defects. The prior stops the inversion; it does not lift the head above the
  plain sum (measured, one seed, 2 epochs: benchmarks/results/issue29_mechanisms.md).
- The MSN trains on I^n (gt all zero) and I_a^n: on anomalous images alone max M^gt ≡ 1 and the score
  term of eq. 5 would only teach S → 1.
- I^n and I_a^n pass through T and S as one batch of 2B; S's BatchNorm is in training mode in the
  student phase (batch statistics of both; the paper does not say), in eval mode in the MSN phase. With
  ImageNet weights the batch statistics alone move S off T at the first step (the student loss is many
  times larger in training mode than in eval mode); ``freeze_student_bn=True`` keeps S's BatchNorm on
  the ImageNet statistics (affine weights still train). After 3 epochs on bottle the summed maps reached
  the same P-AUROC either way (measured: benchmarks/results/issue29_mechanisms.md). The paper gives one
  learning rate (0.005) for the student; ``backbone_lr`` (default None: that lr) gives S's copied ImageNet stages
  their own, so that whether the high lr discards the ImageNet start (issue 29, open) can be tested.
- Not given by the paper: Adam betas (torch's default (0.9, 0.999)), batch size (16, as RD), the MSN's
  lr (``msn_lr``, the paper's 0.005) and passes per epoch (``msn_epochs`` = 1), epochs (100–400 per
  category in the paper; 200 here, inside that range and as the other methods).
- ``sigma`` = 0: the paper outputs M unsmoothed; σ > 0 blurs the returned map only, S is always the
  top-k mean of the unsmoothed M. With ``msn=False`` the score is the top-k mean of the summed map.
"""

from __future__ import annotations

import copy
from typing import Annotated, Literal, Sequence

import torch
import torch.nn.functional as F
from annotated_types import Interval

from ..errors import ConfigError
from ..hints import Betas, NonNegativeFloat, PositiveFloat, PositiveInt
from ..maps import combine_maps, cosine_distance, gaussian_blur
from ..phases import Phase
from ..registry import register_model
from ..synthesis import PAPER_PRESETS
from ..teachers import Teacher
from ._base import DistillationModel
from ._dmdd_blocks import DecoupledStudent, MultiPerceptionSegNet, cut_stages

__all__ = ["DMDD", "dmdd", "ngm_loss", "aim_loss", "seg_loss", "topk_mean", "BRANCHES"]

#: which distillation losses (and branches) are trained: Table 4's rows
Losses = Literal["both", "ngm", "aim"]
BRANCHES: dict[str, tuple[str, ...]] = {"both": ("normality", "abnormality"), "ngm": ("normality",),
                                        "aim": ("abnormality",)}
SplitInit = Literal["identity", "random"]
#: the anomaly prior p of the MSN's bias init, log(p / (1 − p)): finite only inside (0, 1)
Prior = Annotated[float, Interval(gt=0, lt=1)]

Feats = Sequence[torch.Tensor]


def ngm_loss(teacher_normal: Feats, student_normal: Feats, student_anomalous: Feats) -> torch.Tensor:
    """Eqs. 1–2: (1/L) Σ_i [mean_{b,h,w} D_i^n + mean D_i^a], D = 1 − cos along channels between the
    teacher's features of I^n and the student's normality features of I^n and of I_a^n. Lists of
    (B,C_i,h_i,w_i) → scalar."""
    terms = [cosine_distance(t, sn).mean() + cosine_distance(t, sa).mean()
             for t, sn, sa in zip(teacher_normal, student_normal, student_anomalous, strict=True)]
    return torch.stack(terms).mean()


def aim_loss(teacher: Feats, student: Feats, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eqs. 3–4 for one image kind: (1/L) Σ_i mean |M_i^AIM − M_i^gt|, M_i^AIM = 1 − cos(T_i, S^AIM_i).

    ``mask`` (B,1,H,W) in [0, 1], area-downsampled to each stage (the fraction of anomalous pixels in a
    feature cell); None: a normal image, gt all zero. Lists of (B,C_i,h_i,w_i) → scalar."""
    terms = []
    for t, s in zip(teacher, student, strict=True):
        m = cosine_distance(t, s)
        gt = 0.0 if mask is None else F.interpolate(mask, size=m.shape[-2:], mode="area")
        terms.append((m - gt).abs().mean())
    return torch.stack(terms).mean()


def topk_mean(maps: torch.Tensor, k: int = 100) -> torch.Tensor:
    """Image score S: mean of the ``k`` largest values of each map (all values if it has fewer).
    (B,1,H,W) → (B,)."""
    flat = maps.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(1)


def seg_loss(logits: torch.Tensor, mask: torch.Tensor, k: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 as its two terms: (BCE(M, M^gt) averaged over pixels, BCE(S, max M^gt) averaged over
    images), M = σ(logits), S = ``topk_mean(M, k)``. logits, mask (B,1,H,W) → two scalars."""
    pixel = F.binary_cross_entropy_with_logits(logits, mask)
    score = topk_mean(torch.sigmoid(logits), k)
    image = F.binary_cross_entropy(score, mask.flatten(1).amax(1))
    return pixel, image


class DMDD(DistillationModel):
    """Frozen teacher, decoupled student with PMN (trained by NGM + AIM), and the MSN head."""

    train_defaults = {"epochs": 200, "batch_size": 16, "image_size": 256}
    synthesis = dict(PAPER_PRESETS["dmdd"])

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3, 4),
                 lr: PositiveFloat = 0.005, betas: Betas = (0.9, 0.999), sigma: NonNegativeFloat = 0.0,
                 losses: Losses = "both", pmn_inner: bool = True, pmn_outer: bool = True,
                 split_init: SplitInit = "identity", freeze_student_bn: bool = False, msn: bool = True,
                 pyramid_upsampling: bool = True, multi_perception: bool = True, msn_epochs: PositiveInt = 1,
                 msn_lr: PositiveFloat = 0.005, top_k: PositiveInt = 100, ca_reduction: PositiveInt = 2,
                 sa_kernel: PositiveInt = 7, global_size: PositiveInt = 256, seg_prior: Prior | None = 0.026,
                 backbone_lr: PositiveFloat | None = None) -> None:
        super().__init__(lr, betas, sigma)
        out_indices = tuple(out_indices)
        if not out_indices:
            raise ConfigError("dmdd needs at least one teacher stage, got out_indices=()")
        if sa_kernel % 2 == 0:  # >= 1 is the hint's bound
            raise ConfigError(f"sa_kernel must be odd (a centred k×k window), got {sa_kernel}")
        self.backbone_lr = backbone_lr
        self.branches = BRANCHES[losses]
        self.use_msn, self.msn_epochs, self.msn_lr, self.top_k = msn, msn_epochs, msn_lr, top_k
        self.teacher = Teacher(teacher, out_indices, teacher_weights, teacher_sha256)
        body = copy.deepcopy(self.teacher.body)  # the same ImageNet weights; the teacher keeps its own
        for p in body.parameters():
            p.requires_grad_(True)
        stages = cut_stages(body, body.feature_info.module_name())
        self.student = DecoupledStudent(stages, self.teacher.channels, self.branches, split_init,
                                        pmn_inner, pmn_outer, freeze_student_bn)
        if msn:
            self.msn = MultiPerceptionSegNet(len(out_indices), self.branches, pyramid_upsampling,
                                             multi_perception, ca_reduction, sa_kernel, global_size, seg_prior)

    def phases(self) -> list[Phase]:
        """The student (NGM + AIM) each epoch, then one MSN pass (``msn_epochs``) with T and S frozen.
        ``backbone_lr``: the student's copied ImageNet stages get their own lr (the new layers keep ``lr``)."""
        if self.backbone_lr is None:
            student = Phase("student", ("student",), data="synthetic")
        else:  # param_groups gives a parameter to the first module listing it: the stages, then the rest
            student = Phase("student", ("student.stages", "student"), data="synthetic",
                            lr={"student.stages": self.backbone_lr})
        if not self.use_msn:
            return [student]
        return [student, Phase("msn", ("msn",), loss="msn_loss", data="synthetic", schedule="each_epoch",
                               after="student", epochs=self.msn_epochs, lr={"msn": self.msn_lr})]

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, list[torch.Tensor]]]:
        """images (B,3,H,W) in [0,1] → (teacher_feats [(B,C_i,h_i,w_i)], student_feats {branch: same shapes})."""
        return self.teacher(images), self.student(self.teacher.normalize(images))

    def stage_maps(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Per branch, the L maps 1 − cos(T_i(I), S^branch_i(I)): {branch: [(B,1,h_i,w_i)]}."""
        t, s = self(images)
        return {b: [cosine_distance(a, f) for a, f in zip(t, s[b])] for b in self.branches}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Student phase: L_NGM (eq. 2) + L_AIM (eq. 3 over I^n and I_a^n) on a synthetic batch."""
        b = batch["image"].shape[0]
        t, s = self(torch.cat([batch["image"], batch["anomalous"]]))
        t_n, t_a = [f[:b] for f in t], [f[b:] for f in t]
        out: dict[str, torch.Tensor] = {}
        if "normality" in s:
            sn = s["normality"]
            out["ngm"] = ngm_loss(t_n, [f[:b] for f in sn], [f[b:] for f in sn])
        if "abnormality" in s:
            sa = s["abnormality"]
            out["aim"] = aim_loss(t_n, [f[:b] for f in sa]) + aim_loss(t_a, [f[b:] for f in sa], batch["mask"])
        out["loss"] = torch.stack(list(out.values())).sum()
        return out

    def msn_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """MSN phase, eq. 5 on I^n (gt zero) and I_a^n (its mask); the maps come from the frozen T and S."""
        images = torch.cat([batch["image"], batch["anomalous"]])
        gt = torch.cat([torch.zeros_like(batch["mask"]), batch["mask"]])
        with torch.no_grad():
            maps = self.stage_maps(images)
        pixel, image = seg_loss(self.msn(maps, images.shape[-2:]), gt, self.top_k)
        return {"loss": pixel + image, "seg_pixel": pixel, "seg_score": image}

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """M = σ(MSN(maps)), or with ``msn=False`` the plain sum of the upsampled maps. (B,3,H,W) → (B,1,H,W)."""
        maps = self.stage_maps(images)
        size = images.shape[-2:]
        if self.use_msn:
            return torch.sigmoid(self.msn(maps, size))
        return combine_maps([m for b in self.branches for m in maps[b]], size, "sum")

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B,3,H,W) → (M (B,1,H,W), blurred only when σ > 0; S (B,) = top-k mean of the unblurred M)."""
        m = self.anomaly_map(images)
        return gaussian_blur(m, self.sigma), topk_mean(m, self.top_k)


@register_model
def dmdd(**kwargs) -> DMDD:
    """DMDD with the paper's defaults (ACM MM 2024)."""
    return DMDD(**kwargs)
