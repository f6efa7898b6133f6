"""NMS inside an exported graph: ONNX ``NonMaxSuppression`` plus a fixed-size top-k.

:func:`padded_nms` runs in PyTorch (eager, or traced for export); while the TorchScript-based
ONNX exporter traces it, :class:`NonMaxSuppression` is written as the standard ONNX op (opset
10+), which onnxruntime and TensorRT run natively. Its eager implementation is
``torchvision.ops.batched_nms`` per image with the op's semantics (per class, keep scores
``> score_threshold``, suppress IoU ``> iou_threshold``), so an eager call and the exported graph
select the same boxes.

Steps (shapes for ``B`` images, ``N`` priors, ``C`` classes, ``D = min(max_per_img, N*C)``, ``N`` without NMS):

1. best-class mode zeroes every score but each prior's best; ``nms_pre`` zeroes scores below the
   ``nms_pre``-th best of the image (ties at the cut may keep a few more than torch's top-k);
2. ONNX NMS per (image, class) -> ``selected (K, 3)`` rows ``[image, class, prior]``; at most
   ``max_per_img`` per class, which cannot change the final top ``max_per_img``;
3. the selected scores are scattered into a zero ``(B, N*C)`` map and its top ``D`` taken, giving
   per image the best ``D`` survivors sorted by score, padded where fewer survive.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = ["NonMaxSuppression", "padded_nms"]


class NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (``center_point_box=0``) with an eager torchvision implementation.

    Args (of ``apply``):
        boxes: ``Tensor[B, N, 4]`` corners (xyxy; the op accepts either diagonal order).
        scores: ``Tensor[B, C, N]``.
        max_per_class: ``Tensor[1]`` int64, boxes kept per (image, class).
        iou_thr: ``Tensor[1]`` float.
        score_thr: ``Tensor[1]`` float.

    ``apply`` returns ``Tensor[K, 3]`` int64 rows ``[image, class, box]``.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: Tensor, iou_thr: Tensor,  # type: ignore[override]
                score_thr: Tensor) -> Tensor:
        cap, iou, thr = int(max_per_class), float(iou_thr), float(score_thr)
        out = []
        for b in range(boxes.shape[0]):  # eager reference only; the graph has one op
            cls, idx = torch.nonzero(scores[b] > thr, as_tuple=True)
            s = scores[b, cls, idx]
            keep = batched_nms(boxes[b, idx].float(), s, cls, iou)
            cls, idx = cls[keep], idx[keep]
            # the op returns at most `cap` per class: keep each class's best `cap` (keep is sorted by score)
            rank = torch.zeros_like(cls)
            if cls.numel():
                order = torch.argsort(cls, stable=True)
                sorted_cls = cls[order]
                first = torch.searchsorted(sorted_cls, sorted_cls)
                rank[order] = torch.arange(cls.numel(), device=cls.device) - first
            sel = rank < cap
            out.append(torch.stack([torch.full_like(cls[sel], b), cls[sel], idx[sel]], 1))
        return torch.cat(out) if out else torch.zeros(0, 3, dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thr, score_thr):  # noqa: ANN001, ANN205
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_thr, score_thr, center_point_box_i=0)


def padded_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_thr: float,
    nms_iou_thr: float,
    nms_pre: int,
    max_per_img: int,
    multi_label: bool,
    nms: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Class-aware NMS of a batch as fixed-size tensors (see the module docstring's steps).

    Args:
        boxes: ``Tensor[B, N, 4]`` xyxy.
        scores: ``Tensor[B, N, C]``.
        score_thr: least class score of a detection.
        nms_iou_thr: IoU above which NMS drops the lower-scored box of a class.
        nms_pre: candidates kept (top scores) before NMS.
        max_per_img: detections kept per image.
        multi_label: a prior may give one detection per class above ``score_thr`` (else its best class only).
        nms: False: step 2 is skipped and the graph has no NonMaxSuppression op; every pair above
            ``score_thr`` competes and ``D = min(max_per_img, N)`` (the selection of
            :func:`detkit.models.postprocess.select_top_pairs`; ONNX ``TopK`` orders equal scores by
            index, i.e. by prior then class, as it does).

    Returns:
        ``num_dets Tensor[B]`` int64, ``det_boxes Tensor[B, D, 4]``, ``det_scores Tensor[B, D]``,
        ``det_labels Tensor[B, D]`` int64; rows past ``num_dets`` are zero, label -1.
    """
    n, c = int(boxes.shape[1]), int(scores.shape[2])
    if not multi_label:  # keep only each prior's best class
        best = scores.max(dim=2, keepdim=True).values  # (B, N, 1)
        scores = torch.where(scores >= best, scores, torch.zeros_like(scores))
    if nms_pre < n * c:
        kth = scores.reshape(-1, n * c).topk(nms_pre, dim=1).values[:, -1:]  # (B, N*C) -> (B, 1)
        scores = torch.where(scores >= kth[:, :, None], scores, torch.zeros_like(scores))
    flat_scores = scores.reshape(-1)
    if nms:
        selected = NonMaxSuppression.apply(
            boxes, scores.transpose(1, 2),  # (B, N, C) -> (B, C, N)
            torch.tensor([max_per_img], dtype=torch.long),
            torch.tensor([nms_iou_thr], dtype=torch.float32),
            torch.tensor([score_thr], dtype=torch.float32),
        )
        img, cls, prior = selected[:, 0], selected[:, 1], selected[:, 2]
        flat_index = (img * n + prior) * c + cls  # into (B, N, C) flattened
        kept = torch.zeros_like(flat_scores).scatter(0, flat_index, flat_scores.index_select(0, flat_index))
    else:
        kept = torch.where(flat_scores > score_thr, flat_scores, torch.zeros_like(flat_scores))
    d = min(max_per_img, n * c if nms else n)  # NMS-free: Ultralytics' k = min(max_det, N)
    det_scores, top = kept.reshape(-1, n * c).topk(d, dim=1)  # (B*N*C,) -> (B, N*C) -> (B, D)
    valid = det_scores > 0
    det_labels = torch.where(valid, top % c, torch.full_like(top, -1))
    prior_index = (top // c)[:, :, None].expand(-1, -1, 4)  # (B, D) -> (B, D, 4)
    det_boxes = torch.gather(boxes, 1, prior_index) * valid[:, :, None].to(boxes.dtype)
    return valid.sum(dim=1), det_boxes, det_scores, det_labels
