"""YOLO detection head: per level a 3x3 ConvBNAct then a 1x1 conv to ``A*(5+C)`` raw outputs.

Per anchor the channels are ``[tx, ty, tw, th, obj, cls_0 .. cls_{C-1}]``; ``A`` is the prior
generator's ``num_base_priors`` (3 for YOLO anchors, 1 for anchor-free points). The head owns
the parts a config passes in: prior generator, box coder, assigner, sampler and losses; its
training path is ``flatten -> priors -> YOLOLossPipeline`` and its inference path is
``flatten -> priors -> postprocess`` (score filter, decode, NMS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detkit.models.heads.yolo_loss import YOLOLossPipeline
from detkit.models.layers import ConvBNAct
from detkit.models.necks.base import BindableModule
from detkit.models.postprocess import class_scores, postprocess

__all__ = ["YOLOHead"]


class YOLOHead(BindableModule):
    """YOLOv3/v4 head.

    Args:
        num_classes: C.
        in_channels: channels per input level, or None to read them from the neck.
        prior_generator: e.g. ``YOLOAnchorGenerator`` / ``PointGenerator`` (one level per input).
        coder: box coder (``YOLOCoder(scale_x_y=...)`` holds YOLOv4's grid sensitivity).
        assigner, sampler, loss_cls, loss_obj, loss_box, loss_reg: handed to
            ``YOLOLossPipeline`` (None losses / sampler take its defaults). Without an assigner
            the head is inference-only.
        loss_weights, obj_level_weights, obj_target, ignore_iof_thr: ``YOLOLossPipeline``
            options, same defaults.
        feat_channels: channels of the 3x3 conv per level: an int, a list, or None for twice
            the input channels (YOLOv3/v4).
        act: activation of the 3x3 conv.
        prior_prob: initial objectness and class probability (biases set to ``logit(p)``).
        score_thr, nms_iou_thr, nms_pre, max_per_img, multi_label: inference post-processing
            (see :func:`detkit.models.postprocess.postprocess_single`).

    Shapes: ``forward([(B, in_i, H_i, W_i)]) -> [(B, A*(5+C), H_i, W_i)]``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int] | None = None,
        *,
        prior_generator: Any,
        coder: Any,
        assigner: Any = None,
        sampler: Any = None,
        loss_cls: Any = None,
        loss_obj: Any = None,
        loss_box: Any = None,
        loss_reg: Any = None,
        loss_weights: Mapping[str, float] | None = None,
        obj_level_weights: Sequence[float] | None = (4.0, 1.0, 0.4),
        obj_target: str = "iou",
        ignore_iof_thr: float | None = 0.5,
        feat_channels: int | Sequence[int] | None = None,
        act: str = "leaky",
        prior_prob: float = 0.01,
        score_thr: float = 0.001,
        nms_iou_thr: float = 0.65,
        nms_pre: int = 30000,
        max_per_img: int = 300,
        multi_label: bool = True,
    ) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.num_classes = num_classes
        self.prior_generator = prior_generator
        self.coder = coder
        self.num_base_priors = int(prior_generator.num_base_priors)
        self.feat_channels = feat_channels
        self.act = act
        self.prior_prob = prior_prob
        self.test_cfg = dict(score_thr=score_thr, nms_iou_thr=nms_iou_thr, nms_pre=nms_pre,
                             max_per_img=max_per_img, multi_label=multi_label)
        self.loss_pipeline = self._build_loss_pipeline(
            assigner=assigner, sampler=sampler, loss_cls=loss_cls, loss_obj=loss_obj,
            loss_box=loss_box, loss_reg=loss_reg, loss_weights=loss_weights,
            obj_level_weights=obj_level_weights, obj_target=obj_target,
            ignore_iof_thr=ignore_iof_thr,
        )
        if in_channels is not None:
            self.bind(in_channels)

    def _build_loss_pipeline(self, **parts: Any) -> nn.Module | None:
        if parts["assigner"] is None:  # an inference-only head
            return None
        return YOLOLossPipeline(num_classes=self.num_classes, coder=self.coder, **parts)

    @property
    def num_outputs(self) -> int:
        """Channels per prior: ``5 + C``."""
        return 5 + self.num_classes

    @property
    def assigner(self) -> Any:
        """The loss pipeline's assigner; setting it swaps the assigner used from then on."""
        return None if self.loss_pipeline is None else self.loss_pipeline.assigner

    @assigner.setter
    def assigner(self, value: Any) -> None:
        if self.loss_pipeline is None:
            raise ValueError("this head was built without an assigner (inference only)")
        self.loss_pipeline.assigner = value

    def _build(self, in_channels: list[int]) -> None:
        levels = len(in_channels)
        strides = getattr(self.prior_generator, "strides", None)
        if strides is not None and len(strides) != levels:
            raise ValueError(
                f"YOLOHead gets {levels} levels (in_channels={in_channels}) but the prior "
                f"generator has {len(strides)} strides {list(strides)}"
            )
        feat = self.feat_channels
        if feat is None:
            feats = [2 * c for c in in_channels]
        elif isinstance(feat, int):
            feats = [feat] * levels
        else:
            feats = list(feat)
            if len(feats) != levels:
                raise ValueError(f"feat_channels {feats} must have one entry per level ({levels})")
        out = self.num_base_priors * self.num_outputs
        self.convs = nn.ModuleList(
            ConvBNAct(c, f, 3, act=self.act) for c, f in zip(in_channels, feats)
        )
        self.preds = nn.ModuleList(nn.Conv2d(f, out, 1) for f in feats)
        self.out_channels = [out] * levels
        self._init_biases()

    def _init_biases(self) -> None:
        bias_value = -math.log((1 - self.prior_prob) / self.prior_prob)
        for conv in self.preds:
            nn.init.normal_(conv.weight, std=0.01)
            bias = conv.bias.detach().view(self.num_base_priors, self.num_outputs)  # (A*(5+C),) -> (A, 5+C)
            bias.zero_()
            bias[:, 4:] = bias_value  # objectness and classes start near prior_prob

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_bound()
        if len(feats) != len(self.preds):
            raise ValueError(f"YOLOHead built for {len(self.preds)} levels, got {len(feats)}")
        return [pred(conv(x)) for x, conv, pred in zip(feats, self.convs, self.preds)]

    def flatten(self, raw: Sequence[Tensor]) -> Tensor:
        """Raw maps ``[(B, A*(5+C), H_i, W_i)]`` -> ``(B, N, 5+C)``, N = sum of ``H_i*W_i*A``."""
        out = []
        a, k = self.num_base_priors, self.num_outputs
        for x in raw:
            b, _, h, w = x.shape
            x = x.view(b, a, k, h, w)  # (B, A*(5+C), H, W) -> (B, A, 5+C, H, W)
            x = x.permute(0, 3, 4, 1, 2)  # (B, A, 5+C, H, W) -> (B, H, W, A, 5+C)
            out.append(x.reshape(b, h * w * a, k))  # (B, H, W, A, 5+C) -> (B, H*W*A, 5+C)
        return torch.cat(out, dim=1)

    def priors(self, raw: Sequence[Tensor]) -> tuple[Tensor, Tensor, list[int]]:
        """``(priors (N, 4), prior_strides (N,), num_level_priors)`` for these raw maps."""
        sizes = [tuple(x.shape[-2:]) for x in raw]
        return self.prior_generator.grid_priors(sizes, device=raw[0].device)

    def decode_outputs(self, raw: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Every prior's decoded box and class scores, unfiltered (the exported outputs).

        Args:
            raw: ``[(B, A*(5+C), H_i, W_i)]`` raw maps.

        Returns:
            ``boxes (B, N, 4)`` xyxy input pixels, ``scores (B, N, C)`` = ``obj * cls``, fp32.
        """
        preds = self.flatten(raw)
        priors, strides, _ = self.priors(raw)
        return self.coder.decode(priors, preds[..., :4], strides), class_scores(preds)

    def loss(self, raw: Sequence[Tensor], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Training losses: ``loss_cls``, ``loss_obj``, ``loss_box`` and detached ``stat_*``."""
        if self.loss_pipeline is None:
            raise ValueError("this head was built without an assigner and cannot compute losses")
        preds = self.flatten(raw)
        priors, strides, num_level_priors = self.priors(raw)
        return self.loss_pipeline(preds, priors, strides, num_level_priors, batch)

    @torch.no_grad()
    def predict(self, raw: Sequence[Tensor], batch: Mapping[str, Any] | None = None,
                **overrides: Any) -> list[dict[str, Tensor]]:
        """Detections per image in network-input pixels: ``dict(boxes (K, 4), scores, labels)``.

        ``overrides`` replace post-processing settings for this call (e.g. ``score_thr=0.25``).
        ``batch`` is unused here; :class:`Detector` maps boxes back to the original images.
        """
        unknown = set(overrides) - set(self.test_cfg)
        if unknown:
            raise ValueError(f"unknown post-processing options {sorted(unknown)}; "
                             f"accepted: {sorted(self.test_cfg)}")
        preds = self.flatten(raw)
        priors, strides, _ = self.priors(raw)
        return postprocess(preds, priors, strides, self.coder, **{**self.test_cfg, **overrides})
