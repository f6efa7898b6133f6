"""Adaptively spatial feature fusion (ASFF, Liu et al. 2019) over a pyramid.

For every output level ``l``, each input level ``s`` is resized to level ``l``'s resolution and
channels: one level down by a 3x3 stride-2 conv, two or more levels down by stride-2 3x3
max-pools then that conv, up by a 1x1 conv then nearest interpolation. Each resized map gives
a ``compress_channels`` map through a 1x1 conv; their concat goes through a 1x1 conv to one
logit per source level, a softmax over levels gives per-pixel weights, and the weighted sum
goes through a 3x3 conv.

``base`` runs first (typically a :class:`~detkit.models.necks.PAN`), so ASFF refines its outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.layers import ConvBNAct
from detkit.models.necks.base import BindableModule

__all__ = ["ASFF", "ASFFLevel"]


def _resizer(c_src: int, c_dst: int, steps: int, act: str) -> nn.Module:
    """Module taking level ``src`` to ``dst``; ``steps`` = dst - src (positive: go down)."""
    if steps == 0:
        return nn.Identity()
    if steps < 0:  # up: channels here, interpolation in forward
        return ConvBNAct(c_src, c_dst, 1, act=act)
    pools = [nn.MaxPool2d(3, 2, 1) for _ in range(steps - 1)]
    return nn.Sequential(*pools, ConvBNAct(c_src, c_dst, 3, 2, act=act))


class ASFFLevel(nn.Module):
    """Fusion for one output level ``level`` of ``len(in_channels)`` inputs.

    Shapes: ``[(B, in_channels[i], H_i, W_i)] -> (B, in_channels[level], H_level, W_level)``.
    """

    def __init__(self, in_channels: Sequence[int], level: int, compress_channels: int = 16,
                 act: str = "leaky") -> None:
        super().__init__()
        c = in_channels[level]
        self.level = level
        self.resize = nn.ModuleList(
            _resizer(cs, c, level - s, act) for s, cs in enumerate(in_channels)
        )
        self.weight = nn.ModuleList(
            ConvBNAct(c, compress_channels, 1, act=act) for _ in in_channels
        )
        self.weight_levels = nn.Conv2d(compress_channels * len(in_channels), len(in_channels), 1)
        self.expand = ConvBNAct(c, c, 3, act=act)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        size = feats[self.level].shape[-2:]
        resized = []
        for s, (f, resize) in enumerate(zip(feats, self.resize)):
            x = resize(f)
            if s > self.level:
                x = F.interpolate(x, size=size, mode="nearest")
            resized.append(x)
        logits = self.weight_levels(torch.cat([w(x) for w, x in zip(self.weight, resized)], 1))
        weights = logits.softmax(dim=1)  # (B, L, H, W): per-pixel weights over the L levels
        fused = sum(x * weights[:, i : i + 1] for i, x in enumerate(resized))
        return self.expand(fused)


class ASFF(BindableModule):
    """ASFF neck: optional ``base`` neck, then one :class:`ASFFLevel` per level.

    Args:
        in_channels: channels per input level, or None to read them from the backbone.
        base: a neck run first (its ``out_channels`` are ASFF's input channels).
        compress_channels: channels of each weight branch (paper: 16).
        act: activation.

    Shapes: ``[(B, c_i, H_i, W_i)] -> [(B, out_channels[i], H_i, W_i)]``.
    """

    def __init__(
        self,
        in_channels: Sequence[int] | None = None,
        *,
        base: BindableModule | None = None,
        compress_channels: int = 16,
        act: str = "leaky",
    ) -> None:
        super().__init__()
        self.base = base
        self.compress_channels, self.act = compress_channels, act
        if in_channels is not None:
            self.bind(in_channels)

    def _build(self, in_channels: list[int]) -> None:
        chans = in_channels
        if self.base is not None:
            self.base.bind(in_channels)
            chans = list(self.base.out_channels)
        if len(chans) < 2:
            raise ValueError(f"ASFF needs at least 2 levels, got channels {chans}")
        self.levels = nn.ModuleList(
            ASFFLevel(chans, i, self.compress_channels, self.act) for i in range(len(chans))
        )
        self.out_channels = chans

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_bound()
        feats = self.base(feats) if self.base is not None else list(feats)
        return [level(feats) for level in self.levels]
