"""CSPDarknet backbones of the YOLOv4, YOLOv5, YOLOX, YOLOv8, YOLO11 and YOLO26 families, as data.

Every layout is a stem, then stages of ``[3x3 stride-2 conv, CSP block]``; :data:`CSP_ARCHS`
holds each layout's plan (:class:`CSPArch`) and its table of model scales.

``arch="yolov4"`` (CSPDarknet53): a 3x3 stem conv (32 channels), then five stages with 64, 128,
256, 512, 1024 channels and 1, 2, 8, 8, 4 residual blocks; Mish everywhere. A YOLOv4 CSP block
splits the input with two 1x1 convs (``short`` and ``main``), runs the residual blocks on
``main``, a 1x1 ``post`` conv, and fuses ``cat[post, short]`` with a 1x1 ``transition`` conv
(Darknet's ``route -1,-N`` order). Stage 1 is special in Darknet: its split keeps all 64
channels and its residual block's hidden width is 32.

``arch="csp-v5"`` swaps in YOLOv5's C3 block (:class:`~detkit.models.layers.C3`) with SiLU and
block counts 1, 3, 6, 9, 3 (scaled by ``deepen_factor``), keeping YOLOv4's stem.

``arch="yolov5"`` is YOLOv5's (v6.0+) own layout: a 6x6 stride-2 stem conv (64 channels, padding 2)
whose output *is* stage 1 (no full-resolution layer, no CSP block at stride 2), then four stages of
``[3x3 stride-2 conv, C3 block]`` with 128, 256, 512, 1024 channels and 3, 6, 9, 3 bottlenecks
(YOLOv5's SPPF, its backbone's layer 9, is not included). ``arch="yolov5-sppf"`` is YOLOv5's whole
v6.0+ backbone (``yolov5s.yaml`` layers 0-9): the same with SPPF after the last C3 block and YOLOv5's
BatchNorm ``eps=1e-3, momentum=0.03`` (what its ``initialize_weights`` sets).

``arch="yolox"`` is YOLOX's CSPDarknet: the Focus stem (space-to-depth, 3x3 conv, 64 channels) is
stage 1, then C3 stages (YOLOX's CSPLayer) with 128, 256, 512, 1024 channels and 3, 9, 9, 3
bottlenecks; the last stage runs SPP (5/9/13, :class:`~detkit.models.layers.SPPFBlock`) before
its C3 block, whose bottlenecks have no shortcut. Scales ``nano`` .. ``x``; YOLOX-nano also sets
``depthwise=True``.

``arch="yolov8"`` is YOLOv8's backbone: a 3x3 stride-2 stem conv (64 channels) is stage 1, then
stages of ``[3x3 stride-2 conv, C2f]`` (:class:`~detkit.models.layers.C2f`, with shortcut) with
128, 256, 512, 1024 channels and 3, 6, 6, 3 bottlenecks, and SPPF after the last stage's C2f.
Its scales ``n`` .. ``x`` also cap the channels before widening (``max_channels``: 1024, 1024,
768, 512, 512), as Ultralytics' ``yolov8.yaml`` does. Module order is Ultralytics' layer order:
``stem`` = layer 0, ``stages[k][0]`` / ``stages[k][1]`` = layers ``2k - 1`` / ``2k`` (k = 1..4),
``stages[4][2]`` (SPPF) = layer 9.

``arch="yolo11"`` is YOLO11's backbone (Ultralytics' ``yolo11.yaml``, layers 0-10): the 3x3 stride-2
stem (64 channels), then stages whose stride-2 conv and C3k2 block
(:class:`~detkit.models.c3k2.C3k2`) have different widths: conv 128 -> block 256 (hidden ratio
0.25), 256 -> 512 (0.25), 512 -> 512, 1024 -> 1024 (C3k inner blocks in the last two), 2 blocks
each, then SPPF (layer 9) and C2PSA (:class:`~detkit.models.attention.C2PSA`, position-sensitive
attention, 2 blocks: layer 10). At the m, l and x scales every C3k2 block has C3k inner blocks
(:class:`CSPScale` ``c3k``, Ultralytics' ``parse_model`` rule). ``arch="yolo26"`` is the same with
YOLO26's SPPF (no activation after its first conv, a shortcut). Module order: ``stem`` = layer 0,
``stages[k][0]`` / ``stages[k][1]`` = layers ``2k - 1`` / ``2k``, ``stages[4][2]`` = layer 9
(SPPF), ``stages[4][3]`` = layer 10 (C2PSA). Their scale tables (:data:`YOLO11_SCALES`,
:data:`YOLO26_SCALES`) are Ultralytics' ``[depth, width, max_channels]``.

YOLOX and YOLOv8 layouts use BatchNorm ``eps=1e-3, momentum=0.03`` as their originals do; the
older layouts keep PyTorch's defaults.

Stage ``i`` (1..5) has stride ``2**i``; ``out_indices`` picks stages by that number, so the
default ``(3, 4, 5)`` gives strides 8, 16, 32 (C3..C5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detkit.models.attention import C2PSA
from detkit.models.backbones.freezing import FrozenStagesMixin
from detkit.models.c3k2 import C3k2
from detkit.models.layers import (
    C3,
    C2f,
    ConvBNAct,
    DarknetBottleneck,
    Focus,
    SPPFBlock,
    conv_unit,
    set_batchnorm,
)

__all__ = [
    "CSP_ARCHS", "CSP_SCALES", "YOLO11_SCALES", "YOLO26_SCALES", "YOLOV8_SCALES", "YOLOX_SCALES", "CSPArch",
    "CSPDarknet", "CSPScale", "scale_channels", "scale_depth",
]


class CSPScale(NamedTuple):
    """One model size: block-count and channel multipliers, an optional channel cap applied before
    widening (YOLOv8's ``max_channels``), and whether every C3k2 block has C3k inner blocks
    (``c3k``: YOLO11's and YOLO26's m, l and x scales)."""

    deepen_factor: float
    widen_factor: float
    max_channels: int | None = None
    c3k: bool = False


# (deepen_factor, widen_factor) of the usual model sizes (YOLOv4/v5 layouts).
CSP_SCALES: dict[str, tuple[float, float]] = {
    "tiny": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
}

# YOLOX's Exp files: nano and tiny differ in width; x deepens by 1.33.
YOLOX_SCALES: dict[str, CSPScale] = {
    "nano": CSPScale(0.33, 0.25),
    "tiny": CSPScale(0.33, 0.375),
    "s": CSPScale(0.33, 0.50),
    "m": CSPScale(0.67, 0.75),
    "l": CSPScale(1.00, 1.00),
    "x": CSPScale(1.33, 1.25),
}

# Ultralytics' yolov8.yaml ``scales``: [depth, width, max_channels].
YOLOV8_SCALES: dict[str, CSPScale] = {
    "n": CSPScale(0.33, 0.25, 1024),
    "s": CSPScale(0.33, 0.50, 1024),
    "m": CSPScale(0.67, 0.75, 768),
    "l": CSPScale(1.00, 1.00, 512),
    "x": CSPScale(1.00, 1.25, 512),
}

# Ultralytics' yolo11.yaml ``scales``; parse_model turns C3k2's c3k on at m, l and x.
YOLO11_SCALES: dict[str, CSPScale] = {
    "n": CSPScale(0.50, 0.25, 1024),
    "s": CSPScale(0.50, 0.50, 1024),
    "m": CSPScale(0.50, 1.00, 512, c3k=True),
    "l": CSPScale(1.00, 1.00, 512, c3k=True),
    "x": CSPScale(1.00, 1.50, 512, c3k=True),
}

# yolo26.yaml's scales are yolo11.yaml's.
YOLO26_SCALES: dict[str, CSPScale] = dict(YOLO11_SCALES)

STEMS = ("3x3", "3x3s2", "6x6s2", "focus")
BLOCK_STYLES = ("v4", "c3", "c2f", "c3k2")
SPP_PLACES = ("none", "before", "after")


@dataclass(frozen=True)
class CSPArch:
    """Stage plan of a CSPDarknet before width/depth scaling."""

    stem_channels: int
    stage_channels: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    # "v4" (split + post conv), "c3" (YOLOv5 C3 / YOLOX CSPLayer), "c2f" (YOLOv8), "c3k2" (YOLO11)
    block_style: str
    act: str
    # "3x3": 3x3 stride-1 stem, then five strided stages (stage_channels/blocks list stages 1..5).
    # "3x3s2" (YOLOv8), "6x6s2" (YOLOv5), "focus" (YOLOX): the stride-2 stem is stage 1;
    # stage_channels/blocks list stages 2..5.
    stem: str = "3x3"
    # SPP block in the last stage: "none", "before" its CSP block (YOLOX), "after" it (YOLOv8).
    spp: str = "none"
    last_shortcut: bool = True  # YOLOX's last CSP block has no shortcut
    scales: Mapping[str, tuple[float, float] | CSPScale] = field(default_factory=lambda: CSP_SCALES)
    norm_eps: float = 1e-5
    norm_momentum: float = 0.1
    # Width of each stage's stride-2 conv when it differs from its block's (YOLO11); () = the block's.
    down_channels: tuple[int, ...] = ()
    # C3k2 blocks: hidden ratio and C3k inner blocks per stage (() = 0.5 / False everywhere).
    block_expansion: tuple[float, ...] = ()
    block_c3k: tuple[bool, ...] = ()
    # YOLO26's SPPF: a shortcut and no activation after its first conv.
    sppf_shortcut: bool = False
    sppf_cv1_act: bool = True
    psa_blocks: int = 0  # C2PSA blocks after the SPPF (YOLO11: 2 before depth scaling; 0 = no C2PSA)

    def __post_init__(self) -> None:
        for name, value, accepted in (("stem", self.stem, STEMS),
                                      ("block_style", self.block_style, BLOCK_STYLES),
                                      ("spp", self.spp, SPP_PLACES)):
            if value not in accepted:
                raise ValueError(f"CSPArch {name}={value!r}; accepted: {', '.join(accepted)}")
        for name, values in (("down_channels", self.down_channels), ("block_expansion", self.block_expansion),
                             ("block_c3k", self.block_c3k)):
            if values and len(values) != len(self.stage_channels):
                raise ValueError(f"CSPArch {name} has {len(values)} entries for {len(self.stage_channels)} stages")


CSP_ARCHS: dict[str, CSPArch] = {
    "yolov4": CSPArch(32, (64, 128, 256, 512, 1024), (1, 2, 8, 8, 4), "v4", "mish"),
    "csp-v5": CSPArch(32, (64, 128, 256, 512, 1024), (1, 3, 6, 9, 3), "c3", "silu"),
    "yolov5": CSPArch(64, (128, 256, 512, 1024), (3, 6, 9, 3), "c3", "silu", stem="6x6s2"),
    "yolov5-sppf": CSPArch(64, (128, 256, 512, 1024), (3, 6, 9, 3), "c3", "silu", stem="6x6s2", spp="after",
                           norm_eps=1e-3, norm_momentum=0.03),
    "yolox": CSPArch(64, (128, 256, 512, 1024), (3, 9, 9, 3), "c3", "silu", stem="focus",
                     spp="before", last_shortcut=False, scales=YOLOX_SCALES,
                     norm_eps=1e-3, norm_momentum=0.03),
    "yolov8": CSPArch(64, (128, 256, 512, 1024), (3, 6, 6, 3), "c2f", "silu", stem="3x3s2",
                      spp="after", scales=YOLOV8_SCALES, norm_eps=1e-3, norm_momentum=0.03),
    "yolo11": CSPArch(64, (256, 512, 512, 1024), (2, 2, 2, 2), "c3k2", "silu", stem="3x3s2",
                      spp="after", scales=YOLO11_SCALES, norm_eps=1e-3, norm_momentum=0.03,
                      down_channels=(128, 256, 512, 1024), block_expansion=(0.25, 0.25, 0.5, 0.5),
                      block_c3k=(False, False, True, True), psa_blocks=2),
    "yolo26": CSPArch(64, (256, 512, 512, 1024), (2, 2, 2, 2), "c3k2", "silu", stem="3x3s2",
                      spp="after", scales=YOLO26_SCALES, norm_eps=1e-3, norm_momentum=0.03,
                      down_channels=(128, 256, 512, 1024), block_expansion=(0.25, 0.25, 0.5, 0.5),
                      block_c3k=(False, False, True, True), sppf_shortcut=True, sppf_cv1_act=False,
                      psa_blocks=2),
}


def scale_channels(channels: int, widen_factor: float, divisor: int = 8) -> int:
    """``channels * widen_factor`` rounded up to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(math.ceil(channels * widen_factor / divisor) * divisor))


def scale_depth(blocks: int, deepen_factor: float) -> int:
    """``blocks * deepen_factor`` rounded, at least 1."""
    return max(1, round(blocks * deepen_factor))


class CSPBlockV4(nn.Module):
    """YOLOv4 CSP block (module order = Darknet layer order).  ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, num_blocks: int, act: str, first: bool,
                 depthwise: bool = False) -> None:
        super().__init__()
        mid = channels if first else channels // 2
        hidden = channels // 2 if first else mid
        self.short = ConvBNAct(channels, mid, 1, act=act)
        self.main = ConvBNAct(channels, mid, 1, act=act)
        self.blocks = nn.Sequential(*(
            DarknetBottleneck(mid, mid, hidden, act=act, depthwise=depthwise)
            for _ in range(num_blocks)
        ))
        self.post = ConvBNAct(mid, mid, 1, act=act)
        self.transition = ConvBNAct(2 * mid, channels, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        main = self.post(self.blocks(self.main(x)))
        return self.transition(torch.cat([main, self.short(x)], dim=1))


def _stem(kind: str, channels: int, act: str) -> nn.Module:
    if kind == "3x3":
        return ConvBNAct(3, channels, 3, act=act)
    if kind == "3x3s2":
        return ConvBNAct(3, channels, 3, 2, act=act)
    if kind == "6x6s2":
        return ConvBNAct(3, channels, 6, 2, act=act, padding=2)
    return Focus(3, channels, 3, act=act)


def _csp_block(spec: CSPArch, in_channels: int, channels: int, num_blocks: int, act: str, *, stage: int,
               depthwise: bool, c3k: bool) -> nn.Module:
    first, last = stage == 0, stage == len(spec.stage_channels) - 1
    if spec.block_style == "c3k2":
        expansion = spec.block_expansion[stage] if spec.block_expansion else 0.5
        c3k = c3k or (bool(spec.block_c3k) and spec.block_c3k[stage])
        return C3k2(in_channels, channels, num_blocks, c3k=c3k, expansion=expansion, act=act)
    if spec.block_style == "v4":
        return CSPBlockV4(channels, num_blocks, act, first=first, depthwise=depthwise)
    shortcut = spec.last_shortcut or not last
    block_cls = C3 if spec.block_style == "c3" else C2f
    return block_cls(channels, channels, num_blocks, shortcut=shortcut, act=act,
                     depthwise=depthwise)


class CSPDarknet(FrozenStagesMixin):
    """CSPDarknet backbone.

    Args:
        arch: key of :data:`CSP_ARCHS` (``yolov4`` | ``csp-v5`` | ``yolov5`` | ``yolov5-sppf`` | ``yolox`` |
            ``yolov8`` | ``yolo11`` | ``yolo26``).
        scale: optional key of the arch's scale table (:data:`CSP_SCALES` for yolov4/csp-v5/
            yolov5, :data:`YOLOX_SCALES`, :data:`YOLOV8_SCALES`, :data:`YOLO11_SCALES`,
            :data:`YOLO26_SCALES`) setting both multipliers, the channel cap and ``c3k``
            (overrides them).
        deepen_factor: block-count multiplier.
        widen_factor: channel multiplier.
        max_channels: cap on a stage's channels before widening (YOLOv8's; None: no cap).
        out_indices: stages (1..5, stride ``2**i``) whose outputs are returned.
        act: activation name overriding the arch's.
        depthwise: depthwise-separable 3x3 convs (stage downsampling and residual blocks); not
            for the yolo11 / yolo26 layouts (Ultralytics has no such variant).
        c3k: every C3k2 block has C3k inner blocks (yolo11 / yolo26; None: the scale's, else False).
        frozen_stages: stem and stages ``1..frozen_stages`` get no gradient and keep BN in eval.
        norm_eval: keep every BatchNorm in eval mode while training.

    Attributes:
        out_channels: channels of each returned level.
        strides: their strides.

    Shapes: ``(B, 3, H, W) -> [(B, out_channels[i], H / strides[i], W / strides[i])]``.
    """

    def __init__(
        self,
        arch: str = "yolov4",
        *,
        scale: str | None = None,
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        max_channels: int | None = None,
        out_indices: Sequence[int] = (3, 4, 5),
        act: str | None = None,
        depthwise: bool = False,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        c3k: bool | None = None,
    ) -> None:
        super().__init__()
        if arch not in CSP_ARCHS:
            raise ValueError(f"unknown CSPDarknet arch {arch!r}; accepted: {', '.join(CSP_ARCHS)}")
        spec = CSP_ARCHS[arch]
        scale_c3k = False
        if scale is not None:
            if scale not in spec.scales:
                raise ValueError(f"unknown scale {scale!r} for arch {arch!r}; accepted: "
                                 f"{', '.join(spec.scales)}")
            deepen_factor, widen_factor, max_channels, scale_c3k = CSPScale(*spec.scales[scale])
        if spec.block_style == "c3k2" and depthwise:
            raise ValueError(f"CSPDarknet arch {arch!r} has no depthwise variant (depthwise=True)")
        if spec.block_style != "c3k2" and c3k:
            raise ValueError(f"c3k=True needs a C3k2 arch (yolo11, yolo26), not {arch!r}")
        c3k = scale_c3k if c3k is None else c3k
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(1, 6) for i in out_indices):
            raise ValueError(f"out_indices must be stage numbers in 1..5, got {list(out_indices)}")
        act = act or spec.act
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        def width(c: int) -> int:
            return scale_channels(c if max_channels is None else min(c, max_channels), widen_factor)

        in_ch = width(spec.stem_channels)
        self.stem = _stem(spec.stem, in_ch, act)
        stages: list[nn.Module] = []
        chans: list[int] = []
        if spec.stem != "3x3":
            stages.append(nn.Identity())  # stage 1 is the stride-2 stem's output
            chans.append(in_ch)
        last = len(spec.stage_channels) - 1
        down_channels = spec.down_channels or spec.stage_channels
        for i, (c, n) in enumerate(zip(spec.stage_channels, spec.stage_blocks)):
            c, n, down = width(c), scale_depth(n, deepen_factor), width(down_channels[i])
            block = _csp_block(spec, down, c, n, act, stage=i, depthwise=depthwise, c3k=c3k)
            layers = [conv_unit(in_ch, down, 3, 2, act=act, depthwise=depthwise), block]
            if i == last and spec.spp == "before":  # YOLOX: SPP between the down conv and block
                layers.insert(1, SPPFBlock(c, c, act=act))
            if i == last and spec.spp == "after":  # YOLOv8 / 11 / 26: SPPF after the block
                layers.append(SPPFBlock(c, c, act=act, shortcut=spec.sppf_shortcut, cv1_act=spec.sppf_cv1_act))
            if i == last and spec.psa_blocks:  # YOLO11 / 26: C2PSA after the SPPF
                layers.append(C2PSA(c, scale_depth(spec.psa_blocks, deepen_factor), act=act))
            stages.append(nn.Sequential(*layers))
            chans.append(c)
            in_ch = c
        self.stages = nn.ModuleList(stages)
        self.out_channels: list[int] = [chans[i - 1] for i in out_indices]
        self.strides: list[int] = [2**i for i in out_indices]
        set_batchnorm(self, spec.norm_eps, spec.norm_momentum)
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        # frozen_stages 0: the stem; k: also stages 1..k (with a stride-2 stem, stages[0] is its Identity).
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.stages[: self.frozen_stages]]

    def darknet_convs(self) -> list[nn.Module]:
        """The ConvBNAct modules in Darknet ``.cfg`` layer order (for ``.weights`` files)."""
        return [m for m in self.modules() if isinstance(m, ConvBNAct)]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
