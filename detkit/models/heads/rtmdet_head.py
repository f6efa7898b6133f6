"""RTMDet's head (mmdet 3.3's ``RTMDetSepBNHead``): a decoupled head whose convs are shared across levels.

Per level a class branch and a box branch of ``num_convs`` 3x3 ConvBNActs and 1x1 prediction convs, as
:class:`~detkit.models.heads.DecoupledHead`; with ``share_convs`` every level runs the first level's conv
weights and keeps its own BatchNorm (RTMDet's "shared convs, separate BN") and its own 1x1 predictions.
Box outputs are ltrb distances in strides (``DistanceCoder(normalize=True)``: mmdet's ``exp_on_reg=False``,
``rtm_reg(x) * stride``).

Names against mmdet's: ``cls_convs.{level}.{i}`` = ``cls_convs.{level}.{i}``, ``box_convs`` = ``reg_convs``,
``cls_preds.{level}`` = ``rtm_cls.{level}``, ``box_preds.{level}`` = ``rtm_reg.{level}``; the shared conv
of level ``l > 0`` is the same module as level 0's (its ``conv.weight`` appears under each level's name in
``state_dict``, once in ``parameters()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from detkit.models.heads.decoupled_head import DecoupledHead

__all__ = ["RTMDetSepBNHead"]


class RTMDetSepBNHead(DecoupledHead):
    """:class:`~detkit.models.heads.DecoupledHead` with the branch convs shared across levels.

    Args:
        num_classes: C.
        in_channels: channels per input level (all equal with ``share_convs``), or None to read them.
        share_convs: every level uses level 0's conv weights (its own BatchNorm); False is the plain head.
            ``stem_channels`` is refused with it (RTMDet has no stem).
        The others: as :class:`~detkit.models.heads.DecoupledHead` (RTMDet-s: ``cls_channels=box_channels=128``,
        ``num_convs=2``, ``bias_init="prior_prob"``, ``prior_prob=0.01``, SiLU; no objectness, one branch).

    Shapes: as :class:`~detkit.models.heads.DecoupledHead`.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int] | None = None,
        *,
        prior_generator: Any,
        coder: Any,
        loss: nn.Module | None = None,
        share_convs: bool = True,
        stem_channels: int | None = None,
        cls_channels: int | Sequence[int] | None = None,
        box_channels: int | Sequence[int] | None = None,
        num_convs: int = 2,
        depthwise: bool = False,
        act: str = "silu",
        bias_init: str = "prior_prob",
        prior_prob: float = 0.01,
        norm_eps: float = 1e-5,
        norm_momentum: float = 0.1,
        score_thr: float = 0.001,
        nms_iou_thr: float = 0.65,
        nms_pre: int = 30000,
        max_per_img: int = 300,
        multi_label: bool = True,
    ) -> None:
        self.share_convs = share_convs
        if share_convs and stem_channels is not None:
            raise ValueError("share_convs shares the branch convs of RTMDet's head, which has no stem: "
                             "leave stem_channels out")
        super().__init__(num_classes, in_channels, prior_generator=prior_generator, coder=coder, loss=loss,
                         stem_channels=stem_channels, cls_channels=cls_channels, box_channels=box_channels,
                         num_convs=num_convs, depthwise=depthwise, act=act, bias_init=bias_init,
                         prior_prob=prior_prob, norm_eps=norm_eps, norm_momentum=norm_momentum, score_thr=score_thr,
                         nms_iou_thr=nms_iou_thr, nms_pre=nms_pre, max_per_img=max_per_img, multi_label=multi_label)

    def _build(self, in_channels: list[int]) -> None:
        if self.share_convs and len(set(in_channels)) != 1:
            raise ValueError(f"share_convs needs the same channels on every level, got in_channels={in_channels}")
        super()._build(in_channels)
        if not self.share_convs:
            return
        for branch in self.branches:
            parts = self._branch_modules(branch)
            for name in ("cls_convs", "box_convs"):
                levels = parts[name]
                first = levels[0]
                assert isinstance(first, nn.Sequential)
                for level in list(levels)[1:]:
                    assert isinstance(level, nn.Sequential)
                    for unit, shared in zip(level, first):
                        _share_conv(unit, shared)


def _share_conv(unit: nn.Module, shared: nn.Module) -> None:
    """Make ``unit`` (a ConvBNAct, or a depthwise-separable pair of them) run ``shared``'s conv modules."""
    if isinstance(unit, nn.Sequential):
        assert isinstance(shared, nn.Sequential)  # the same layout on every level
        for inner, inner_shared in zip(unit, shared):
            _share_conv(inner, inner_shared)
        return
    unit.conv = shared.conv
