"""CSPNeXtPAFPN, RTMDet's neck (mmdet 3.3's ``CSPNeXtPAFPN``), parameter for parameter.

For input levels with channels ``c_i`` (ascending stride) and ``t_top = x_top``:

1. top-down, from the top level down: ``r_{i+1} = reduce(t_{i+1})`` (1x1 conv to ``c_i``), then
   ``t_i = block(cat[up2(r_{i+1}), x_i])`` to ``c_i`` channels;
2. bottom-up: ``o_0 = t_0``, ``o_i = block(cat[down(o_{i-1}), r_i])`` to ``c_i`` channels (``down`` a 3x3
   stride-2 conv keeping ``c_{i-1}``; ``r_i`` the reduced map of step 1, ``r_top = reduce(x_top)``);
3. ``out_i = out_conv(o_i)``, a 3x3 ConvBNAct to ``out_channels`` on every level.

Blocks are :class:`~detkit.models.cspnext_blocks.CSPNeXtLayer` without shortcut and without channel
attention (``num_csp_blocks`` CSPNeXt blocks each). Module names are mmdet's (``reduce_layers``,
``top_down_blocks``, ``downsamples``, ``bottom_up_blocks``, ``out_convs``; inside the blocks as in
:mod:`detkit.models.cspnext_blocks`). RTMDet-s: ``in_channels=[128, 256, 512]``, ``out_channels=128``,
``num_csp_blocks=1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.cspnext_blocks import CSPNeXtLayer
from detkit.models.layers import ConvBNAct, set_batchnorm
from detkit.models.necks.base import BindableModule

__all__ = ["CSPNeXtPAFPN"]


class CSPNeXtPAFPN(BindableModule):
    """RTMDet's path-aggregation neck (see the module docstring).

    Args:
        out_channels: channels of every output level.
        in_channels: channels per input level, or None to read them from the backbone.
        num_csp_blocks: CSPNeXt blocks per CSP layer.
        expand_ratio: hidden width of each CSP layer relative to its output.
        act: activation.
        norm_eps / norm_momentum: BatchNorm settings (PyTorch's defaults, as mmdet's RTMDet configs).

    Shapes: ``[(B, c_i, H_i, W_i)] -> [(B, out_channels, H_i, W_i)]`` (``H_i = 2 H_{i+1}``).
    """

    def __init__(self, out_channels: int = 128, in_channels: Sequence[int] | None = None, *,
                 num_csp_blocks: int = 1, expand_ratio: float = 0.5, act: str = "silu", norm_eps: float = 1e-5,
                 norm_momentum: float = 0.1) -> None:
        super().__init__()
        if out_channels <= 0 or num_csp_blocks < 1:
            raise ValueError(f"CSPNeXtPAFPN needs out_channels > 0 and num_csp_blocks >= 1, got {out_channels}, "
                             f"{num_csp_blocks}")
        self.width = int(out_channels)
        self.num_csp_blocks = num_csp_blocks
        self.expand_ratio = expand_ratio
        self.act = act
        self.norm_eps = norm_eps
        self.norm_momentum = norm_momentum
        if in_channels is not None:
            self.bind(in_channels)

    def _layer(self, cin: int, cout: int) -> CSPNeXtLayer:
        return CSPNeXtLayer(cin, cout, self.num_csp_blocks, expand_ratio=self.expand_ratio, shortcut=False,
                            act=self.act)

    def _build(self, in_channels: list[int]) -> None:
        if len(in_channels) < 2:
            raise ValueError(f"CSPNeXtPAFPN needs at least 2 levels, got in_channels={in_channels}")
        c = in_channels
        top_down = range(len(c) - 1, 0, -1)  # mmdet's order: from the top level down
        self.reduce_layers = nn.ModuleList(ConvBNAct(c[i], c[i - 1], 1, act=self.act) for i in top_down)
        self.top_down_blocks = nn.ModuleList(self._layer(2 * c[i - 1], c[i - 1]) for i in top_down)
        self.downsamples = nn.ModuleList(ConvBNAct(c[i], c[i], 3, 2, act=self.act) for i in range(len(c) - 1))
        self.bottom_up_blocks = nn.ModuleList(self._layer(2 * c[i], c[i + 1]) for i in range(len(c) - 1))
        self.out_convs = nn.ModuleList(ConvBNAct(ci, self.width, 3, act=self.act) for ci in c)
        self.out_channels = [self.width] * len(c)
        set_batchnorm(self, self.norm_eps, self.norm_momentum)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_bound()
        assert self.in_channels is not None  # bound above
        levels = len(self.in_channels)
        if len(feats) != levels:
            raise ValueError(f"CSPNeXtPAFPN built for {levels} levels, got {len(feats)}")
        partner: list[Tensor] = [feats[-1]] * levels  # r_i: the reduced maps bottom-up reads (r_top too)
        top = feats[-1]
        for k, i in enumerate(range(levels - 1, 0, -1)):
            reduced = self.reduce_layers[k](top)  # (B, c_i, H_i, W_i) -> (B, c_{i-1}, H_i, W_i)
            partner[i] = reduced
            up = F.interpolate(reduced, scale_factor=2.0, mode="nearest")  # (B, c_{i-1}, H_{i-1}, W_{i-1})
            top = self.top_down_blocks[k](torch.cat([up, feats[i - 1]], dim=1))  # t_{i-1}
        outs = [top]  # o_0 = t_0
        for i in range(levels - 1):
            outs.append(self.bottom_up_blocks[i](torch.cat([self.downsamples[i](outs[-1]), partner[i + 1]], dim=1)))
        return [conv(o) for conv, o in zip(self.out_convs, outs)]
