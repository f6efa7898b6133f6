"""Evaluation loop: predict a dataset (sharded over ranks), gather COCO results, evaluate on rank 0."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from detkit.engine.distributed import InferenceSampler, all_gather_object, is_main_process
from detkit.engine.train_utils import init_worker, move_batch
from detkit.evaluation import COCOEvaluator, detections_to_coco_results

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
    collate_fn: Callable,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    amp: bool = False,
) -> list[dict[str, Any]]:
    """COCO result dicts for every image of ``dataset``, gathered from all ranks.

    Each rank predicts its contiguous shard (:class:`InferenceSampler`); the results of all ranks
    are returned on every rank. ``dataset.cat_ids`` (when present) maps class indices to ids.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=InferenceSampler(len(dataset)),
                        num_workers=num_workers, collate_fn=collate_fn, pin_memory=device.type == "cuda",
                        worker_init_fn=init_worker,  # workers ignore Ctrl-C: the trainer stops cleanly
                        generator=torch.Generator().manual_seed(0))  # leaves the global RNG untouched
    cat_ids = getattr(dataset, "cat_ids", None)
    results: list[dict[str, Any]] = []
    start, images = time.perf_counter(), 0
    bar = tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False, dynamic_ncols=True)
    for batch in bar:
        batch = move_batch(batch, device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            dets = model.predict(batch)
        results += detections_to_coco_results(dets, batch["image_ids"], cat_ids)
        images += batch["images"].shape[0]
        bar.set_postfix(img_s=f"{images / max(time.perf_counter() - start, 1e-9):.1f}")
    model.train(was_training)
    gathered = all_gather_object(results)
    return [r for part in gathered for r in part]


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    evaluator: COCOEvaluator,
    device: torch.device,
    collate_fn: Callable,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """``(metrics, results)``: COCO metrics of ``model`` on ``dataset`` (computed on rank 0; other
    ranks get ``{}``) and the gathered results."""
    results = predict_dataset(model, dataset, device, collate_fn, batch_size, num_workers, progress)
    if not is_main_process():
        return {}, results
    metrics = evaluator.evaluate(results)
    return metrics, results
