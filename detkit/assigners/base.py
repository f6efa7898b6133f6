"""What every assigner returns (:class:`AssignResult`), what it is (:class:`Assigner`), and the
input checks and result building they share.

Label convention (one, with named constants): ``gt_index`` and ``labels`` hold
:data:`NOT_ASSIGNED` (-1) wherever a prior is not positive; whether a non-positive prior is a
negative or is excluded from the negative loss is said by ``ignore_mask`` alone, never by a code
in an index.

A GT row takes part in an assignment when ``gt_mask`` is True *and* its box has finite coordinates
and positive width and height; padding rows, zero-area boxes and boxes with a NaN or an infinite
coordinate (e.g. a huge box overflowing fp16) are treated alike (never assigned, never influence
any other GT's result).

Priors come as a :class:`detkit.anchors.PriorGrid` (what heads pass: the levels' grid arithmetic finds each
GT's candidates) or as a bare ``Tensor[N, 4]`` of arbitrary priors (every prior is a candidate of every GT:
the all-pairs table; level-aware rules then read ``num_level_priors`` / ``prior_strides``).
:func:`prepare` turns either into :class:`Priors`.

Optional class attribute ``uses_predictions: bool``: False on box-only assigners (grid, max-IoU,
ATSS) tells the loss pipeline it need not compute ``pred_scores``; absent means True.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.boxes import valid_gt_mask

__all__ = ["NOT_ASSIGNED", "AssignResult", "Assigner", "GTBatch", "Priors", "make_result", "prepare"]

NOT_ASSIGNED = -1  # gt_index / labels value of every prior that is not positive


@dataclass
class AssignResult:
    """Assignment of a batch; every field is a ``Tensor[B, N]``.

    Attributes:
        gt_index: long, index into M of the assigned GT; ``NOT_ASSIGNED`` (-1) where not positive.
        pos_mask: bool, positive priors (``gt_index >= 0``).
        ignore_mask: bool, non-positive priors to leave out of the negative (background) loss.
            Never True where ``pos_mask`` is.
        labels: long, class of the assigned GT; -1 where not positive.
        iou: float32, IoU of the assigned pair; 0 where not positive. Box-only assigners measure the
            prior box; prediction-aware ones (SimOTA, task-aligned) the predicted box.
        align_metric: float32 or None. Task-aligned only: ``score**alpha * IoU**beta`` of the
            assigned pair, 0 where not positive.
        score_target: float32 or None. The soft classification target of prediction-aware rules
            (what the loss pipeline's ``cls_target="assigner"`` learns): task-aligned, the normalised
            ``align_metric / max align_metric of the GT * max IoU of the GT`` (maxima over that GT's
            positives); SimOTA and dynamic soft labels, the predicted box's IoU; 0 where not positive.
    """

    gt_index: Tensor
    pos_mask: Tensor
    ignore_mask: Tensor
    labels: Tensor
    iou: Tensor
    align_metric: Tensor | None = None
    score_target: Tensor | None = None

    @property
    def neg_mask(self) -> Tensor:
        """``Tensor[B, N]`` bool: priors that are neither positive nor ignored."""
        return ~(self.pos_mask | self.ignore_mask)

    @property
    def num_pos(self) -> int:
        """Number of positive priors over the batch."""
        return int(self.pos_mask.sum())

    def to(self, device: torch.device | str) -> AssignResult:
        """A copy with every tensor on ``device``."""
        values: dict[str, Tensor | None] = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v if v is None else v.to(device) for k, v in values.items()}
        return AssignResult(**moved)  # type: ignore[arg-type]  # the required fields are never None


@runtime_checkable
class Assigner(Protocol):
    """Anything with this ``assign`` method can be a head's assigner (docs/design.md, Assigners); every rule
    of :mod:`detkit.assigners` takes these arguments."""

    def assign(
        self,
        priors: PriorGrid | Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
        *,
        num_level_priors: Sequence[int] | None = None,
        prior_strides: Tensor | None = None,
        pred_boxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> AssignResult:
        """Assign ``priors (N, 4)`` to the padded GTs ``gt_boxes (B, M, 4)``; see AssignResult.

        Args:
            priors: a :class:`~detkit.anchors.PriorGrid` (boxes, strides and levels, from
                ``grid_priors``), or a bare ``Tensor[N, 4]`` of xyxy prior boxes (any layout; every prior is
                then a candidate of every GT).
            gt_boxes: ``Tensor[B, M, 4]`` xyxy GT boxes in input pixels, padded to the batch's largest count.
            gt_labels: ``Tensor[B, M]`` integer classes.
            gt_mask: ``Tensor[B, M]`` bool, False on padding rows (which never influence a result).
            num_level_priors: priors per level (sums to N), for bare-tensor priors; needed there by the
                level-aware rules (ATSS, FCOS, grid, YOLOv5). With a grid, None or the grid's own counts.
            prior_strides: ``Tensor[N]`` stride of each prior's level, for bare-tensor priors; needed there by
                grid, YOLOv5, FCOS, SimOTA and dynamic soft label. With a grid, None or ignored for the grid's.
            pred_boxes: ``Tensor[B, N, 4]`` decoded predicted xyxy boxes (prediction-aware rules: SimOTA,
                task-aligned, dynamic soft label).
            pred_scores: ``Tensor[B, N, C]`` predicted class probabilities (prediction-aware rules).

        Returns:
            An :class:`AssignResult` of ``Tensor[B, N]`` fields.

        Raises:
            ValueError: a shape that is not the one above, or an input the rule needs left out.
        """
        ...


@dataclass
class Priors:
    """The priors of one ``assign`` call as a rule reads them (:func:`prepare`).

    Attributes:
        boxes: ``Tensor[N, 4]`` xyxy fp32.
        centres: ``Tensor[N, 2]`` fp32 ``(x1 + x2) / 2, (y1 + y2) / 2``.
        grid: the :class:`~detkit.anchors.PriorGrid` when the caller passed one, else None (arbitrary priors:
            candidate tables are all pairs).
        num_level_priors: priors per level (the grid's, or the caller's), None when unknown.
        strides: ``Tensor[N]`` fp32 (the grid's, or the caller's), None when unknown.
    """

    boxes: Tensor
    centres: Tensor
    grid: PriorGrid | None
    num_level_priors: list[int] | None
    strides: Tensor | None

    @property
    def num_priors(self) -> int:
        """N."""
        return int(self.boxes.shape[0])

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    def level_counts(self, who: str) -> list[int]:
        """``num_level_priors``, or ValueError naming ``who`` (a level-aware rule) when unknown."""
        return check_level_counts(self.num_level_priors, self.num_priors, who)

    def strides_for(self, who: str) -> Tensor:
        """``strides``, or ValueError naming ``who`` when unknown."""
        return check_strides(self.strides, self.num_priors, who)


def prepare_priors(priors: PriorGrid | Tensor, num_level_priors: Sequence[int] | None = None,
                   prior_strides: Tensor | None = None) -> Priors:
    """:class:`Priors` of a grid or of a bare ``Tensor[N, 4]`` (with the caller's optional level counts and
    strides, checked against N).

    Raises:
        ValueError: priors not ``(N, 4)``; level counts or strides that do not fit them.
    """
    if isinstance(priors, PriorGrid):
        grid_counts = priors.num_level_priors
        if num_level_priors is not None and [int(v) for v in num_level_priors] != grid_counts:
            raise ValueError(f"num_level_priors {list(num_level_priors)} disagree with the PriorGrid's {grid_counts}")
        return Priors(boxes=priors.boxes.float(), centres=priors.centres, grid=priors, num_level_priors=grid_counts,
                      strides=priors.strides.float())
    if not isinstance(priors, Tensor) or priors.dim() != 2 or priors.shape[-1] != 4:
        shape = tuple(priors.shape) if isinstance(priors, Tensor) else type(priors).__name__
        raise ValueError(f"priors must be a PriorGrid or an (N, 4) xyxy tensor, got {shape}")
    boxes = priors.float()
    n = int(boxes.shape[0])
    counts = None if num_level_priors is None else check_level_counts(num_level_priors, n, "assign")
    strides = None if prior_strides is None else check_strides(prior_strides, n, "assign")
    return Priors(boxes=boxes, centres=(boxes[:, :2] + boxes[:, 2:]) / 2, grid=None, num_level_priors=counts,
                  strides=strides)


def prepare(priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
            num_level_priors: Sequence[int] | None = None,
            prior_strides: Tensor | None = None) -> tuple[Priors, GTBatch]:
    """Check the inputs of ``assign`` and convert them to what assignment runs in: :class:`Priors` and a
    :class:`GTBatch` (fp32 boxes, long labels, validity).

    Raises:
        ValueError: on any shape that is not the one of :meth:`Assigner.assign`.
    """
    return prepare_priors(priors, num_level_priors, prior_strides), check_gts(gt_boxes, gt_labels, gt_mask)


@dataclass
class GTBatch:
    """Checked ground truth of a batch.

    Attributes:
        boxes: ``Tensor[B, M, 4]`` xyxy float32.
        labels: ``Tensor[B, M]`` long.
        valid: ``Tensor[B, M]`` bool: ``gt_mask``, finite coordinates, positive width and height.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor

    @property
    def batch_size(self) -> int:
        return self.boxes.shape[0]

    @property
    def num_gts(self) -> int:
        return self.boxes.shape[1]


def check_gts(gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor) -> GTBatch:
    """The :class:`GTBatch` of ``gt_boxes (B, M, 4)``, ``gt_labels (B, M)``, ``gt_mask (B, M)`` bool (fp32 boxes,
    long labels, validity).

    Raises:
        ValueError: on any shape or dtype that is not the one above.
    """
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be (B, M, 4) xyxy (padded batch), got shape {tuple(gt_boxes.shape)}")
    bm = tuple(gt_boxes.shape[:2])
    if tuple(gt_labels.shape) != bm or tuple(gt_mask.shape) != bm:
        raise ValueError(
            f"gt_labels and gt_mask must be (B, M) = {bm} like gt_boxes, got "
            f"{tuple(gt_labels.shape)} and {tuple(gt_mask.shape)}"
        )
    if gt_mask.dtype != torch.bool:
        raise ValueError(f"gt_mask must be a bool tensor (False = padding row), got {gt_mask.dtype}")
    boxes = gt_boxes.float()
    return GTBatch(boxes=boxes, labels=gt_labels.long(), valid=valid_gt_mask(boxes, gt_mask))


def check_level_counts(num_level_priors: Sequence[int] | None, num_priors: int, who: str) -> list[int]:
    """Validate ``num_level_priors`` (needed by ``who``) against N; returns it as a list of ints."""
    if num_level_priors is None:
        raise ValueError(f"{who} needs num_level_priors (the prior count of each level)")
    counts = [int(n) for n in num_level_priors]
    if any(n < 0 for n in counts) or sum(counts) != num_priors:
        raise ValueError(f"num_level_priors must be non-negative counts summing to N={num_priors}, got {counts}")
    return counts


def check_strides(prior_strides: Tensor | None, num_priors: int, who: str) -> Tensor:
    """Validate ``prior_strides (N,)`` (needed by ``who``); returns it as fp32."""
    if prior_strides is None:
        raise ValueError(f"{who} needs prior_strides (the stride of each prior, shape (N,))")
    if tuple(prior_strides.shape) != (num_priors,):
        raise ValueError(f"prior_strides must have shape (N,) = ({num_priors},), got {tuple(prior_strides.shape)}")
    return prior_strides.float()


def check_predictions(pred_boxes: Tensor | None, pred_scores: Tensor | None, batch: int, num_priors: int,
                      gt: GTBatch, who: str) -> tuple[Tensor, Tensor]:
    """Validate ``pred_boxes (B, N, 4)`` and ``pred_scores (B, N, C)``; returns both in fp32.

    Also checks that every valid GT label is a class index in ``[0, C)``.
    """
    if pred_boxes is None or pred_scores is None:
        raise ValueError(f"{who} is prediction-aware: pass pred_boxes (B, N, 4) and pred_scores (B, N, C)")
    if tuple(pred_boxes.shape) != (batch, num_priors, 4):
        raise ValueError(f"pred_boxes must be (B, N, 4) = ({batch}, {num_priors}, 4), got {tuple(pred_boxes.shape)}")
    if pred_scores.dim() != 3 or tuple(pred_scores.shape[:2]) != (batch, num_priors):
        raise ValueError(f"pred_scores must be (B, N, C) with B={batch}, N={num_priors}, "
                         f"got {tuple(pred_scores.shape)}")
    num_classes = pred_scores.shape[-1]
    labels = gt.labels[gt.valid]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"GT labels must lie in [0, {num_classes}) (pred_scores has C={num_classes}), "
                         f"got range [{int(labels.min())}, {int(labels.max())}]")
    return pred_boxes.float(), pred_scores.float()


def make_result(gt_index: Tensor, iou: Tensor, gt: GTBatch, ignore_mask: Tensor | None = None,
                **extras: Tensor) -> AssignResult:
    """Build an :class:`AssignResult` from ``gt_index (B, N)`` (-1 = not positive) and ``iou (B, N)``.

    Labels are gathered from the GTs; ``iou`` and ``extras`` are zeroed where not positive;
    ``ignore_mask`` (default all False) is cleared where positive.
    """
    pos = gt_index >= 0
    gt_index = torch.where(pos, gt_index, torch.full_like(gt_index, NOT_ASSIGNED))
    if gt.num_gts:
        labels = gt.labels.gather(1, gt_index.clamp(min=0))
        labels = torch.where(pos, labels, torch.full_like(labels, NOT_ASSIGNED))
    else:
        labels = torch.full_like(gt_index, NOT_ASSIGNED)
    zero = iou.new_zeros(())
    ignore = torch.zeros_like(pos) if ignore_mask is None else ignore_mask & ~pos
    extras = {k: torch.where(pos, v, zero) for k, v in extras.items()}
    return AssignResult(gt_index=gt_index, pos_mask=pos, ignore_mask=ignore, labels=labels,
                        iou=torch.where(pos, iou, zero), **extras)


def assigned_boxes(gt: GTBatch, gt_index: Tensor) -> Tensor:
    """``Tensor[B, N, 4]``: the box of each prior's GT (GT 0's, or zeros when M == 0, where -1)."""
    b, n = gt_index.shape
    if gt.num_gts == 0:
        return gt.boxes.new_zeros(b, n, 4)
    return gt.boxes.gather(1, gt_index.clamp(min=0)[..., None].expand(b, n, 4))  # (B, N) -> (B, N, 4)


def empty_state(batch: int, num_priors: int, device: torch.device, fill: float) -> tuple[Tensor, Tensor]:
    """A running "best value, best GT" pair ``(Tensor[B, N] float32 = fill, Tensor[B, N] long = -1)``."""
    value = torch.full((batch, num_priors), fill, dtype=torch.float32, device=device)
    index = torch.full((batch, num_priors), NOT_ASSIGNED, dtype=torch.long, device=device)
    return value, index
