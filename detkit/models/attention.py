"""Position-sensitive attention of YOLO11 / YOLO26 (Ultralytics' ``Attention``, ``PSABlock``, ``C2PSA``).

:class:`Attention` is multi-head self-attention over every location of a feature map, computed with
1x1 convs (conv + BatchNorm, no activation): one conv gives each head's query, key (``key_dim =
head_dim * attn_ratio`` channels each) and value (``head_dim`` channels), laid out per head as
``[q, k, v]``; the attended values plus a depthwise 3x3 conv of the values (the "position" term)
go through a 1x1 projection. :class:`PSABlock` is attention then a two-conv feed-forward, each with
a residual. :class:`C2PSA` is the CSP wrapper of YOLO11's and YOLO26's backbone layer 10: a 1x1
conv split in two halves, PSA blocks on the second, a 1x1 conv over both.

Module and parameter order follow Ultralytics' (``qkv``, ``proj``, ``pe``; ``attn``, ``ffn``;
``cv1``, ``cv2``, then the blocks, which Ultralytics calls ``m``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detkit.models.layers import ConvBNAct

__all__ = ["Attention", "C2PSA", "PSABlock", "psa_heads"]


def psa_heads(channels: int) -> int:
    """Ultralytics' head count for ``channels``-wide attention: one head per 64 channels, at least one."""
    return max(channels // 64, 1)


class Attention(nn.Module):
    """Multi-head self-attention over the ``H * W`` locations of a map, with a positional conv.

    Args:
        channels: C, the input and output width; ``head_dim = C // num_heads``.
        num_heads: h (must divide C).
        attn_ratio: ``key_dim = int(head_dim * attn_ratio)``, the query / key width per head.

    ``qkv`` is a 1x1 conv to ``h * (2 * key_dim + head_dim)`` channels read per head as
    ``[q (key_dim), k (key_dim), v (head_dim)]``; location ``n`` attends to ``m`` with weight
    ``softmax_m(q_n . k_m / sqrt(key_dim))``; the output is ``proj(attended v + pe(v))`` with ``pe``
    a depthwise 3x3 conv.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, num_heads: int = 8, attn_ratio: float = 0.5) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"Attention: num_heads={num_heads} must divide channels={channels}")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        if self.key_dim < 1:
            raise ValueError(f"Attention: attn_ratio={attn_ratio} leaves no key channels (head_dim {self.head_dim})")
        self.scale = self.key_dim ** -0.5
        self.qkv = ConvBNAct(channels, channels + 2 * self.key_dim * num_heads, 1, act="none")
        self.proj = ConvBNAct(channels, channels, 1, act="none")
        self.pe = ConvBNAct(channels, channels, 3, groups=channels, act="none")

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # (B, h * (2 kd + hd), H, W) -> (B, heads, 2 kd + hd, N) -> q, k (B, heads, kd, N), v (B, heads, hd, N)
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        weights = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # (B, heads, N queries, N keys)
        attended = (v @ weights.transpose(-2, -1)).view(b, c, h, w)  # (B, heads, hd, N) -> (B, C, H, W)
        return self.proj(attended + self.pe(v.reshape(b, c, h, w)))


class PSABlock(nn.Module):
    """Position-sensitive attention block: ``x + attn(x)``, then ``+ ffn(.)`` (residuals with ``shortcut``).

    ``ffn`` is a 1x1 conv to ``2C`` (SiLU), then a 1x1 conv back to C (no activation).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, attn_ratio: float = 0.5, num_heads: int = 4, *, shortcut: bool = True,
                 act: str = "silu") -> None:
        super().__init__()
        self.attn = Attention(channels, num_heads, attn_ratio)
        self.ffn = nn.Sequential(ConvBNAct(channels, 2 * channels, 1, act=act),
                                 ConvBNAct(2 * channels, channels, 1, act="none"))
        self.add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """YOLO11's C2PSA: ``[a, b] = split(cv1(x))``, ``out = cv2(cat[a, blocks(b)])``.

    ``cv1`` is a 1x1 conv to ``2 * hidden`` (``hidden = int(C * expansion)``), ``blocks`` are
    ``num_blocks`` :class:`PSABlock` s of width ``hidden`` with :func:`psa_heads` heads and
    ``attn_ratio`` 0.5, ``cv2`` a 1x1 conv back to C. Input and output widths are equal.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, num_blocks: int = 1, *, expansion: float = 0.5, act: str = "silu") -> None:
        super().__init__()
        self.hidden = int(channels * expansion)
        self.cv1 = ConvBNAct(channels, 2 * self.hidden, 1, act=act)
        self.cv2 = ConvBNAct(2 * self.hidden, channels, 1, act=act)
        self.blocks = nn.Sequential(*(PSABlock(self.hidden, 0.5, psa_heads(self.hidden), act=act)
                                      for _ in range(num_blocks)))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.cv1(x).split(self.hidden, dim=1)  # (B, 2 hidden, H, W) -> 2 x (B, hidden, H, W)
        return self.cv2(torch.cat([a, self.blocks(b)], dim=1))
