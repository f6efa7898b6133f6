"""Feature pyramid network (top-down pathway), Lin et al. 2017."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.necks.base import BindableModule

__all__ = ["FPN"]


class FPN(BindableModule):
    """FPN: 1x1 lateral convs, nearest-neighbour top-down additions, 3x3 output convs.

    Args:
        in_channels: channels per input level (ascending stride); None reads them from the
            backbone (see :class:`BindableModule`).
        out_channels: channels of every output level.

    Shapes: ``[(B, in_channels[i], H_i, W_i)] -> [(B, out_channels, H_i, W_i)]``.
    """

    def __init__(self, in_channels: Sequence[int] | None = None, out_channels: int = 256) -> None:
        super().__init__()
        if out_channels <= 0:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        self.width = out_channels
        if in_channels is not None:
            self.bind(in_channels)

    def _build(self, in_channels: list[int]) -> None:
        self.lateral = nn.ModuleList(nn.Conv2d(c, self.width, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(self.width, self.width, 3, padding=1) for _ in in_channels
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.out_channels = [self.width] * len(in_channels)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_bound()
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + up
        return [conv(x) for conv, x in zip(self.output, laterals)]
