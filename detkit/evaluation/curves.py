"""Precision, recall and F1 against the score threshold, and precision-recall curves, per class.

    report = analyse_errors(gt, results, score_thr=0.0)    # every detection, matched at IoU 0.5
    curves = class_curves(report)
    curves.best_f1()   # (threshold, mean F1) where the mean F1 over classes peaks

The matching is :func:`detkit.evaluation.errors.analyse_errors`' step 1 (COCO's greedy matching,
per class, in descending score order; detections on a crowd GT ignored), so the curves and the
confusion matrix come from one matcher. For class ``c`` with ``G_c`` GTs, at threshold ``s``:
``P = TP(>= s) / D(>= s)`` (1 where no detection scores ``>= s``: no false positive),
``R = TP(>= s) / G_c``, ``F1 = 2PR / (P + R)`` (0 when both are 0). The precision-recall curve is
COCO's 101-point one: at each recall ``r`` in ``0, 0.01, ..., 1`` the highest precision reached at a
recall ``>= r`` (0 where ``r`` is not reached), and its mean is the class's AP at that IoU. Unlike
COCOeval no per-image limit of 100 detections applies. Means are over the classes with GT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detkit.evaluation.errors import ErrorReport

__all__ = ["ClassCurves", "class_curves"]

NUM_THRESHOLDS = 1001  # score thresholds 0, 0.001, ..., 1
NUM_RECALLS = 101  # COCO's recall points


@dataclass
class ClassCurves:
    """Per-class curves of one :func:`class_curves` call.

    Attributes:
        class_names: C names.
        num_gt: ``(C,)`` GTs per class.
        thresholds: ``(S,)`` score thresholds, 0..1.
        precision, recall, f1: ``(C, S)`` at each threshold.
        recalls: ``(R,)`` recall points 0..1.
        pr: ``(C, R)`` COCO-interpolated precision at each recall point.
        ap: ``(C,)`` mean of ``pr`` per class (NaN for a class without GT).
        iou: the IoU at which detections were matched.
    """

    class_names: list[str]
    num_gt: np.ndarray
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    recalls: np.ndarray
    pr: np.ndarray
    ap: np.ndarray
    iou: float

    @property
    def has_gt(self) -> np.ndarray:
        """``(C,)`` bool: the classes the means are over."""
        return self.num_gt > 0

    def mean(self, name: str) -> np.ndarray:
        """The mean over classes with GT of ``precision``, ``recall``, ``f1`` (``(S,)``) or ``pr``
        (``(R,)``); zeros when no class has GT."""
        values = getattr(self, name)
        if not self.has_gt.any():
            return np.zeros(values.shape[1])
        return values[self.has_gt].mean(axis=0)

    def best_f1(self) -> tuple[float, float]:
        """``(threshold, mean F1)`` at the threshold where the mean F1 over classes peaks (the lowest
        such threshold on ties)."""
        mean = self.mean("f1")
        i = int(mean.argmax())
        return float(self.thresholds[i]), float(mean[i])


def class_curves(report: ErrorReport) -> ClassCurves:
    """The curves of the module docstring from ``report``'s matched detections.

    Args:
        report: an :func:`~detkit.evaluation.errors.analyse_errors` result; its ``score_thr``
            should be 0 (the curves start at that threshold).
    """
    names = list(report.class_names)
    c = len(names)
    num_gt = report.num_gt.astype(np.int64)
    thresholds = np.linspace(0.0, 1.0, NUM_THRESHOLDS)
    recalls = np.linspace(0.0, 1.0, NUM_RECALLS)
    precision = np.ones((c, len(thresholds)))
    recall = np.zeros((c, len(thresholds)))
    pr = np.zeros((c, len(recalls)))
    for k in range(c):
        pick = report.det_labels == k
        order = np.argsort(-report.det_scores[pick], kind="stable")
        scores = report.det_scores[pick][order]  # (D_k,) descending
        tp = np.cumsum(report.det_correct[pick][order])  # (D_k,) correct among the first i + 1
        counts = np.searchsorted(-scores, -thresholds, side="right")  # (S,) detections scoring >= s
        hit = tp[np.maximum(counts - 1, 0)] if len(tp) else np.zeros(len(thresholds))
        hit = np.where(counts > 0, hit, 0)
        precision[k] = np.where(counts > 0, hit / np.maximum(counts, 1), 1.0)
        if num_gt[k] == 0:
            continue
        recall[k] = hit / num_gt[k]
        if len(tp):
            prec = tp / np.arange(1, len(tp) + 1)
            envelope = np.maximum.accumulate(prec[::-1])[::-1]  # best precision at this recall or beyond
            at = np.searchsorted(tp / num_gt[k], recalls, side="left")  # first detection reaching each r
            pr[k] = np.where(at < len(tp), envelope[np.minimum(at, len(tp) - 1)], 0.0)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    ap = np.where(num_gt > 0, pr.mean(axis=1), np.nan)
    return ClassCurves(class_names=names, num_gt=num_gt, thresholds=thresholds, precision=precision,
                       recall=recall, f1=f1, recalls=recalls, pr=pr, ap=ap, iou=report.fg_iou)
