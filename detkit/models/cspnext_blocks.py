"""RTMDet's CSPNeXt building blocks: channel attention, the CSPNeXt block and the CSP layer made of them.

``CSPNeXtBlock``: a 3x3 ConvBNAct, then a depthwise-separable 5x5 conv (depthwise 5x5 ConvBNAct, pointwise
1x1 ConvBNAct), plus the input when ``shortcut`` and the widths agree. ``CSPNeXtLayer``: two 1x1 convs
split the input (``main_conv`` runs the blocks, ``short_conv`` is the bypass), ``cat[main, short]``,
optional :class:`ChannelAttention` on the concatenation, a 1x1 ``final_conv``. Submodule names are
mmdet 3.3's (``CSPLayer``, ``CSPNeXtBlock``, ``ChannelAttention``), the depthwise-separable conv is
:class:`~detkit.models.layers.DepthwiseSeparableConv` (``conv2.0`` depthwise, ``conv2.1`` pointwise).
The backbone and neck made of them: :mod:`detkit.models.backbones.cspnext`,
:mod:`detkit.models.necks.cspnext_pafpn`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.layers import ConvBNAct, DepthwiseSeparableConv

__all__ = ["CSPNeXtBlock", "CSPNeXtLayer", "ChannelAttention"]


class ChannelAttention(nn.Module):
    """RTMDet's channel attention: global average pool, 1x1 conv (with bias), hard sigmoid, times the input.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = F.hardsigmoid(self.fc(x.mean((2, 3), keepdim=True)))  # (B, C, 1, 1)
        return x * gate


class CSPNeXtBlock(nn.Module):
    """``conv2(conv1(x))`` (+ ``x``): a 3x3 ConvBNAct to ``hidden = int(out * expansion)``, then a
    depthwise ``kernel_size`` ConvBNAct and a pointwise 1x1 ConvBNAct to ``out``.

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, expansion: float = 1.0, shortcut: bool = True,
                 kernel_size: int = 5, act: str = "silu") -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvBNAct(in_channels, hidden, 3, act=act)
        self.conv2 = DepthwiseSeparableConv(hidden, out_channels, kernel_size, act=act)
        self.add = shortcut and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.conv2(self.conv1(x))
        return x + y if self.add else y


class CSPNeXtLayer(nn.Module):
    """CSP layer of CSPNeXt blocks: ``final_conv(att(cat[blocks(main_conv(x)), short_conv(x)]))`` with
    ``main_conv`` / ``short_conv`` 1x1 convs to ``mid = int(out * expand_ratio)``, ``num_blocks``
    :class:`CSPNeXtBlock` s of width ``mid`` and a 1x1 ``final_conv`` to ``out``; ``att`` is
    :class:`ChannelAttention` over ``2 mid`` channels with ``channel_attention`` (the backbone's), else none
    (the neck's).

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 1, *, expand_ratio: float = 0.5,
                 shortcut: bool = True, channel_attention: bool = False, act: str = "silu") -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvBNAct(in_channels, mid, 1, act=act)
        self.short_conv = ConvBNAct(in_channels, mid, 1, act=act)
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, act=act)
        self.blocks = nn.Sequential(*(CSPNeXtBlock(mid, mid, shortcut=shortcut, act=act) for _ in range(num_blocks)))
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)  # (B, 2 mid, H, W)
        if self.attention is not None:
            y = self.attention(y)
        out: Tensor = self.final_conv(y)
        return out
