"""Samples -> the padded training/evaluation batch (docs/design.md, "Boxes and padded GT batches")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info

__all__ = ["collate", "images_to_float", "pad_boxes"]

# Grey used where images of different sizes are padded to the batch size (the letterbox grey).
PAD_VALUE = 114


def pad_boxes(items: Sequence[np.ndarray], extra: Sequence[np.ndarray] | None = None) -> tuple[Tensor, ...]:
    """Pad per-image boxes to the largest count (at least 1).

    Args:
        items: ``B`` arrays ``(N_i, 4)``.
        extra: ``B`` arrays ``(N_i,)`` padded alongside (labels), or None.

    Returns:
        ``boxes (B, M, 4) float32``, ``mask (B, M) bool`` and, with ``extra``, ``values (B, M) long``.
        Padding rows are zero and False in the mask.
    """
    b = len(items)
    m = max([1] + [len(x) for x in items])
    boxes = torch.zeros((b, m, 4), dtype=torch.float32)
    mask = torch.zeros((b, m), dtype=torch.bool)
    values = torch.zeros((b, m), dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x)
        if n:
            boxes[i, :n] = torch.from_numpy(np.asarray(x, np.float32).reshape(n, 4))
            mask[i, :n] = True
            if extra is not None:
                values[i, :n] = torch.from_numpy(np.asarray(extra[i], np.int64).reshape(n))
    return (boxes, mask, values) if extra is not None else (boxes, mask)


def _stack_images(imgs: Sequence[Any], size_divisor: int) -> Tensor:
    """``B`` images ``(H_i, W_i, 3) uint8`` -> contiguous ``(B, 3, H, W) uint8``, padded bottom/right.

    Inside a loader worker the batch is allocated in shared memory, so handing it to the main
    process copies nothing; channels are copied plane by plane (``cv2.split``), the fastest
    HWC -> CHW on CPU.
    """
    imgs = [im.permute(1, 2, 0).numpy() if isinstance(im, Tensor) else im for im in imgs]  # (3,H,W) -> (H,W,3)
    h = max(im.shape[0] for im in imgs)
    w = max(im.shape[1] for im in imgs)
    if size_divisor > 1:
        h, w = -(-h // size_divisor) * size_divisor, -(-w // size_divisor) * size_divisor
    out = torch.empty((len(imgs), 3, h, w), dtype=torch.uint8)
    if get_worker_info() is not None:
        out.share_memory_()
    arr = out.numpy()
    for i, im in enumerate(imgs):
        ih, iw = im.shape[:2]
        if (ih, iw) != (h, w):
            arr[i] = PAD_VALUE
        for c, plane in enumerate(cv2.split(np.ascontiguousarray(im))):
            arr[i, c, :ih, :iw] = plane
    return out


def images_to_float(images: Tensor) -> Tensor:
    """``(B, 3, H, W) uint8`` -> ``float32`` in 0..1, in one pass.

    On the CPU the conversion runs through numpy, one thread: torch's OpenMP threads spin
    against the loader workers for the same cores and are several times slower there.
    """
    if images.device.type != "cpu":
        return torch.div(images, 255.0)
    out = np.empty(images.shape, np.float32)
    np.divide(images.numpy(), np.float32(255.0), out=out, casting="unsafe")
    return torch.from_numpy(out)


def collate(samples: Sequence[dict[str, Any]], size_divisor: int = 32, to_float: bool = True) -> dict[str, Any]:
    """Batch samples (the DataLoader's ``collate_fn``).

    Args:
        samples: sample dicts (``img (H, W, 3) uint8 RGB``, ``boxes (N, 4)``, ``labels (N,)``,
            ``ignore_boxes (J, 4)``, ``image_id``, ``ori_size``, ``scale_factor``, ``pad``).
        size_divisor: images of different sizes are padded bottom/right to a common size, a
            multiple of this.
        to_float: images as float32 0..1 (the contract); False keeps uint8 (the loader converts
            after the worker hand-over, which moves 4x fewer bytes).

    Returns:
        ``images (B, 3, H, W)``, ``gt_boxes (B, M, 4)``, ``gt_labels (B, M) long``,
        ``gt_mask (B, M) bool``, ``ignore_boxes (B, J, 4)``, ``ignore_mask (B, J) bool``,
        ``image_ids (B,) long``, ``ori_sizes (B, 2) long (h, w)``, ``scale_factors (B, 2)``,
        ``pads (B, 2)``, ``img_paths`` (list of str) and ``problems``: the ``(where, reason,
        index)`` problems loader workers found while reading these samples (usually empty; the
        main process counts them with ``dataset.merge_reports``, which ``DetDataLoader`` calls).
        M, J >= 1.
    """
    if not samples:
        raise ValueError("collate got no samples; accepted: a non-empty list of sample dicts")
    images = _stack_images([s["img"] for s in samples], size_divisor)
    gt_boxes, gt_mask, gt_labels = pad_boxes([s["boxes"] for s in samples], [s["labels"] for s in samples])
    ign, ign_mask = pad_boxes([s.get("ignore_boxes", np.zeros((0, 4), np.float32)) for s in samples])
    return {
        "images": images_to_float(images) if to_float else images,
        "gt_boxes": gt_boxes,
        "gt_labels": gt_labels,
        "gt_mask": gt_mask,
        "ignore_boxes": ign,
        "ignore_mask": ign_mask,
        "image_ids": torch.tensor([int(s["image_id"]) for s in samples], dtype=torch.long),
        "ori_sizes": torch.tensor([list(s["ori_size"]) for s in samples], dtype=torch.long).reshape(-1, 2),
        "scale_factors": torch.tensor([list(s.get("scale_factor", (1.0, 1.0))) for s in samples],
                                      dtype=torch.float32).reshape(-1, 2),
        "pads": torch.tensor([list(s.get("pad", (0.0, 0.0))) for s in samples], dtype=torch.float32).reshape(-1, 2),
        "img_paths": [str(s.get("img_path", "")) for s in samples],
        "problems": [tuple(p) for s in samples for p in s.get("problems", ())],
    }
