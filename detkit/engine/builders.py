"""What a training run is made of, built from a config: data, model, step plan, EMA, evaluation data.

Each builder takes the config (or its typed settings) and returns plain objects; the
:class:`~detkit.engine.trainer.Trainer` calls them in one place, in this order (the model is
built first, so its initialisation draws the same random numbers as it always did).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from detkit.config import instantiate
from detkit.config_checks import DATA_ARGUMENT
from detkit.data.adopt import check_data_config, check_dataset_classes
from detkit.data.classes import check_class_names
from detkit.data.loader import DetDataLoader, build_dataloader
from detkit.engine import distributed as du
from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.checkpoint_config import checkpoint_class_names
from detkit.engine.ema import ModelEMA
from detkit.engine.settings import EMASettings, TrainSettings
from detkit.engine.train_utils import collate_from_config, resolve_device
from detkit.engine.weights import load_weights
from detkit.errors import CheckpointError, ConfigError, DataError
from detkit.schema import default_of

__all__ = ["DATA_LAYOUTS", "LossForward", "StepPlan", "build_amp", "build_dataset", "build_ema", "check_data_config",
           "build_model", "build_step_plan", "build_train_loader", "load_initial_weights", "loader_workers",
           "setup_device", "size_divisor", "wrap_for_training"]

logger = logging.getLogger("detkit")

# Shown when a dataset cannot be read: where each format's files are expected.
DATA_LAYOUTS = """expected layouts (paths as in the config; details in data/README.md):
  COCO: data/coco/annotations/instances_{train,val}2017.json, images in data/coco/{train,val}2017/
  YOLO: <root>/images/<split>/*.jpg, <root>/labels/<split>/*.txt (class cx cy w h, 0..1), names.txt
  VOC:  VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}
  shapes: generated on first use (python tools/make_shapes.py)"""

# Loader keys of data.train / data.val when a config leaves them out (the val batch:
# detkit.engine.evaluate.val_batch_size).
TRAIN_BATCH_SIZE, TRAIN_WORKERS, VAL_WORKERS = 16, default_of(build_dataloader, "num_workers"), 0


def build_dataset(cfg: Mapping[str, Any], split: str) -> Any:
    """Instantiate ``cfg.data[split].dataset`` with a clear message when the data are missing; a
    dataset whose class count differs from the model's / the data section's is a ConfigError
    (:func:`detkit.data.adopt.check_dataset_classes`).

    Args:
        cfg: a loaded config.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        The built dataset (``len``, ``dataset[i]`` a sample dict, ``class_names``).

    Raises:
        ConfigError: no ``data.<split>.dataset``; its class count differs from the config's; a
            dataset argument the constructor refuses.
        DataError: its files are missing or unreadable (the message lists the layouts detkit reads).
    """
    data = cfg.get("data") or {}
    if split not in data or "dataset" not in data[split]:
        raise ConfigError("config has no data.{split}.dataset; add data=dict({split}=dict(dataset=L(...)(...))) "
                          "or give {data} (a dataset with a {split} split)",
                          values={"split": split, "data": DATA_ARGUMENT})
    try:
        dataset = instantiate(data[split].dataset, f"data.{split}.dataset")
    except (OSError, DataError) as e:
        raise DataError(f"data.{split}: dataset not found: {e}\n{DATA_LAYOUTS}") from e
    check_dataset_classes(cfg, split, dataset)
    return dataset


def setup_device(device: str, dist_backend: str | None) -> tuple[torch.device, int, int]:
    """``(device, rank, world size)``: the process group joined when launched by torchrun, and on
    CUDA this process's GPU (``LOCAL_RANK``)."""
    resolved = resolve_device(device)
    rank, world_size, local_rank = du.init_distributed(resolved.type, dist_backend)
    if resolved.type == "cuda" and world_size > 1:
        resolved = torch.device("cuda", local_rank)
    return resolved, rank, world_size


def size_divisor(model: nn.Module) -> int:
    """What batch images are padded to a multiple of: the model's largest stride (32 by default)."""
    return int(getattr(model, "size_divisor", 32))


def build_model(cfg: Mapping[str, Any], device: torch.device, sync_bn: bool, world_size: int) -> nn.Module:
    """``cfg.model`` on ``device``; BatchNorm made SyncBatchNorm when asked for under DDP on CUDA."""
    model = instantiate(cfg["model"], "model")
    if sync_bn and world_size > 1:
        if device.type == "cuda":
            model = du.sync_bn(model)
        else:
            logger.info("train.sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on CPU")
    return model.to(device)


def build_train_loader(cfg: Mapping[str, Any], dataset: Any, divisor: int, seed: int,
                       device: torch.device) -> DetDataLoader:
    """The training loader: :func:`detkit.data.build_dataloader` with the resumable, rank-sharded
    :class:`~detkit.engine.distributed.TrainSampler` and a generator the trainer reseeds each epoch
    (``seed + epoch``); workers start afresh each epoch, so their augmentation seeds come from it
    (and Mosaic switched off in the main process is off in them)."""
    split = cfg["data"]["train"]
    sampler = du.TrainSampler(len(dataset), shuffle=True, seed=seed)
    workers = loader_workers(int(split.get("num_workers", TRAIN_WORKERS)), "data.train.num_workers")
    return build_dataloader(dataset, int(split.get("batch_size", TRAIN_BATCH_SIZE)),
                            num_workers=workers, shuffle=False,
                            sampler=sampler, generator=torch.Generator(), persistent_workers=False,
                            collate_fn=collate_from_config(cfg, divisor), device=device)


@dataclass(frozen=True)
class StepPlan:
    """How loader batches become optimizer steps.

    ``accumulate`` batches (of ``batch x world size`` images) make one step of about
    ``nominal_batch`` images; weight decay scales with the images per step (YOLOv5);
    ``loss_multiplier`` scales each backward (see ``TrainSettings.loss_scale``).
    """

    accumulate: int
    weight_decay_scale: float
    loss_multiplier: float


def build_step_plan(settings: TrainSettings, batch_size: int, world_size: int) -> StepPlan:
    images = batch_size * world_size
    accumulate = max(1, round(settings.nominal_batch / images))
    return StepPlan(
        accumulate=accumulate,
        weight_decay_scale=images * accumulate / settings.nominal_batch,
        loss_multiplier=float(images) if settings.loss_scale == "batch" else 1.0 / accumulate,
    )


def build_ema(model: nn.Module, settings: EMASettings) -> ModelEMA | None:
    return ModelEMA(model, decay=settings.decay, tau=settings.tau) if settings.enabled else None


def build_amp(requested: bool, device: torch.device) -> tuple[bool, torch.amp.GradScaler]:
    """``(amp on, grad scaler)``: mixed precision on CUDA only (a log line and fp32 on CPU)."""
    amp = requested and device.type == "cuda"
    if requested and not amp:
        logger.info("AMP requested but running on CPU: training in fp32")
    return amp, torch.amp.GradScaler("cuda", enabled=amp)


def load_initial_weights(model: nn.Module, path: str, data_names: list[str] | None = None) -> None:
    """``--load-from``: weights only (detkit checkpoint, torchvision ResNet, Darknet), reported. With
    ``data_names`` (the training data's class names), a detkit checkpoint trained on other names in
    label order is said so in a warning (fine-tuning on other classes is allowed)."""
    report = load_weights(model, path)
    logger.info(f"loaded weights from {path}: {len(report['loaded'])} tensors, "
                f"{len(report['missing'])} missing, {len(report['shape_mismatch'])} shape mismatches")
    if data_names is not None:
        try:
            check_class_names(checkpoint_class_names(load_checkpoint(path), path), data_names,
                              f"initial weights {path} on data.train")
        except CheckpointError:  # not a detkit checkpoint (Darknet weights): no names to compare
            pass
        except ConfigError as e:
            logger.warning(f"{e}; fine-tuning goes on: each label k learns the data's class k from the "
                           "checkpoint's class k")


class LossForward(nn.Module):
    """``forward(batch) = detector.loss(batch)``, so DDP sees the loss computation as forward."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector: Any = detector  # a Detector: loss(batch)

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.detector.loss(batch)


def wrap_for_training(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """The module whose forward computes the loss dict: DDP-wrapped under torch.distributed."""
    forward: nn.Module = LossForward(model)
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        forward = nn.parallel.DistributedDataParallel(forward, device_ids=ids)
    return forward


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as ``taskset`` / a container's cpuset give it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def loader_workers(requested: int, key: str) -> int:
    """``requested`` loader processes, at most one per available CPU (as Ultralytics caps them): more
    processes than cores only make the training process wait for its own threads. Logged when capped."""
    cpus = available_cpus()
    if requested > cpus:
        logger.info(f"{key}={requested} but {cpus} CPU(s) are available to this process: {cpus} loader workers")
        return cpus
    return requested
