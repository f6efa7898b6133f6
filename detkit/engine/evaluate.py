"""One evaluation path: a model on a config's val split, as the trainer, ``detkit test`` and the ablation run it.

    from detkit.engine.evaluate import evaluate

    run = evaluate(cfg, model, torch.device("cpu"))
    run.metrics["AP"], run.evaluator.summary()

:func:`evaluate` builds what a config says about evaluation -- the val dataset and its COCO
evaluator (:func:`build_val_data`), the loader's batch size and workers (:func:`val_loader_options`),
the collate of ``data.collate`` padding to the model's stride -- and runs
:func:`detkit.engine.inference.evaluate_dataset` (predictions sharded over ranks, COCO metrics on
rank 0). The trainer's epoch-end evaluation, ``detkit test`` and ``detkit ablate`` all
call it, so one checkpoint gets the same numbers from each.

The pass runs on a fused copy of the model (:func:`detkit.models.fuse.fused_copy`: Conv + BatchNorm folded,
outputs equal within fp32 rounding, one kernel less per conv); the model given, the trainer's weights
included, is never changed. ``fuse=False`` evaluates the model as it is. On the CPU the fused copy runs in
channels_last (:mod:`detkit.models.memory_format`: same outputs within fp32 rounding, faster).

The val batch size, when ``data.val.batch_size`` is not set, is the training batch
(``data.train.batch_size``, default 16): the size the trainer has always evaluated with, so the
metrics a run logged (and picked ``best.pth`` by) are the ones ``detkit test`` gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from detkit.engine import inference
from detkit.engine.builders import TRAIN_BATCH_SIZE, VAL_WORKERS, build_dataset, loader_workers, size_divisor
from detkit.engine.distributed import is_main_process
from detkit.engine.train_utils import collate_from_config
from detkit.evaluation import COCOEvaluator
from detkit.models.fuse import fused_copy
from detkit.models.memory_format import to_inference_memory_format

__all__ = ["Evaluation", "ValData", "build_val_data", "evaluate", "val_batch_size", "val_loader_options"]


class ValData(NamedTuple):
    """The val split and its evaluator (ground truth, COCOeval); ``evaluator`` is None on ranks other than 0."""

    dataset: Any
    evaluator: COCOEvaluator | None


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: ``{"AP", "AP50", ..., "AR100"}`` (the COCO summary's twelve numbers), with
            ``val/loss_*`` and ``val/loss`` when asked for; ``{}`` on ranks other than 0.
        results: the COCO result dicts of every image, gathered from all ranks.
        dataset: the val dataset.
        evaluator: its evaluator (rank 0; None elsewhere), holding the last evaluation
            (``summary()``, ``per_class_table()``, ``precision``).
    """

    metrics: dict[str, float]
    results: list[dict[str, Any]]
    dataset: Any
    evaluator: COCOEvaluator | None


def val_batch_size(cfg: Mapping[str, Any]) -> int:
    """Images per val batch: ``data.val.batch_size``, else ``data.train.batch_size``, else 16."""
    data = cfg.get("data") or {}
    train = data.get("train") or {}
    val = data.get("val") or {}
    return int(val.get("batch_size", train.get("batch_size", TRAIN_BATCH_SIZE)))


def val_loader_options(cfg: Mapping[str, Any]) -> dict[str, int]:
    """``batch_size`` (:func:`val_batch_size`) and ``num_workers`` of ``data.val`` (default none;
    at most one per available CPU, :func:`detkit.engine.builders.loader_workers`)."""
    val = (cfg.get("data") or {}).get("val") or {}
    return {"batch_size": val_batch_size(cfg),
            "num_workers": loader_workers(int(val.get("num_workers", VAL_WORKERS)), "data.val.num_workers")}


def build_val_data(cfg: Mapping[str, Any], *, main: bool | None = None, backend: str = "auto") -> ValData:
    """``data.val``'s dataset (:func:`detkit.engine.builders.build_dataset`) and, on the main
    process (``main``; default: rank 0), its COCO evaluator with ``backend``.

    Raises:
        DataError / ConfigError: the val data cannot be read, or disagree with the config.
    """
    dataset = build_dataset(cfg, "val")
    main = is_main_process() if main is None else main
    return ValData(dataset, inference.build_evaluator(dataset, backend=backend) if main else None)


def evaluate(cfg: Mapping[str, Any], model: nn.Module, device: torch.device, *, val: ValData | None = None,
             batch_size: int | None = None, backend: str = "auto", progress: bool = True,
             val_losses: bool = False, fuse: bool = True) -> Evaluation:
    """COCO metrics of ``model`` (in eval mode for the pass, its mode restored) on ``cfg``'s val split.

    Args:
        cfg: a loaded config (``data.val``, ``data.collate``).
        model: the detector (``predict(batch)``; ``size_divisor``, default 32).
        device: where the batches go (the model is already there).
        val: the val data when already built (the trainer builds them once); default
            :func:`build_val_data` with ``backend``.
        batch_size: images per batch (default :func:`val_batch_size`).
        progress: a progress bar (rank 0).
        val_losses: also the head's losses on the val batches (``val/loss_*``, ``val/loss``).
        fuse: evaluate a fused copy of ``model`` (:func:`~detkit.models.fuse.fused_copy`), in channels_last on
            the CPU; False: ``model`` as it is.

    Returns:
        An :class:`Evaluation` (metrics on rank 0; results gathered on every rank).
    """
    if val is None:
        val = build_val_data(cfg, backend=backend)
    options = val_loader_options(cfg)
    divisor = size_divisor(model)
    # a copy: model untouched; the losses of a dual-branch head need both branches (fused_copy's prune_branches)
    run_model = to_inference_memory_format(fused_copy(model, prune_branches=not val_losses), device) if fuse else model
    metrics, results = inference.evaluate_dataset(
        run_model, val.dataset, val.evaluator, device, collate_from_config(cfg, divisor),
        batch_size or options["batch_size"], options["num_workers"], progress, size_divisor=divisor,
        val_losses=val_losses)
    return Evaluation(metrics, results, val.dataset, val.evaluator)
