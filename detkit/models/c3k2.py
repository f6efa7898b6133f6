"""YOLO11's and YOLO26's CSP block, ``C3k2``: a :class:`~detkit.models.layers.C2f` with other inner blocks.

It sits in a module of its own because one of its inner blocks holds attention
(:mod:`detkit.models.attention`, which is built from :mod:`detkit.models.layers`).
"""

from __future__ import annotations

from torch import nn

from detkit.models.attention import PSABlock, psa_heads
from detkit.models.layers import C2f, C3k, DarknetBottleneck

__all__ = ["C3k2"]


class C3k2(C2f):
    """C2f whose ``num_blocks`` inner blocks (width ``hidden = int(out * expansion)``) are one of:

    - ``c3k=False, attn=False``: a bottleneck of two 3x3 convs through ``hidden / 2`` channels;
    - ``c3k=True``: a :class:`~detkit.models.layers.C3k` (two 3x3 bottlenecks at ``hidden / 2``);
    - ``attn=True`` (YOLO26's last neck block; wins over ``c3k``): that bottleneck, then a
      :class:`~detkit.models.attention.PSABlock` with one head per 64 channels.

    ``[a, b] = split(cv1(x))``, ``y_0 = b``, ``y_k = blocks[k-1](y_{k-1})``, ``out = cv2(cat[a, b,
    y_1, ..., y_n])``. Every inner block has a shortcut unless ``shortcut=False``. Ultralytics'
    ``C3k2(c1, c2, n, c3k, e, attn)``; its ``m`` is ``blocks`` here.

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 1, *, c3k: bool = False,
                 attn: bool = False, expansion: float = 0.5, shortcut: bool = True, act: str = "silu") -> None:
        super().__init__(in_channels, out_channels, num_blocks, shortcut=shortcut, expansion=expansion, act=act)
        c = self.hidden

        def inner() -> nn.Module:
            bottleneck = DarknetBottleneck(c, c, int(c * 0.5), kernel_sizes=(3, 3), shortcut=shortcut, act=act)
            if attn:
                return nn.Sequential(bottleneck, PSABlock(c, 0.5, psa_heads(c), act=act))
            if c3k:
                return C3k(c, c, 2, shortcut=shortcut, act=act)
            return bottleneck

        self.blocks = nn.ModuleList(inner() for _ in range(num_blocks))
