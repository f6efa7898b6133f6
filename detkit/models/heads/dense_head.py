"""What both head families share: priors, the loss pipeline, decoding and post-processing.

A dense head predicts, at every prior, box parameters, class logits and (optionally) objectness.
Subclasses build the layers (``_build``), run them (``forward -> raw maps``, one tensor per level)
and say how a level's raw map splits into named predictions (``split_level``); everything after
that is here::

    raw maps -> flatten -> DensePredictions -> loss pipeline (training)
                                            -> decode + score filter + NMS (inference)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detkit.anchors import PriorGrid
from detkit.models.heads.predictions import DensePredictions
from detkit.models.necks.base import BindableModule
from detkit.models.postprocess import (
    check_postprocess_args,
    class_scores,
    postprocess,
    postprocess_setting_problem,
)

__all__ = ["DenseHead"]


class DenseHead(BindableModule):
    """Base of :class:`YOLOHead` and :class:`DecoupledHead`.

    Args:
        num_classes: C.
        prior_generator: ``YOLOAnchorGenerator`` / ``PointGenerator`` (one level per input).
        coder: box coder; ``coder.num_params`` box parameters are predicted per prior.
        loss: the loss pipeline (``YOLOLossPipeline(assigner=..., ...)``), or None for an
            inference-only head.
        score_thr: least class score of a detection.
        nms_iou_thr: IoU above which NMS drops the lower-scored box of a class.
        nms_pre: candidates kept (top scores) before NMS.
        max_per_img: detections kept per image.
        multi_label: a prior may give one detection per class above ``score_thr`` (else its best class only).
        nms: False skips NMS (inference post-processing: :func:`detkit.models.postprocess.postprocess_single`).
    """

    #: Prediction branches a head has; the first is the one-to-many branch every head has.
    branches: tuple[str, ...] = ("one2many",)
    #: Branches :meth:`keep_branches_` removed (an inference copy's).
    dropped_branches: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int,
        *,
        prior_generator: Any,
        coder: Any,
        loss: nn.Module | None = None,
        score_thr: float = 0.001,
        nms_iou_thr: float = 0.65,
        nms_pre: int = 30000,
        max_per_img: int = 300,
        multi_label: bool = True,
        nms: bool = True,
    ) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.prior_generator = prior_generator
        self.coder = coder
        self.num_base_priors = int(prior_generator.num_base_priors)
        self.loss_pipeline = loss
        self.test_cfg = dict(score_thr=score_thr, nms_iou_thr=nms_iou_thr, nms_pre=nms_pre,
                             max_per_img=max_per_img, multi_label=multi_label, nms=nms)
        self.branch = "one2many"  # the branch inference (predict, decode_outputs, export) reads
        check_postprocess_args(score_thr, nms_iou_thr, nms_pre, max_per_img)  # when built, not at the first eval

    @classmethod
    def check_config_arguments(cls, arguments: Mapping[str, Any], key: str) -> None:
        """Config-time check of the post-processing settings (run by :func:`detkit.config_checks.check_call_arguments`
        when a config loads, before a tool creates any output): ``score_thr`` in [0, 1), ``nms_iou_thr`` in
        (0, 1], ``nms_pre`` and ``max_per_img`` positive (NaN refused), by
        :func:`detkit.models.postprocess.check_postprocess_args`.

        Raises:
            SettingError: naming ``<key>.<argument>``.
        """
        from detkit.schema import SettingError, default_of

        defaults = {name: default_of(cls, name) for name in ("score_thr", "nms_iou_thr", "nms_pre", "max_per_img")}
        for name, value in defaults.items():
            value = arguments.get(name, value)
            if not isinstance(value, (int, float)):
                continue  # a wrong type is the annotation check's to report
            problem = postprocess_setting_problem(name, value)
            if problem:
                raise SettingError(f"{key}.{name}" if key else name, problem)

    # ----- what subclasses define ------------------------------------------------------------

    @property
    def has_objectness(self) -> bool:
        raise NotImplementedError

    def split_level(self, x: Tensor, branch: str = "one2many") -> tuple[Tensor, Tensor, Tensor | None]:
        """One level's raw map ``(B, K, H, W)`` -> ``box (B, H*W*A, R)``, ``cls (B, H*W*A, C)``,
        ``obj (B, H*W*A)`` or None of ``branch``, rows in the prior generator's order."""
        raise NotImplementedError

    # ----- shared ------------------------------------------------------------------------------

    @property
    def assigner(self) -> Any:
        """The loss pipeline's assigner; setting it swaps the assigner used from then on (a rule the
        pipeline's ``cls_target`` cannot train with is refused: ``check_config_arguments``)."""
        return None if self.loss_pipeline is None else self.loss_pipeline.assigner

    @assigner.setter
    def assigner(self, value: Any) -> None:
        if self.loss_pipeline is None:
            raise ValueError("this head was built without a loss pipeline (inference only)")
        check = getattr(type(self.loss_pipeline), "check_config_arguments", None)
        if check is not None:
            check({"cls_target": getattr(self.loss_pipeline, "cls_target", None), "assigner": value}, "head.loss")
        self.loss_pipeline.assigner = value

    def _check_levels(self, in_channels: list[int]) -> None:
        strides = getattr(self.prior_generator, "strides", None)
        if strides is not None and len(strides) != len(in_channels):
            raise ValueError(
                f"{type(self).__name__} gets {len(in_channels)} levels (in_channels={in_channels}) but the "
                f"prior generator has {len(strides)} strides {list(strides)}"
            )

    def priors(self, raw: Sequence[Tensor]) -> PriorGrid:
        """The :class:`~detkit.anchors.PriorGrid` of these raw maps (unpacks as ``priors (N, 4), prior_strides
        (N,), num_level_priors``)."""
        sizes = [tuple(x.shape[-2:]) for x in raw]
        grid: PriorGrid = self.prior_generator.grid_priors(sizes, device=raw[0].device)
        return grid

    def _check_branch(self, branch: str) -> None:
        if branch in self.dropped_branches:
            raise ValueError(f"this {type(self).__name__} is an inference copy whose {branch!r} branch was dropped "
                             f"(detkit.models.fuse.fused_copy keeps head.branch only; prune_branches=False keeps all)")
        if branch not in self.branches:
            raise ValueError(f"{type(self).__name__} has no {branch!r} branch; it has {', '.join(self.branches)}")

    def keep_branches_(self, keep: Sequence[str]) -> None:
        """Drop the layers of every branch not in ``keep``, in place: an inference copy's forward then
        computes only the branches read (:func:`detkit.models.fuse.fused_copy` keeps :attr:`branch`).

        The raw maps hold the kept branches only (``out_channels`` shrinks); reading a dropped branch
        (``flatten``, ``predict(branch=...)``, the losses of a dual-branch head) raises ValueError. A head
        with one branch has nothing to drop.

        Raises:
            ValueError: ``keep`` is empty, names a branch the head does not have, or leaves out
                :attr:`branch` (the branch inference reads).
        """
        for name in keep:
            self._check_branch(name)
        if self.branch not in keep:
            raise ValueError(f"keep_branches_({list(keep)}) would drop {self.branch!r}, the branch inference reads "
                             f"(head.branch)")
        kept = tuple(b for b in self.branches if b in keep)
        if kept != self.branches:
            dropped = tuple(b for b in self.branches if b not in kept)
            self._drop_branches(kept)
            self.dropped_branches += dropped

    def _drop_branches(self, kept: tuple[str, ...]) -> None:
        """Subclasses with more than one branch: remove the others' layers, set ``branches = kept``."""
        raise NotImplementedError(f"{type(self).__name__} cannot drop branches")

    def flatten(self, raw: Sequence[Tensor], branch: str = "one2many") -> DensePredictions:
        """Raw maps (one per level) -> named predictions of ``branch`` over all ``N`` priors,
        levels concatenated."""
        self._check_branch(branch)
        box, cls, obj = zip(*(self.split_level(x, branch) for x in raw))
        grid = self.priors(raw)
        priors, strides, counts = grid.boxes, grid.strides, grid.num_level_priors
        return DensePredictions(
            box=torch.cat(box, dim=1), cls=torch.cat(cls, dim=1),
            obj=torch.cat(obj, dim=1) if self.has_objectness else None,
            priors=priors, strides=strides, num_level_priors=list(counts), coder=self.coder, grid=grid,
        )

    def forward_channels(self, feats: Sequence[Tensor], branch: str = "one2many") -> tuple[Tensor, Tensor,
                                                                                          Tensor | None]:
        """``branch``'s predictions from the neck's features, channel-first: ``box (B, R, N)``, ``cls (B, C, N)``,
        ``obj (B, N)`` or None. This default transposes :meth:`flatten`'s; a head that joins several prediction
        maps per level overrides it to keep them apart."""
        preds = self.flatten(self(feats), branch)
        return preds.box.transpose(1, 2), preds.cls.transpose(1, 2), preds.obj

    def decode_outputs(self, raw: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Every prior's decoded box and class scores, unfiltered.

        Returns:
            ``boxes (B, N, 4)`` xyxy input pixels, ``scores (B, N, C)`` (``obj * cls`` with
            objectness, else ``cls`` probabilities), fp32.
        """
        preds = self.flatten(raw, self.branch)
        return preds.decode(), preds.scores()

    def decode_channels(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """:meth:`decode_outputs` from the neck's features, channel-first (an exported graph's outputs without
        NMS): the predictions are flattened and decoded with their channels on dim 1 (:meth:`forward_channels`,
        the coder's ``decode_channels`` where it has one), so the graph has no transposes. The values equal
        :meth:`decode_outputs`' within fp32 rounding.

        Returns:
            ``boxes (B, 4, N)`` xyxy input pixels, ``scores (B, C, N)``, fp32.
        """
        box, cls, obj = self.forward_channels(feats, self.branch)
        grid = self.priors(feats)  # the raw maps' sizes: one prior set per feature location
        decode = getattr(self.coder, "decode_channels", None)
        if decode is not None:
            boxes = decode(grid.boxes, box, grid.strides)
        else:  # a coder without a channel-first form decodes priors-first, then the result is transposed
            boxes = self.coder.decode(grid.boxes, box.transpose(1, 2), grid.strides).transpose(1, 2)
        return boxes.float(), class_scores(cls, obj, class_dim=1)

    def loss(self, raw: Sequence[Tensor], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Training losses (``loss_*``) and detached ``stat_*`` from the loss pipeline."""
        if self.loss_pipeline is None:
            raise ValueError("this head was built without a loss pipeline and cannot compute losses")
        losses: dict[str, Tensor] = self.loss_pipeline(self.flatten(raw), batch)
        return losses

    @torch.no_grad()
    def predict(self, raw: Sequence[Tensor], batch: Mapping[str, Any] | None = None,
                **overrides: Any) -> list[dict[str, Tensor]]:
        """Detections per image in network-input pixels: ``dict(boxes (K, 4), scores, labels)``.

        ``overrides`` replace post-processing settings for this call (e.g. ``score_thr=0.25``,
        ``nms=False``) or the branch read (``branch="one2one"``). ``batch`` is unused here;
        :class:`Detector` maps boxes back to the original images.
        """
        unknown = set(overrides) - set(self.test_cfg) - {"branch"}
        if unknown:
            raise ValueError(f"unknown post-processing options {sorted(unknown)}; "
                             f"accepted: {sorted([*self.test_cfg, 'branch'])}")
        branch = overrides.pop("branch", self.branch)
        return postprocess(self.flatten(raw, branch), **{**self.test_cfg, **overrides})
