"""CSPDarknet53 (YOLOv4) and a YOLOv5-style CSP variant, with width/depth multipliers.

Architecture (YOLOv4, ``arch="yolov4"``): a 3x3 stem conv (32 channels), then five stages of
``[3x3 stride-2 conv, CSP block]`` with 64, 128, 256, 512, 1024 channels and 1, 2, 8, 8, 4
residual blocks; Mish everywhere. A YOLOv4 CSP block splits the input with two 1x1 convs
(``short`` and ``main``), runs the residual blocks on ``main``, a 1x1 ``post`` conv, and fuses
``cat[post, short]`` with a 1x1 ``transition`` conv (Darknet's ``route -1,-N`` order). Stage 1 is
special in Darknet: its split keeps all 64 channels and its residual block's hidden width is 32.

``arch="csp-v5"`` swaps in YOLOv5's C3 block (``cv3(cat[blocks(cv1(x)), cv2(x)])``, no post conv)
with SiLU and block counts 1, 3, 6, 9, 3 (scaled by ``deepen_factor``), keeping YOLOv4's stem.

``arch="yolov5"`` is YOLOv5's (v6.0+) own layout: a 6x6 stride-2 stem conv (64 channels, padding 2)
whose output *is* stage 1 (no full-resolution layer, no CSP block at stride 2), then four stages of
``[3x3 stride-2 conv, C3 block]`` with 128, 256, 512, 1024 channels and 3, 6, 9, 3 bottlenecks.
Without a full-resolution layer it is the cheapest layout per pixel (the demo uses it on CPU).

Stage ``i`` (1..5) has stride ``2**i``; ``out_indices`` picks stages by that number, so the
default ``(3, 4, 5)`` gives strides 8, 16, 32 (C3..C5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detkit.models.layers import ConvBNAct, conv_unit, freeze, norm_to_eval

__all__ = ["CSP_ARCHS", "CSP_SCALES", "CSPArch", "CSPDarknet", "scale_channels", "scale_depth"]


@dataclass(frozen=True)
class CSPArch:
    """Stage plan of a CSPDarknet before width/depth scaling."""

    stem_channels: int
    stage_channels: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    block_style: str  # "v4" (split + post conv) or "v5" (C3)
    act: str
    # "3x3": 3x3 stride-1 stem, then five strided stages (stage_channels/blocks list stages 1..5).
    # "6x6s2": YOLOv5's 6x6 stride-2 stem is stage 1; stage_channels/blocks list stages 2..5.
    stem: str = "3x3"


CSP_ARCHS: dict[str, CSPArch] = {
    "yolov4": CSPArch(32, (64, 128, 256, 512, 1024), (1, 2, 8, 8, 4), "v4", "mish"),
    "csp-v5": CSPArch(32, (64, 128, 256, 512, 1024), (1, 3, 6, 9, 3), "v5", "silu"),
    "yolov5": CSPArch(64, (128, 256, 512, 1024), (3, 6, 9, 3), "v5", "silu", stem="6x6s2"),
}

# (deepen_factor, widen_factor) of the usual model sizes.
CSP_SCALES: dict[str, tuple[float, float]] = {
    "tiny": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
}


def scale_channels(channels: int, widen_factor: float, divisor: int = 8) -> int:
    """``channels * widen_factor`` rounded up to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(math.ceil(channels * widen_factor / divisor) * divisor))


def scale_depth(blocks: int, deepen_factor: float) -> int:
    """``blocks * deepen_factor`` rounded, at least 1."""
    return max(1, round(blocks * deepen_factor))


class ResidualBlock(nn.Module):
    """Darknet residual block: ``x + conv3x3(conv1x1(x))``.  ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, hidden: int, act: str, depthwise: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, hidden, 1, act=act)
        self.conv2 = conv_unit(hidden, channels, 3, act=act, depthwise=depthwise)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class CSPBlockV4(nn.Module):
    """YOLOv4 CSP block (module order = Darknet layer order).  ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, num_blocks: int, act: str, first: bool,
                 depthwise: bool = False) -> None:
        super().__init__()
        mid = channels if first else channels // 2
        hidden = channels // 2 if first else mid
        self.short = ConvBNAct(channels, mid, 1, act=act)
        self.main = ConvBNAct(channels, mid, 1, act=act)
        self.blocks = nn.Sequential(
            *(ResidualBlock(mid, hidden, act, depthwise) for _ in range(num_blocks))
        )
        self.post = ConvBNAct(mid, mid, 1, act=act)
        self.transition = ConvBNAct(2 * mid, channels, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        main = self.post(self.blocks(self.main(x)))
        return self.transition(torch.cat([main, self.short(x)], dim=1))


class CSPBlockV5(nn.Module):
    """YOLOv5 C3 block.  ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, num_blocks: int, act: str, depthwise: bool = False) -> None:
        super().__init__()
        mid = channels // 2
        self.cv1 = ConvBNAct(channels, mid, 1, act=act)
        self.cv2 = ConvBNAct(channels, mid, 1, act=act)
        self.blocks = nn.Sequential(
            *(ResidualBlock(mid, mid, act, depthwise) for _ in range(num_blocks))
        )
        self.cv3 = ConvBNAct(2 * mid, channels, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat([self.blocks(self.cv1(x)), self.cv2(x)], dim=1))


class CSPDarknet(nn.Module):
    """CSPDarknet backbone.

    Args:
        arch: key of :data:`CSP_ARCHS` (``yolov4`` | ``csp-v5``).
        scale: optional key of :data:`CSP_SCALES` setting both multipliers (overrides them).
        deepen_factor / widen_factor: block-count and channel multipliers.
        out_indices: stages (1..5, stride ``2**i``) whose outputs are returned.
        act: activation name overriding the arch's.
        depthwise: depthwise-separable 3x3 convs (stage downsampling and residual blocks).
        frozen_stages: stem and stages ``1..frozen_stages`` get no gradient and keep BN in eval.
        norm_eval: keep every BatchNorm in eval mode while training.

    Attributes:
        out_channels: channels of each returned level; strides: their strides.

    Shapes: ``(B, 3, H, W) -> [(B, out_channels[i], H / strides[i], W / strides[i])]``.
    """

    def __init__(
        self,
        arch: str = "yolov4",
        *,
        scale: str | None = None,
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        out_indices: Sequence[int] = (3, 4, 5),
        act: str | None = None,
        depthwise: bool = False,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        if arch not in CSP_ARCHS:
            raise ValueError(f"unknown CSPDarknet arch {arch!r}; accepted: {', '.join(CSP_ARCHS)}")
        if scale is not None:
            if scale not in CSP_SCALES:
                raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(CSP_SCALES)}")
            deepen_factor, widen_factor = CSP_SCALES[scale]
        spec = CSP_ARCHS[arch]
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(1, 6) for i in out_indices):
            raise ValueError(f"out_indices must be stage numbers in 1..5, got {list(out_indices)}")
        act = act or spec.act
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        in_ch = scale_channels(spec.stem_channels, widen_factor)
        stages: list[nn.Module] = []
        chans: list[int] = []
        if spec.stem == "6x6s2":
            self.stem = ConvBNAct(3, in_ch, 6, 2, act=act, padding=2)
            stages.append(nn.Identity())  # stage 1 is the stem's output
            chans.append(in_ch)
        else:
            self.stem = ConvBNAct(3, in_ch, 3, act=act)
        for i, (c, n) in enumerate(zip(spec.stage_channels, spec.stage_blocks)):
            c, n = scale_channels(c, widen_factor), scale_depth(n, deepen_factor)
            if spec.block_style == "v4":
                block: nn.Module = CSPBlockV4(c, n, act, first=i == 0, depthwise=depthwise)
            else:
                block = CSPBlockV5(c, n, act, depthwise=depthwise)
            down = conv_unit(in_ch, c, 3, 2, act=act, depthwise=depthwise)
            stages.append(nn.Sequential(down, block))
            chans.append(c)
            in_ch = c
        self.stages = nn.ModuleList(stages)
        self.out_channels: list[int] = [chans[i - 1] for i in out_indices]
        self.strides: list[int] = [2**i for i in out_indices]
        self._freeze()

    def _freeze(self) -> None:
        if self.frozen_stages < 0:
            return
        freeze([self.stem, *self.stages[: self.frozen_stages]])

    def train(self, mode: bool = True) -> CSPDarknet:
        super().train(mode)
        if mode:
            self._freeze()
            if self.norm_eval:
                norm_to_eval(self)
        return self

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
