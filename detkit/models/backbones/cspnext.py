"""CSPNeXt, RTMDet's backbone (mmdet 3.3's ``CSPNeXt``, arch ``P5``), parameter for parameter.

A stem of three 3x3 ConvBNActs (stride 2, then 1 and 1; ``64 w / 2``, ``64 w / 2``, ``64 w`` channels),
then four stages ``[3x3 stride-2 conv, (SPP), CSPNeXt layer]`` with ``128, 256, 512, 1024`` x ``w``
channels (``int(c * widen_factor)``, mmdet's rounding) and ``3, 6, 6, 3`` x ``d`` CSPNeXt blocks
(``max(round(n * deepen_factor), 1)``); the first three stages' blocks have shortcuts, the last
stage's do not and it runs SPP (5/9/13 pools, :class:`~detkit.models.layers.SPPFBlock`: three chained
5x5 pools are mmdet's parallel 5/9/13) before its layer. Every CSPNeXt layer has channel attention
(:class:`~detkit.models.cspnext_blocks.CSPNeXtLayer`). SiLU everywhere.

Levels: the stem is level 1 (stride 2), stage ``k`` is level ``k + 1`` (stride ``2**(k + 1)``);
``out_indices`` counts levels as :class:`~detkit.models.backbones.CSPDarknet` does (default 3, 4, 5:
strides 8, 16, 32, mmdet's ``out_indices=(2, 3, 4)``).

Module names against mmdet's: ``stem.{0,1,2}`` = ``stem.{0,1,2}``; ``stages.{k-1}.{j}`` =
``stage{k}.{j}``; in the SPP ``cv1`` / ``cv2`` = ``conv1`` / ``conv2``; in a block's depthwise-separable
conv ``conv2.0`` / ``conv2.1`` = ``conv2.depthwise_conv`` / ``conv2.pointwise_conv``; every other name
(``main_conv``, ``short_conv``, ``final_conv``, ``blocks.N.conv1``, ``attention.fc``) is mmdet's.

Scales (``deepen_factor``, ``widen_factor``; mmdet's RTMDet configs): tiny 0.167 / 0.375, s 0.33 / 0.5,
m 0.67 / 0.75, l 1 / 1, x 1.33 / 1.25. BatchNorm eps / momentum default to PyTorch's (1e-5 / 0.1), what
mmdet's RTMDet configs give (``norm_cfg=dict(type="SyncBN")``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from detkit.models.backbones.freezing import FrozenStagesMixin
from detkit.models.cspnext_blocks import CSPNeXtLayer
from detkit.models.layers import ConvBNAct, SPPFBlock, set_batchnorm

__all__ = ["CSPNEXT_SCALES", "CSPNeXt"]

CSPNEXT_SCALES: dict[str, tuple[float, float]] = {
    "tiny": (0.167, 0.375),
    "s": (0.33, 0.5),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}
# P5: (in, out, blocks, shortcut, spp) per stage, before scaling
_P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
       (512, 1024, 3, False, True))


class CSPNeXt(FrozenStagesMixin):
    """RTMDet's backbone (see the module docstring).

    Args:
        scale: ``tiny`` | ``s`` | ``m`` | ``l`` | ``x`` (sets both factors), or None to give them.
        deepen_factor / widen_factor: block-count and width multipliers.
        expand_ratio: hidden width of each CSPNeXt layer relative to its output.
        channel_attention: channel attention in every CSPNeXt layer.
        out_indices: levels returned (3, 4, 5: strides 8, 16, 32).
        act: activation.
        norm_eps / norm_momentum: BatchNorm settings.
        frozen_stages: stem (1) and stages up to level ``frozen_stages`` get no gradient, BN in eval; -1 none.
        norm_eval: keep every BatchNorm in eval mode while training.

    Attributes:
        out_channels: channels of each returned level; strides: their strides.

    Shapes: ``(B, 3, H, W) -> [(B, out_channels[i], H / strides[i], W / strides[i])]``.
    """

    def __init__(self, scale: str | None = None, *, deepen_factor: float = 1.0, widen_factor: float = 1.0,
                 expand_ratio: float = 0.5, channel_attention: bool = True,
                 out_indices: Sequence[int] = (3, 4, 5), act: str = "silu", norm_eps: float = 1e-5,
                 norm_momentum: float = 0.1, frozen_stages: int = -1, norm_eval: bool = False) -> None:
        super().__init__()
        if scale is not None:
            if scale not in CSPNEXT_SCALES:
                raise ValueError(f"unknown CSPNeXt scale {scale!r}; accepted: {', '.join(CSPNEXT_SCALES)}")
            deepen_factor, widen_factor = CSPNEXT_SCALES[scale]
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(i not in range(1, 6) for i in out_indices):
            raise ValueError(f"out_indices must be levels in 1..5 (the stem is 1), got {list(out_indices)}")
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        stem = int(_P5[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem // 2, 3, 2, act=act),
            ConvBNAct(stem // 2, stem // 2, 3, act=act),
            ConvBNAct(stem // 2, stem, 3, act=act),
        )
        chans = [stem]
        stages = []
        for cin, cout, blocks, shortcut, spp in _P5:
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            layers: list[nn.Module] = [ConvBNAct(cin, cout, 3, 2, act=act)]
            if spp:
                layers.append(SPPFBlock(cout, cout, act=act))
            layers.append(CSPNeXtLayer(cout, cout, max(round(blocks * deepen_factor), 1), expand_ratio=expand_ratio,
                                       shortcut=shortcut, channel_attention=channel_attention, act=act))
            stages.append(nn.Sequential(*layers))
            chans.append(cout)
        self.stages = nn.ModuleList(stages)
        self.out_channels: list[int] = [chans[i - 1] for i in out_indices]
        self.strides: list[int] = [2**i for i in out_indices]
        set_batchnorm(self, norm_eps, norm_momentum)
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        # Levels: the stem is level 1, so frozen_stages 0 freezes nothing (as -1); k >= 1: stem + stages[: k - 1].
        if self.frozen_stages < 1:
            return []
        return [self.stem, *self.stages[: self.frozen_stages - 1]]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = [x] if 1 in self.out_indices else []
        for level, stage in enumerate(self.stages, start=2):
            x = stage(x)
            if level in self.out_indices:
                outs.append(x)
        return outs
