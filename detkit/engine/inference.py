"""Evaluation loop: predict a dataset (sharded over ranks), gather COCO results, evaluate on rank 0.

With ``val_losses=True`` (the trainer's epoch-end evaluation) the head's losses are computed on the
same forward pass as the predictions, from the val batches' targets (``gt_boxes`` etc. in network
input pixels, as in training): ``val/loss_*`` and their sum ``val/loss``, image-weighted means over
the set. This needs a :class:`~detkit.models.detector.Detector` whose ``predict`` is the standard
one (a head with ``loss`` and ``predict``); other models are predicted as before, without losses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from detkit.data.loader import build_dataloader
from detkit.engine.distributed import InferenceSampler, all_gather_object, is_main_process
from detkit.evaluation import COCOEvaluator, detections_to_coco_results
from detkit.evaluation.results import CocoResults, merge_coco_results
from detkit.models.detector import Detector
from detkit.models.postprocess import undo_letterbox_batch

__all__ = ["build_evaluator", "evaluate_dataset", "predict_dataset", "predicts_with_losses"]

VAL_LOSS_PREFIX = "val/"

logger = logging.getLogger("detkit")


def build_evaluator(dataset: Dataset, backend: str = "auto") -> COCOEvaluator:
    """A COCOEvaluator for ``dataset``'s ground truth.

    Uses ``dataset.ann_file`` (a COCO json) when the dataset has one, else ``dataset.coco_dict()``
    / ``dataset.to_coco()`` (a COCO dict built from other label formats). When the dataset skipped
    images (``dataset.problems``), only the images it kept are evaluated.
    """
    ann = getattr(dataset, "ann_file", None)
    if ann is not None and str(ann).endswith(".json") and Path(ann).is_file():
        records = getattr(dataset, "records", None)
        kept = [int(r["image_id"]) for r in records] if getattr(dataset, "problems", None) and records else None
        return COCOEvaluator(ann, backend=backend, class_names=getattr(dataset, "class_names", None), image_ids=kept)
    for name in ("coco_dict", "to_coco"):
        fn = getattr(dataset, name, None)
        if callable(fn):
            return COCOEvaluator(fn(), backend=backend, class_names=getattr(dataset, "class_names", None))
    raise ValueError(
        f"{type(dataset).__name__} offers no COCO ground truth for evaluation: it needs an 'ann_file' "
        "(COCO instances json) or a 'coco_dict()' / 'to_coco()' method"
    )


def predicts_with_losses(model: nn.Module) -> bool:
    """Whether :func:`predict_dataset` can compute ``model``'s losses on its prediction forward pass:
    a :class:`Detector` with the standard ``predict`` and a head with ``loss`` and ``predict``."""
    head = getattr(model, "head", None)
    return (isinstance(model, Detector) and type(model).predict is Detector.predict
            and callable(getattr(head, "loss", None)) and callable(getattr(head, "predict", None)))


def _predict_batch(model: nn.Module, batch: dict[str, Any], with_losses: bool
                   ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
    """Detections per image (as ``model.predict``) and, with ``with_losses``, the head's ``loss_*``
    from the same raw maps (``{}`` otherwise)."""
    detector: Any = model  # a Detector (predicts_with_losses): predict, head.predict, head.loss
    if not with_losses:
        return detector.predict(batch), {}
    images = batch["images"]
    raw = detector(images)  # one forward for both
    dets = undo_letterbox_batch(detector.head.predict(raw, batch), batch, images.shape[-2:])
    out = detector.head.loss(raw, batch)
    return dets, {k: v.detach().float() for k, v in out.items() if k.startswith("loss_")}


@torch.no_grad()
def _predict(model: nn.Module, dataset: Dataset, device: torch.device, collate_fn: Callable | None,
             batch_size: int, num_workers: int, progress: bool, amp: bool, size_divisor: int,
             val_losses: bool) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``(results gathered from all ranks, val/loss_* means over all ranks ({} without losses))``."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    with_losses = val_losses and predicts_with_losses(model)
    loader = build_dataloader(dataset, batch_size, num_workers=num_workers, shuffle=False,
                              sampler=InferenceSampler(len(cast(Sized, dataset))), persistent_workers=False,
                              pin_memory=device.type == "cuda", collate_fn=collate_fn,
                              size_divisor=size_divisor, device=device)
    cat_ids = getattr(dataset, "cat_ids", None)
    results = CocoResults()  # with the count of non-finite detections dropped
    sums: dict[str, Tensor] = {}
    start, images = time.perf_counter(), 0
    bar = tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False, dynamic_ncols=True)
    for batch in bar:
        n = batch["images"].shape[0]
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            dets, losses = _predict_batch(model, batch, with_losses)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v * n
        results += detections_to_coco_results(dets, batch["image_ids"], cat_ids, warn=False)
        images += n
        bar.set_postfix(img_s=f"{images / max(time.perf_counter() - start, 1e-9):.1f}")
    model.train(was_training)
    gathered = all_gather_object((results, {k: float(v) for k, v in sums.items()}, images))
    means: dict[str, float] = {}
    if with_losses:
        total = sum(part[2] for part in gathered)
        keys = sorted({k for part in gathered for k in part[1]})
        means = {f"{VAL_LOSS_PREFIX}{k}": sum(part[1].get(k, 0.0) for part in gathered) / max(total, 1) for k in keys}
        if means:
            means[f"{VAL_LOSS_PREFIX}loss"] = sum(means.values())
    # one warning for the total of non-finite detections dropped on every rank
    return merge_coco_results((part[0] for part in gathered), warn=is_main_process()), means


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    collate_fn: Callable | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    amp: bool = False,
    size_divisor: int = 32,
) -> list[dict[str, Any]]:
    """COCO result dicts for every image of ``dataset``, gathered from all ranks.

    Each rank predicts its contiguous shard (:class:`InferenceSampler`); the results of all ranks
    are returned on every rank. ``dataset.cat_ids`` (when present) maps class indices to ids.
    The loader is :func:`detkit.data.build_dataloader`'s (``collate_fn=None``: detkit's collate
    padding to ``size_divisor``); its workers ignore Ctrl-C, so the trainer stops cleanly, and its
    own seeded generator leaves torch's global RNG untouched (a resumed run repeats the same draws).
    """
    results, _ = _predict(model, dataset, device, collate_fn, batch_size, num_workers, progress, amp,
                          size_divisor, val_losses=False)
    return results


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    evaluator: COCOEvaluator | None,
    device: torch.device,
    collate_fn: Callable | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    size_divisor: int = 32,
    val_losses: bool = False,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """``(metrics, results)``: COCO metrics of ``model`` on ``dataset`` (computed on rank 0; other
    ranks get ``{}``) and the gathered results (arguments as for :func:`predict_dataset`).

    With ``val_losses`` the metrics hold ``val/loss_*`` and ``val/loss`` too (module docstring;
    none for a model :func:`predicts_with_losses` refuses)."""
    results, losses = _predict(model, dataset, device, collate_fn, batch_size, num_workers, progress,
                               amp=False, size_divisor=size_divisor, val_losses=val_losses)
    if not is_main_process():
        return {}, results
    if evaluator is None:
        raise ValueError("evaluate_dataset: the main process needs an evaluator (other ranks may pass None)")
    metrics = evaluator.evaluate(results)
    dropped = getattr(results, "nonfinite_dropped", 0)
    if dropped:  # the run is flagged: its model output NaN / inf
        metrics["nonfinite_dropped"] = float(dropped)
    return {**metrics, **losses}, results
