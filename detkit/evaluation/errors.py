"""What went wrong, by object size: a confusion matrix and error counts from COCO results.

    report = analyse_errors(evaluator.gt.dataset, results, score_thr=0.3)
    print(report.to_markdown())
    report.plot("work_dirs/analysis")   # confusion_matrix.png, errors_by_size.png

Detections scoring at least ``score_thr`` are matched to the ground truth of their image, in
descending score order, IoU by pycocotools (``maskUtils.iou``; against a crowd box it is the part
of the detection inside it, as COCOeval has it):

1. **Correct** (COCO's true positives at ``fg_iou``): a detection takes the unmatched non-crowd
   GT *of its class* with the highest IoU >= ``fg_iou``. A detection left over that lies on a crowd
   GT of its class (IoU >= ``fg_iou``) is ignored, as COCO ignores it.
2. **Wrong-class pairs**: each detection left over takes the unmatched non-crowd GT *of another
   class* with the highest IoU >= ``fg_iou`` not already paired this way.

Each non-crowd GT then has one outcome: *detected* (step 1), *wrong class* (step 2),
*mislocalised* (a detection of its class that is not correct has IoU in ``[bg_iou, fg_iou)`` with
it) or *missed* (none of these). Each detection that is neither correct nor ignored is a
*duplicate* (IoU >= ``fg_iou`` with a GT of its class, which another detection already took),
*wrong class* (IoU >= ``fg_iou`` with a GT of another class), *mislocalised* (IoU in
``[bg_iou, fg_iou)`` with a GT of its class) or *background*, checked in that order.

Confusion matrix ``(C + 1, C + 1)``: rows are the true class, columns the predicted class, the
last row and column "background". A correct detection counts at ``[c, c]``, a wrong-class pair at
``[true, predicted]``, every other GT at ``[true, background]`` and every other (not ignored)
detection at ``[background, predicted]``: row sums are the GTs of each class, column sums the
detections of each class.

Sizes are COCO's (small < 32², medium < 96², large), from the GT's ``area`` field (as COCOeval;
box area when absent) and a detection's box area, in original-image pixels.

The report also keeps each matched detection's score, class and whether step 1 found it correct
(ignored ones left out): :mod:`detkit.evaluation.curves` draws precision, recall and F1 against the
score, and the precision-recall curves, from them (with ``score_thr=0``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detkit.io import atomic_save_figure

__all__ = ["DET_ERRORS", "GT_OUTCOMES", "SIZE_NAMES", "ErrorReport", "analyse_errors", "confusion_classes"]

SIZE_NAMES = ("small", "medium", "large")
CONFUSION_ALL_CLASSES = 30  # more classes than this: the confusion figure shows only those present
CONFUSION_MAX_CLASSES = 80  # ... and at most this many of them (most GTs + detections first)
CONFUSION_NUMBERS_UP_TO = 30  # cells are numbered up to this many rows
CONFUSION_MAX_INCHES = 14.0  # the figure's longer side (1540 px at its 110 dpi)
SMALL_AREA, MEDIUM_AREA = 32.0**2, 96.0**2
GT_OUTCOMES = ("detected", "mislocalised", "wrong_class", "missed")
DET_ERRORS = ("duplicate", "wrong_class", "mislocalised", "background")
# per-detection / per-GT codes used while matching
_CORRECT, _IGNORED, _UNSET = -2, -3, -1


def _size(area: np.ndarray) -> np.ndarray:
    return (area >= SMALL_AREA).astype(np.int64) + (area >= MEDIUM_AREA).astype(np.int64)


@dataclass
class ErrorReport:
    """Counts of one :func:`analyse_errors` call.

    Attributes:
        class_names: C names, in category-id order.
        confusion: ``(C + 1, C + 1)`` int64, rows true class, columns predicted class, index C is
            background.
        gt_outcomes: ``(3, 4)`` int64 GTs per size (small, medium, large) and outcome
            (:data:`GT_OUTCOMES`).
        det_errors: ``(3, 4)`` int64 detections per size and error (:data:`DET_ERRORS`).
        num_dets: ``(3,)`` detections at or above the score threshold per size (ignored ones included).
        score_thr: the score at or above which detections are analysed.
        fg_iou: the IoU of a correct detection (COCO's true positives at this IoU).
        bg_iou: below it a detection is background; in ``[bg_iou, fg_iou)`` mislocalised.
        det_scores: ``(D,)`` score of every detection at or above the threshold that is not ignored.
        det_labels: ``(D,)`` their class indices.
        det_correct: ``(D,)`` bool, whether each is correct (step 1).
    """

    class_names: list[str]
    confusion: np.ndarray
    gt_outcomes: np.ndarray
    det_errors: np.ndarray
    num_dets: np.ndarray
    score_thr: float
    fg_iou: float
    bg_iou: float
    det_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    det_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    det_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def num_gt(self) -> np.ndarray:
        """``(C,)`` non-crowd GTs per class (the confusion matrix's row sums)."""
        return self.confusion[:-1].sum(axis=1)

    def missed_pct(self) -> dict[str, float]:
        """``{size: % of that size's GTs missed}`` (NaN where there is no GT of that size)."""
        totals = self.gt_outcomes.sum(axis=1)
        missed = self.gt_outcomes[:, GT_OUTCOMES.index("missed")]
        return {n: (100.0 * missed[i] / totals[i] if totals[i] else float("nan")) for i, n in enumerate(SIZE_NAMES)}

    def not_found_pct(self) -> dict[str, float]:
        """``{size: % of that size's GTs without a correct detection}`` (NaN where there is none):
        with ``score_thr=0`` this is ``1 - recall`` at IoU ``fg_iou`` over all the model's
        detections, a measure that does not depend on how a rule calibrates its scores."""
        totals = self.gt_outcomes.sum(axis=1)
        found = self.gt_outcomes[:, GT_OUTCOMES.index("detected")]
        return {n: (100.0 * (totals[i] - found[i]) / totals[i] if totals[i] else float("nan"))
                for i, n in enumerate(SIZE_NAMES)}

    def to_markdown(self) -> str:
        """The per-size tables and the confusion matrix as markdown."""
        gt_tot = self.gt_outcomes.sum(axis=1)
        lines = [f"Errors at score >= {self.score_thr:g}, IoU >= {self.fg_iou:g} correct, "
                 f"[{self.bg_iou:g}, {self.fg_iou:g}) mislocalised (sizes in original-image pixels, COCO's bounds)",
                 "", "| size | GTs | " + " | ".join(n.replace("_", " ") for n in GT_OUTCOMES) + " |",
                 "|---|---|" + "---|" * len(GT_OUTCOMES)]
        rows = [*zip(SIZE_NAMES, self.gt_outcomes, gt_tot), ("all", self.gt_outcomes.sum(0), gt_tot.sum())]
        for name, counts, total in rows:
            cells = [f"{c} ({100 * c / total:.1f}%)" if total else "0" for c in counts]
            lines.append(f"| {name} | {total} | " + " | ".join(cells) + " |")
        lines += ["", "| size | detections | " + " | ".join(n.replace("_", " ") for n in DET_ERRORS) + " |",
                  "|---|---|" + "---|" * len(DET_ERRORS)]
        drows = [*zip(SIZE_NAMES, self.det_errors, self.num_dets), ("all", self.det_errors.sum(0), self.num_dets.sum())]
        for name, counts, total in drows:
            cells = [f"{c} ({100 * c / total:.1f}%)" if total else "0" for c in counts]
            lines.append(f"| {name} | {total} | " + " | ".join(cells) + " |")
        names = [*self.class_names, "background"]
        lines += ["", "Confusion matrix (rows: true class, columns: predicted class)", "",
                  "| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for name, row in zip(names, self.confusion):
            lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
        return "\n".join(lines) + "\n"

    def plot_confusion(self, path: str | os.PathLike, normalize: bool = False) -> Path:
        """Write the confusion matrix to ``path`` (PNG) at a readable size; returns ``path``.

        Counts (``normalize=False``, cells coloured by the share of their true class's row) or those
        shares (each true class's row sums to 1; the background row by the detections it holds).
        Up to :data:`CONFUSION_ALL_CLASSES` classes all are shown; with more, only the classes
        present (a GT or a detection), at most :data:`CONFUSION_MAX_CLASSES` of them, those with most
        GTs + detections first, the title saying how many were left out. The figure's longer side
        is at most :data:`CONFUSION_MAX_INCHES` inches (110 dpi) and cells carry numbers up to
        :data:`CONFUSION_NUMBERS_UP_TO` rows.
        """
        plt = _pyplot()
        keep = confusion_classes(self.confusion)
        idx = [*keep, len(self.class_names)]  # the chosen classes and background
        names = [self.class_names[i] for i in keep] + ["background"]
        counts = self.confusion[np.ix_(idx, idx)]
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        k = len(names)
        side = min(CONFUSION_MAX_INCHES, 2.0 + 0.55 * k)
        fig, ax = plt.subplots(figsize=(side + 1.0, side))
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's row")
        if k <= CONFUSION_NUMBERS_UP_TO:
            font = 9 if k <= 12 else 7
            for i in range(k):
                for j in range(k):
                    if counts[i, j]:
                        text = f"{shares[i, j]:.2f}" if normalize else str(int(counts[i, j]))
                        ax.text(j, i, text, ha="center", va="center", fontsize=font,
                                color="white" if shares[i, j] > 0.5 else "black")
        tick_font = 9 if k <= 20 else 7 if k <= 45 else 6
        ax.set_xticks(range(k), names, rotation=90 if k > 12 else 45, ha="center" if k > 12 else "right",
                      fontsize=tick_font)
        ax.set_yticks(range(k), names, fontsize=tick_font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        title = f"confusion matrix{', normalised by row' if normalize else ''} (score >= {self.score_thr:g}, " \
                f"IoU >= {self.fg_iou:g})"
        if len(keep) < len(self.class_names):
            title += f"\n{len(keep)} of {len(self.class_names)} classes shown: those present, most GTs + detections"
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_save_figure(fig, path, dpi=110)  # a full disk: one line, the previous file kept
        finally:
            plt.close(fig)
        return path

    def plot(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``confusion_matrix.png`` (counts, coloured by the share of each true class's row)
        and ``errors_by_size.png`` (GT outcomes as shares per size, detection errors as counts)."""
        plt = _pyplot()

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [self.plot_confusion(out / "confusion_matrix.png")]

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        totals = np.maximum(self.gt_outcomes.sum(axis=1, keepdims=True), 1)
        bottom = np.zeros(len(SIZE_NAMES))
        for j, outcome in enumerate(GT_OUTCOMES):
            share = 100 * self.gt_outcomes[:, j] / totals[:, 0]
            left.bar(SIZE_NAMES, share, bottom=bottom, label=outcome.replace("_", " "))
            bottom += share
        left.set_ylabel("% of GTs")
        left.set_title("GT outcomes by size")
        left.legend(fontsize=8)
        x = np.arange(len(SIZE_NAMES))
        width = 0.8 / len(DET_ERRORS)
        for j, err in enumerate(DET_ERRORS):
            right.bar(x + (j - (len(DET_ERRORS) - 1) / 2) * width, self.det_errors[:, j], width,
                      label=err.replace("_", " "))
        right.set_xticks(x, SIZE_NAMES)
        right.set_ylabel("detections")
        right.set_title("false detections by size")
        right.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "errors_by_size.png")
        try:
            atomic_save_figure(fig, written[1], dpi=110)
        finally:
            plt.close(fig)
        return written


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_classes(confusion: np.ndarray) -> list[int]:
    """The class indices a confusion figure shows (see :meth:`ErrorReport.plot_confusion`).

    Args:
        confusion: ``(C + 1, C + 1)`` counts, the last row and column background.

    Returns:
        All ``C`` when ``C <= CONFUSION_ALL_CLASSES``; else the classes with a GT or a detection, at
        most ``CONFUSION_MAX_CLASSES`` (most GTs + detections first, ties by index), in index order.
    """
    c = confusion.shape[0] - 1
    if c <= CONFUSION_ALL_CLASSES:
        return list(range(c))
    volume = confusion[:c].sum(axis=1) + confusion[:, :c].sum(axis=0)  # (C,) GTs + detections
    present = np.flatnonzero(volume > 0)
    chosen = present[np.argsort(-volume[present], kind="stable")][:CONFUSION_MAX_CLASSES]
    return sorted(int(i) for i in chosen)


def analyse_errors(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], score_thr: float = 0.3,
                   fg_iou: float = 0.5, bg_iou: float = 0.1, class_names: Sequence[str] | None = None,
                   image_ids: Sequence[int] | None = None) -> ErrorReport:
    """Confusion matrix and errors by size of COCO ``results`` against ``gt`` (module docstring).

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``).
        results: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        score_thr: detections below this score are left out.
        fg_iou: IoU at which a detection finds a GT.
        bg_iou: least IoU of a mislocalised detection.
        class_names: one name per category in id order (default: the categories' names).
        image_ids: images to analyse (default: every image in ``gt``).

    Raises:
        ValueError: on thresholds outside ``0 <= bg_iou < fg_iou <= 1``, a result of an unknown
            category, or a wrong number of class names.
    """
    if not 0.0 <= bg_iou < fg_iou <= 1.0:
        raise ValueError(f"need 0 <= bg_iou < fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
    cat_ids = sorted(int(c["id"]) for c in gt["categories"])
    cat_index = {c: i for i, c in enumerate(cat_ids)}
    names = list(class_names) if class_names is not None else \
        [str(c.get("name", c["id"])) for c in sorted(gt["categories"], key=lambda c: int(c["id"]))]
    if len(names) != len(cat_ids):
        raise ValueError(f"{len(names)} class names for {len(cat_ids)} categories")
    ids = [int(i) for i in (image_ids if image_ids is not None else [im["id"] for im in gt["images"]])]
    keep = set(ids)
    gts_by_image: dict[int, list[Mapping[str, Any]]] = {i: [] for i in ids}
    for a in gt["annotations"]:
        if int(a["image_id"]) in keep and int(a["category_id"]) in cat_index:
            gts_by_image[int(a["image_id"])].append(a)
    dets_by_image: dict[int, list[Mapping[str, Any]]] = {i: [] for i in ids}
    for r in results:
        if float(r["score"]) < score_thr or int(r["image_id"]) not in keep:
            continue
        if int(r["category_id"]) not in cat_index:
            raise ValueError(f"result of image {r['image_id']} has category_id {r['category_id']}, "
                             f"not one of the ground truth's categories")
        dets_by_image[int(r["image_id"])].append(r)

    c = len(cat_ids)
    report = ErrorReport(class_names=names, confusion=np.zeros((c + 1, c + 1), np.int64),
                         gt_outcomes=np.zeros((3, len(GT_OUTCOMES)), np.int64),
                         det_errors=np.zeros((3, len(DET_ERRORS)), np.int64), num_dets=np.zeros(3, np.int64),
                         score_thr=score_thr, fg_iou=fg_iou, bg_iou=bg_iou)
    matched = [_analyse_image(gts_by_image[i], dets_by_image[i], cat_index, report) for i in ids]
    if matched:
        report.det_scores, report.det_labels, report.det_correct = (np.concatenate(v) for v in zip(*matched))
    return report


def _arrays(gts: Sequence[Mapping[str, Any]], dets: Sequence[Mapping[str, Any]], cat_index: Mapping[int, int]):
    """GT and detection arrays of one image, detections sorted by descending score (stable)."""
    g_box = np.array([a["bbox"] for a in gts], np.float64).reshape(-1, 4)
    g_cls = np.array([cat_index[int(a["category_id"])] for a in gts], np.int64)
    g_crowd = np.array([bool(a.get("iscrowd", 0)) for a in gts], bool)
    g_area = np.array([float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in gts], np.float64)
    order = np.argsort([-float(d["score"]) for d in dets], kind="stable")
    d_box = np.array([dets[i]["bbox"] for i in order], np.float64).reshape(-1, 4)
    d_cls = np.array([cat_index[int(dets[i]["category_id"])] for i in order], np.int64)
    d_score = np.array([float(dets[i]["score"]) for i in order], np.float64)
    return g_box, g_cls, g_crowd, g_area, d_box, d_cls, d_score


def _analyse_image(gts: Sequence[Mapping[str, Any]], dets: Sequence[Mapping[str, Any]],
                   cat_index: Mapping[int, int], report: ErrorReport) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match one image's detections (steps 1-2 of the module docstring) and add its counts.

    Returns:
        ``(scores, labels, correct)`` of its detections that are not ignored, each ``(D',)``.
    """
    from pycocotools import mask as mask_utils

    g_box, g_cls, g_crowd, g_area, d_box, d_cls, d_score = _arrays(gts, dets, cat_index)
    ng, nd = len(g_cls), len(d_cls)
    background = len(report.class_names)
    d_size = _size(d_box[:, 2] * d_box[:, 3])
    np.add.at(report.num_dets, d_size, 1)
    iou = mask_utils.iou(d_box.tolist(), g_box.tolist(), g_crowd.astype(np.uint8).tolist()) if ng and nd else None
    iou = np.asarray(iou, np.float64).reshape(nd, ng) if iou is not None else np.zeros((nd, ng))
    same = d_cls[:, None] == g_cls[None, :]  # (D, G)
    real = ~g_crowd[None, :]
    gt_state = np.full(ng, _UNSET)  # _CORRECT, or the detection index of a wrong-class pair
    det_state = np.full(nd, _UNSET)  # _CORRECT, _IGNORED, or the GT index of a wrong-class pair
    for d in range(nd):  # step 1: COCO's greedy matching, per class
        cand = np.where(same[d] & real[0] & (gt_state == _UNSET) & (iou[d] >= report.fg_iou), iou[d], -1.0)
        if cand.max(initial=-1.0) >= 0:
            g = int(cand.argmax())
            gt_state[g], det_state[d] = _CORRECT, _CORRECT
        elif (same[d] & g_crowd & (iou[d] >= report.fg_iou)).any():
            det_state[d] = _IGNORED
    for d in range(nd):  # step 2: wrong-class pairs
        if det_state[d] != _UNSET:
            continue
        cand = np.where(~same[d] & real[0] & (gt_state == _UNSET) & (iou[d] >= report.fg_iou), iou[d], -1.0)
        if cand.max(initial=-1.0) >= 0:
            g = int(cand.argmax())
            gt_state[g], det_state[d] = d, g

    open_dets = (det_state == _UNSET) | (det_state >= 0)  # neither correct nor ignored
    near = (iou >= report.bg_iou) & (iou < report.fg_iou)  # (D, G)
    g_size = _size(g_area)
    for g in map(int, np.flatnonzero(~g_crowd)):
        if gt_state[g] == _CORRECT:
            outcome, pred = "detected", int(g_cls[g])
        elif gt_state[g] >= 0:
            outcome, pred = "wrong_class", int(d_cls[gt_state[g]])
        elif (open_dets & same[:, g] & near[:, g]).any():
            outcome, pred = "mislocalised", background
        else:
            outcome, pred = "missed", background
        report.gt_outcomes[g_size[g], GT_OUTCOMES.index(outcome)] += 1
        report.confusion[g_cls[g], pred] += 1
    for d in map(int, np.flatnonzero(open_dets)):
        hit = real[0] & (iou[d] >= report.fg_iou)
        if (hit & same[d]).any():
            err = "duplicate"
        elif (hit & ~same[d]).any():
            err = "wrong_class"
        elif (real[0] & same[d] & near[d]).any():
            err = "mislocalised"
        else:
            err = "background"
        report.det_errors[d_size[d], DET_ERRORS.index(err)] += 1
        if det_state[d] == _UNSET:  # a detection paired with a GT of another class is counted there
            report.confusion[background, d_cls[d]] += 1
    kept = det_state != _IGNORED
    return d_score[kept], d_cls[kept], det_state[kept] == _CORRECT
