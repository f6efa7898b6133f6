"""The one DataLoader of detkit: training, evaluation and the tools all build theirs here.

:func:`build_dataloader` gives seeded workers that ignore Ctrl-C (:func:`init_worker`), uint8
hand-over from the workers (4x fewer bytes; :class:`DetDataLoader` converts to float), problems
found in workers counted in the main process, persistent workers, and a ``DistributedSampler``
under torch.distributed or any sampler the caller passes (the trainer's resumable
``TrainSampler``, the evaluation's ``InferenceSampler``). Decoded-image caches (``cache_size`` on
the datasets) live in the worker processes, so they last as long as the workers do.
"""

from __future__ import annotations

import functools
import logging
import random
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from detkit.data.collate import collate, images_to_float

__all__ = ["DetDataLoader", "build_dataloader", "init_worker", "merge_batch_problems"]

logger = logging.getLogger("detkit.data")


def _reporting_dataset(dataset: Any) -> Any:
    """The dataset with ``merge_reports`` behind ``dataset`` (looking through a ``Subset``), or None."""
    for _ in range(4):
        if hasattr(dataset, "merge_reports"):
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None


def merge_batch_problems(dataset: Any, batch: dict[str, Any]) -> int:
    """Count the problems a batch carries (``batch["problems"]``, found in loader workers) in
    ``dataset.problems`` of this process; returns how many were new. A no-op for datasets
    without ``merge_reports`` and batches without problems."""
    reports = batch.get("problems") if isinstance(batch, dict) else None
    target = _reporting_dataset(dataset) if reports else None
    return target.merge_reports(reports) if target is not None else 0


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every detkit loader: seeds, one torch thread, Ctrl-C left to the parent.

    Python's and numpy's RNGs are seeded from torch's per-worker seed: torch gives every worker
    ``base_seed + worker_id`` (``base_seed`` drawn from the loader's generator each time the
    workers start), so augmentations differ between workers and epochs yet repeat for a given
    seed.

    SIGINT is ignored (and SIGTERM reset to its default): Ctrl-C reaches the whole process group,
    and a worker that died of it would end the training process with a DataLoader error instead
    of its clean stop (:class:`detkit.engine.guards.StopSignals`), during training and evaluation.

    OpenCV's thread count is left alone: ``cv2.setNumThreads`` in a forked worker, after the
    parent process used OpenCV's thread pool, deadlocks in about half the forks (the pool's
    condition variable still counts the parent's waiting threads); running OpenCV functions
    there is safe.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class DetDataLoader(DataLoader):
    """A DataLoader whose workers hand over uint8 images; they become float32 0..1 here.

    Moving uint8 between processes is 4x fewer bytes than float32; the batches it yields follow
    the batch contract (``images (B, 3, H, W) float32`` in 0..1). With ``device`` set, every
    tensor of the batch is moved there first, so the conversion runs on the accelerator.

    Problems the workers found while reading (unreadable images, sizes unlike the annotations)
    travel in ``batch["problems"]`` and are counted here in ``dataset.problems`` of the main
    process, each once; when an epoch found new ones, one summary line is logged at its end.

    Args:
        *args: ``torch.utils.data.DataLoader``'s (dataset first).
        device: move every tensor of a batch there before converting (None: stay on the CPU).
        float_images: convert ``images`` to float32 0..1 (False: keep uint8).
        **kwargs: ``torch.utils.data.DataLoader``'s (``batch_size``, ``num_workers``, ``collate_fn``, ...).
    """

    def __init__(self, *args: Any, device: str | torch.device | None = None, float_images: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = torch.device(device) if device is not None else None
        self.float_images = float_images

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        new = 0
        for batch in super().__iter__():
            new += merge_batch_problems(self.dataset, batch)
            if self.device is not None:
                batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                         for k, v in batch.items()}
            if self.float_images and batch["images"].dtype == torch.uint8:
                batch["images"] = images_to_float(batch["images"])
            yield batch
        target = _reporting_dataset(self.dataset)
        if new and target is not None:
            logger.warning("%d new problem(s) found while loading this epoch; %s", new, target.problems.summary())

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the sampler when it reshuffles per epoch (``DistributedSampler``,
        the trainer's ``TrainSampler``)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    distributed: bool = False,
    persistent_workers: bool | None = None,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
    size_divisor: int = 32,
    device: str | torch.device | None = None,
    float_images: bool = True,
    sampler: Sampler | None = None,
    generator: torch.Generator | None = None,
) -> DetDataLoader:
    """A loader yielding batches of the contract (see :func:`detkit.data.collate`).

    Args:
        dataset: a detection dataset (or a ``Subset`` of one).
        batch_size: images per batch (per process when distributed).
        num_workers: loader processes (0: load in this process).
        shuffle: reshuffle every epoch (seeded by ``seed``).
        seed: seeds the shuffle and, through torch's per-worker seeds, the augmentations.
        distributed: use a ``DistributedSampler`` (needs ``torch.distributed`` initialised).
        persistent_workers: keep workers between epochs (default: when ``num_workers > 0``).
            False starts fresh workers each epoch, seeded from ``generator`` at that moment
            (what a resumable training run needs).
        pin_memory: default: when CUDA is available.
        drop_last: drop the last incomplete batch.
        collate_fn: default :func:`collate` with uint8 hand-over; another function may return
            float images as well (the conversion applies only to uint8 ones).
        size_divisor: batch image sizes are padded to a multiple of this (default collate).
        device: move batches there before the uint8 -> float conversion (e.g. ``"cuda"``).
        float_images: False yields ``images`` as ``uint8`` 0..255 for a consumer that converts
            them itself (outside the batch contract; what Ultralytics' loader hands over).
        sampler: the order of the indices, instead of ``shuffle`` / ``distributed`` (pass
            ``shuffle=False``); :meth:`DetDataLoader.set_epoch` forwards to its ``set_epoch``.
        generator: draws the workers' base seed (and the shuffle); the caller may reseed it
            between epochs. Default: a generator seeded with ``seed``, so a loader never draws
            from torch's global RNG.

    Raises:
        ValueError: bad sizes, ``sampler`` with ``shuffle`` / ``distributed``, or ``distributed``
            without an initialised process group.
    """
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size must be >= 1 and num_workers >= 0; got {batch_size}, {num_workers}")
    if sampler is not None and (shuffle or distributed):
        raise ValueError("build_dataloader: a sampler replaces shuffle and distributed; pass shuffle=False")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("distributed=True but torch.distributed is not initialised; call init_process_group first")
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    if collate_fn is None:
        collate_fn = functools.partial(collate, size_divisor=size_divisor, to_float=False)
    return DetDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        worker_init_fn=init_worker,
        generator=generator,
        persistent_workers=num_workers > 0 and (persistent_workers is None or persistent_workers),
        device=device,
        float_images=float_images,
    )
