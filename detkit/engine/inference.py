"""Evaluation loop: predict a dataset (sharded over ranks), gather COCO results, evaluate on rank 0."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from detkit.data.loader import build_dataloader
from detkit.engine.distributed import InferenceSampler, all_gather_object, is_main_process
from detkit.evaluation import COCOEvaluator, detections_to_coco_results
from detkit.evaluation.results import CocoResults, merge_coco_results

__all__ = ["build_evaluator", "evaluate_dataset", "predict_dataset"]

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


@torch.no_grad()
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
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    loader = build_dataloader(dataset, batch_size, num_workers=num_workers, shuffle=False,
                              sampler=InferenceSampler(len(dataset)), persistent_workers=False,
                              pin_memory=device.type == "cuda", collate_fn=collate_fn,
                              size_divisor=size_divisor, device=device)
    cat_ids = getattr(dataset, "cat_ids", None)
    results = CocoResults()  # with the count of non-finite detections dropped
    start, images = time.perf_counter(), 0
    bar = tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False, dynamic_ncols=True)
    for batch in bar:
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            dets = model.predict(batch)
        results += detections_to_coco_results(dets, batch["image_ids"], cat_ids, warn=False)
        images += batch["images"].shape[0]
        bar.set_postfix(img_s=f"{images / max(time.perf_counter() - start, 1e-9):.1f}")
    model.train(was_training)
    return merge_coco_results(all_gather_object(results), warn=is_main_process())  # one warning: the total


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    evaluator: COCOEvaluator,
    device: torch.device,
    collate_fn: Callable | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    size_divisor: int = 32,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """``(metrics, results)``: COCO metrics of ``model`` on ``dataset`` (computed on rank 0; other
    ranks get ``{}``) and the gathered results (arguments as for :func:`predict_dataset`)."""
    results = predict_dataset(model, dataset, device, collate_fn=collate_fn, batch_size=batch_size,
                              num_workers=num_workers, progress=progress, size_divisor=size_divisor)
    if not is_main_process():
        return {}, results
    metrics = evaluator.evaluate(results)
    if getattr(results, "nonfinite_dropped", 0):  # the run is flagged: its model output NaN / inf
        metrics["nonfinite_dropped"] = float(results.nonfinite_dropped)
    return metrics, results
