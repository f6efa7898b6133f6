"""YOLO training losses as a pipeline of named stages.

``YOLOLossPipeline(preds, priors, prior_strides, num_level_priors, batch) -> dict``::

    decode predictions (detached, fp32)    for prediction-aware assigners (SimOTA, task-aligned)
    -> assign                              assigner.assign(priors, gt_boxes, gt_labels, gt_mask, ...)
    -> ignore crowd regions                priors mostly inside batch["ignore_boxes"] are ignored
    -> sample                              sampler.sample(assign_result) -> pos / neg masks
    -> gather positives                    their predictions, priors, GT boxes and labels
    -> losses                              box (IoU family and/or L1), objectness, classification
    -> statistics                          detached stat_* values for logging

Normalisation happens once, here (the loss modules get ``avg_factor``):

* ``loss_box`` and ``loss_cls``: sum over positives (and over coordinates / classes) divided by
  the number of positives in the batch (at least 1);
* ``loss_obj``: per level, the mean over that level's sampled priors (positives and negatives,
  ignored priors excluded) of the batch, times ``obj_level_weights[level]``, summed over levels
  (YOLOv5's per-level balance). Its size does not depend on the batch size or the input size.

With these conventions the defaults ``loss_weights=dict(cls=0.5/80, obj=1.0, box=0.05)`` are
YOLOv5's hyper-parameters (box 0.05, obj 1.0, cls 0.5 * C/80 on a mean over positives and
classes) for 3 levels at 640 input; YOLOv5 also multiplies the total by the batch size, which
here belongs to the learning rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.analysis import positives_per_gt
from detkit.boxes import aligned_iou, box_area, valid_gt_mask
from detkit.losses import BCEWithLogitsLoss, IoULoss
from detkit.samplers import PseudoSampler, SampleResult

__all__ = ["DEFAULT_LOSS_WEIGHTS", "YOLOLossPipeline"]

DEFAULT_LOSS_WEIGHTS = {"cls": 0.5 / 80, "obj": 1.0, "box": 0.05, "reg": 1.0}
OBJ_TARGETS = ("iou", "one")


@dataclasses.dataclass
class Positives:
    """The sampled positives of a batch, flattened to ``P`` rows.

    ``batch_idx``, ``prior_idx`` ``(P,)`` long; ``preds (P, 5+C)`` fp32 with grad;
    ``priors (P, 4)``; ``strides (P,)``; ``gt_boxes (P, 4)``; ``labels (P,)`` long;
    ``pred_boxes (P, 4)`` the decoded predictions, with grad.
    """

    batch_idx: Tensor
    prior_idx: Tensor
    preds: Tensor
    priors: Tensor
    strides: Tensor
    gt_boxes: Tensor
    labels: Tensor
    pred_boxes: Tensor


class YOLOLossPipeline(nn.Module):
    """Assign, sample, encode and weigh the losses of a YOLO head (see the module docstring).

    Args:
        num_classes: C.
        assigner: any object with ``assign(priors, gt_boxes, gt_labels, gt_mask, *,
            num_level_priors, prior_strides, pred_boxes, pred_scores) -> AssignResult``.
            Assigners with ``uses_predictions = False`` skip computing ``pred_scores``.
        sampler: ``PseudoSampler()`` (default) or ``RandomSampler(...)``.
        coder: box coder (``encode`` / ``decode``, see :mod:`detkit.coders`).
        loss_cls: classification loss on positives, one-hot targets (default BCE).
        loss_obj: objectness loss on sampled priors (default BCE).
        loss_box: box loss on positives; applied to decoded boxes or to encoded targets as its
            ``input_space`` attribute says (``IoULoss`` -> boxes; default CIoU).
        loss_reg: optional second box loss (e.g. ``L1Loss()`` on encoded targets, YOLOX);
            returned as ``loss_reg``.
        loss_weights: multipliers for ``cls``, ``obj``, ``box``, ``reg``; missing keys keep
            :data:`DEFAULT_LOSS_WEIGHTS`.
        obj_level_weights: objectness weight per level (YOLOv5: 4.0, 1.0, 0.4); None for 1.
        obj_target: positives' objectness target: ``"iou"`` (detached IoU of the decoded
            prediction with its GT, clamped at 0) or ``"one"``.
        ignore_iof_thr: priors (not positive) whose area lies more than this fraction inside
            a valid ``batch["ignore_boxes"]`` box are left out of the negatives; None disables.
    """

    def __init__(
        self,
        num_classes: int,
        assigner: Any,
        sampler: Any = None,
        coder: Any = None,
        loss_cls: nn.Module | None = None,
        loss_obj: nn.Module | None = None,
        loss_box: nn.Module | None = None,
        loss_reg: nn.Module | None = None,
        loss_weights: Mapping[str, float] | None = None,
        obj_level_weights: Sequence[float] | None = (4.0, 1.0, 0.4),
        obj_target: str = "iou",
        ignore_iof_thr: float | None = 0.5,
    ) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if coder is None:
            raise ValueError("YOLOLossPipeline needs a box coder, e.g. coder=YOLOCoder()")
        if obj_target not in OBJ_TARGETS:
            raise ValueError(f"unknown obj_target {obj_target!r}; accepted: {', '.join(OBJ_TARGETS)}")
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss_weights keys {sorted(unknown)}; accepted: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.num_classes = num_classes
        self.assigner = assigner
        self.sampler = sampler if sampler is not None else PseudoSampler()
        self.coder = coder
        self.loss_cls = loss_cls if loss_cls is not None else BCEWithLogitsLoss()
        self.loss_obj = loss_obj if loss_obj is not None else BCEWithLogitsLoss()
        self.loss_box = loss_box if loss_box is not None else IoULoss(mode="ciou")
        self.loss_reg = loss_reg
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.obj_level_weights = None if obj_level_weights is None else [float(w) for w in obj_level_weights]
        self.obj_target = obj_target
        self.ignore_iof_thr = ignore_iof_thr

    # ----- entry point ---------------------------------------------------------------------

    def forward(
        self,
        preds: Tensor,
        priors: Tensor,
        prior_strides: Tensor,
        num_level_priors: Sequence[int],
        batch: Mapping[str, Any],
    ) -> dict[str, Tensor]:
        """Losses and statistics of one batch.

        Args:
            preds: ``Tensor[B, N, 5+C]`` raw outputs ``[tx, ty, tw, th, obj, cls...]``.
            priors: ``Tensor[N, 4]`` xyxy; ``prior_strides``: ``Tensor[N]``.
            num_level_priors: priors per level, summing to N.
            batch: ``gt_boxes (B, M, 4)``, ``gt_labels (B, M)``, ``gt_mask (B, M)`` and
                optionally ``ignore_boxes (B, J, 4)``, ``ignore_mask (B, J)``.

        Returns:
            ``loss_cls``, ``loss_obj``, ``loss_box`` (and ``loss_reg``) scalars with grad, and
            detached ``stat_*`` scalars.
        """
        self._check_inputs(preds, priors, num_level_priors)
        preds = preds.float()
        pred_boxes, pred_scores = self.decode_predictions(preds, priors, prior_strides)
        assign_result = self.assigner.assign(
            priors, batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"],
            num_level_priors=list(num_level_priors), prior_strides=prior_strides,
            pred_boxes=pred_boxes, pred_scores=pred_scores,
        )
        assign_result = self.ignore_crowd_regions(assign_result, priors, batch)
        sample = self.sampler.sample(assign_result)
        pos = self.gather_positives(preds, priors, prior_strides, assign_result, sample, batch)
        avg_factor = pos.preds.new_tensor(float(max(pos.preds.shape[0], 1)))
        losses = self.box_losses(pos, avg_factor)
        losses["loss_cls"] = self.classification_loss(pos, avg_factor)
        losses["loss_obj"] = self.objectness_loss(preds, pos, sample, num_level_priors)
        losses.update(self.statistics(assign_result, sample, batch, num_level_priors))
        return losses

    def _check_inputs(self, preds: Tensor, priors: Tensor, num_level_priors: Sequence[int]) -> None:
        if preds.dim() != 3 or preds.shape[-1] != 5 + self.num_classes:
            raise ValueError(f"preds must be (B, N, 5+C) with C={self.num_classes}, got {tuple(preds.shape)}")
        if preds.shape[1] != priors.shape[0] or sum(num_level_priors) != priors.shape[0]:
            raise ValueError(
                f"preds have {preds.shape[1]} priors, priors {priors.shape[0]}, "
                f"num_level_priors sum to {sum(num_level_priors)}; all three must agree"
            )
        if self.obj_level_weights is not None and len(self.obj_level_weights) != len(num_level_priors):
            raise ValueError(
                f"obj_level_weights {self.obj_level_weights} must have one entry per level "
                f"({len(num_level_priors)} levels)"
            )

    # ----- stages --------------------------------------------------------------------------

    @torch.no_grad()
    def decode_predictions(self, preds: Tensor, priors: Tensor, strides: Tensor) -> tuple[Tensor, Tensor | None]:
        """Detached ``pred_boxes (B, N, 4)`` xyxy and ``pred_scores (B, N, C)`` = sigmoid(cls) *
        sigmoid(obj), the latter only for assigners that use predictions."""
        pred_boxes = self.coder.decode(priors, preds[..., :4], strides).float()
        if not getattr(self.assigner, "uses_predictions", True):
            return pred_boxes, None
        pred_scores = torch.sigmoid(preds[..., 5:]) * torch.sigmoid(preds[..., 4:5])
        return pred_boxes, pred_scores

    @torch.no_grad()
    def ignore_crowd_regions(self, assign_result: Any, priors: Tensor, batch: Mapping[str, Any]) -> Any:
        """Adds to ``ignore_mask`` the non-positive priors lying more than ``ignore_iof_thr`` of
        their area inside a valid ignore box; returns a new result (the input is unchanged)."""
        ignore_boxes, ignore_valid = batch.get("ignore_boxes"), batch.get("ignore_mask")
        if self.ignore_iof_thr is None or ignore_boxes is None or ignore_valid is None or not ignore_valid.any():
            return assign_result
        boxes = ignore_boxes.float()
        lt = torch.maximum(priors[None, :, None, :2], boxes[:, None, :, :2])  # (B, N, J, 2)
        rb = torch.minimum(priors[None, :, None, 2:], boxes[:, None, :, 2:])  # (B, N, J, 2)
        inter = (rb - lt).clamp(min=0).prod(-1)  # (B, N, J)
        iof = inter / box_area(priors).clamp(min=1e-6)[None, :, None]
        iof = iof.masked_fill(~ignore_valid.bool()[:, None, :], 0.0)
        crowd = (iof.amax(dim=2) > self.ignore_iof_thr) & ~assign_result.pos_mask
        return dataclasses.replace(assign_result, ignore_mask=assign_result.ignore_mask | crowd)

    def gather_positives(
        self, preds: Tensor, priors: Tensor, strides: Tensor, assign_result: Any, sample: SampleResult,
        batch: Mapping[str, Any],
    ) -> Positives:
        """The sampled positives' predictions (with grad) and their decoded boxes, priors, GT
        boxes and labels."""
        batch_idx, prior_idx = sample.pos_mask.nonzero(as_tuple=True)  # (P,), (P,)
        gt_idx = assign_result.gt_index[batch_idx, prior_idx]
        pos_preds = preds[batch_idx, prior_idx]  # (P, 5+C)
        return Positives(
            batch_idx=batch_idx,
            prior_idx=prior_idx,
            preds=pos_preds,
            priors=priors[prior_idx],
            strides=strides[prior_idx],
            gt_boxes=batch["gt_boxes"][batch_idx, gt_idx].float(),
            labels=assign_result.labels[batch_idx, prior_idx],
            pred_boxes=self.coder.decode(priors[prior_idx], pos_preds[:, :4], strides[prior_idx]).float(),
        )

    def _regression(self, loss: nn.Module, pos: Positives, avg_factor: Tensor) -> Tensor:
        if getattr(loss, "input_space", "boxes") == "boxes":
            return loss(pos.pred_boxes, pos.gt_boxes, avg_factor=avg_factor, reduction_override="mean")
        with torch.no_grad():
            targets = self.coder.encode(pos.priors, pos.gt_boxes, pos.strides).float()
        return loss(pos.preds[:, :4], targets, avg_factor=avg_factor, reduction_override="mean")

    def box_losses(self, pos: Positives, avg_factor: Tensor) -> dict[str, Tensor]:
        """``loss_box`` (and ``loss_reg``) on the positives; 0 with grad when there are none."""
        out = {"loss_box": self.loss_weights["box"] * self._regression(self.loss_box, pos, avg_factor)}
        if self.loss_reg is not None:
            out["loss_reg"] = self.loss_weights["reg"] * self._regression(self.loss_reg, pos, avg_factor)
        return out

    def classification_loss(self, pos: Positives, avg_factor: Tensor) -> Tensor:
        """``loss_cls`` on the positives with one-hot targets (smoothing is the loss's option)."""
        target = F.one_hot(pos.labels.clamp(min=0), self.num_classes).float()  # (P, C)
        loss = self.loss_cls(pos.preds[:, 5:], target, avg_factor=avg_factor, reduction_override="mean")
        return self.loss_weights["cls"] * loss

    def objectness_loss(
        self, preds: Tensor, pos: Positives, sample: SampleResult, num_level_priors: Sequence[int]
    ) -> Tensor:
        """``loss_obj``: BCE-style loss on sampled priors, per-level mean times level weight."""
        target = torch.zeros_like(preds[..., 4])  # (B, N)
        if pos.preds.shape[0]:
            if self.obj_target == "iou":
                value = aligned_iou(pos.pred_boxes.detach(), pos.gt_boxes).clamp(min=0)
            else:
                value = torch.ones_like(pos.preds[:, 4])
            target[pos.batch_idx, pos.prior_idx] = value
        valid = (sample.pos_mask | sample.neg_mask).float()  # (B, N)
        counts = torch.tensor(list(num_level_priors), device=preds.device)
        level_valid = torch.stack([v.sum() for v in valid.split(list(num_level_priors), dim=1)])  # (L,)
        level_w = preds.new_tensor(self.obj_level_weights or [1.0] * len(num_level_priors))
        per_prior = (level_w / level_valid.clamp(min=1)).repeat_interleave(counts)  # (N,)
        weight = valid * per_prior[None, :]
        loss = self.loss_obj(preds[..., 4], target, weight=weight, reduction_override="sum")
        return self.loss_weights["obj"] * loss

    @torch.no_grad()
    def statistics(
        self, assign_result: Any, sample: SampleResult, batch: Mapping[str, Any], num_level_priors: Sequence[int]
    ) -> dict[str, Tensor]:
        """Detached ``stat_*``: positives per valid GT, GTs without a positive, valid GT count,
        mean assigned IoU of positives, and positives per level per image."""
        boxes = batch["gt_boxes"]
        gt_mask = valid_gt_mask(boxes, batch["gt_mask"])  # valid GTs as the assigners see them
        counts = positives_per_gt(assign_result.gt_index, sample.pos_mask, gt_mask.shape[1])  # (B, M)
        num_gt = gt_mask.sum()
        valid_counts = counts[gt_mask].float()
        pos_iou = assign_result.iou[sample.pos_mask].float()
        zero = valid_counts.new_zeros(())
        stats = {
            "stat_num_gt": num_gt.float(),
            "stat_pos_per_gt": valid_counts.mean() if valid_counts.numel() else zero,
            "stat_gt_no_pos": (valid_counts == 0).sum().float(),
            "stat_pos_iou": pos_iou.mean() if pos_iou.numel() else zero,
        }
        per_level = sample.pos_mask.split(list(num_level_priors), dim=1)
        for i, level in enumerate(per_level):
            stats[f"stat_pos_level{i}"] = level.sum().float() / max(gt_mask.shape[0], 1)
        return stats

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, assigner={self.assigner!r}, sampler={self.sampler!r}, "
            f"coder={self.coder!r}, loss_weights={self.loss_weights}, "
            f"obj_level_weights={self.obj_level_weights}, obj_target={self.obj_target!r}, "
            f"ignore_iof_thr={self.ignore_iof_thr}"
        )
