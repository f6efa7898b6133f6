"""Drawing: detections with class names and scores, image grids, assignment pictures, metric curves,
PR curves and precision / recall / F1 against the score threshold.

Images are ``(H, W, 3) uint8`` BGR numpy arrays (OpenCV's convention); boxes are xyxy pixels.
Plots use matplotlib's Agg backend (no display needed) and are written as PNG.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from detkit.io import atomic_save_figure

__all__ = [
    "color_for",
    "draw_assignment",
    "draw_detections",
    "image_grid",
    "plot_class_curves",
    "plot_curves",
    "plot_pr_curves",
    "tensor_to_bgr",
]

MAX_LEGEND_CLASSES = 10  # more classes than this: their curves in grey without a legend


def color_for(index: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour for a class or GT index (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def tensor_to_bgr(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` float RGB in 0..1 -> ``(H, W, 3)`` uint8 BGR."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) RGB tensor, got shape {tuple(image.shape)}")
    rgb = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)  # (3,H,W) -> (H,W,3)
    return np.ascontiguousarray(rgb.cpu().numpy()[..., ::-1])


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    scale, thick = 0.45, 1
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    y0 = max(y, th + base + 2)  # keep the label inside the image at the top edge ...
    x = max(0, min(x, image.shape[1] - tw - 2))  # ... and at the right edge
    cv2.rectangle(image, (x, y0 - th - base - 2), (x + tw + 2, y0), color, -1)
    cv2.putText(image, text, (x + 1, y0 - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                cv2.LINE_AA)


def draw_detections(
    image: np.ndarray,
    boxes: Tensor | np.ndarray,
    scores: Tensor | np.ndarray | None,
    labels: Tensor | np.ndarray,
    class_names: Sequence[str] | None = None,
    score_thr: float = 0.0,
    thickness: int = 2,
) -> np.ndarray:
    """Draw boxes with ``name score`` labels (``name`` alone without scores) on a copy of ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        boxes: ``(K, 4)`` xyxy pixels; scores ``(K,)`` or None (ground truth); labels ``(K,)``
            class indices.
        class_names: names per class index (the index is printed when missing).
        score_thr: detections scoring below it are not drawn.

    Returns:
        The drawn ``(H, W, 3)`` uint8 BGR image.
    """
    out = image.copy()
    boxes, labels = (np.asarray(torch.as_tensor(v).detach().cpu()) for v in (boxes, labels))
    labels = labels.reshape(-1)
    scores = None if scores is None else np.asarray(torch.as_tensor(scores).detach().cpu()).reshape(-1)
    for i, (box, label) in enumerate(zip(boxes.reshape(-1, 4), labels)):
        score = None if scores is None else float(scores[i])
        if score is not None and score < score_thr:
            continue
        label = int(label)
        color = color_for(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        _label(out, name if score is None else f"{name} {score:.2f}", x1, y1, color)
    return out


def image_grid(images: Sequence[np.ndarray], cols: int, tile: int, captions: Sequence[str] | None = None,
               fill: int = 114) -> np.ndarray:
    """Images side by side in a grid, each scaled to fit a ``tile`` x ``tile`` cell (aspect kept).

    Args:
        images: ``(H_i, W_i, 3)`` uint8 BGR each.
        cols: images per row.
        tile: cell side in pixels.
        captions: a line written in each cell's bottom-left corner.
        fill: grey level of empty space.

    Returns:
        ``(rows * tile, cols * tile, 3)`` uint8 BGR.
    """
    if not images or cols < 1 or tile < 1:
        raise ValueError(f"image_grid needs images, cols >= 1 and tile >= 1; got {len(images)} images, "
                         f"cols={cols}, tile={tile}")
    rows = -(-len(images) // cols)
    out = np.full((rows * tile, cols * tile, 3), fill, np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = tile / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        y, x = (i // cols) * tile, (i % cols) * tile
        out[y:y + nh, x:x + nw] = small
        cv2.rectangle(out, (x, y), (x + tile - 1, y + tile - 1), (255, 255, 255), 1)
        if captions is not None and i < len(captions) and captions[i]:
            _label(out, captions[i], x + 2, y + tile - 4, (40, 40, 40))
    return out


def draw_assignment(
    image: np.ndarray,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    priors: Tensor,
    gt_index: Tensor,
    pos_mask: Tensor,
    title: str = "",
) -> np.ndarray:
    """GT boxes and, in each GT's colour, the centres of the priors assigned to it.

    Args:
        image: ``(H, W, 3)`` uint8 BGR (the network input the priors live on).
        gt_boxes: ``(M, 4)`` xyxy; gt_mask ``(M,)`` bool (False rows are padding, not drawn).
        priors: ``(N, 4)`` xyxy; gt_index ``(N,)`` long; pos_mask ``(N,)`` bool (one image of an
            ``AssignResult``).
        title: written in the top-left corner (e.g. the assigner's name).

    Returns:
        The drawn ``(H, W, 3)`` uint8 BGR image.
    """
    out = image.copy()
    gt_boxes, gt_mask = gt_boxes.detach().cpu(), gt_mask.detach().cpu().bool()
    priors, gt_index, pos_mask = priors.detach().cpu(), gt_index.detach().cpu(), pos_mask.detach().cpu().bool()
    for m in torch.nonzero(gt_mask).flatten().tolist():
        x1, y1, x2, y2 = (int(round(v)) for v in gt_boxes[m].tolist())
        cv2.rectangle(out, (x1, y1), (x2, y2), color_for(m), 2)
    centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
    sizes = (priors[:, 2:] - priors[:, :2]).clamp(min=1)  # (N, 2)
    for n in torch.nonzero(pos_mask).flatten().tolist():
        m = int(gt_index[n])
        cx, cy = (int(round(v)) for v in centres[n].tolist())
        radius = max(2, int(float(sizes[n].min()) / 8))  # bigger dots for coarser levels
        cv2.circle(out, (cx, cy), radius, color_for(m), -1)
        cv2.circle(out, (cx, cy), radius, (0, 0, 0), 1)
    if title:
        _label(out, f"{title}: {int(pos_mask.sum())} pos", 0, 0, (40, 40, 40))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    xlabel: str = "epoch",
    title: str = "",
) -> None:
    """One subplot per named series of ``(x, y)`` points, written to ``path`` as PNG.

    Example: ``plot_curves({"loss": [(1, 2.3), (2, 1.9)], "AP": [(1, 0.1)]}, "curves.png")``.
    Empty series are skipped; nothing is written when all are empty.
    """
    items = [(k, v) for k, v in series.items() if len(v)]
    if not items:
        return
    plt = _pyplot()
    cols = min(3, len(items))
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, items):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pr_curves(
    precision: np.ndarray,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    max_classes: int = 10,
) -> None:
    """Precision-recall curves from COCOeval's precision array, written to ``path`` as PNG.

    Args:
        precision: ``(T=10, R=101, K, A=4, M=3)`` (``COCOEvaluator.precision``); ``-1`` marks no GT.
        class_names: names of the K classes; the ``max_classes`` classes with most area under
            their IoU=0.5 curve are drawn in the right panel.

    The left panel shows the all-class mean at IoU 0.50, 0.75 and 0.50:0.95 (area all, 100 dets).
    """
    if precision.ndim != 5:
        raise ValueError(f"expected COCOeval precision (T, R, K, A, M), got shape {precision.shape}")
    plt = _pyplot()
    recall = np.linspace(0, 1, precision.shape[1])
    p = precision[:, :, :, 0, -1]  # (T, R, K): area all, maxDets 100
    valid = np.asarray((p > -1).all(axis=(0, 1)))  # (K,) classes with GT
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, curve in (("IoU=0.50", p[0]), ("IoU=0.75", p[5]), ("IoU=0.50:0.95", p.mean(axis=0))):
        ax0.plot(recall, curve[:, valid].mean(axis=1) if valid.any() else np.zeros_like(recall), label=name)
    ax0.set_title("mean over classes")
    order = [k for k in np.argsort(-p[0].mean(axis=0)) if valid[k]][:max_classes]
    for k in order:
        name = class_names[k] if class_names is not None else str(k)
        ax1.plot(recall, p[0, :, k], label=f"{name} ({p[0, :, k].mean():.2f})")
    ax1.set_title(f"IoU=0.50, top {len(order)} classes")
    for ax in (ax0, ax1):
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        atomic_save_figure(fig, path, dpi=100)  # a full disk: one line, the previous file kept
    finally:
        plt.close(fig)


def plot_class_curves(curves: Any, out_dir: str | os.PathLike) -> list[str]:
    """``PR_curve.png``, ``P_curve.png``, ``R_curve.png`` and ``F1_curve.png`` in ``out_dir``.

    Args:
        curves: a :class:`detkit.evaluation.curves.ClassCurves`.

    Each figure shows every class with GT (named in the legend up to :data:`MAX_LEGEND_CLASSES`
    classes, with its AP or best value; grey without a legend beyond) and the mean over classes in
    bold. Returns the paths written.
    """
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    shown = [k for k in range(len(curves.class_names)) if curves.has_gt[k]]
    legend = len(shown) <= MAX_LEGEND_CLASSES
    x_pr, x_conf = curves.recalls, curves.thresholds
    panels = [("PR_curve.png", "pr", x_pr, "recall", "precision"),
              ("P_curve.png", "precision", x_conf, "score threshold", "precision"),
              ("R_curve.png", "recall", x_conf, "score threshold", "recall"),
              ("F1_curve.png", "f1", x_conf, "score threshold", "F1")]
    written = []
    for file, name, xs, xlabel, ylabel in panels:
        values = getattr(curves, name)
        mean = curves.mean(name)
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for k in shown:
            note = {"pr": f" (AP {curves.ap[k]:.3f})", "f1": f" (best {values[k].max():.2f})"}.get(name, "")
            if legend:
                ax.plot(xs, values[k], linewidth=1, label=f"{curves.class_names[k]}{note}")
            else:
                ax.plot(xs, values[k], linewidth=0.6, color="0.7")
        if name == "pr":
            label = f"all classes, AP {np.nanmean(curves.ap) if shown else 0.0:.3f}"
        elif name == "f1":
            thr, best = curves.best_f1()
            label = f"all classes, best {best:.2f} at {thr:.3f}"
            ax.axvline(thr, color="tab:blue", linestyle=":", linewidth=1)
        else:
            label = "all classes"
        ax.plot(xs, mean, color="tab:blue", linewidth=3, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        what = {"pr": "precision-recall", "precision": "precision", "recall": "recall", "f1": "F1"}[name]
        more = "" if legend else f"; {len(shown)} classes in grey"
        ax.set_title(f"{what} at IoU {curves.iou:g}{more}", fontsize=11)
        ax.legend(fontsize=8, loc="lower left" if name in ("pr", "recall") else "best")
        fig.tight_layout()
        path = os.path.join(out_dir, file)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
