"""Small pieces of the training loop: device choice, seeding, batch moves, multi-scale resize,
Mosaic/MixUp switch, assigner schedule, data loaders."""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from detkit.config import instantiate

__all__ = [
    "MIX_TRANSFORMS",
    "assigner_index",
    "build_loader",
    "collate_from_config",
    "find_objects",
    "init_worker",
    "move_batch",
    "multi_scale_size",
    "resize_batch",
    "resolve_device",
    "seed_everything",
    "set_mix_transforms",
    "train_collate",
]

logger = logging.getLogger("detkit")

# Class names of the transforms switched off for the last epochs (no_mosaic_last_epochs).
MIX_TRANSFORMS = ("Mosaic", "MixUp")


def resolve_device(device: str | None) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ValueError when CUDA is asked for but missing."""
    device = device or "auto"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); use --device cpu"
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N")
    return torch.device(device)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; with ``deterministic``, ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def move_batch(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of the batch moved to ``device`` (non-blocking); other values kept."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def multi_scale_size(lo: int, hi: int, seed: int, step: int, divisor: int = 32) -> int:
    """A random multiple of ``divisor`` in ``[lo, hi]``, reproducible from ``(seed, step)``."""
    choices = list(range(-(-lo // divisor) * divisor, hi + 1, divisor))
    if not choices:
        raise ValueError(f"no multiple of {divisor} in multi_scale range ({lo}, {hi})")
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return choices[int(torch.randint(len(choices), (1,), generator=g))]


def resize_batch(batch: dict[str, Any], size: int, divisor: int = 32) -> dict[str, Any]:
    """Resize ``images (B, 3, H, W)`` so the longer side is ``size`` (each side a multiple of
    ``divisor``) and scale ``gt_boxes`` / ``ignore_boxes`` to match. Returns a new dict."""
    images = batch["images"]
    h, w = images.shape[-2:]
    s = size / max(h, w)
    nh, nw = max(divisor, round(h * s / divisor) * divisor), max(divisor, round(w * s / divisor) * divisor)
    if (nh, nw) == (h, w):
        return batch
    out = dict(batch)
    out["images"] = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
    scale = images.new_tensor([nw / w, nh / h, nw / w, nh / h])  # (4,) x, y, x, y
    for key in ("gt_boxes", "ignore_boxes"):
        if key in out:
            out[key] = out[key] * scale
    return out


# Containers longer than this are not searched (a dataset's annotation lists can hold millions of items).
_MAX_CONTAINER = 256


def find_objects(root: Any, type_names: Sequence[str], max_depth: int = 6) -> list[Any]:
    """Objects reachable from ``root`` (attributes, short lists/dicts) whose class name is in ``type_names``."""
    found, seen = [], set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > max_depth or isinstance(obj, (str, bytes, int, float, Tensor, np.ndarray)):
            return
        seen.add(id(obj))
        if type(obj).__name__ in type_names:
            found.append(obj)
        if isinstance(obj, (Mapping, list, tuple)) and len(obj) > _MAX_CONTAINER:
            return
        if isinstance(obj, Mapping):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple)):
            children = list(obj)
        else:
            children = list(getattr(obj, "__dict__", {}).values())
        for child in children:
            visit(child, depth + 1)

    visit(root, 0)
    return found


def set_mix_transforms(dataset: Any, enabled: bool) -> int:
    """Set ``enabled`` on every Mosaic/MixUp transform reachable from ``dataset``; returns how many."""
    objs = [o for o in find_objects(dataset, MIX_TRANSFORMS) if hasattr(o, "enabled")]
    for o in objs:
        o.enabled = enabled
    return len(objs)


def assigner_index(schedule: Sequence[tuple[int, Any]], epoch: int) -> int:
    """Index of the schedule entry in force at ``epoch`` (the last with start <= epoch), or -1."""
    idx = -1
    for i, (start, _) in enumerate(schedule):
        if start <= epoch:
            idx = i
    return idx


def build_assigner(node: Any) -> Any:
    """An assigner from a lazy-call node, or the object itself."""
    return instantiate(node) if isinstance(node, Mapping) else node


def init_worker(worker_id: int) -> None:
    """DataLoader worker set-up: python/numpy seeds from the worker's torch seed; SIGINT ignored."""
    seed = torch.initial_seed() % 2**32  # differs per worker, derived from the loader's generator
    random.seed(seed)
    np.random.seed(seed)
    # Ctrl-C reaches the whole process group: a worker that died of it would end the training
    # process with a DataLoader error instead of its clean stop (detkit.engine.guards.StopSignals).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def build_loader(dataset: Dataset, batch_size: int, sampler: Sampler, num_workers: int,
                 collate_fn: Callable, generator: torch.Generator | None = None,
                 drop_last: bool = False, loader_cls: type[DataLoader] = DataLoader) -> DataLoader:
    """A DataLoader (or ``loader_cls``) with seeded workers (numpy/python from the worker's torch seed)."""
    return loader_cls(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                      worker_init_fn=init_worker, generator=generator,
                      persistent_workers=False)


def train_collate(cfg: Mapping[str, Any], size_divisor: int, num_workers: int) -> tuple[Callable, type[DataLoader]]:
    """``(collate_fn, loader class)`` for training: with workers and detkit's collate, batches cross
    the process boundary as uint8 and :class:`detkit.data.DetDataLoader` turns them into floats."""
    if (cfg.get("data") or {}).get("collate") is not None or num_workers == 0:
        return collate_from_config(cfg, size_divisor), DataLoader
    from detkit.data import DetDataLoader, collate

    return functools.partial(collate, size_divisor=size_divisor, to_float=False), DetDataLoader


def collate_from_config(cfg: Mapping[str, Any], size_divisor: int = 32) -> Callable:
    """``cfg.data.collate`` when the config sets one, else :func:`detkit.data.collate` padding
    batch images to multiples of ``size_divisor`` (the model's largest stride)."""
    custom = (cfg.get("data") or {}).get("collate")
    if custom is not None:
        return custom
    from detkit.data import collate

    return functools.partial(collate, size_divisor=size_divisor)
