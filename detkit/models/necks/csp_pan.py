"""Path aggregation necks made of CSP blocks: YOLOv8's (C2f), YOLOv5's / YOLOX's (C3), YOLO11's and
YOLO26's (C3k2).

For input levels with channels ``c_i`` (ascending stride; typically C3..C5) the outputs have
``o_i = c_i`` channels, except the lowest level in the ``yolo11`` / ``yolo26`` layouts:
``o_0 = c_0 / 2`` (Ultralytics' layer 16 has 256 x width channels where the backbone's P3 has 512).
With ``t_top = x_top``:

1. top-down, for each lower level ``i`` (from the top down): ``u = up2(p_{i+1})``,
   ``t_i = block(cat[u, x_i])`` to ``o_i`` channels (upsampled map first). In the ``yolov8`` /
   ``yolo11`` / ``yolo26`` layouts ``p_{i+1}`` is ``t_{i+1}`` itself; in the ``yolox`` layout it
   is ``reduce(t_{i+1})``, a 1x1 conv to ``o_i``;
2. bottom-up, for each higher level ``i``: ``o_i = block(cat[down(o_{i-1}), p_i])`` with
   ``down`` a 3x3 stride-2 conv keeping ``o_{i-1}`` channels and ``o_0 = t_0``.

The C3k2 layouts (:class:`~detkit.models.c3k2.C3k2`, shortcuts in their inner blocks): ``yolo11``
gives C3k inner blocks to the top bottom-up block only (layer 22), and to every block with
``c3k=True`` (Ultralytics' m, l and x scales); ``yolo26`` gives them to every block, and its top
bottom-up block is a single C3k2 block whose inner block is a bottleneck + position-sensitive
attention (``C3k2(..., attn=True)``, one block at every scale).

No SPP: YOLOv8 and YOLOX run it at the end of the backbone
(:class:`~detkit.models.backbones.CSPDarknet` with ``arch="yolov8"`` / ``"yolox"``).

Module order is the originals' layer order: for YOLOv8 (three levels) Ultralytics' layers 12,
15 = ``td_blocks[0]``, ``td_blocks[1]``; 16, 18 = ``down[0]``, ``bu_blocks[0]``; 19, 21 =
``down[1]``, ``bu_blocks[1]`` (layers 10, 11, 13, 14, 17, 20 are upsample / concat, without
parameters). For YOLOX's PAFPN: ``lateral_conv0`` = ``reduce[0]``, ``C3_p4`` = ``td_blocks[0]``,
``reduce_conv1`` = ``reduce[1]``, ``C3_p3`` = ``td_blocks[1]``, ``bu_conv2`` = ``down[0]``,
``C3_n3`` = ``bu_blocks[0]``, ``bu_conv1`` = ``down[1]``, ``C3_n4`` = ``bu_blocks[1]``.
The ``yolox`` layout is also YOLOv5's (v6.0+) PANet head. YOLO11's and YOLO26's layers map as
YOLOv8's, one layer later (13, 16 = ``td_blocks``; 17, 19 = ``down[0]``, ``bu_blocks[0]``; 20, 22 =
``down[1]``, ``bu_blocks[1]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.c3k2 import C3k2
from detkit.models.layers import C3, C2f, ConvBNAct, conv_unit, set_batchnorm
from detkit.models.necks.base import BindableModule

__all__ = ["CSPPAN", "CSPPAN_LAYOUTS", "CSPPANLayout"]


@dataclass(frozen=True)
class CSPPANLayout:
    """What distinguishes the CSP PAN variants."""

    # "c2f" (YOLOv8) or "c3" (YOLOv5 / YOLOX), both without shortcut here; "c3k2" (YOLO11 / 26, with)
    block: str
    reduce: bool  # 1x1 conv on the higher level before upsampling (YOLOv5 / YOLOX)
    norm_eps: float = 1e-3
    norm_momentum: float = 0.03
    c3k: str = "none"  # C3k2 blocks with C3k inner blocks: "none", "top" (the top bottom-up block), "all"
    top_attention: bool = False  # the top bottom-up block: one C3k2 block with attention (YOLO26)
    bottom_ratio: float = 1.0  # width of the lowest output level relative to its input (YOLO11: 0.5)

    def __post_init__(self) -> None:
        if self.block not in ("c2f", "c3", "c3k2"):
            raise ValueError(f"CSPPANLayout block={self.block!r}; accepted: c2f, c3, c3k2")
        if self.c3k not in ("none", "top", "all"):
            raise ValueError(f"CSPPANLayout c3k={self.c3k!r}; accepted: none, top, all")


CSPPAN_LAYOUTS: dict[str, CSPPANLayout] = {
    "yolov8": CSPPANLayout("c2f", reduce=False),
    "yolox": CSPPANLayout("c3", reduce=True),
    "yolo11": CSPPANLayout("c3k2", reduce=False, c3k="top", bottom_ratio=0.5),
    "yolo26": CSPPANLayout("c3k2", reduce=False, c3k="all", top_attention=True, bottom_ratio=0.5),
}


class CSPPAN(BindableModule):
    """PAN of CSP blocks (YOLOv8's neck, YOLOX's PAFPN, YOLO11's and YOLO26's necks).

    Outputs keep the input channels, except the lowest level's in the yolo11 / yolo26 layouts (half).

    Args:
        in_channels: channels per input level (ascending stride), or None to read them from
            the backbone.
        layout: key of :data:`CSPPAN_LAYOUTS` (``yolov8`` | ``yolox`` | ``yolo11`` | ``yolo26``).
        num_blocks: bottlenecks per CSP block (``round(3 * deepen_factor)``: 1 for the n/s/nano/
            tiny scales, 2 for m, 3 for l and YOLOv8-x, 4 for YOLOX-x; C3k2 inner blocks,
            ``round(2 * deepen_factor)``: 1 for YOLO11 / 26 n, s, m, 2 for l, x).
        act: activation.
        depthwise: depthwise-separable 3x3 convs (YOLOX-nano; not in the C3k2 layouts).
        c3k: every C3k2 block has C3k inner blocks (YOLO11's m, l and x scales).

    Shapes: ``[(B, c_i, H_i, W_i)] -> [(B, c_i, H_i, W_i)]``.
    """

    def __init__(
        self,
        in_channels: Sequence[int] | None = None,
        *,
        layout: str = "yolov8",
        num_blocks: int = 1,
        act: str = "silu",
        depthwise: bool = False,
        c3k: bool = False,
    ) -> None:
        super().__init__()
        if layout not in CSPPAN_LAYOUTS:
            raise ValueError(f"unknown CSPPAN layout {layout!r}; accepted: "
                             f"{', '.join(CSPPAN_LAYOUTS)}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.layout = CSPPAN_LAYOUTS[layout]
        if self.layout.block == "c3k2" and depthwise:
            raise ValueError(f"CSPPAN layout {layout!r} has no depthwise variant (depthwise=True)")
        if self.layout.block != "c3k2" and c3k:
            raise ValueError(f"c3k=True needs a C3k2 layout (yolo11, yolo26), not {layout!r}")
        self.num_blocks, self.act, self.depthwise, self.c3k = num_blocks, act, depthwise, c3k
        if in_channels is not None:
            self.bind(in_channels)

    def _block(self, cin: int, cout: int, *, top: bool = False) -> nn.Module:
        layout = self.layout
        if layout.block == "c3k2":
            if top and layout.top_attention:
                return C3k2(cin, cout, 1, c3k=True, attn=True, act=self.act)
            c3k = self.c3k or layout.c3k == "all" or (top and layout.c3k == "top")
            return C3k2(cin, cout, self.num_blocks, c3k=c3k, act=self.act)
        block_cls = C2f if layout.block == "c2f" else C3
        return block_cls(cin, cout, self.num_blocks, shortcut=False, act=self.act,
                         depthwise=self.depthwise)

    def _build(self, in_channels: list[int]) -> None:
        if len(in_channels) < 2:
            raise ValueError(f"CSPPAN needs at least 2 input levels, got {in_channels}")
        c, act = in_channels, self.act
        o = [int(c[0] * self.layout.bottom_ratio), *c[1:]]  # output widths
        # Top-down modules are listed from the top level down; ``partner[i]`` is the channel
        # count of p_i, the map upsampled to level i - 1 and concatenated bottom-up at level i.
        lower = range(len(c) - 2, -1, -1)
        reduce, td_blocks = [], []
        partner = {len(c) - 1: c[-1]}
        for i in lower:
            if self.layout.reduce:
                reduce.append(ConvBNAct(partner[i + 1], o[i], 1, act=act))
                partner[i + 1] = o[i]
            td_blocks.append(self._block(partner[i + 1] + c[i], o[i]))
            partner[i] = o[i]
        self.reduce = nn.ModuleList(reduce)  # empty in the yolov8 layout
        self.td_blocks = nn.ModuleList(td_blocks)
        # Bottom-up modules are listed from level 1 up.
        upper = range(1, len(c))
        self.down = nn.ModuleList(
            conv_unit(o[i - 1], o[i - 1], 3, 2, act=act, depthwise=self.depthwise) for i in upper
        )
        self.bu_blocks = nn.ModuleList(self._block(o[i - 1] + partner[i], o[i], top=i == len(c) - 1)
                                       for i in upper)
        set_batchnorm(self, self.layout.norm_eps, self.layout.norm_momentum)
        self.out_channels = o

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_bound()
        if len(feats) != len(self.out_channels):
            raise ValueError(f"CSPPAN built for {len(self.out_channels)} levels, got {len(feats)}")
        n = len(feats)
        td = list(feats)  # t_i: the top level is x_top, lower levels are replaced top-down
        partner = list(feats)  # p_i
        for k, i in enumerate(range(n - 2, -1, -1)):
            partner[i + 1] = self.reduce[k](td[i + 1]) if self.layout.reduce else td[i + 1]
            # (B, C, H_{i+1}, W_{i+1}) -> (B, C, H_i, W_i)
            up = F.interpolate(partner[i + 1], size=feats[i].shape[-2:], mode="nearest")
            td[i] = self.td_blocks[k](torch.cat([up, feats[i]], dim=1))
        outs = [td[0]]
        for k, i in enumerate(range(1, n)):
            # (B, c_{i-1}, H_{i-1}, W_{i-1}) -> (B, c_{i-1}, H_i, W_i)
            down = self.down[k](outs[-1])
            outs.append(self.bu_blocks[k](torch.cat([down, partner[i]], dim=1)))
        return outs
