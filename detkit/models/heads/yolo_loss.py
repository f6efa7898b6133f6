"""The training losses of every dense head, as a pipeline of named stages.

``YOLOLossPipeline(preds: DensePredictions, batch) -> dict``; both head families
(:class:`~detkit.models.heads.YOLOHead`, :class:`~detkit.models.heads.DecoupledHead`) hand it
named, flattened predictions (box parameters, class logits, objectness or None)::

    decode predictions (detached, fp32)    for prediction-aware assigners (SimOTA, task-aligned, DSL)
    -> assign                              assigner.assign(priors, gt_boxes, gt_labels, gt_mask, ...)
    -> ignore crowd regions                priors mostly inside batch["ignore_boxes"] are ignored
    -> sample                              sampler.sample(assign_result) -> pos / neg masks
    -> gather positives                    their predictions, priors, GT boxes and labels
    -> targets                             classification target per positive (cls_target)
    -> losses                              box (IoU family, DFL, L1), classification, objectness
    -> statistics                          detached stat_* values for logging

Targets (``cls_target``): the classification target of a positive at its GT's class is 1
(``"onehot"``), the IoU of its decoded (detached) prediction with the GT (``"iou"``, YOLOX's
IoU-aware target), the assigner's ``score_target`` (``"assigner"``: TOOD / YOLOv8's normalised
alignment metric, RTMDet's IoU), or the rule's ``score_target`` when its result has one and 1
otherwise (``"auto"``: the YOLOv8 / RTMDet configs, so that swapping in a box-only rule such as
ATSS needs no second override); every other class's target is 0. ``"assigner"`` with a rule that
says it sets no ``score_target`` (:func:`rule_sets_score_target`) is refused when the config loads
(:meth:`YOLOLossPipeline.check_config_arguments`) and when the pipeline is built.

Normalisation happens once, here (the loss modules get ``avg_factor``):

* with objectness (YOLOv3-v5, YOLOX) ``loss_cls`` covers the positives only, divided by their
  number (at least 1); ``loss_obj`` covers every sampled prior: per level the mean over that
  level's sampled priors times ``obj_level_weights[level]`` (``obj_normalize="level_mean"``,
  YOLOv5's balance), or the sum over all of them divided by the number of positives
  (``"num_pos"``, YOLOX);
* without objectness (YOLOv8, TOOD, RTMDet) ``loss_cls`` covers every sampled (non-ignored) prior,
  negatives with target 0, divided by ``max(sum of the targets, 1)``;
* box losses (IoU family, DFL, L1) cover the positives, each weighted by 1 and divided by their
  number (``box_weight="uniform"``), or weighted by its classification target and divided by the
  sum of the targets (``"cls_target"``, YOLOv8 / RTMDet);
* ``pos_normalize="level_sum"`` (YOLOv5) divides the box terms and, with objectness, the class term
  per level instead: each level's positives by their own number, the levels' means summed (a level
  with few positives weighs as much as one with many); ``"batch"`` (default) divides by all of them.

Where a regression loss applies (its ``input_space``): decoded boxes (``"boxes"``: the IoU family), encoded
targets (``"deltas"``: YOLOX's L1), DFL bin logits (``"distribution"``), or ltrb distances from the prior's
centre in pixels divided by the input's width (l, r) and height (t, b), mean over the 4 sides
(``"image_ltrb"``: YOLO26's DFL-free L1, :class:`~detkit.losses.ImageL1Loss`, Ultralytics' ``l1_loss``).

With ``pos_normalize="level_sum"`` and ``obj_target="ciou"``, the coupled head's defaults
``loss_weights=dict(cls=0.5/80, obj=1.0, box=0.05)`` are YOLOv5's hyper-parameters (box 0.05, obj 1.0,
cls 0.5 * C/80 on a mean over each level's positives and classes) for 3 levels at 640 input
(``benchmarks/parity_losses_yolov5.py``); YOLOv5 also multiplies the total by the batch size, which here
belongs to the learning rate (``train.loss_scale``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.analysis import SIZE_NAMES, positives_per_gt, size_bucket
from detkit.boxes import aligned_iou, box_area, pairwise_iof, valid_gt_mask
from detkit.lazy import TARGET_KEY
from detkit.losses import BCEWithLogitsLoss, IoULoss
from detkit.models.heads.predictions import DensePredictions
from detkit.samplers import PseudoSampler, SampleResult

__all__ = ["CLS_TARGETS", "DEFAULT_LOSS_WEIGHTS", "ClsTarget", "YOLOLossPipeline", "rule_sets_score_target"]

DEFAULT_LOSS_WEIGHTS = {"cls": 0.5 / 80, "obj": 1.0, "box": 0.05, "dfl": 1.0, "reg": 1.0}
OBJ_TARGETS = ("iou", "ciou", "one")
POS_NORMALIZE = ("batch", "level_sum")
OBJ_NORMALIZE = ("level_mean", "num_pos")
ClsTarget = Literal["auto", "onehot", "iou", "assigner"]
CLS_TARGETS: tuple[str, ...] = typing.get_args(ClsTarget)


def rule_sets_score_target(assigner: Any) -> bool | None:
    """Whether an assigner fills ``AssignResult.score_target``, known before it runs.

    Args:
        assigner: an assigner object, its class, or a config's lazy call of it. A rule wrapping
            another (an ``assigner`` argument or attribute, as :class:`~detkit.assigners.MinPositives`)
            answers for the wrapped rule.

    Returns:
        The class attribute ``score_target`` when the class states it as a bool (task-aligned,
        SimOTA, dynamic soft labels: True), False for box-only rules (``uses_predictions = False``:
        ATSS, max-IoU, FCOS, grid, YOLOv5), None when it cannot be told (a rule of the user's own).
    """
    inner: Any = None
    if isinstance(assigner, Mapping) and TARGET_KEY in assigner:
        from detkit.schema import target_product  # schema imports the config machinery, loaded lazily here

        cls = target_product(assigner[TARGET_KEY])
        inner = assigner.get("assigner")
    elif isinstance(assigner, type):
        cls = assigner
    else:
        cls = type(assigner)
        inner = getattr(assigner, "assigner", None)
    if inner is not None:
        return rule_sets_score_target(inner)
    if cls is None:
        return None
    declared = getattr(cls, "score_target", None)
    if isinstance(declared, bool):
        return declared
    return False if getattr(cls, "uses_predictions", True) is False else None


def _rule_name(assigner: Any) -> str:
    """``ATSSAssigner``, ``MinPositives(ATSSAssigner)``: the class names of a rule and the rule it wraps."""
    lazy = isinstance(assigner, Mapping) and TARGET_KEY in assigner
    name = getattr(assigner[TARGET_KEY], "__qualname__", "?") if lazy else type(assigner).__name__
    inner = assigner.get("assigner") if lazy else getattr(assigner, "assigner", None)
    return name if inner is None else f"{name}({_rule_name(inner)})"


def _refuse_pair(cls_target: str, assigner: Any) -> str | None:
    """Why ``cls_target`` cannot train with ``assigner`` (None when it can, or cannot be told)."""
    if cls_target != "assigner" or rule_sets_score_target(assigner) is not False:
        return None
    name = _rule_name(assigner)
    return (f"cls_target='assigner' needs a rule that sets score_target (task-aligned, SimOTA, dynamic soft "
            f"label); {name} does not: set cls_target='auto' (the rule's target when it has one, else one-hot) "
            f"or 'onehot'")
BOX_WEIGHTS = ("uniform", "cls_target")


@dataclasses.dataclass
class Positives:
    """The sampled positives of a batch, flattened to ``P`` rows.

    ``batch_idx``, ``prior_idx`` ``(P,)`` long; ``box (P, R)`` raw box parameters and
    ``cls (P, C)`` class logits, fp32 with grad; ``priors (P, 4)``; ``strides (P,)``;
    ``gt_boxes (P, 4)``; ``labels (P,)`` long; ``pred_boxes (P, 4)`` the decoded predictions,
    with grad; ``score (P,)`` the classification target at the GT's class (targets stage).
    """

    batch_idx: Tensor
    prior_idx: Tensor
    box: Tensor
    cls: Tensor
    priors: Tensor
    strides: Tensor
    gt_boxes: Tensor
    labels: Tensor
    pred_boxes: Tensor
    score: Tensor | None = None
    level_weight: Tensor | None = None  # (P,) 1 / the positives on its level (pos_normalize="level_sum")

    @property
    def count(self) -> int:
        return self.box.shape[0]


def _scores(pos: Positives) -> Tensor:
    """``pos.score (P,)``, which the targets stage sets before any loss reads it."""
    if pos.score is None:
        raise RuntimeError("the positives have no classification targets yet (the targets stage sets them)")
    return pos.score


class YOLOLossPipeline(nn.Module):
    """Assign, sample, make targets and weigh the losses of a dense head (see the module docstring).

    Args:
        assigner: any object with ``assign(priors, gt_boxes, gt_labels, gt_mask, *,
            num_level_priors, prior_strides, pred_boxes, pred_scores) -> AssignResult``.
            Assigners with ``uses_predictions = False`` skip computing ``pred_scores``.
        sampler: ``PseudoSampler()`` (default) or ``RandomSampler(...)``.
        loss_cls: classification loss (default BCE; ``FocalLoss``, ``VarifocalLoss`` and
            ``QualityFocalLoss`` take the soft targets of ``cls_target``).
        loss_obj: objectness loss (default BCE); unused by heads without objectness.
        loss_box: box loss on positives, applied to decoded boxes or to encoded targets as its
            ``input_space`` attribute says (``IoULoss`` -> boxes; default CIoU).
        loss_dfl: optional ``DistributionFocalLoss`` on the bin logits of a ``DFLCoder`` head
            (``loss_dfl``).
        loss_reg: optional second box loss (e.g. ``L1Loss()`` on encoded targets, YOLOX's, or
            ``ImageL1Loss()`` on image-normalised ltrb distances, YOLO26's); returned as ``loss_reg``.
        reg_last_epochs: with ``loss_reg``, apply it only in the last N epochs (YOLOX: 15; the
            trainer calls :meth:`set_epoch`); None applies it always.
        loss_weights: multipliers for ``cls``, ``obj``, ``box``, ``dfl``, ``reg``; missing keys
            keep :data:`DEFAULT_LOSS_WEIGHTS`.
        cls_target: ``"auto"`` | ``"onehot"`` | ``"iou"`` | ``"assigner"`` (see the module docstring).
        box_weight: ``"uniform"`` | ``"cls_target"`` (see the module docstring).
        obj_level_weights: objectness weight per level (YOLOv5: 4.0, 1.0, 0.4); None for 1.
        obj_target: positives' objectness target: ``"iou"`` (detached IoU of the decoded
            prediction with its GT, clamped at 0), ``"ciou"`` (the same with CIoU, YOLOv5's) or ``"one"``.
        obj_normalize: ``"level_mean"`` | ``"num_pos"`` (see the module docstring).
        pos_normalize: ``"batch"`` | ``"level_sum"`` (YOLOv5; with ``box_weight="uniform"``; see the module
            docstring).
        ignore_iof_thr: priors (not positive) whose area lies more than this fraction inside
            a valid ``batch["ignore_boxes"]`` box are left out of the negatives; None disables.
    """

    def __init__(
        self,
        assigner: Any,
        sampler: Any = None,
        loss_cls: nn.Module | None = None,
        loss_obj: nn.Module | None = None,
        loss_box: nn.Module | None = None,
        loss_dfl: nn.Module | None = None,
        loss_reg: nn.Module | None = None,
        reg_last_epochs: int | None = None,
        loss_weights: Mapping[str, float] | None = None,
        cls_target: ClsTarget = "onehot",
        box_weight: str = "uniform",
        obj_level_weights: list[float] | tuple[float, ...] | None = (4.0, 1.0, 0.4),
        obj_target: str = "iou",
        obj_normalize: str = "level_mean",
        ignore_iof_thr: float | None = 0.5,
        pos_normalize: str = "batch",
    ) -> None:
        super().__init__()
        for name, value, accepted in (("cls_target", cls_target, CLS_TARGETS), ("box_weight", box_weight, BOX_WEIGHTS),
                                      ("obj_target", obj_target, OBJ_TARGETS),
                                      ("obj_normalize", obj_normalize, OBJ_NORMALIZE),
                                      ("pos_normalize", pos_normalize, POS_NORMALIZE)):
            if value not in accepted:
                raise ValueError(f"unknown {name} {value!r}; accepted: {', '.join(accepted)}")
        if pos_normalize == "level_sum" and box_weight != "uniform":
            raise ValueError(f"pos_normalize='level_sum' (YOLOv5) needs box_weight='uniform', got {box_weight!r}")
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss_weights keys {sorted(unknown)}; accepted: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        if reg_last_epochs is not None and (loss_reg is None or reg_last_epochs < 1):
            raise ValueError(f"reg_last_epochs={reg_last_epochs} needs a loss_reg and a positive epoch count")
        if assigner is None:
            raise ValueError("YOLOLossPipeline needs an assigner, e.g. assigner=ATSSAssigner()")
        refusal = _refuse_pair(cls_target, assigner)
        if refusal:
            raise ValueError(refusal)
        self.assigner = assigner
        self.sampler = sampler if sampler is not None else PseudoSampler()
        self.loss_cls = loss_cls if loss_cls is not None else BCEWithLogitsLoss()
        self.loss_obj = loss_obj if loss_obj is not None else BCEWithLogitsLoss()
        self.loss_box = loss_box if loss_box is not None else IoULoss(mode="ciou")
        self.loss_dfl = loss_dfl
        self.loss_reg = loss_reg
        self.reg_last_epochs = reg_last_epochs
        self.reg_active = reg_last_epochs is None
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.cls_target = cls_target
        self.box_weight = box_weight
        self.obj_level_weights = None if obj_level_weights is None else [float(w) for w in obj_level_weights]
        self.obj_target = obj_target
        self.obj_normalize = obj_normalize
        self.ignore_iof_thr = ignore_iof_thr
        self.pos_normalize = pos_normalize

    @staticmethod
    def check_config_arguments(arguments: Mapping[str, Any], key: str) -> None:
        """Config-time check of a lazy call's arguments (run by :func:`detkit.config_checks.check_call_arguments`
        when a config loads, before a tool creates any output): ``cls_target="assigner"`` with a rule
        that sets no ``score_target`` is refused.

        Raises:
            SettingError: naming ``<key>.cls_target``.
        """
        from detkit.schema import SettingError

        refusal = _refuse_pair(arguments.get("cls_target", "onehot"), arguments.get("assigner"))
        if refusal:
            raise SettingError(f"{key}.cls_target" if key else "cls_target", refusal)

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        """Called by the trainer at each epoch start (0-based): switches ``loss_reg`` on for the
        last ``reg_last_epochs`` epochs."""
        if self.reg_last_epochs is not None:
            self.reg_active = epoch >= max_epochs - self.reg_last_epochs

    # ----- entry point ---------------------------------------------------------------------

    def forward(self, preds: DensePredictions, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Losses and statistics of one batch.

        Args:
            preds: the head's named predictions (``box (B, N, R)``, ``cls (B, N, C)``,
                ``obj (B, N)`` or None) with their priors, strides and coder.
            batch: ``gt_boxes (B, M, 4)``, ``gt_labels (B, M)``, ``gt_mask (B, M)`` and
                optionally ``ignore_boxes (B, J, 4)``, ``ignore_mask (B, J)``.

        Returns:
            ``loss_cls``, ``loss_box`` (and ``loss_obj`` with objectness, ``loss_dfl``,
            ``loss_reg`` when configured) scalars with grad, and detached ``stat_*`` scalars.
        """
        self._check_inputs(preds)
        preds = preds.to_dtype(torch.float32)
        pred_boxes, pred_scores = self.decode_predictions(preds)
        assign_result = self.assigner.assign(
            preds.priors if preds.grid is None else preds.grid, batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"],
            num_level_priors=list(preds.num_level_priors), prior_strides=preds.strides,
            pred_boxes=pred_boxes, pred_scores=pred_scores,
        )
        assign_result = self.ignore_crowd_regions(assign_result, preds.priors, batch)
        sample = self.sampler.sample(assign_result)
        pos = self.gather_positives(preds, assign_result, sample, batch)
        pos.score = self.classification_targets(pos, assign_result)
        losses = self.box_losses(preds, pos)
        losses["loss_cls"] = self.classification_loss(preds, pos, sample)
        if preds.obj is not None:
            losses["loss_obj"] = self.objectness_loss(preds, pos, sample)
        losses.update(self.statistics(assign_result, sample, batch, preds.num_level_priors))
        return losses

    def _check_inputs(self, preds: DensePredictions) -> None:
        preds.check()
        levels = len(preds.num_level_priors)
        level_mean = preds.obj is not None and self.obj_normalize == "level_mean"
        if level_mean and self.obj_level_weights is not None and len(self.obj_level_weights) != levels:
            raise ValueError(f"obj_level_weights {self.obj_level_weights} must have one entry per level "
                             f"({levels} levels)")
        if self.loss_dfl is not None and not hasattr(preds.coder, "reg_max"):
            raise ValueError(f"loss_dfl needs a distribution coder (DFLCoder), the head has {preds.coder!r}")
        for loss in (self.loss_box, self.loss_reg):
            if loss is not None and _input_space(loss) == "deltas" and preds.box.shape[-1] != 4:
                raise ValueError(f"{type(loss).__name__} on encoded targets needs 4 box parameters per prior, "
                                 f"the head predicts {preds.box.shape[-1]} ({preds.coder!r})")

    # ----- stages --------------------------------------------------------------------------

    @torch.no_grad()
    def decode_predictions(self, preds: DensePredictions) -> tuple[Tensor, Tensor | None]:
        """Detached ``pred_boxes (B, N, 4)`` xyxy and ``pred_scores (B, N, C)`` (probabilities:
        ``sigmoid(cls)``, times ``sigmoid(obj)`` with objectness), the latter only for assigners
        that use predictions."""
        pred_boxes = preds.decode()
        if not getattr(self.assigner, "uses_predictions", True):
            return pred_boxes, None
        return pred_boxes, preds.scores()

    @torch.no_grad()
    def ignore_crowd_regions(self, assign_result: Any, priors: Tensor, batch: Mapping[str, Any]) -> Any:
        """Adds to ``ignore_mask`` the non-positive priors lying more than ``ignore_iof_thr`` of
        their area inside a valid ignore box; returns a new result (the input is unchanged)."""
        ignore_boxes, ignore_valid = batch.get("ignore_boxes"), batch.get("ignore_mask")
        if self.ignore_iof_thr is None or ignore_boxes is None or ignore_valid is None or not ignore_valid.any():
            return assign_result
        iof = pairwise_iof(priors, ignore_boxes)  # (N, 4) with (B, J, 4) -> (B, N, J)
        iof = iof.masked_fill(~ignore_valid.bool()[:, None, :], 0.0)
        crowd = (iof.amax(dim=2) > self.ignore_iof_thr) & ~assign_result.pos_mask
        return dataclasses.replace(assign_result, ignore_mask=assign_result.ignore_mask | crowd)

    def gather_positives(self, preds: DensePredictions, assign_result: Any, sample: SampleResult,
                         batch: Mapping[str, Any]) -> Positives:
        """The sampled positives' predictions (with grad) and their decoded boxes, priors, GT
        boxes and labels."""
        batch_idx, prior_idx = sample.pos_mask.nonzero(as_tuple=True)  # (P,), (P,)
        gt_idx = assign_result.gt_index[batch_idx, prior_idx]
        box = preds.box[batch_idx, prior_idx]  # (P, R)
        priors, strides = preds.priors[prior_idx], preds.strides[prior_idx]
        level_weight = None
        if self.pos_normalize == "level_sum":
            ends = torch.tensor(list(preds.num_level_priors), device=prior_idx.device).cumsum(0)
            level = torch.bucketize(prior_idx, ends, right=True)  # (P,) level of each positive
            level_weight = 1.0 / torch.bincount(level, minlength=len(ends)).float()[level]
        return Positives(
            batch_idx=batch_idx, prior_idx=prior_idx, box=box, cls=preds.cls[batch_idx, prior_idx],
            priors=priors, strides=strides, gt_boxes=batch["gt_boxes"][batch_idx, gt_idx].float(),
            labels=assign_result.labels[batch_idx, prior_idx],
            pred_boxes=preds.coder.decode(priors, box, strides).float(), level_weight=level_weight,
        )

    @torch.no_grad()
    def classification_targets(self, pos: Positives, assign_result: Any) -> Tensor:
        """``Tensor[P]``: each positive's classification target at its GT's class (``cls_target``)."""
        score_target = getattr(assign_result, "score_target", None)
        if self.cls_target == "onehot" or (self.cls_target == "auto" and score_target is None):
            return torch.ones_like(pos.box[:, 0])
        if self.cls_target == "iou":
            return aligned_iou(pos.pred_boxes, pos.gt_boxes).clamp(min=0)
        if score_target is None:
            raise ValueError(f"cls_target='assigner' needs an assigner that sets score_target "
                             f"(task-aligned, SimOTA, dynamic soft label); {type(self.assigner).__name__} does not")
        target: Tensor = score_target[pos.batch_idx, pos.prior_idx].float()
        return target

    def _box_normaliser(self, pos: Positives) -> tuple[Tensor | None, Tensor]:
        """Per-positive box-loss weight ``Tensor[P]`` (None for uniform) and the divisor."""
        if self.box_weight == "cls_target":
            score = _scores(pos)
            return score, score.sum().clamp(min=1.0)
        if pos.level_weight is not None:  # pos_normalize="level_sum": sum over levels of each level's mean
            return pos.level_weight, pos.box.new_tensor(1.0)
        return None, pos.box.new_tensor(float(max(pos.count, 1)))

    def _regression(self, loss: nn.Module, preds: DensePredictions, pos: Positives, weight: Tensor | None,
                    avg_factor: Tensor) -> Tensor:
        space = _input_space(loss)
        out: Tensor
        if space == "boxes":
            out = loss(pos.pred_boxes, pos.gt_boxes, weight=weight, avg_factor=avg_factor, reduction_override="mean")
            return out
        with torch.no_grad():
            targets = preds.coder.encode(pos.priors, pos.gt_boxes, pos.strides).float()  # (P, 4)
        if space == "image_ltrb":
            return self._image_ltrb(loss, preds, pos, weight, avg_factor)
        if space == "distribution":  # (P, 4 * reg_max) -> (P, 4, reg_max); the loss is the mean over sides
            bins = torch.unflatten(pos.box, -1, (4, -1))
            side_w = torch.full_like(targets, 0.25) if weight is None else (weight / 4)[:, None].expand_as(targets)
            out = loss(bins, targets, weight=side_w, avg_factor=avg_factor, reduction_override="mean")
            return out
        w = None if weight is None else weight[:, None]
        out = loss(pos.box, targets, weight=w, avg_factor=avg_factor, reduction_override="mean")
        return out

    @staticmethod
    def _image_ltrb(loss: nn.Module, preds: DensePredictions, pos: Positives, weight: Tensor | None,
                    avg_factor: Tensor) -> Tensor:
        """A loss on ``(P, 4)`` ltrb distances from each positive's prior centre, of its decoded prediction
        (with grad) and of its GT, in pixels over the input's ``(W, H, W, H)``; the mean over the 4 sides."""
        scale = preds.image_ltrb_scale()  # (4,)
        centre = (pos.priors[:, :2] + pos.priors[:, 2:]) / 2  # (P, 2)
        pred = torch.cat([centre - pos.pred_boxes[:, :2], pos.pred_boxes[:, 2:] - centre], -1) / scale
        with torch.no_grad():
            target = torch.cat([centre - pos.gt_boxes[:, :2], pos.gt_boxes[:, 2:] - centre], -1) / scale
        side_w = torch.full_like(target, 0.25) if weight is None else (weight / 4)[:, None].expand_as(target)
        out: Tensor = loss(pred, target, weight=side_w, avg_factor=avg_factor, reduction_override="mean")
        return out

    def box_losses(self, preds: DensePredictions, pos: Positives) -> dict[str, Tensor]:
        """``loss_box`` (and ``loss_dfl``, ``loss_reg``) on the positives; 0 with grad when there are none."""
        weight, avg_factor = self._box_normaliser(pos)
        out = {"loss_box": self.loss_weights["box"] * self._regression(self.loss_box, preds, pos, weight, avg_factor)}
        if self.loss_dfl is not None:
            out["loss_dfl"] = self.loss_weights["dfl"] * self._regression(self.loss_dfl, preds, pos, weight, avg_factor)
        if self.loss_reg is not None:
            reg = self._regression(self.loss_reg, preds, pos, weight, avg_factor)
            out["loss_reg"] = self.loss_weights["reg"] * (reg if self.reg_active else reg * 0.0)
        return out

    def classification_loss(self, preds: DensePredictions, pos: Positives, sample: SampleResult) -> Tensor:
        """``loss_cls``: on the positives (heads with objectness) or on every sampled prior."""
        num_classes = preds.num_classes
        labels = pos.labels.clamp(min=0)
        if pos.count and int(labels.max()) >= num_classes:
            raise ValueError(f"GT label {int(labels.max())} is not a class of this head (C={num_classes})")
        score = _scores(pos)
        pos_target = F.one_hot(labels, num_classes).float() * score[:, None]  # (P, C)
        loss: Tensor
        if preds.obj is not None:
            weight: Tensor | None = None
            avg_factor = pos.box.new_tensor(float(max(pos.count, 1)))
            if pos.level_weight is not None:  # pos_normalize="level_sum"
                weight, avg_factor = pos.level_weight[:, None], pos.box.new_tensor(1.0)
            loss = self.loss_cls(pos.cls, pos_target, weight=weight, avg_factor=avg_factor, reduction_override="mean")
            return self.loss_weights["cls"] * loss
        target = torch.zeros_like(preds.cls)  # (B, N, C): negatives learn 0 on every class
        target[pos.batch_idx, pos.prior_idx] = pos_target
        weight = (sample.pos_mask | sample.neg_mask).float()[..., None]  # (B, N, 1): ignored priors left out
        avg_factor = score.sum().clamp(min=1.0)
        loss = self.loss_cls(preds.cls, target, weight=weight, avg_factor=avg_factor, reduction_override="mean")
        return self.loss_weights["cls"] * loss

    def objectness_loss(self, preds: DensePredictions, pos: Positives, sample: SampleResult) -> Tensor:
        """``loss_obj``: BCE-style loss on sampled priors (see ``obj_normalize``)."""
        obj = preds.obj
        if obj is None:
            raise RuntimeError("objectness_loss on predictions without objectness")  # the pipeline checks first
        target = torch.zeros_like(obj)  # (B, N)
        if pos.count:
            if self.obj_target in ("iou", "ciou"):
                value = aligned_iou(pos.pred_boxes.detach(), pos.gt_boxes, mode=self.obj_target).clamp(min=0)
            else:
                value = torch.ones_like(pos.box[:, 0])
            target[pos.batch_idx, pos.prior_idx] = value
        valid = (sample.pos_mask | sample.neg_mask).float()  # (B, N)
        if self.obj_normalize == "num_pos":
            avg_factor = obj.new_tensor(float(max(pos.count, 1)))
            loss: Tensor = self.loss_obj(obj, target, weight=valid, avg_factor=avg_factor, reduction_override="mean")
            return self.loss_weights["obj"] * loss
        counts = list(preds.num_level_priors)
        level_valid = torch.stack([v.sum() for v in torch.split(valid, counts, dim=1)])  # (L,)
        level_w = obj.new_tensor(self.obj_level_weights or [1.0] * len(counts))
        per_prior = (level_w / level_valid.clamp(min=1)).repeat_interleave(torch.tensor(counts, device=obj.device))
        loss = self.loss_obj(obj, target, weight=valid * per_prior[None, :], reduction_override="sum")
        return self.loss_weights["obj"] * loss

    @torch.no_grad()
    def statistics(self, assign_result: Any, sample: SampleResult, batch: Mapping[str, Any],
                   num_level_priors: list[int]) -> dict[str, Tensor]:
        """Detached ``stat_*``: positives per valid GT, GTs without a positive, valid GT count,
        mean assigned IoU of positives, positives per level per image; valid GTs and GTs without a
        positive per COCO size (``stat_num_gt_{small,medium,large}``, ``stat_gt_no_pos_{...}``:
        areas in network-input pixels, the boxes the assigner saw: under mosaic / random affine the
        batch's ``scale_factors`` do not describe them); ``stat_forced_pos`` (priors made positive
        by :class:`~detkit.assigners.MinPositives`) when the assigner reports them."""
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
        sizes = size_bucket(box_area(boxes.float()))[gt_mask]  # (G,) 0 small, 1 medium, 2 large
        for i, name in enumerate(SIZE_NAMES):
            stats[f"stat_num_gt_{name}"] = (sizes == i).sum().float()
            stats[f"stat_gt_no_pos_{name}"] = ((sizes == i) & (valid_counts == 0)).sum().float()
        forced = getattr(assign_result, "forced_mask", None)
        if forced is not None:
            stats["stat_forced_pos"] = (forced & sample.pos_mask).sum().float()
        per_level = torch.split(sample.pos_mask, list(num_level_priors), dim=1)
        for i, level in enumerate(per_level):
            stats[f"stat_pos_level{i}"] = level.sum().float() / max(gt_mask.shape[0], 1)
        return stats

    def extra_repr(self) -> str:
        return (
            f"assigner={self.assigner!r}, sampler={self.sampler!r}, loss_weights={self.loss_weights}, "
            f"cls_target={self.cls_target!r}, box_weight={self.box_weight!r}, "
            f"obj_level_weights={self.obj_level_weights}, obj_target={self.obj_target!r}, "
            f"obj_normalize={self.obj_normalize!r}, ignore_iof_thr={self.ignore_iof_thr}, "
            f"pos_normalize={self.pos_normalize!r}"
        )


def _input_space(loss: nn.Module) -> str:
    """Where a regression loss applies: ``"boxes"`` (decoded), ``"deltas"`` (encoded targets),
    ``"distribution"`` (DFL bin logits against encoded distances) or ``"image_ltrb"`` (ltrb distances over
    the input's size)."""
    return getattr(loss, "input_space", "boxes")
