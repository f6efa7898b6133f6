"""The run folder's report, written once when training ends (rank 0, when the run has a val set).

Files (in the work dir; each left out with one logged line saying why when it cannot be made):

=================================  =============================================================
``args.json``                      the command line, the work dir, device, resume / initial
                                   weights, and the resolved settings (``train`` / ``runtime``);
                                   the merged config is ``config.py``
``val_batch_labels.jpg``           :data:`NUM_IMAGES` val images (a fixed, evenly spaced choice)
``val_batch_pred.jpg``             with their labels, and the final model's detections scoring
                                   ``>= DRAW_SCORE`` on the same images, class names on the boxes
``confusion_matrix.png``           the confusion matrix at ``score >= DRAW_SCORE``, IoU 0.5
``confusion_matrix_normalized.png``  (counts; shares of each true class's row)
``PR_curve.png``, ``P_curve.png``,  per class and the mean, from every detection of the last
``R_curve.png``, ``F1_curve.png``  evaluation matched at IoU 0.5 (:mod:`detkit.evaluation.curves`)
``labels.png``                     the training labels (:func:`detkit.engine.plots.plot_labels`)
``results.png``                    train and val losses per epoch, AP50 and AP
                                   (:func:`detkit.engine.plots.plot_results`)
=================================  =============================================================

The confusion matrix and the curves come from one matcher,
:func:`detkit.evaluation.errors.analyse_errors`, on the COCO results of the last evaluation (the
final weights; predicted again when not given).

Failures: the report never ends a training run. An exception while making one item is a bug; with
``strict=False`` (training) it is logged as one warning line naming the item, its traceback goes to
``report_errors.log`` in the work dir, and the other items are still made; with ``strict=True``
(tests) it is raised.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from detkit.io import atomic_write_text

__all__ = ["NUM_IMAGES", "REPORT_FILES", "report_training_run", "write_run_report"]

logger = logging.getLogger("detkit")

NUM_IMAGES = 8  # val images drawn
DRAW_SCORE = 0.25  # detections drawn and counted in the confusion matrix score at least this
MATCH_IOU = 0.5
TILE = 400  # pixels per drawn image in the val mosaics (4 x 2 tiles: 1600 x 800)
GRID_COLS = 4
ERRORS_FILE = "report_errors.log"
REPORT_FILES = ("args.json", "val_batch_labels.jpg", "val_batch_pred.jpg", "confusion_matrix.png",
                "confusion_matrix_normalized.png", "PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png",
                "labels.png", "results.png")


class _Skip(Exception):
    """An item that cannot be made for a reason that is not a bug (logged as one line)."""


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_args(path: Path, args: Mapping[str, Any]) -> Path:
    """``args`` (settings dataclasses, paths and the like made plain) as indented JSON."""
    atomic_write_text(path, json.dumps(_jsonable(args), indent=2) + "\n")
    return path


def _val_batch(val_set: Dataset, indices: Sequence[int], collate_fn: Callable | None, size_divisor: int,
               device: torch.device) -> dict[str, Any]:
    from detkit.data.loader import build_dataloader

    loader = build_dataloader(Subset(val_set, list(indices)), len(indices), num_workers=0, shuffle=False,
                              collate_fn=collate_fn, size_divisor=size_divisor, device=device,
                              persistent_workers=False, pin_memory=False)
    return next(iter(loader))


def _content(batch: Mapping[str, Any], i: int) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)`` of image ``i``'s pixels inside its padded network input."""
    height, width = batch["images"].shape[-2:]
    if "pads" not in batch or "ori_sizes" not in batch or "scale_factors" not in batch:
        return 0, 0, int(width), int(height)
    x0, y0 = (int(round(float(v))) for v in batch["pads"][i])
    sx, sy = (float(v) for v in batch["scale_factors"][i])
    h, w = (float(v) for v in batch["ori_sizes"][i])
    return x0, y0, min(int(round(w * sx)), int(width) - x0), min(int(round(h * sy)), int(height) - y0)


def draw_val_images(work_dir: Path, model: nn.Module, val_set: Dataset, class_names: Sequence[str],
                    device: torch.device, collate_fn: Callable | None = None, size_divisor: int = 32,
                    num_images: int = NUM_IMAGES, score_thr: float = DRAW_SCORE) -> tuple[list[Path], int]:
    """``val_batch_labels.jpg`` and ``val_batch_pred.jpg``: ``num_images`` evenly spaced val images
    (network inputs, padding cropped) with their labels / ``model``'s detections scoring at least
    ``score_thr``. Returns the paths and the number of detections drawn."""
    import cv2

    from detkit.viz import draw_detections, image_grid, tensor_to_bgr

    size = len(cast(Sized, val_set))
    n = min(num_images, size)
    indices = sorted({int(round(v)) for v in np.linspace(0, size - 1, n)})
    batch = _val_batch(val_set, indices, collate_fn, size_divisor, device)
    was_training = model.training
    model.eval()
    from detkit.engine.inference import predicts_with_losses

    inputs = {k: v for k, v in batch.items() if k not in ("scale_factors", "pads", "ori_sizes")}
    with torch.no_grad():  # boxes in network-input pixels: no letterbox undone
        # a detkit Detector keeps only what is drawn (cheaper NMS); another model's own threshold applies
        detector: Any = model  # has predict(batch, **settings)
        dets = (detector.predict(inputs, score_thr=score_thr) if predicts_with_losses(model)
                else detector.predict(inputs))
    model.train(was_training)
    labelled, predicted, names, drawn = [], [], [], 0
    for i in range(len(indices)):
        x0, y0, w, h = _content(batch, i)
        image = tensor_to_bgr(batch["images"][i])[y0:y0 + h, x0:x0 + w]
        scale = TILE / max(h, w)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
        shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        mask = batch["gt_mask"][i].bool().cpu()
        gt = (batch["gt_boxes"][i].float().cpu()[mask] - shift) * scale
        labelled.append(draw_detections(image, gt, None, batch["gt_labels"][i].cpu()[mask], class_names))
        det = dets[i]
        keep = det["scores"].float().cpu() >= score_thr
        drawn += int(keep.sum())
        boxes = (det["boxes"].float().cpu()[keep] - shift) * scale
        predicted.append(draw_detections(image, boxes, det["scores"].float().cpu()[keep], det["labels"].cpu()[keep],
                                         class_names))
        paths = batch.get("img_paths")
        names.append(os.path.basename(paths[i]) if paths and paths[i] else f"val image {indices[i]}")
    out = []
    for file, images, what in (("val_batch_labels.jpg", labelled, "labels"), ("val_batch_pred.jpg", predicted,
                                                                               f"score >= {score_thr:g}")):
        grid = image_grid(images, min(GRID_COLS, len(images)), TILE, captions=[f"{n}: {what}" for n in names])
        path = work_dir / file
        if not cv2.imwrite(str(path), grid, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise RuntimeError(f"OpenCV could not write {path}")
        out.append(path)
    return out, drawn


def _records_labels(dataset: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(labels (N,), cxcywh fractions (N, 4), image index (N,), images, images left out)`` of a
    :class:`~detkit.data.base.DetDataset`'s records, read without opening any image (records with
    pixel boxes and no annotated size are left out)."""
    labels, boxes, where, left_out = [], [], [], 0
    for i, rec in enumerate(dataset.records):
        b = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
        if not rec.get("normalized"):
            size = rec.get("size")
            if not size:
                left_out += 1
                continue
            h, w = size
            b = b / np.array([w, h, w, h], np.float64)
        labels.append(np.asarray(rec["labels"], np.int64).reshape(-1))
        boxes.append(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
                              axis=1))
        where.append(np.full(len(b), i - left_out, np.int64))
    n = len(dataset.records) - left_out
    if not labels:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), n, left_out
    return np.concatenate(labels), np.concatenate(boxes), np.concatenate(where), n, left_out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """``metrics.csv``'s rows, numbers as floats (empty cells left out)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out = {}
            for k, v in row.items():
                try:
                    out[k] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(out)
    return rows


class _Report:
    """Runs the items, each guarded as the module docstring says."""

    def __init__(self, work_dir: Path, strict: bool) -> None:
        self.work_dir, self.strict = work_dir, strict
        self.written: list[Path] = []
        self.seconds: dict[str, float] = {}  # per item made

    def item(self, name: str, make: Callable[[], Sequence[Path] | Path | None]) -> None:
        start = time.perf_counter()
        try:
            made = make()
        except _Skip as e:
            logger.info(f"run report: {name} not written: {e}")
            return
        except Exception as e:  # noqa: BLE001 - a bug, but the training result stands
            if self.strict:
                raise
            with open(self.work_dir / ERRORS_FILE, "a", encoding="utf-8") as f:
                f.write(f"{name}:\n{traceback.format_exc()}\n")
            logger.warning(f"run report: {name} not written: {type(e).__name__}: {e} (a bug in detkit; the "
                           f"traceback is in {self.work_dir / ERRORS_FILE})")
            return
        if isinstance(made, Path):
            made = [made]
        self.written += [Path(p) for p in made or []]
        self.seconds[name] = time.perf_counter() - start


def write_run_report(
    work_dir: str | os.PathLike,
    model: nn.Module,
    val_set: Dataset | None,
    evaluator: Any,
    class_names: Sequence[str] | None = None,
    *,
    results: Sequence[Mapping[str, Any]] | None = None,
    train_set: Dataset | None = None,
    args: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    collate_fn: Callable | None = None,
    batch_size: int = 8,
    size_divisor: int = 32,
    strict: bool = False,
) -> list[Path]:
    """Write the report of the module docstring into ``work_dir``; returns the files written.

    Args:
        work_dir: the run's work dir (holding ``metrics.csv``).
        model: the final weights (the EMA model when there is one), used for the drawn images and,
            when ``results`` is None, to predict the val set.
        val_set: the val dataset (None: only ``args.json``, ``labels.png`` and ``results.png``).
        evaluator: its :class:`~detkit.evaluation.COCOEvaluator` (the ground truth).
        class_names: names per class index (default: the evaluator's).
        results: the COCO results of the last evaluation of ``model``.
        train_set: for ``labels.png`` (a dataset with ``records``; others are skipped).
        args: what ``args.json`` holds (None: not written).
        device, collate_fn, batch_size, size_divisor: how to run ``model`` on val batches.
        strict: raise an item's exception instead of logging it (tests).
    """
    start = time.perf_counter()
    work_dir = Path(work_dir)
    device = torch.device(device)
    report = _Report(work_dir, strict)
    if args is not None:
        report.item("args.json", lambda: write_args(work_dir / "args.json", args))
    if val_set is not None and evaluator is not None:
        names = list(class_names if class_names is not None else evaluator.class_names)

        def drawn() -> list[Path]:
            paths, count = draw_val_images(work_dir, model, val_set, names, device, collate_fn, size_divisor)
            if count == 0:
                logger.info(f"run report: val_batch_pred.jpg shows no detections: none scored >= {DRAW_SCORE:g} "
                            f"on those {min(NUM_IMAGES, len(cast(Sized, val_set)))} images")
            return paths

        report.item("val_batch_labels.jpg, val_batch_pred.jpg", drawn)
        if results is None:
            from detkit.engine.distributed import is_distributed
            from detkit.engine.inference import predict_dataset

            if not is_distributed():  # under DDP predicting needs every rank; the report runs on rank 0
                results = predict_dataset(model, val_set, device, collate_fn=collate_fn, batch_size=batch_size,
                                          progress=False, size_divisor=size_divisor)
        if results is None:
            logger.info("run report: confusion matrix and PR / F1 curves not made: no evaluation results")
        else:
            report.item("confusion_matrix.png, confusion_matrix_normalized.png",
                        lambda: _confusion(work_dir, evaluator, results, names))
            report.item("PR_curve.png, P_curve.png, R_curve.png, F1_curve.png (and pr_curves.png)",
                        lambda: _curves(work_dir, evaluator, results, names))
    elif val_set is None:
        logger.info("run report: no evaluation in this run (no val set, or train.eval_interval=0): drawn val "
                    "images, confusion matrix and PR / F1 curves not made")
    if train_set is not None:
        report.item("labels.png", lambda: _labels(work_dir, train_set))
    report.item("results.png", lambda: _results(work_dir))
    logger.info(f"run report: {len(report.written)} files in {time.perf_counter() - start:.1f} s "
                f"({', '.join(p.name for p in report.written)})")
    logger.debug("run report seconds per item: " + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()))
    return report.written


def _confusion(work_dir: Path, evaluator: Any, results: Sequence[Mapping[str, Any]],
               names: Sequence[str]) -> list[Path]:
    from detkit.evaluation.errors import analyse_errors

    errors = analyse_errors(evaluator.gt.dataset, results, score_thr=DRAW_SCORE, fg_iou=MATCH_IOU, class_names=names)
    return [errors.plot_confusion(work_dir / "confusion_matrix.png"),
            errors.plot_confusion(work_dir / "confusion_matrix_normalized.png", normalize=True)]


def _curves(work_dir: Path, evaluator: Any, results: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Path]:
    from detkit.evaluation.curves import class_curves
    from detkit.evaluation.errors import analyse_errors
    from detkit.viz import plot_class_curves

    if not results:
        raise _Skip("the last evaluation had no detections")
    curves = class_curves(analyse_errors(evaluator.gt.dataset, results, score_thr=0.0, fg_iou=MATCH_IOU,
                                         class_names=names))
    if not curves.has_gt.any():
        raise _Skip("the val set has no labelled box")
    return [Path(p) for p in plot_class_curves(curves, work_dir)]


def _labels(work_dir: Path, train_set: Any) -> Path:
    from detkit.engine.plots import plot_labels

    if not hasattr(train_set, "records") or not hasattr(train_set, "class_names"):
        raise _Skip(f"{type(train_set).__name__} has no records / class_names to read labels from")
    labels, boxes, where, n, left_out = _records_labels(train_set)
    if left_out:
        logger.info(f"run report: labels.png leaves out {left_out} training images whose size is not annotated")
    if not len(labels):
        raise _Skip("the training set has no labelled box")
    return plot_labels(labels, boxes, where, n, list(train_set.class_names), work_dir / "labels.png")


def _results(work_dir: Path) -> Path:
    from detkit.engine.plots import plot_results

    made = plot_results(_read_rows(work_dir / "metrics.csv"), work_dir / "results.png")
    if made is None:
        raise _Skip("metrics.csv holds no losses or AP")
    return made


def report_training_run(trainer: Any, strict: bool = False) -> list[Path]:
    """:func:`write_run_report` for a :class:`~detkit.engine.trainer.Trainer` whose training ended:
    rank 0 only (other ranks return ``[]``), the EMA weights when there are any, the last
    evaluation's results (``trainer.val_results`` when set), ``args.json`` from ``sys.argv`` and
    the trainer's settings. Never raises unless ``strict`` (see the module docstring)."""
    if trainer.rank != 0:
        return []
    try:
        from detkit.engine import builders
        from detkit.engine.evaluate import val_batch_size

        model = trainer.ema.module if trainer.ema is not None else trainer.detector
        args = {"argv": list(sys.argv), "work_dir": str(trainer.work_dir), "device": str(trainer.device),
                "world_size": trainer.world_size, "resumed_from": trainer.resumed_from,
                "train": trainer.settings, "runtime": trainer.runtime}
        return write_run_report(
            trainer.work_dir, model, trainer.val_set, trainer.evaluator,
            results=getattr(trainer, "val_results", None), train_set=trainer.train_set, args=args,
            device=trainer.device, collate_fn=trainer.loader.collate_fn,
            batch_size=val_batch_size(trainer.cfg),
            size_divisor=builders.size_divisor(trainer.detector), strict=strict)
    except Exception as e:  # noqa: BLE001 - see the module docstring
        if strict:
            raise
        logger.warning(f"run report not written: {type(e).__name__}: {e} (a bug in detkit)")
        return []
