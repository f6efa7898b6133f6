"""Path aggregation neck with SPP: YOLOv4's neck (SPP + PANet), with its exact channel plan.

For input levels with channels ``c_i`` (ascending stride) the neck works at ``w_i = c_i / 2``
(YOLOv4: C3..C5 = 256, 512, 1024 -> 128, 256, 512):

1. top level: ``1x1 w, 3x3 2w, 1x1 w``, SPP (5/9/13 max-pools, ``4w`` channels), ``1x1 w, 3x3 2w,
   1x1 w`` (without SPP: the five-conv set);
2. top-down, for each lower level: ``reduce`` (1x1 to ``w_i``) + 2x nearest upsample, ``lateral``
   (1x1 ``c_i -> w_i``) of the backbone map, ``cat[lateral, up]``, then the five-conv set
   ``1x1 w, 3x3 2w, 1x1 w, 3x3 2w, 1x1 w``;
3. bottom-up, for each higher level: ``down`` (3x3 stride 2 to ``w_i``), ``cat[down, top-down_i]``,
   five-conv set.

Outputs have ``w_i`` channels. Concat orders follow Darknet's ``route`` layers, and module order
follows Darknet's layer order, so ``yolov4.weights`` maps onto it conv by conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.layers import SPP, ConvBNAct
from detkit.models.necks.base import BindableModule

__all__ = ["PAN", "five_convs"]


def five_convs(cin: int, w: int, act: str) -> nn.Sequential:
    """``1x1 w, 3x3 2w, 1x1 w, 3x3 2w, 1x1 w`` (YOLOv3/v4 detection conv set).

    Shapes: ``(B, cin, H, W) -> (B, w, H, W)``.
    """
    return nn.Sequential(
        ConvBNAct(cin, w, 1, act=act), ConvBNAct(w, 2 * w, 3, act=act),
        ConvBNAct(2 * w, w, 1, act=act), ConvBNAct(w, 2 * w, 3, act=act),
        ConvBNAct(2 * w, w, 1, act=act),
    )


class PAN(BindableModule):
    """YOLOv4 PANet neck with optional SPP on the top level.

    Args:
        in_channels: channels per input level (ascending stride), or None to read them from
            the backbone.
        spp: SPP block on the top level (YOLOv4: True).
        spp_kernels: SPP max-pool sizes.
        act: activation (YOLOv4's neck: ``leaky``).

    Shapes: ``[(B, c_i, H_i, W_i)] -> [(B, c_i / 2, H_i, W_i)]``.
    """

    def __init__(
        self,
        in_channels: Sequence[int] | None = None,
        *,
        spp: bool = True,
        spp_kernels: Sequence[int] = (5, 9, 13),
        act: str = "leaky",
    ) -> None:
        super().__init__()
        self.spp, self.spp_kernels, self.act = spp, tuple(spp_kernels), act
        if in_channels is not None:
            self.bind(in_channels)

    def _build(self, in_channels: list[int]) -> None:
        if len(in_channels) < 2:
            raise ValueError(f"PAN needs at least 2 input levels, got {in_channels}")
        act = self.act
        widths = [c // 2 for c in in_channels]
        c, w = in_channels[-1], widths[-1]
        if self.spp:
            n = len(self.spp_kernels) + 1
            self.top = nn.Sequential(
                ConvBNAct(c, w, 1, act=act), ConvBNAct(w, 2 * w, 3, act=act),
                ConvBNAct(2 * w, w, 1, act=act), SPP(self.spp_kernels),
                ConvBNAct(n * w, w, 1, act=act), ConvBNAct(w, 2 * w, 3, act=act),
                ConvBNAct(2 * w, w, 1, act=act),
            )
        else:
            self.top = five_convs(c, w, act)
        # Top-down modules are listed from the top level down (Darknet order).
        lower = range(len(in_channels) - 2, -1, -1)
        self.reduce = nn.ModuleList(ConvBNAct(widths[i + 1], widths[i], 1, act=act) for i in lower)
        self.lateral = nn.ModuleList(ConvBNAct(in_channels[i], widths[i], 1, act=act) for i in lower)
        self.td_convs = nn.ModuleList(five_convs(2 * widths[i], widths[i], act) for i in lower)
        # Bottom-up modules are listed from level 1 up.
        upper = range(1, len(in_channels))
        self.down = nn.ModuleList(ConvBNAct(widths[i - 1], widths[i], 3, 2, act=act) for i in upper)
        self.bu_convs = nn.ModuleList(five_convs(2 * widths[i], widths[i], act) for i in upper)
        self.out_channels = widths

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_bound()
        if len(feats) != len(self.out_channels):
            raise ValueError(f"PAN built for {len(self.out_channels)} levels, got {len(feats)}")
        n = len(feats)
        td: list[Tensor] = [self.top(feats[-1])]  # top-down outputs, deepest level first
        for k, i in enumerate(range(n - 2, -1, -1)):
            up = F.interpolate(self.reduce[k](td[-1]), size=feats[i].shape[-2:], mode="nearest")
            td.append(self.td_convs[k](torch.cat([self.lateral[k](feats[i]), up], dim=1)))
        td.reverse()  # td[i]: level i
        outs = [td[0]]
        for k, i in enumerate(range(1, n)):
            down = self.down[k](outs[-1])
            outs.append(self.bu_convs[k](torch.cat([down, td[i]], dim=1)))
        return outs
