"""YOLO detection head: per level a 3x3 ConvBNAct then a 1x1 conv to ``A*(5+C)`` raw outputs (YOLOv3/v4), or
the 1x1 conv alone (``feat_channels=0``: YOLOv5's ``Detect``).

Per anchor the channels are ``[tx, ty, tw, th, obj, cls_0 .. cls_{C-1}]``; ``A`` is the prior
generator's ``num_base_priors`` (3 for YOLO anchors, 1 for anchor-free points). The head owns the
prior generator and the box coder; its loss pipeline comes in whole from the config
(``loss=L(YOLOLossPipeline)(assigner=..., ...)``). Training: ``flatten -> loss pipeline``;
inference: ``flatten -> postprocess`` (score filter, decode, NMS); see :class:`DenseHead`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from detkit.models.heads.dense_head import DenseHead
from detkit.models.layers import ConvBNAct

__all__ = ["YOLOHead"]


class YOLOHead(DenseHead):
    """YOLOv3/v4/v5 head (coupled: one conv predicts box, objectness and classes).

    Args:
        num_classes: C.
        in_channels: channels per input level, or None to read them from the neck.
        prior_generator: e.g. ``YOLOAnchorGenerator`` / ``PointGenerator`` (one level per input).
        coder: box coder (``YOLOCoder(scale_x_y=...)`` holds YOLOv4's grid sensitivity); 4 box
            parameters per prior.
        loss: the loss pipeline (``YOLOLossPipeline``), or None for an inference-only head.
        feat_channels: channels of the 3x3 conv per level: an int, a list, or None for twice
            the input channels (YOLOv3/v4); 0 for no 3x3 conv, the 1x1 prediction conv on the
            input itself (YOLOv5).
        act: activation of the 3x3 conv.
        prior_prob: initial objectness and class probability (biases set to ``logit(p)``).
        score_thr: least class score of a detection.
        nms_iou_thr: IoU above which NMS drops the lower-scored box of a class.
        nms_pre: candidates kept (top scores) before NMS.
        max_per_img: detections kept per image.
        multi_label: a prior may give one detection per class above ``score_thr`` (else its best class only).
        nms: False skips NMS (post-processing as in :class:`DenseHead`).

    Shapes: ``forward([(B, in_i, H_i, W_i)]) -> [(B, A*(5+C), H_i, W_i)]``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int] | None = None,
        *,
        prior_generator: Any,
        coder: Any,
        loss: nn.Module | None = None,
        feat_channels: int | Sequence[int] | None = None,
        act: str = "leaky",
        prior_prob: float = 0.01,
        score_thr: float = 0.001,
        nms_iou_thr: float = 0.65,
        nms_pre: int = 30000,
        max_per_img: int = 300,
        multi_label: bool = True,
        nms: bool = True,
    ) -> None:
        super().__init__(num_classes, prior_generator=prior_generator, coder=coder, loss=loss,
                         score_thr=score_thr, nms_iou_thr=nms_iou_thr, nms_pre=nms_pre,
                         max_per_img=max_per_img, multi_label=multi_label, nms=nms)
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        if getattr(coder, "num_params", 4) != 4:
            raise ValueError(f"YOLOHead predicts 4 box parameters per prior; {coder!r} needs {coder.num_params}")
        self.feat_channels = feat_channels
        self.act = act
        self.prior_prob = prior_prob
        if in_channels is not None:
            self.bind(in_channels)

    @property
    def num_outputs(self) -> int:
        """Channels per prior: ``5 + C``."""
        return 5 + self.num_classes

    @property
    def has_objectness(self) -> bool:
        return True

    def _build(self, in_channels: list[int]) -> None:
        self._check_levels(in_channels)
        levels = len(in_channels)
        feat = self.feat_channels
        if feat is None:
            feats = [2 * c for c in in_channels]
        elif isinstance(feat, int):
            feats = [feat] * levels
        else:
            feats = list(feat)
            if len(feats) != levels:
                raise ValueError(f"feat_channels {feats} must have one entry per level ({levels})")
        if any(f < 0 for f in feats) or (0 in feats and any(feats)):
            raise ValueError(f"feat_channels {feats} must be positive, or 0 on every level (no 3x3 conv)")
        out = self.num_base_priors * self.num_outputs
        if feats[0] == 0:  # YOLOv5's Detect: the prediction conv on the neck's output
            feats = list(in_channels)
            self.convs = nn.ModuleList(nn.Identity() for _ in in_channels)
        else:
            self.convs = nn.ModuleList(ConvBNAct(c, f, 3, act=self.act) for c, f in zip(in_channels, feats))
        self.preds = nn.ModuleList(nn.Conv2d(f, out, 1) for f in feats)
        self.out_channels = [out] * levels
        self._init_biases()

    def _init_biases(self) -> None:
        bias_value = -math.log((1 - self.prior_prob) / self.prior_prob)
        for conv in self.preds:
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            nn.init.normal_(conv.weight, std=0.01)
            bias = conv.bias.detach().view(self.num_base_priors, self.num_outputs)  # (A*(5+C),) -> (A, 5+C)
            bias.zero_()
            bias[:, 4:] = bias_value  # objectness and classes start near prior_prob

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_bound()
        if len(feats) != len(self.preds):
            raise ValueError(f"YOLOHead built for {len(self.preds)} levels, got {len(feats)}")
        return [pred(conv(x)) for x, conv, pred in zip(feats, self.convs, self.preds)]

    def split_level(self, x: Tensor, branch: str = "one2many") -> tuple[Tensor, Tensor, Tensor]:
        """``(B, A*(5+C), H, W)`` -> ``box (B, H*W*A, 4)``, ``cls (B, H*W*A, C)``, ``obj (B, H*W*A)``."""
        b, _, h, w = x.shape
        a, k = self.num_base_priors, self.num_outputs
        x = x.view(b, a, k, h, w)  # (B, A*(5+C), H, W) -> (B, A, 5+C, H, W)
        x = x.permute(0, 3, 4, 1, 2).reshape(b, h * w * a, k)  # -> (B, H, W, A, 5+C) -> (B, H*W*A, 5+C)
        return x[..., :4], x[..., 5:], x[..., 4]
