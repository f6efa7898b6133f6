"""Inference post-processing: score filter, decode, class-aware NMS, letterbox undo.

Two entry points share the same stages, so a PyTorch model and an exported (ONNX) model give
the same detections:

* :func:`postprocess_single` takes one image's named raw predictions (box parameters, class
  logits, objectness logits or None) and decodes only what it keeps;
* :func:`postprocess_decoded_single` takes already decoded boxes and class scores (the outputs
  of :meth:`detkit.models.Detector.forward_decoded` and of an exported graph).

The stages, in the order chosen for speed on CPU (a 640 image has 25,200 priors x 80 classes):

1. (raw path only) keep priors that can pass ``score_thr``: with objectness those whose
   objectness alone passes (a score is ``obj * cls <= obj``), without it those whose best class
   passes, comparing logits with ``logit(score_thr)`` so no sigmoid runs on rejected priors, and
   build the ``(K, C)`` score matrix :func:`class_scores` for those ``K``;
2. :func:`select_candidates`: the (prior, class) pairs above ``score_thr`` (all of them with
   ``multi_label``, the best class otherwise), at most ``nms_pre`` of them;
3. (raw path only) decode boxes of the kept pairs;
4. :func:`nms_detections`: ``torchvision.ops.batched_nms`` per class, then the ``max_per_img`` best.

With ``nms=False`` (heads trained one-to-one: YOLOv10's, YOLO26's) stages 2 and 4 are one:
:func:`select_top_pairs` keeps the ``min(max_per_img, nms_pre, N)`` best (prior, class) pairs above
``score_thr`` (N priors), several classes of a prior included (best class only without
``multi_label``). This is Ultralytics' end-to-end selection (``Detect.postprocess``: with
``k = min(max_det, N)``, the ``k`` priors of highest best score, then the ``k`` best of their (prior,
class) pairs; its validator and predictor then drop scores at or below ``conf``): a pair outside
those priors has at least ``k`` better pairs, so both rules keep the same pairs. Exactly tied scores
are ordered by prior index, then class index (Ultralytics' ``torch.topk`` leaves their order unspecified).

No Python loop runs over boxes; the loop over images in a batch is the only one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detkit.coders import BoxCoder

__all__ = [
    "FlatPredictions",
    "check_postprocess_args",
    "class_scores",
    "nms_detections",
    "postprocess",
    "postprocess_decoded",
    "postprocess_decoded_single",
    "postprocess_setting_problem",
    "postprocess_single",
    "select_candidates",
    "select_top_pairs",
    "undo_letterbox",
    "undo_letterbox_batch",
]


def check_postprocess_args(score_thr: float, nms_iou_thr: float, nms_pre: int, max_per_img: int) -> None:
    """ValueError naming the accepted range for any setting out of range."""
    for name, value in (("score_thr", score_thr), ("nms_iou_thr", nms_iou_thr)):
        problem = postprocess_setting_problem(name, value)
        if problem:
            raise ValueError(f"{name} {problem}")
    if nms_pre <= 0 or max_per_img <= 0:
        raise ValueError(f"nms_pre and max_per_img must be positive, got {nms_pre}, {max_per_img}")


def postprocess_setting_problem(name: str, value: float) -> str | None:
    """What is wrong with one post-processing setting (``"must be in [0, 1), got 1.5"``), or None."""
    if name == "score_thr" and not 0.0 <= value < 1.0:
        return f"must be in [0, 1), got {value}"
    if name == "nms_iou_thr" and not 0.0 < value <= 1.0:
        return f"must be in (0, 1], got {value}"
    if name in ("nms_pre", "max_per_img") and value <= 0:
        return f"must be positive, got {value}"
    return None


def class_scores(cls: Tensor, obj: Tensor | None = None, class_dim: int = -1) -> Tensor:
    """Detection scores ``sigmoid(cls) * sigmoid(obj)``, or ``sigmoid(cls)`` without objectness.

    Args:
        cls: ``Tensor[..., C]`` class logits (``class_dim=1``: channel-first ``Tensor[B, C, N]``).
        obj: ``Tensor[...]`` objectness logits (``cls``'s shape without the class axis), or None.
        class_dim: the class axis of ``cls``.

    Returns:
        fp32 scores in (0, 1), ``cls``'s shape.
    """
    # Contiguous inputs take torch's vectorised sigmoid whatever the caller's layout, so scores of
    # a subset of priors equal those of the whole set bit for bit (the raw and decoded paths agree).
    scores = cls.float().contiguous().sigmoid()
    return scores if obj is None else scores * obj.float().contiguous().sigmoid().unsqueeze(class_dim)


def select_candidates(
    scores: Tensor, score_thr: float, multi_label: bool, nms_pre: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(row, class) pairs whose score is above ``score_thr``, at most ``nms_pre`` of them.

    Args:
        scores: ``Tensor[K, C]`` class scores of K boxes.
        score_thr: keep pairs with ``score > score_thr``.
        multi_label: one candidate per (box, class) above the threshold; else only each box's
            best class.
        nms_pre: when more pairs pass, the ``nms_pre`` best are kept.

    Returns:
        ``rows Tensor[M]`` (long, into K), ``labels Tensor[M]`` (long), ``scores Tensor[M]``.
    """
    if multi_label:
        rows, labels = torch.nonzero(scores > score_thr, as_tuple=True)
        flat = scores[rows, labels]
    else:
        best, labels = scores.max(dim=1)
        rows = torch.nonzero(best > score_thr).squeeze(1)
        flat, labels = best[rows], labels[rows]
    if flat.numel() > nms_pre:
        flat, top = flat.topk(nms_pre)
        rows, labels = rows[top], labels[top]
    return rows, labels, flat


def select_top_pairs(scores: Tensor, score_thr: float, multi_label: bool, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best (row, class) pairs above ``score_thr``, sorted: the NMS-free detections of a
    one-to-one head (see the module docstring for its equality with Ultralytics' end-to-end rule).

    Only rows whose best score reaches the ``k``-th highest row best can hold one of the ``k`` best
    pairs (any other pair has ``k`` better ones), so only those rows' pairs are ranked.

    Args:
        scores: ``Tensor[K, C]`` class scores of K boxes.
        score_thr: keep pairs with ``score > score_thr``.
        multi_label: every class of a row may be a detection; else only the row's best class
            (the lowest class index among equal best scores).
        k: detections kept (the entry points pass ``min(max_per_img, nms_pre, N)`` for N priors).

    Returns:
        ``rows Tensor[M]`` (long, into K), ``labels Tensor[M]`` (long), ``scores Tensor[M]``,
        ``M <= k``, by decreasing score; equal scores by increasing row, then class.
    """
    best, best_labels = scores.max(dim=1)  # (K,): each row's best score and class
    if best.numel() > k:
        kth = best.topk(k).values[-1]
        pool = torch.nonzero(best >= kth).squeeze(1)  # increasing row; rows tied at the cut kept
    else:
        pool = torch.arange(best.numel(), device=scores.device)
    if multi_label:
        sub, labels = torch.nonzero(scores[pool] > score_thr, as_tuple=True)  # (row, class) order
        flat = scores[pool[sub], labels]
    else:
        sub = torch.nonzero(best[pool] > score_thr).squeeze(1)
        labels, flat = best_labels[pool[sub]], best[pool[sub]]
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    return pool[sub[order]], labels[order], flat[order]


def nms_detections(
    boxes: Tensor, scores: Tensor, labels: Tensor, nms_iou_thr: float, max_per_img: int, nms: bool = True
) -> dict[str, Tensor]:
    """Class-aware NMS (``torchvision.ops.batched_nms``), then the ``max_per_img`` best.

    Args:
        boxes: ``Tensor[M, 4]`` xyxy; scores: ``Tensor[M]``; labels: ``Tensor[M]``.
        nms: False skips NMS (a one-to-one head predicts each object once) and keeps the
            ``max_per_img`` best (the entry points use :func:`select_top_pairs` instead).

    Returns:
        ``dict(boxes (K, 4) fp32, scores (K,), labels (K,) long)`` sorted by decreasing score.
    """
    boxes = boxes.float()
    if nms:
        keep = batched_nms(boxes, scores, labels, nms_iou_thr)[:max_per_img]
    else:
        keep = scores.topk(min(max_per_img, scores.numel())).indices  # sorted, decreasing
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep].long()}


def postprocess_single(
    box: Tensor,
    cls: Tensor,
    obj: Tensor | None,
    priors: Tensor,
    strides: Tensor,
    coder: BoxCoder,
    *,
    score_thr: float = 0.001,
    nms_iou_thr: float = 0.65,
    nms_pre: int = 30000,
    max_per_img: int = 300,
    multi_label: bool = True,
    nms: bool = True,
) -> dict[str, Tensor]:
    """Detections of one image from its flattened raw predictions.

    Args:
        box: ``(N, R)`` raw box parameters; cls: ``(N, C)`` class logits; obj: ``(N,)``
            objectness logits or None.
        priors: ``(N, 4)`` xyxy priors; strides: ``(N,)`` prior strides.
        coder: decodes ``(K, R)`` box parameters of ``(K, 4)`` priors into xyxy boxes.
        score_thr: minimum score (:func:`class_scores`); nms_iou_thr: NMS IoU threshold.
        nms_pre: candidates kept before NMS; max_per_img: detections kept after it.
        multi_label: one candidate per (prior, class) above threshold instead of per prior.
        nms: False keeps the ``max_per_img`` best candidates without NMS (one-to-one heads).

    Returns:
        ``dict(boxes (K, 4) xyxy fp32, scores (K,), labels (K,) long)`` sorted by score.
    """
    check_postprocess_args(score_thr, nms_iou_thr, nms_pre, max_per_img)
    if score_thr > 0:  # obj * cls <= obj and cls <= max cls: priors whose bound fails cannot pass
        bound = cls.float().amax(dim=1) if obj is None else obj.float()
        cand = torch.nonzero(bound > math.log(score_thr / (1.0 - score_thr))).squeeze(1)
    else:
        cand = torch.arange(cls.shape[0], device=cls.device)
    scores = class_scores(cls[cand], None if obj is None else obj[cand])
    if nms:
        rows, labels, flat_scores = select_candidates(scores, score_thr, multi_label, nms_pre)
    else:
        rows, labels, flat_scores = select_top_pairs(scores, score_thr, multi_label,
                                                     min(max_per_img, nms_pre, cls.shape[0]))
    idx = cand[rows]
    boxes = coder.decode(priors[idx], box[idx].float(), strides[idx])
    if not nms:
        return {"boxes": boxes.float(), "scores": flat_scores, "labels": labels.long()}
    return nms_detections(boxes, flat_scores, labels, nms_iou_thr, max_per_img, nms)


class FlatPredictions(Protocol):
    """What :func:`postprocess` reads of a head's flattened predictions
    (:class:`detkit.models.heads.predictions.DensePredictions` is one; declared here so this module
    needs nothing of the heads)::

        box (B, N, R) raw box parameters, cls (B, N, C) logits, obj (B, N) logits or None,
        priors (N, 4) xyxy, strides (N,), coder (decodes box parameters), batch_size B
    """

    box: Tensor
    cls: Tensor
    obj: Tensor | None
    priors: Tensor
    strides: Tensor
    coder: Any

    @property
    def batch_size(self) -> int: ...


def postprocess(preds: FlatPredictions, **kwargs: Any) -> list[dict[str, Tensor]]:
    """:func:`postprocess_single` for each image of a head's flattened predictions (``DensePredictions``)."""
    return [
        postprocess_single(preds.box[i], preds.cls[i], None if preds.obj is None else preds.obj[i],
                           preds.priors, preds.strides, preds.coder, **kwargs)
        for i in range(preds.batch_size)
    ]


def postprocess_decoded_single(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_thr: float = 0.001,
    nms_iou_thr: float = 0.65,
    nms_pre: int = 30000,
    max_per_img: int = 300,
    multi_label: bool = True,
    nms: bool = True,
) -> dict[str, Tensor]:
    """Detections of one image from decoded boxes and class scores (same settings and result
    as :func:`postprocess_single`).

    Args:
        boxes: ``(N, 4)`` xyxy in network-input pixels.
        scores: ``(N, C)`` class scores (:func:`class_scores`).

    Returns:
        ``dict(boxes (K, 4) xyxy fp32, scores (K,), labels (K,) long)`` sorted by score.
    """
    check_postprocess_args(score_thr, nms_iou_thr, nms_pre, max_per_img)
    if boxes.shape[:-1] != scores.shape[:-1] or boxes.shape[-1] != 4:
        raise ValueError(f"boxes (N, 4) and scores (N, C) must agree, got {tuple(boxes.shape)}, "
                         f"{tuple(scores.shape)}")
    if not nms:
        k = min(max_per_img, nms_pre, scores.shape[0])
        rows, labels, flat_scores = select_top_pairs(scores.float(), score_thr, multi_label, k)
        return {"boxes": boxes[rows].float(), "scores": flat_scores, "labels": labels.long()}
    rows, labels, flat_scores = select_candidates(scores.float(), score_thr, multi_label, nms_pre)
    return nms_detections(boxes[rows], flat_scores, labels, nms_iou_thr, max_per_img, nms)


def postprocess_decoded(boxes: Tensor, scores: Tensor, **kwargs: Any) -> list[dict[str, Tensor]]:
    """:func:`postprocess_decoded_single` for each image of ``boxes (B, N, 4)``, ``scores (B, N, C)``."""
    return [postprocess_decoded_single(b, s, **kwargs) for b, s in zip(boxes, scores)]


def undo_letterbox(
    boxes: Tensor,
    scale_factor: Sequence[float] | Tensor,
    pad: Sequence[float] | Tensor,
    ori_size: Sequence[int] | Tensor,
) -> Tensor:
    """Map boxes from the network input back to the original image.

    Args:
        boxes: ``(K, 4)`` xyxy in input pixels.
        scale_factor: ``(sx, sy)`` with ``resized = original * s``.
        pad: ``(left, top)`` padding added after resizing.
        ori_size: ``(h, w)`` of the original image; boxes are clipped to it.

    Returns:
        ``(K, 4)`` xyxy in original pixels.
    """
    sx, sy = (float(v) for v in scale_factor)
    left, top = (float(v) for v in pad)
    h, w = (float(v) for v in ori_size)
    if sx <= 0 or sy <= 0:
        raise ValueError(f"scale factors must be positive, got {(sx, sy)}")
    offset = boxes.new_tensor([left, top, left, top])
    scale = boxes.new_tensor([sx, sy, sx, sy])
    out = (boxes - offset) / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def undo_letterbox_batch(
    dets: list[dict[str, Tensor]], batch: Mapping[str, Any], input_size: Sequence[int]
) -> list[dict[str, Tensor]]:
    """:func:`undo_letterbox` on every image's ``boxes`` (in place), from the batch's records.

    Args:
        dets: per image ``dict(boxes (K, 4), ...)`` in network-input pixels.
        batch: ``scale_factors (B, 2)``, ``pads (B, 2)`` and ``ori_sizes (B, 2)`` (h, w); when
            the batch has neither scale factors nor original sizes, ``dets`` are returned as is.
        input_size: ``(H, W)`` of the network input (the original size when ``ori_sizes`` is absent).

    Returns:
        ``dets``, boxes in original-image pixels.
    """
    if "scale_factors" not in batch and "ori_sizes" not in batch:
        return dets
    b = len(dets)
    h, w = (int(v) for v in input_size)
    scales = _rows(batch.get("scale_factors"), b, (1.0, 1.0)) or []  # never None: a default is given
    pads = _rows(batch.get("pads"), b, (0.0, 0.0)) or []
    sizes = _rows(batch.get("ori_sizes"), b, None)
    for i, det in enumerate(dets):
        size = sizes[i] if sizes is not None else (h / scales[i][1], w / scales[i][0])
        det["boxes"] = undo_letterbox(det["boxes"], scales[i], pads[i], size)
    return dets


def _rows(value: Any, batch_size: int, default: Sequence[float] | None) -> list | None:
    """Per-image pairs from a ``(B, 2)`` tensor/list, or ``default`` repeated."""
    if value is None:
        return None if default is None else [default] * batch_size
    rows = value.tolist() if isinstance(value, Tensor) else [list(v) for v in value]
    if len(rows) != batch_size:
        raise ValueError(f"expected {batch_size} rows of (a, b) per image, got {len(rows)}")
    return rows
