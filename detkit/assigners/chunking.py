"""Processing GTs in chunks to bound the ``B x N x M`` working set, and the reductions that make
chunked results bit-identical to unchunked ones.

Every per-pair quantity (IoU, distance, cost) is computed element by element, so a chunk's values
equal the unchunked ones exactly. Reductions across GTs are then merged chunk by chunk with an
order that does not depend on the chunk size: a running maximum (or minimum) replaced only on a
*strict* improvement keeps the lowest GT index on ties, exactly as one reduction over all GTs.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AUTO", "auto_chunk", "gt_chunk_for_memory", "gt_chunks", "merge_best", "scatter_best", "scatter_max"]

AUTO = "auto"  # max_gt_chunk picked from the device's free memory (auto_chunk)
AUTO_MEMORY_FRACTION = 0.25  # of a CUDA device's free memory, the most a chunk's working set may take


def gt_chunks(num_gts: int, max_gt_chunk: int | str | None, *, batch: int = 1, num_priors: int = 1,
              device: torch.device | str = "cpu") -> list[slice]:
    """Slices of ``range(num_gts)`` of at most ``max_gt_chunk`` GTs (one slice when None; with
    ``"auto"``, the chunk :func:`auto_chunk` picks for ``batch x num_priors`` priors on ``device``).

    Returns an empty list when ``num_gts == 0``.
    """
    if max_gt_chunk == AUTO:
        max_gt_chunk = auto_chunk(batch, num_priors, torch.device(device))
    if max_gt_chunk is None or max_gt_chunk >= num_gts:
        return [slice(0, num_gts)] if num_gts else []
    return [slice(s, min(s + max_gt_chunk, num_gts)) for s in range(0, num_gts, max_gt_chunk)]


def check_chunk(max_gt_chunk: int | str | None) -> int | str | None:
    """Validate an assigner's ``max_gt_chunk`` argument: a positive int, None or ``"auto"``."""
    if max_gt_chunk == AUTO:
        return AUTO
    if max_gt_chunk is not None and (isinstance(max_gt_chunk, bool) or not isinstance(max_gt_chunk, int)
                                     or max_gt_chunk < 1):
        raise ValueError(f"max_gt_chunk must be a positive int, None (no chunking) or 'auto', got {max_gt_chunk!r}")
    return max_gt_chunk


def free_memory_mb(device: torch.device) -> float | None:
    """Free memory of a CUDA ``device`` in MiB (``torch.cuda.mem_get_info``); None for other devices."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free / 2**20


def auto_chunk(batch: int, num_priors: int, device: torch.device) -> int | None:
    """``max_gt_chunk="auto"``: on a CUDA device, the largest chunk whose dense working set takes at most
    ``AUTO_MEMORY_FRACTION`` of the device's free memory now (:func:`gt_chunk_for_memory`), so a batch
    with many GTs never runs out of memory; elsewhere None (host memory is the limit there, and the
    candidate-sparse forms' pairs are few)."""
    free = free_memory_mb(device)
    if free is None:
        return None
    return gt_chunk_for_memory(batch, num_priors, max(free * AUTO_MEMORY_FRACTION, 1.0))


def gt_chunk_for_memory(batch: int, num_priors: int, limit_mb: float, bytes_per_pair: int = 64) -> int:
    """The largest GT chunk whose working set ``batch * num_priors * chunk * bytes_per_pair`` stays
    under ``limit_mb`` MiB (at least 1). ``bytes_per_pair`` ~64 covers the pairwise IoU's temporaries.
    """
    if limit_mb <= 0:
        raise ValueError(f"limit_mb must be positive, got {limit_mb}")
    per_gt = max(1, batch * num_priors * bytes_per_pair)
    return max(1, int(limit_mb * 2**20 // per_gt))


def merge_best(best_value: Tensor, best_index: Tensor, value: Tensor, index: Tensor,
               lower_is_better: bool = False) -> tuple[Tensor, Tensor]:
    """Merge a chunk's per-prior best into the running best; ties keep the earlier (lower) GT.

    Args:
        best_value, best_index: running ``Tensor[B, N]`` value and GT index.
        value, index: this chunk's ``Tensor[B, N]`` value and (global) GT index.

    Returns:
        The updated ``(best_value, best_index)``.
    """
    better = value < best_value if lower_is_better else value > best_value
    return torch.where(better, value, best_value), torch.where(better, index, best_index)


def scatter_max(num_slots: int, slot: Tensor, value: Tensor, owner: Tensor, fill: float) -> tuple[Tensor, Tensor]:
    """Per slot, the largest ``value`` among the listed pairs and the lowest ``owner`` reaching it.

    Args:
        num_slots: number of slots (e.g. ``B * N`` priors of a batch).
        slot: ``Tensor[P]`` long, the slot of each pair.
        value: ``Tensor[P]`` float32; pairs to leave out hold ``fill``.
        owner: ``Tensor[P]`` long >= 0 (e.g. the pair's GT index).
        fill: value of slots that no pair reaches (smaller than any real value).

    Returns:
        ``(Tensor[num_slots] best value, Tensor[num_slots] long owner)``; slots with no pair better
        than ``fill`` get ``fill`` and -1.
    """
    best = value.new_full((num_slots,), fill).scatter_reduce(0, slot, value, "amax")
    reaches = (value == best[slot]) & (value > fill)
    none = torch.iinfo(torch.long).max
    low = torch.full((num_slots,), none, dtype=torch.long, device=value.device)
    low = low.scatter_reduce(0, slot, torch.where(reaches, owner, torch.full_like(owner, none)), "amin")
    return best, torch.where(low < none, low, torch.full_like(low, -1))


def scatter_best(num_priors: int, prior_index: Tensor, value: Tensor, gt_offset: int,
                 fill: float) -> tuple[Tensor, Tensor]:
    """Per prior, the largest ``value`` among the GT-prior pairs listed, and its lowest GT index.

    Args:
        num_priors: N.
        prior_index: ``Tensor[B, Mc, K]`` long, the prior of each pair (GT m's K candidates).
        value: ``Tensor[B, Mc, K]`` float32; pairs to leave out hold ``fill``.
        gt_offset: global index of the chunk's first GT.
        fill: value of priors that no pair reaches (smaller than any real value).

    Returns:
        ``(Tensor[B, N] best value, Tensor[B, N] long GT index)``; priors with no pair better than
        ``fill`` get ``fill`` and -1.
    """
    b, mc, k = prior_index.shape
    images = torch.arange(b, device=value.device).view(b, 1, 1) * num_priors  # (B,) -> (B, 1, 1)
    gt_ids = torch.arange(gt_offset, gt_offset + mc, device=value.device).view(1, mc, 1)  # (Mc,) -> (1, Mc, 1)
    best, gt = scatter_max(b * num_priors, (prior_index + images).flatten(), value.flatten(),
                           gt_ids.expand(b, mc, k).flatten(), fill)  # (B, Mc, K) -> (B*Mc*K,)
    return best.view(b, num_priors), gt.view(b, num_priors)
