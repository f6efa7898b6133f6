"""torch.distributed helpers: set-up from torchrun's environment, rank queries, gathering, samplers.

``torchrun --nproc_per_node N tools/train.py CONFIG`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and picks NCCL on CUDA,
gloo on CPU. Without those variables everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from detkit.errors import DataError

__all__ = [
    "InferenceSampler",
    "TrainSampler",
    "all_gather_object",
    "barrier",
    "broadcast_state",
    "cleanup_distributed",
    "exit_process",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "reduce_mean",
    "sync_bn",
]


_joined_group = False  # this process called init_process_group (see exit_process)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (the one process that writes checkpoints and logs)."""
    return get_rank() == 0


def init_distributed(device: str = "cpu", backend: str | None = None) -> tuple[int, int, int]:
    """Join the process group torchrun describes in the environment, if any.

    Args:
        device: ``"cpu"`` or ``"cuda"``; picks the default backend (gloo / NCCL) and, on CUDA,
            binds this process to GPU ``LOCAL_RANK``.
        backend: override the backend.

    Returns:
        ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` when not launched by torchrun.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        return get_rank(), get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    global _joined_group
    _joined_group = True
    return rank, world_size, local_rank


def cleanup_distributed() -> None:
    """Leave the process group (no-op when none).

    All ranks meet at a barrier first, so no rank tears its connections down while another is
    still inside a collective (rank 0 typically still writes checkpoints and logs).
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int = 0) -> NoReturn:
    """End a tool's process with ``code``: ``sys.exit`` normally, ``os._exit`` after a process group.

    Under torch 2.15, a process that wrapped a model in DistributedDataParallel keeps the gloo
    worker threads (``pt_gloo_runloop``, ``gloo_tcp_loop``) alive after ``destroy_process_group``:
    the DDP reducer holds the group from C++. Interpreter teardown with those threads still
    running aborts now and then ("terminate called without an active exception", SIGABRT), which
    torchrun reports as a failed run although every file was written. A process that joined a
    group therefore flushes its streams and log handlers and leaves with ``os._exit``, skipping
    the teardown. Call it after :func:`cleanup_distributed`, with every file closed.
    """
    if not _joined_group:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing left to flush
            stream.flush()
    os._exit(code)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_mean(values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean over ranks of scalar tensors (for logging); detached copies."""
    names = sorted(values)
    if not names:
        return {}
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in names])  # (K,)
    if is_distributed():
        dist.all_reduce(stacked)
        stacked /= get_world_size()
    return dict(zip(names, stacked.unbind(0)))


def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place).

    DDP keeps parameters equal but BatchNorm running statistics (and an EMA copy built from them)
    drift apart per rank; the trainer calls this before evaluating and checkpointing so every rank
    holds rank 0's model and a sharded evaluation sees one model.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def sync_bn(model: nn.Module) -> nn.Module:
    """Convert BatchNorm layers to SyncBatchNorm (for DDP runs with small per-GPU batches)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class TrainSampler(Sampler[int]):
    """Shuffled, rank-sharded indices reproducible from ``(seed, epoch)``, resumable mid-epoch.

    The epoch's order is ``randperm(size)`` from a generator seeded with ``seed + epoch``, padded
    by repetition to a multiple of ``world_size`` (as DistributedSampler does); rank ``r`` takes
    ``order[r::world_size]``. :meth:`skip` drops this rank's first samples (resuming after
    ``k`` batches: ``skip(k * batch_size)``) and lasts for the current epoch only.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if size < 1:
            raise DataError("the training dataset is empty")
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._skip = 0

    def skip(self, num_samples: int) -> None:
        self._skip = num_samples

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = -(-self.size // self.world_size)
        order += order[: per_rank * self.world_size - len(order)]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self._skip :])

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self._skip)


class InferenceSampler(Sampler[int]):
    """Contiguous, unpadded shards for evaluation: every image is seen exactly once over all ranks."""

    def __init__(self, size: int, rank: int | None = None, world_size: int | None = None) -> None:
        self.size = size
        rank = get_rank() if rank is None else rank
        world_size = get_world_size() if world_size is None else world_size
        per_rank = -(-size // world_size)
        self.start, self.stop = min(size, rank * per_rank), min(size, (rank + 1) * per_rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
