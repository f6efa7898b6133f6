"""Small pieces of the training loop: device choice, seeding, batch moves, multi-scale resize, the
switches made at an epoch's start (assigner switches, switchable transforms off), the epoch's running means."""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from detkit.assigners.branches import BRANCHES, branch_switches, set_branch_assigner
from detkit.config import instantiate
from detkit.data.transforms.compose import SwitchableTransform
from detkit.engine import distributed as du
from detkit.errors import Argument, ConfigError

__all__ = [
    "EpochMeter",
    "EpochSwitches",
    "assigner_index",
    "collate_from_config",
    "find_objects",
    "move_batch",
    "multi_scale_batch",
    "multi_scale_size",
    "resize_batch",
    "resolve_device",
    "seed_everything",
    "switch_transforms",
    "start_loader_epoch",
]

logger = logging.getLogger("detkit")

def resolve_device(device: str | None) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ConfigError when CUDA is asked for but missing."""
    device = device or "auto"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "device {device} requested but CUDA is not available (torch {torch}, built with CUDA {cuda}); use {cpu}",
            values={"device": repr(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "cpu": Argument("device", value="'cpu'", metavar="cpu")},  # device='cpu'; a tool's --device cpu
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N")
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


def multi_scale_batch(batch: dict[str, Any], size_range: tuple[int, int] | None, seed: int, step: int,
                      divisor: int = 32) -> dict[str, Any]:
    """Multi-scale training: ``batch`` resized to the size drawn for ``(seed, step)`` from
    ``size_range`` (``train.multi_scale``); the batch itself when the range is None."""
    if size_range is None:
        return batch
    return resize_batch(batch, multi_scale_size(*size_range, seed, step, divisor), divisor)


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


def find_objects(root: Any, wanted: Callable[[Any], bool], max_depth: int = 6) -> list[Any]:
    """Objects reachable from ``root`` (attributes, short lists/dicts) for which ``wanted(obj)`` is true."""
    found, seen = [], set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > max_depth or isinstance(obj, (str, bytes, int, float, Tensor, np.ndarray)):
            return
        seen.add(id(obj))
        if wanted(obj):
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


def switch_transforms(dataset: Any, enabled: bool) -> int:
    """Call ``set_enabled(enabled)`` on every switchable transform reachable from ``dataset``
    (:class:`~detkit.data.transforms.compose.SwitchableTransform`: Mosaic, MixUp, or any transform with
    that method); returns how many."""
    objs = find_objects(dataset, lambda o: not isinstance(o, type) and isinstance(o, SwitchableTransform))
    for o in objs:
        o.set_enabled(enabled)
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


class EpochSwitches:
    """What changes when an epoch starts: ``schedule.assigner_switches``' entry for the epoch (a
    fresh assigner set on ``detector.head.assigner`` when the entry changes), the switchable
    transforms (Mosaic, MixUp: :func:`switch_transforms`) off for the last ``no_mosaic_last_epochs``
    epochs, and the head's loss pipeline and the head told the epoch (``set_epoch``: YOLOX's L1 loss runs
    only in the last ``reg_last_epochs``; a dual-branch head's branch weights)."""

    def __init__(self, assigner_schedule: Sequence[tuple[int, Any]], no_mosaic_last_epochs: int, epochs: int) -> None:
        self.assigner_schedule = list(assigner_schedule)
        self.no_mosaic_last_epochs = no_mosaic_last_epochs
        self.epochs = epochs
        # per branch (a bare rule: one2many; dict(one2one=...): detkit.assigners.branches), its switches and
        # the index of the one in force (-1: the model's own assigner)
        self.branch_schedules = {b: branch_switches(self.assigner_schedule, b) for b in BRANCHES}
        self.assigner_entries: dict[str, int] = {}
        self.mix_off = False

    def apply(self, epoch: int, detector: Any, dataset: Any) -> None:
        """Make the switches due at ``epoch`` (0-based), logging each."""
        for branch, schedule in self.branch_schedules.items():
            idx = assigner_index(schedule, epoch)
            if idx >= 0 and idx != self.assigner_entries.get(branch):
                assigner = build_assigner(schedule[idx][1])
                set_branch_assigner(detector.head, branch, assigner)
                where = "" if branch == "one2many" else f" ({branch} branch)"
                logger.info(f"epoch {epoch + 1}: assigner {type(assigner).__name__}{where}")
            self.assigner_entries[branch] = idx
        for owner in (getattr(detector.head, "loss_pipeline", None), detector.head):  # the head: branch weights
            set_epoch = getattr(owner, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch, self.epochs)
        n = self.no_mosaic_last_epochs
        if n > 0 and epoch >= self.epochs - n and not self.mix_off:
            count = switch_transforms(dataset, False)
            self.mix_off = True
            logger.info(f"epoch {epoch + 1}: switchable transforms (Mosaic/MixUp) off for the last {n} epochs "
                        f"({count} transform(s))")


class EpochMeter:
    """Running sums of one epoch's ``loss_*`` / ``stat_*`` values over its finite iterations.

    Checkpoints carry them (``epoch_sums`` / ``epoch_count``), so a resumed epoch's means still
    cover the iterations before the interruption.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def add(self, values: Mapping[str, Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def means(self) -> dict[str, Tensor]:
        """The epoch's means, the sums averaged over ranks first (every rank must call this)."""
        summed = du.reduce_mean({k: torch.as_tensor(v) for k, v in self.sums.items()})
        return {k: v / max(self.count, 1) for k, v in summed.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_sums": dict(self.sums), "epoch_count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {k: float(v) for k, v in (state.get("epoch_sums") or {}).items()}
        self.count = int(state.get("epoch_count", 0))


def start_loader_epoch(loader: DataLoader, epoch: int, seed: int, skip_batches: int) -> None:
    """Set the training loader up for ``epoch``: the sampler's order for the epoch, minus the
    batches a resumed epoch already did, and the workers' seeds from ``seed + epoch``."""
    loader.set_epoch(epoch)  # type: ignore[attr-defined]  # DetDataLoader: forwards to the sampler
    loader.sampler.skip(skip_batches * loader.batch_size)  # type: ignore[attr-defined,operator]
    loader.generator.manual_seed(seed + epoch)


def collate_from_config(cfg: Mapping[str, Any], size_divisor: int = 32) -> Callable:
    """The ``collate_fn`` for :func:`detkit.data.build_dataloader`: ``cfg.data.collate`` when the
    config sets one, else :func:`detkit.data.collate` padding batch images to multiples of
    ``size_divisor`` (the model's largest stride) and keeping them uint8 for the loader to convert."""
    custom = (cfg.get("data") or {}).get("collate")
    if custom is not None:
        return custom
    from detkit.data import collate

    return functools.partial(collate, size_divisor=size_divisor, to_float=False)
